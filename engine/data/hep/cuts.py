"""The physics baseline of the HEP benchmark: the ATLAS RPV multijet selection on large-R jets,
as pure functions over jet arrays (no generator, detector or file in sight).

Source: sparticlesteve/atlasdl physics_selections.py (science-facts 1.2), itself the ATLAS search
for massive supersymmetric particles in multi-jet final states (gluino -> 3 quarks via lambda''):

- large-R jets: pT > 200 GeV, |eta| < 2.0;
- baseline: at least 3 jets and the leading jet above 440 GeV (trigger plateau);
- MJsum = the summed mass of the (up to) 4 leading jets, |delta-eta_12| = |eta_1 - eta_2| of the
  two leading jets;
- SR4J: >= 4 jets, |delta-eta_12| < 1.4, MJsum > 800 GeV;
- SR5J: >= 5 jets, |delta-eta_12| < 1.4, MJsum > 600 GeV;
- psr ("passes signal region") = baseline AND (SR4J OR SR5J). The signal regions are defined
  inside the baseline (the jet trigger), so the baseline is required too. Since SR4J with 5 or
  more jets is contained in SR5J, psr is the same as atlasdl's is_signal_region_event(): MJsum >
  800 GeV for exactly 4 jets and > 600 GeV for 5 or more.

Every threshold is strict (">" / "<"), as in the source.
"""
import numpy as np

JET_PT_MIN = 200.0
JET_ETA_MAX = 2.0
BASELINE_MIN_JETS = 3
BASELINE_LEAD_PT_MIN = 440.0
DETA12_MAX = 1.4
SR4J_MIN_JETS = 4
SR4J_MSUM_MIN = 800.0
SR5J_MIN_JETS = 5
SR5J_MSUM_MIN = 600.0
#: MJsum sums the masses of this many leading jets.
MSUM_JETS = 4

#: Names of the per-event high-level features, in the order `event_features` returns them.
FEATURES = ("njet", "lead_pt", "deta12", "msum", "ht")


def select_jets(pt, eta, phi=None, m=None):
    """Apply the large-R jet selection and order by decreasing pT. Takes per-jet arrays of one
    event; returns the tuple of the same arrays (those given), selected and sorted."""
    pt = np.asarray(pt, dtype=np.float64)
    eta = np.asarray(eta, dtype=np.float64)
    keep = (pt > JET_PT_MIN) & (np.abs(eta) < JET_ETA_MAX)
    order = np.flatnonzero(keep)[np.argsort(-pt[keep], kind="stable")]
    out = [pt[order], eta[order]]
    for a in (phi, m):
        if a is not None:
            out.append(np.asarray(a, dtype=np.float64)[order])
    return tuple(out)


def event_features(pt, eta, m):
    """High-level features of one event from its *selected*, pT-ordered jets:
    njet, leading-jet pT (0 without jets), |delta-eta_12| (NaN with fewer than 2 jets),
    MJsum (sum of the masses of the up-to-4 leading jets), HT (scalar sum of jet pT)."""
    pt = np.asarray(pt, dtype=np.float64)
    eta = np.asarray(eta, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    n = len(pt)
    lead = float(pt[0]) if n else 0.0
    deta = float(abs(eta[0] - eta[1])) if n >= 2 else float("nan")
    return {"njet": n, "lead_pt": lead, "deta12": deta,
            "msum": float(m[:MSUM_JETS].sum()), "ht": float(pt.sum())}


def rpv_cuts(njet, lead_pt, deta12, msum):
    """The selection over arrays of events (or scalars): returns a dict of boolean arrays
    baseline, sr4j, sr5j, psr. A NaN deta12 (fewer than 2 jets) fails the delta-eta cut."""
    njet = np.asarray(njet)
    lead_pt = np.asarray(lead_pt, dtype=np.float64)
    deta12 = np.asarray(deta12, dtype=np.float64)
    msum = np.asarray(msum, dtype=np.float64)
    baseline = (njet >= BASELINE_MIN_JETS) & (lead_pt > BASELINE_LEAD_PT_MIN)
    with np.errstate(invalid="ignore"):
        central = np.abs(deta12) < DETA12_MAX  # NaN compares False
    sr4j = baseline & (njet >= SR4J_MIN_JETS) & central & (msum > SR4J_MSUM_MIN)
    sr5j = baseline & (njet >= SR5J_MIN_JETS) & central & (msum > SR5J_MSUM_MIN)
    return {"baseline": baseline, "sr4j": sr4j, "sr5j": sr5j, "psr": sr4j | sr5j}


def evaluate_event(pt, eta, m):
    """Select one event's jets (any order, unselected), then return its features and cut flags
    (plain Python values): the whole selection on a hand-built event."""
    spt, seta, sm = select_jets(pt, eta, m=m)
    feats = event_features(spt, seta, sm)
    flags = rpv_cuts(feats["njet"], feats["lead_pt"], feats["deta12"], feats["msum"])
    feats.update({k: bool(v) for k, v in flags.items()})
    return feats


def cut_flow(njet, lead_pt, deta12, msum, label, weight=None):
    """Efficiencies of baseline, SR4J, SR5J and psr for signal (label 1) and background (label 0),
    unweighted and (if `weight` is given) weighted: {class: {cut: (eff, weighted_eff)}}."""
    flags = rpv_cuts(njet, lead_pt, deta12, msum)
    label = np.asarray(label)
    w = np.ones(label.shape) if weight is None else np.asarray(weight, dtype=np.float64)
    out = {}
    for name, cls in (("signal", 1), ("background", 0)):
        sel = label == cls
        n, wsum = int(sel.sum()), float(w[sel].sum())
        out[name] = {cut: (float(f[sel].mean()) if n else float("nan"),
                           float(w[sel & f].sum() / wsum) if wsum > 0 else float("nan"))
                     for cut, f in flags.items()}
    return out
