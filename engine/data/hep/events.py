"""Monte Carlo events from Pythia 8 (Python bindings `pythia8mc`): the processes of the HEP
benchmark and the final-state particles of each event as NumPy arrays.

Processes (all pp at sqrt(s) = 13 TeV, the LHC Run-2 energy of the ATLAS RPV multijet search):

- signal: gluino pair production (``SUSY:gg2gluinogluino``, ``SUSY:qqbar2gluinogluino``) with the
  R-parity-violating decays of the SLHA spectrum written by `engine.data.hep.slha`;
- background: QCD 2 -> 2 (``HardQCD:all``) in slices of the hard-scattering transverse momentum
  p^T_hat (``PhaseSpace:pTHatMin/Max``), so that the steeply falling spectrum is sampled evenly and
  each slice carries its own cross section (weight = sigma_slice / events generated in the slice,
  the JZ-slice scheme of the ATLAS samples behind the NERSC data);
- pile-up: inelastic non-diffractive minimum-bias events (``SoftQCD:nonDiffractive``).

Particles with a proper lifetime c*tau > 10 mm are left undecayed (``ParticleDecays:limitTau0``,
``tau0Max = 10`` mm/c): the usual generator-level definition of a stable particle at the LHC, which
keeps K0S and Lambda for the calorimeter's energy split (see `engine.data.hep.detector`).
"""
import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np

from ...errors import CremaError
from . import slha

#: Centre-of-mass energy (GeV): LHC Run 2, as in the 13 TeV ATLAS search and the NERSC samples.
ECM = 13000.0

#: Lower edges (GeV) of the default p^T_hat slices of the QCD background; the last slice is open.
#: The selection starts at a leading large-R jet of 440 GeV (`engine.data.hep.cuts`). Pythia's
#: showers for HardQCD start at the hard scale, so every extra emission is softer than p^T_hat;
#: below p^T_hat = 200 GeV a 440 GeV jet (with two more above 200 GeV for the baseline) needs
#: several hard partons merged into one jet, which is negligible next to the 200-400 GeV slice
#: (itself ~40 % of the baseline QCD rate, see `engine.data.hep.pipeline`).
DEFAULT_PTHAT_EDGES = (200.0, 400.0, 700.0, 1000.0, 1500.0)

#: Pythia's Random:seed accepts 0..900 000 000; 0 would mean "seed from the clock".
MAX_PYTHIA_SEED = 900_000_000

#: mb -> pb (Pythia reports cross sections in mb).
MB_TO_PB = 1.0e9

_COMMON_SETTINGS = (
    f"Beams:eCM = {ECM}",
    "Print:quiet = on",          # no banners, listings or statistics on stdout
    "Next:numberCount = 0",      # no "event n" progress lines: tqdm shows progress
    "Next:numberShowEvent = 0",
    "ParticleDecays:limitTau0 = on",
    "ParticleDecays:tau0Max = 10.",
    "Random:setSeed = on",
)


@dataclass(frozen=True)
class Process:
    """One thing Pythia can generate. `code` is stable across runs (it enters the seeds and the
    ``process`` dataset): 0 is the signal, 1 + i the i-th QCD slice, -1 minimum bias."""
    name: str
    code: int
    label: int
    settings: tuple
    slha_text: str = None
    pthat_min: float = 0.0
    pthat_max: float = -1.0  # -1: no upper limit (Pythia's convention)


def signal_process(model="direct", gluino_mass=slha.GLUINO_MASS,
                   neutralino_mass=slha.NEUTRALINO_MASS):
    """Gluino pair production with RPV decays (see `engine.data.hep.slha` for the models)."""
    text = slha.spectrum(model=model, gluino_mass=gluino_mass, neutralino_mass=neutralino_mass)
    settings = ("SUSY:gg2gluinogluino = on", "SUSY:qqbar2gluinogluino = on",
                "SLHA:readFrom = 2", "SLHA:verbose = 0")
    name = f"rpv_gluino_{model}_{int(round(gluino_mass))}"
    if model == "cascade":
        name += f"_{int(round(neutralino_mass))}"
    return Process(name=name, code=0, label=1, settings=settings, slha_text=text)


def qcd_processes(edges=DEFAULT_PTHAT_EDGES):
    """One `Process` per p^T_hat slice [edges[i], edges[i+1]); the last one is open above."""
    edges = [float(e) for e in edges]
    if not edges or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] <= 0:
        raise CremaError(f"p^T_hat slice edges must be positive and increasing, got {edges}")
    out = []
    for i, lo in enumerate(edges):
        hi = edges[i + 1] if i + 1 < len(edges) else -1.0
        name = f"qcd_pthat_{int(lo)}_{int(hi) if hi > 0 else 'inf'}"
        settings = ("HardQCD:all = on", f"PhaseSpace:pTHatMin = {lo}",
                    f"PhaseSpace:pTHatMax = {hi}")
        out.append(Process(name=name, code=1 + i, label=0, settings=settings,
                           pthat_min=lo, pthat_max=hi))
    return out


