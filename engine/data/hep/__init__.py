"""The HEP workload of "Deep Learning at 15PF" (Kurth et al., arXiv 1708.05256), generated from
scratch: RPV-SUSY multijet signal against QCD multijet background as calorimeter images.

Chain, one module per step:

- `slha`: the SUSY spectrum (gluino 1400 GeV, everything else decoupled) and the RPV decay table;
- `events`: Pythia 8 (``pythia8mc``) processes: gluino pairs, QCD in p^T_hat slices, minimum bias;
- `detector`: ATLAS-like fast detector (Delphes ATLAS card): helix propagation, ECAL/HCAL towers
  with smearing and thresholds, tracks with efficiencies, and the 3-channel images;
- `jets`: anti-kT R = 1.0 large-R jets with FastJet;
- `cuts`: the ATLAS RPV multijet selection (baseline, SR4J, SR5J, psr) as pure functions;
- `writer`: the HDF5 layout (``data``, ``label``, ``weight``, ``normweight``, ``psr``, features),
  atomic two-pass writing, `normalize_channels`, `read`;
- `pipeline`: `generate(...)`, reproducible blocks run by worker processes or MPI ranks;
- `cli`: ``crema data hep`` / ``python -m engine.data.hep``.

Submodules import Pythia, FastJet and h5py only when used, so ``import engine.data.hep`` is cheap.
"""


def generate(*args, **kwargs):
    """Generate the data set and return its paths: see `engine.data.hep.pipeline.generate`
    (imported on call, so that importing this package loads neither Pythia nor h5py)."""
    from .pipeline import generate as _generate
    return _generate(*args, **kwargs)
