"""Large-R jets with FastJet (`import fastjet`, the scikit-hep bindings of FastJet 3).

The RPV multijet search uses anti-kT jets of radius R = 1.0 with pT > 200 GeV and |eta| < 2.0
(science-facts 1.2, from sparticlesteve/atlasdl physics_selections.py). They are clustered here on
the calorimeter towers of `engine.data.hep.detector`, each taken as a massless four-vector of the
tower energy pointing at the tower, as Delphes' FatJet collection is built from towers. Jets are
not groomed: the Delphes FatJet PT and Mass read by the NERSC converter are ungroomed.
"""
import os
import sys

import numpy as np

from ...errors import CremaError

#: Large-R jet definition and selection (ATLAS RPV multijet search, via atlasdl).
FATJET_RADIUS = 1.0
FATJET_PT_MIN = 200.0
FATJET_ETA_MAX = 2.0

_banner_silenced = False


def _fastjet():
    try:
        import fastjet
    except ImportError as exc:
        raise CremaError("the HEP generator needs FastJet's Python bindings: pip install fastjet") \
            from exc
    return fastjet


def _silence_banner(fastjet):
    """FastJet prints its banner on stdout (C++ cout) at the first clustering of a process; run
    one tiny clustering with fd 1 pointed at /dev/null so that generator output stays clean."""
    global _banner_silenced
    if _banner_silenced:
        return
    _banner_silenced = True
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            cs = fastjet.ClusterSequence([fastjet.PseudoJet(1.0, 0.0, 0.0, 1.0)],
                                         fastjet.JetDefinition(fastjet.antikt_algorithm, 0.4))
            cs.inclusive_jets(0.0)
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def cluster(e, eta, phi, radius=FATJET_RADIUS, pt_min=FATJET_PT_MIN, eta_max=FATJET_ETA_MAX):
    """Anti-kT jets of `radius` from massless inputs (energy, eta, phi) -> float64 array
    (n_jets, 4) of (pT, eta, phi, mass) sorted by decreasing pT, keeping pT > pt_min and
    |eta| < eta_max (pseudorapidity of the jet)."""
    fastjet = _fastjet()
    _silence_banner(fastjet)
    e = np.asarray(e, dtype=np.float64)
    eta = np.asarray(eta, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    if e.size == 0:
        return np.zeros((0, 4))
    pt = e / np.cosh(eta)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    inputs = [fastjet.PseudoJet(a, b, c, d)
              for a, b, c, d in zip(px.tolist(), py.tolist(), pz.tolist(), e.tolist())]
    seq = fastjet.ClusterSequence(inputs, fastjet.JetDefinition(fastjet.antikt_algorithm,
                                                                float(radius)))
    jets = [(j.pt(), j.eta(), j.phi_std(), j.m()) for j in seq.inclusive_jets(float(pt_min))]
    if not jets:
        return np.zeros((0, 4))
    out = np.array(jets, dtype=np.float64)
    # FastJet's m() is -sqrt(-m^2) when rounding leaves m^2 slightly negative: a mass is >= 0.
    out[:, 3] = np.nan_to_num(np.maximum(out[:, 3], 0.0))
    out = out[(out[:, 0] > pt_min) & (np.abs(out[:, 1]) < eta_max)]
    return out[np.argsort(-out[:, 0], kind="stable")]