def minbias_process():
    """Inelastic non-diffractive pp collisions: the bulk of pile-up (diffractive events add
    little transverse energy in the central calorimeter)."""
    return Process(name="minbias", code=-1, label=0, settings=("SoftQCD:nonDiffractive = on",))


def import_pythia():
    try:
        import pythia8mc
    except ImportError as exc:
        raise CremaError("the HEP generator needs Pythia 8's Python bindings: "
                         "pip install pythia8mc==8.317.2") from exc
    return pythia8mc


def pythia_seed(state):
    """Map a 32-bit integer from a SeedSequence onto Pythia's seed range 1..900 000 000."""
    return int(state) % MAX_PYTHIA_SEED + 1


# The fields of one event's final-state particles, as returned by `PythiaSource.next`.
PARTICLE_FIELDS = ("id", "px", "py", "pz", "e", "charge")


def empty_particles():
    return {"id": np.zeros(0, np.int32), "px": np.zeros(0), "py": np.zeros(0),
            "pz": np.zeros(0), "e": np.zeros(0), "charge": np.zeros(0)}


def concat_particles(parts):
    return {k: np.concatenate([p[k] for p in parts]) for k in PARTICLE_FIELDS}


class PythiaSource:
    """One initialised Pythia instance generating `process` from `seed` (1..900 000 000).

    `next()` returns the final-state particles of the next event; `n_generated` counts the events
    Pythia produced (the denominator of the cross-section weight), `sigma_pb()` is Pythia's running
    estimate of the process cross section in pb.
    """

    #: Pythia occasionally fails an event (e.g. in hadronization) and says so by next() = False;
    #: that many failures in a row means the setup is broken, not bad luck.
    MAX_FAILURES_IN_A_ROW = 20

    def __init__(self, process, seed):
        pythia8mc = import_pythia()
        self.process = process
        self.seed = int(seed)
        if not 1 <= self.seed <= MAX_PYTHIA_SEED:
            raise CremaError(f"Pythia seed {seed} outside 1..{MAX_PYTHIA_SEED}")
        self.pythia = pythia8mc.Pythia("", False)  # no banner
        tmpdir = None
        try:
            settings = list(_COMMON_SETTINGS) + [f"Random:seed = {self.seed}"]
            settings += list(process.settings)
            if process.slha_text is not None:
                # Pythia reads SLHA only from a file, once, during init(): a private temp dir
                # keeps parallel workers apart and is removed right after.
                tmpdir = tempfile.mkdtemp(prefix="crema_slha_")
                path = os.path.join(tmpdir, "spectrum.slha")
                with open(path, "w") as fh:
                    fh.write(process.slha_text)
                settings.append(f"SLHA:file = {path}")
            for line in settings:
                if not self.pythia.readString(line):
                    raise CremaError(f"Pythia rejected the setting '{line}' ({process.name})")
            if not self.pythia.init():
                raise CremaError(f"Pythia failed to initialise process {process.name}; rerun with "
                                 "Print:quiet = off to see its messages")
        finally:
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)
        self.n_generated = 0

    def next(self):
        """Generate one event; return its final-state particles as arrays (see PARTICLE_FIELDS)."""
        failures = 0
        while not self.pythia.next():
            failures += 1
            if failures >= self.MAX_FAILURES_IN_A_ROW:
                raise CremaError(f"Pythia failed {failures} events in a row ({self.process.name})")
        self.n_generated += 1
        rows = [(p.id(), p.px(), p.py(), p.pz(), p.e(), p.charge())
                for p in self.pythia.event if p.isFinal()]
        if not rows:
            return empty_particles()
        a = np.array(rows, dtype=np.float64)
        return {"id": a[:, 0].astype(np.int32), "px": a[:, 1], "py": a[:, 2], "pz": a[:, 3],
                "e": a[:, 4], "charge": a[:, 5]}

    def pthat(self):
        """p^T_hat (GeV) of the current event's hard scattering."""
        return float(self.pythia.infoPython().pTHat())

    def sigma_pb(self):
        """Pythia's estimate of the generated cross section so far (pb)."""
        return float(self.pythia.infoPython().sigmaGen()) * MB_TO_PB

    def sigma_err_pb(self):
        return float(self.pythia.infoPython().sigmaErr()) * MB_TO_PB


class PileUp:
    """Overlay of Poisson(mu) minimum-bias events from their own Pythia instance. Only in-time
    pile-up is modelled and all vertices sit at the origin (the ~5 cm luminous region barely moves
    a particle in eta at the calorimeter)."""

    def __init__(self, mu, seed):
        self.mu = float(mu)
        if self.mu < 0:
            raise CremaError(f"pile-up mu must be >= 0, got {mu}")
        self.source = PythiaSource(minbias_process(), seed) if self.mu > 0 else None
        self.n_overlaid = 0

    def overlay(self, particles, rng):
        """`particles` plus k ~ Poisson(mu) minimum-bias events (k drawn from `rng`)."""
        if self.source is None:
            return particles
        k = int(rng.poisson(self.mu))
        if k == 0:
            return particles
        self.n_overlaid += k
        return concat_particles([particles] + [self.source.next() for _ in range(k)])
