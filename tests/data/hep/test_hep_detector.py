"""The fast detector: resolutions, thresholds, helix propagation, tracking efficiency, binning and
energy bookkeeping of the images, on synthetic particles (no event generator needed)."""
import numpy as np
import pytest

from engine.data.hep import detector as D


def particles(ids, pt, eta, phi, charge=None, mass=0.0):
    ids = np.asarray(ids, np.int32)
    pt, eta, phi = (np.broadcast_to(np.asarray(a, float), ids.shape) for a in (pt, eta, phi))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(px ** 2 + py ** 2 + pz ** 2 + mass ** 2)
    if charge is None:
        charge = np.zeros(ids.shape)
    return {"id": ids, "px": px, "py": py, "pz": pz, "e": e,
            "charge": np.broadcast_to(np.asarray(charge, float), ids.shape).copy()}


@pytest.mark.parametrize("energy", [5.0, 50.0, 500.0])
@pytest.mark.parametrize("kind", ["ecal", "hcal_central", "hcal_forward"])
def test_lognormal_smearing_has_the_stated_mean_and_resolution(kind, energy):
    res, eta = {"ecal": (D.ecal_resolution, 0.5), "hcal_central": (D.hcal_resolution, 0.5),
                "hcal_forward": (D.hcal_resolution, 2.0)}[kind]
    sigma = float(res(energy, eta))
    x = D.lognormal_smear(np.full(200_000, energy), np.full(200_000, sigma),
                          np.random.default_rng(1))
    assert (x > 0).all()
    # 200k draws: the mean is known to sigma/sqrt(n) ~ 0.2 % of sigma, the std to ~0.5 % of sigma
    # for a near-Gaussian (a bit more for the skewed low-energy HCAL): 1 %/3 % tolerances.
    assert x.mean() == pytest.approx(energy, abs=0.01 * sigma)
    assert x.std() == pytest.approx(sigma, rel=0.03)


def test_resolution_formulas_are_the_delphes_atlas_card():
    # ECAL 10.1 %/sqrt(E) (+) 0.17 %: at 100 GeV, sqrt(0.17^2 + 1.01^2) % = 1.024 %.
    assert D.ecal_resolution(100.0, 0.0) / 100.0 == pytest.approx(np.hypot(0.0017, 0.0101))
    # HCAL |eta| <= 1.7: 52.05 %/sqrt(E) (+) 3.02 % (+) 1.59 GeV.
    assert D.hcal_resolution(100.0, 1.7) == pytest.approx(
        np.sqrt((0.0302 * 100) ** 2 + 0.5205 ** 2 * 100 + 1.59 ** 2))
    assert D.hcal_resolution(100.0, 1.71) == pytest.approx(np.sqrt(5.0 ** 2 + 0.706 ** 2 * 100))


def test_single_photons_reconstruct_with_the_ecal_resolution():
    det = D.Detector()
    rng = np.random.default_rng(7)
    e_true = 100.0
    n = 3000
    reco = np.empty(n)
    for i in range(n):
        r = det.simulate(particles([22], e_true / np.cosh(0.3), 0.3, 1.0), rng)
        assert r.tower_em.all() and len(r.tower_e) == 1
        reco[i] = r.tower_e.sum()
    sigma = float(D.ecal_resolution(e_true, 0.3))
    assert reco.mean() == pytest.approx(e_true, abs=4 * sigma / np.sqrt(n))
    assert reco.std() == pytest.approx(sigma, rel=0.06)


def test_hcal_thresholds_drop_small_deposits():
    det = D.Detector()
    rng = np.random.default_rng(3)
    # A 1.5 GeV neutron: sigma ~ 1.7 GeV with the 1.59 GeV noise term, 2 sigma is more than the
    # energy, so the tower survives only on upward fluctuations (>= 2 sigma ~ 3.4 GeV).
    kept = [det.simulate(particles([2112], 1.5, 0.0, 0.0, mass=0.0), rng).tower_e
            for _ in range(2000)]
    frac = np.mean([len(k) > 0 for k in kept])
    assert 0.0 < frac < 0.25
    assert min(k.min() for k in kept if len(k)) >= 2 * D.hcal_resolution(1.5, 0.0)


def test_energy_split_and_invisible_particles():
    det = D.Detector(smear=False)
    rng = np.random.default_rng(0)
    # photon 50, K0S 100 (30 % EM), neutron 40, neutrino 70, muon 80 (charged: a track, no energy)
    p = particles([22, 310, 2112, 12, 13], [50.0, 100.0, 40.0, 70.0, 80.0],
                  [0.1, -0.4, 1.0, 0.0, 0.5], [0.5, -1.0, 2.0, 0.0, -2.5],
                  charge=[0, 0, 0, 0, -1])
    r = det.simulate(p, rng)
    e = p["e"]
    assert r.tower_e[r.tower_em].sum() == pytest.approx(e[0] + 0.3 * e[1])
    assert r.tower_e[~r.tower_em].sum() == pytest.approx(0.7 * e[1] + e[2])
    assert len(r.track_pt) == 1 and r.track_pt[0] == pytest.approx(80.0)


