"""The ATLAS RPV multijet selection on hand-built events: every threshold just above and below."""
import numpy as np
import pytest

from engine.data.hep import cuts

EPS = 1e-3


def event(pts, etas=None, ms=None):
    """Jets (pT, eta, m) of one hand-built event; etas default to a central row 0, 0.5, ... 0.9."""
    n = len(pts)
    etas = [0.0, 0.5, -0.3, 0.9, -0.9, 0.2, 0.4, -0.6][:n] if etas is None else etas
    ms = [100.0] * n if ms is None else ms
    return cuts.evaluate_event(np.array(pts, float), np.array(etas, float), np.array(ms, float))


def test_jet_selection_thresholds_are_strict():
    pt, eta, phi, m = cuts.select_jets([200.0, 200.0 + EPS, 500.0, 300.0],
                                       [0.0, 0.0, 2.0, -2.0 + EPS], [0.1, 0.2, 0.3, 0.4],
                                       [10.0, 20.0, 30.0, 40.0])
    # pT = 200 is out (pT > 200), |eta| = 2 is out (|eta| < 2); the rest ordered by pT.
    np.testing.assert_array_equal(pt, [300.0, 200.0 + EPS])
    np.testing.assert_array_equal(phi, [0.4, 0.2])
    np.testing.assert_array_equal(m, [40.0, 20.0])


def test_baseline_needs_three_jets_and_a_leading_jet_above_440():
    assert event([440.0 + EPS, 300.0, 250.0])["baseline"]
    assert not event([440.0, 300.0, 250.0])["baseline"]
    assert not event([900.0, 300.0])["baseline"]
    # A fourth jet below the jet threshold does not count.
    ev = event([900.0, 300.0, 200.0 - EPS])
    assert ev["njet"] == 2 and not ev["baseline"]


def test_sr4j_thresholds():
    four = [800.0, 500.0, 400.0, 300.0]
    ms = [250.0, 250.0, 200.0, 100.0 + EPS]  # MJsum = 800 + EPS
    base = event(four, etas=[0.0, 1.4 - EPS, 0.5, -0.5], ms=ms)
    assert base["sr4j"] and base["psr"] and not base["sr5j"]
    # MJsum just below 800.
    assert not event(four, etas=[0.0, 1.4 - EPS, 0.5, -0.5],
                     ms=[250.0, 250.0, 200.0, 100.0 - EPS])["psr"]
    # |delta-eta_12| just above 1.4 (sign does not matter).
    assert not event(four, etas=[0.7, -0.7 - 2 * EPS, 0.5, -0.5], ms=ms)["psr"]
    assert event(four, etas=[-0.7, 0.7 - 2 * EPS, 0.5, -0.5], ms=ms)["psr"]
    # Three jets never pass, whatever the mass.
    assert not event(four[:3], ms=[900.0, 900.0, 900.0])["psr"]
    # The baseline is part of the signal region: leading jet at exactly 440 fails.
    assert not event([440.0, 430.0, 420.0, 410.0], ms=[300.0] * 4)["psr"]


def test_sr5j_thresholds_and_the_four_jet_mass_sum():
    five = [800.0, 500.0, 400.0, 300.0, 250.0]
    ev = event(five, ms=[150.0, 150.0, 150.0, 150.0 + EPS, 500.0])
    # MJsum sums the 4 leading jets only: 600 + EPS, the fifth jet's 500 GeV is not in it.
    assert ev["msum"] == pytest.approx(600.0 + EPS)
    assert ev["sr5j"] and ev["psr"] and not ev["sr4j"]
    assert not event(five, ms=[150.0, 150.0, 150.0, 150.0 - EPS, 500.0])["psr"]
    # The same masses with only 4 jets need 800 GeV: fails.
    assert not event(five[:4], ms=[150.0, 150.0, 150.0, 150.0 + EPS])["psr"]
    # Five jets above 800 pass both regions.
    ev = event(five, ms=[250.0] * 5)
    assert ev["sr4j"] and ev["sr5j"] and ev["psr"]
    # delta-eta cut applies to SR5J too.
    assert not event(five, etas=[0.0, 1.4 + EPS, 0.1, 0.2, 0.3], ms=[250.0] * 5)["psr"]


def test_leading_jets_are_found_by_pt_not_by_input_order():
    # Input order scrambled: leading two are the 900 and 700 GeV jets at eta 1.0 and -0.3.
    ev = cuts.evaluate_event(np.array([300.0, 900.0, 250.0, 700.0]),
                             np.array([1.9, 1.0, -1.9, -0.3]),
                             np.array([200.0, 200.0, 200.0, 200.0 + EPS]))
    assert ev["lead_pt"] == 900.0
    assert ev["deta12"] == pytest.approx(1.3)
    assert ev["ht"] == pytest.approx(2150.0)
    assert ev["psr"]


def test_features_of_sparse_events():
    none = event([])
    assert none["njet"] == 0 and none["lead_pt"] == 0.0 and np.isnan(none["deta12"])
    assert none["msum"] == 0.0 and not none["baseline"]
    one = event([500.0])
    assert one["njet"] == 1 and np.isnan(one["deta12"]) and not one["psr"]


def test_vectorised_cuts_match_per_event_evaluation():
    g = np.random.default_rng(4)
    rows = []
    for _ in range(300):
        n = g.integers(0, 8)
        ev = cuts.evaluate_event(g.uniform(150, 1200, n), g.uniform(-2.3, 2.3, n),
                                 g.uniform(0, 400, n))
        rows.append(ev)
    flags = cuts.rpv_cuts([r["njet"] for r in rows], [r["lead_pt"] for r in rows],
                          [r["deta12"] for r in rows], [r["msum"] for r in rows])
    for name in ("baseline", "sr4j", "sr5j", "psr"):
        np.testing.assert_array_equal(flags[name], [r[name] for r in rows])
    assert 0 < flags["psr"].sum() < flags["baseline"].sum() < len(rows)


def test_cut_flow_efficiencies_weighted_and_unweighted():
    njet = np.array([5, 4, 2, 5])
    lead = np.array([900.0, 900.0, 900.0, 900.0])
    deta = np.array([0.1, 0.1, 0.1, 0.1])
    msum = np.array([700.0, 700.0, 100.0, 700.0])
    label = np.array([1, 1, 0, 0])
    w = np.array([1.0, 3.0, 1.0, 1.0])
    flow = cuts.cut_flow(njet, lead, deta, msum, label, w)
    assert flow["signal"]["psr"] == (0.5, 0.25)   # the 5-jet event passes, weight 1 of 4
    assert flow["signal"]["baseline"] == (1.0, 1.0)
    assert flow["background"]["psr"] == (0.5, 0.5)