def test_images_hold_the_deposited_energy():
    rng = np.random.default_rng(11)
    n = 400
    ids = rng.choice([22, 2112, 211, -211, 11, 130], n)
    charge = np.where(ids == 211, 1.0, np.where(ids == -211, -1.0, np.where(ids == 11, -1.0, 0.0)))
    p = particles(ids, rng.uniform(2.0, 80.0, n), rng.uniform(-2.3, 2.3, n),
                  rng.uniform(-np.pi, np.pi, n), charge=charge)
    # Perfect calorimeter: every visible particle lands in the window (|eta| < 2.3 stays inside
    # 2.5 after bending at these momenta), so the image sums to the particles' energy.
    r = D.Detector(smear=False).simulate(p, rng)
    for size in (64, 224):
        img = r.image(size)
        assert img.shape == (3, size, size) and img.dtype == np.float32
        assert img[0].sum(dtype=np.float64) == pytest.approx(p["e"].sum(), rel=1e-5)
        em = np.isin(np.abs(ids), [11, 22])
        assert img[1].sum(dtype=np.float64) == pytest.approx(p["e"][em].sum(), rel=1e-5)
        assert img[2].sum() == np.count_nonzero(charge)
    # Realistic detector: the image holds exactly the towers inside |eta| < 2.5.
    r = D.Detector().simulate(p, rng)
    inside = np.abs(r.tower_eta) < 2.5
    img = r.image(64)
    assert img[0].sum(dtype=np.float64) == pytest.approx(r.tower_e[inside].sum(), rel=1e-5)
    assert img[1].sum(dtype=np.float64) == pytest.approx(
        r.tower_e[inside & r.tower_em].sum(), rel=1e-5)


def test_phi_binning_is_periodic():
    g = np.random.default_rng(2)
    eta = g.uniform(-2.4, 2.4, 1000)
    phi = g.uniform(-np.pi, np.pi, 1000)
    w = g.uniform(0, 1, 1000)
    base = D.bin_eta_phi(eta, phi, w, 64, 64)
    for shift in (2 * np.pi, -2 * np.pi, 6 * np.pi):
        np.testing.assert_array_equal(D.bin_eta_phi(eta, phi + shift, w, 64, 64), base)
    # x = phi: -pi and +pi are the same edge, first column; just below +pi is the last column.
    edge = D.bin_eta_phi([0.0, 0.0, 0.0], [-np.pi, np.pi, np.pi - 1e-9], [1.0, 2.0, 4.0], 8, 8)
    assert edge[4, 0] == 3.0 and edge[4, 7] == 4.0
    # y = eta: entries outside [-2.5, 2.5] are dropped, -2.5 is the first row.
    rows = D.bin_eta_phi([-2.5, 2.5, 2.6, -3.0], [0.0] * 4, 1.0, 10, 4)
    assert rows.sum() == 1 and rows[0].sum() == 1


def test_image_axes_are_eta_rows_and_phi_columns():
    r = D.Response(tower_e=np.array([10.0]), tower_eta=np.array([2.4]),
                   tower_phi=np.array([-3.1]), tower_em=np.array([True]),
                   track_pt=np.array([5.0]), track_eta=np.array([-2.4]),
                   track_phi=np.array([3.1]))
    img = r.image(16)
    assert img[0, 15, 0] == 10.0 and img[1, 15, 0] == 10.0   # high eta = last row, phi -pi = col 0
    assert img[2, 0, 15] == 1.0


def test_helix_propagation():
    # Neutral: straight.
    e, p, ok = D.propagate_to_calorimeter([10.0], [1.0], [0.5], [0.0])
    assert ok[0] and e[0] == 1.0 and p[0] == 0.5
    # 0.2 GeV pion at eta 0: diameter 2 rho = 0.67 m < 1.15 m, never leaves the tracker.
    assert not D.propagate_to_calorimeter([0.2], [0.0], [0.0], [1.0])[2][0]
    # ... but at eta 3 it reaches the end cap.
    assert D.propagate_to_calorimeter([0.2], [3.0], [0.0], [1.0])[2][0]
    # 100 GeV: bending angle of the crossing point asin(0.2998 * B * R / (2 pT)), opposite signs
    # for opposite charges; positive charges turn clockwise (phi decreases) for Bz > 0.
    expect = np.arcsin(D.C_GEV_PER_TM * 2.0 * 1.15 / (2 * 100.0))
    e, p, ok = D.propagate_to_calorimeter([100.0, 100.0], [0.0, 0.0], [1.0, 1.0], [1.0, -1.0])
    assert ok.all() and e == pytest.approx([0.0, 0.0], abs=1e-12)
    assert p == pytest.approx([1.0 - expect, 1.0 + expect])
    # Crossing phi wraps into [-pi, pi).
    _, p, _ = D.propagate_to_calorimeter([1.0], [0.0], [-3.1], [1.0])
    assert -np.pi <= p[0] < np.pi


def test_tracking_efficiency_and_threshold():
    det = D.Detector()
    rng = np.random.default_rng(5)
    n = 20000
    for eta, eff in ((0.7, 0.95), (2.0, 0.85)):
        r = det.simulate(particles(np.full(n, 211), 5.0, eta, 0.0, charge=1.0), rng)
        assert len(r.track_pt) / n == pytest.approx(eff, abs=4 * np.sqrt(eff * (1 - eff) / n))
    # Below 1 GeV or beyond |eta| = 2.5: no tracks at all.
    r = det.simulate(particles(np.full(100, 211), [0.99] * 50 + [5.0] * 50,
                               [0.0] * 50 + [2.6] * 50, 0.0, charge=1.0), rng)
    assert len(r.track_pt) == 0


def test_same_seed_same_response():
    g = np.random.default_rng(9)
    n = 300
    ids = g.choice([22, 211, 2112], n)
    p = particles(ids, g.uniform(1, 50, n), g.uniform(-3, 3, n), g.uniform(-3, 3, n),
                  charge=(ids == 211).astype(float))
    a = D.Detector().simulate(p, np.random.default_rng(42))
    b = D.Detector().simulate(p, np.random.default_rng(42))
    for f in ("tower_e", "tower_eta", "tower_phi", "track_pt"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    np.testing.assert_array_equal(a.image(64), b.image(64))
