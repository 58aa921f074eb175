"""A fast ATLAS-like detector response: calorimeter towers and tracks from final-state particles,
and the 3-channel calorimeter images of the HEP benchmark.

Everything here follows the Delphes ATLAS card (delphes/delphes, cards/delphes_card_ATLAS.tcl),
simplified where noted:

- Magnetic field and tracker volume: Bz = 2 T inside a cylinder of radius 1.15 m and half-length
  3.51 m (card: ParticlePropagator). Charged particles follow helices to the cylinder surface and
  the calorimeter sees them there; neutral particles fly straight.
- ECAL: towers of delta-eta 0.0174 x delta-phi 1 degree (card: ECal EtaPhiBins). Here one uniform
  grid of 368 x 360 cells over |eta| < 3.2 (delta-eta = 6.4/368 = 0.01739).
  Resolution sigma(E) = sqrt((0.0017 E)^2 + 0.101^2 E) for |eta| <= 3.2, i.e. 10.1 %/sqrt(E) (+)
  0.17 % (card: ECal ResolutionFormula).
- HCAL: towers of 0.1 x 10 degrees (card: HCal EtaPhiBins, |eta| <= 2.5); here one uniform grid of
  64 x 36 cells over |eta| < 3.2 (the card's 2.5-2.6 and 2.6-3.3 edge towers are not copied).
  Resolution (card: HCal ResolutionFormula):
  |eta| <= 1.7: sqrt((0.0302 E)^2 + 0.5205^2 E + 1.59^2), i.e. 52 %/sqrt(E) (+) 3 % (+) 1.59 GeV;
  1.7 < |eta| <= 3.2: sqrt((0.05 E)^2 + 0.706^2 E).
- Energy split (card: EnergyFraction): e, gamma, pi0 100 % ECAL; K0S and Lambda 30 % ECAL / 70 %
  HCAL; muons, neutrinos and neutralinos nothing; every other particle 100 % HCAL.
- Tower energies are drawn from a log-normal with mean E and standard deviation sigma(E), as
  Delphes' SimpleCalorimeter does (it keeps energies positive). A tower is kept if its smeared
  energy is at least EnergyMin (0.5 GeV ECAL, 1.0 GeV HCAL) and at least EnergySignificanceMin = 2
  times sigma of its deposited energy (card). With SmearTowerCenter = true (card) a tower's
  position is drawn uniformly inside its cell, which also keeps the fine image binning free of
  the moire pattern that cell centres would print on it.
- The forward calorimeter (3.2 < |eta| < 4.9) is not modelled: large-R jets are used at |eta| < 2
  (R = 1.0 reaches 3.0) and the images cover |eta| < 2.5.
- Tracks (card: *TrackingEfficiency): charged final-state particles with pT > 1 GeV and
  |eta| < 2.5, kept with efficiency 0.95 (|eta| <= 1.5) / 0.85 (1.5 < |eta| <= 2.5) for hadrons,
  0.95 / 0.83 for electrons (0.99 / 0.90 above 100 GeV), 0.99 / 0.98 for muons. A track's
  (eta, phi) is its momentum direction at the vertex, as Delphes' Track.Eta/Phi used by the NERSC
  converter. Track momenta are not smeared: the images only count tracks.

Images (NERSC/hep_cnn_benchmark layout): channels (0) total calorimeter energy ECAL + HCAL, (1) EM
(ECAL) energy, (2) number of tracks; x = phi in [-pi, pi) (periodic), y = eta in [-2.5, 2.5];
energies in GeV.
"""
from dataclasses import dataclass

import numpy as np

#: c in GeV / (T m) per unit charge: a track of transverse momentum pT (GeV) and charge q (e) bends
#: with radius rho = pT / (C_GEV_PER_TM * |q| * B) metres.
C_GEV_PER_TM = 0.299792458

#: Image window in eta (NERSC prepare_data.py; science-facts 1.1).
IMAGE_ETA_RANGE = 2.5

_EM_IDS = np.array([11, 22, 111])
_SPLIT_IDS = np.array([310, 3122])          # K0S, Lambda: 30 % ECAL / 70 % HCAL
_INVISIBLE_IDS = np.array([12, 13, 14, 16])  # neutrinos and muons (minimum ionising)


def ecal_resolution(energy, eta):
    """sigma(E) in GeV of the ECAL (Delphes ATLAS card): 10.1 %/sqrt(E) (+) 0.17 % for
    |eta| <= 3.2, 28.5 %/sqrt(E) (+) 3.5 % beyond."""
    e = np.asarray(energy, dtype=np.float64)
    central = np.abs(eta) <= 3.2
    return np.where(central, np.sqrt((0.0017 * e) ** 2 + 0.101 ** 2 * e),
                    np.sqrt((0.0350 * e) ** 2 + 0.285 ** 2 * e))


def hcal_resolution(energy, eta):
    """sigma(E) in GeV of the HCAL (Delphes ATLAS card): 52.05 %/sqrt(E) (+) 3.02 % (+) 1.59 GeV
    for |eta| <= 1.7; 70.6 %/sqrt(E) (+) 5 % for 1.7 < |eta| <= 3.2; 100 %/sqrt(E) (+) 9.42 %
    beyond."""
    e = np.asarray(energy, dtype=np.float64)
    a = np.abs(eta)
    return np.where(a <= 1.7, np.sqrt((0.0302 * e) ** 2 + 0.5205 ** 2 * e + 1.59 ** 2),
                    np.where(a <= 3.2, np.sqrt((0.0500 * e) ** 2 + 0.706 ** 2 * e),
                             np.sqrt((0.0942 * e) ** 2 + 1.00 ** 2 * e)))


def lognormal_smear(energy, sigma, rng):
    """Draw from the log-normal with mean `energy` and standard deviation `sigma` (elementwise):
    ln X ~ N(mu, s^2) with s^2 = ln(1 + sigma^2/E^2) and mu = ln E - s^2/2."""
    e = np.asarray(energy, dtype=np.float64)
    s2 = np.log1p((np.asarray(sigma, dtype=np.float64) / e) ** 2)
    return np.exp(np.log(e) - 0.5 * s2 + np.sqrt(s2) * rng.standard_normal(e.shape))


def track_efficiency(abs_id, pt, eta):
    """Tracking efficiency for pT > 1 GeV (Delphes ATLAS card, *TrackingEfficiency); 0 beyond
    |eta| = 2.5."""
    a = np.abs(eta)
    barrel = a <= 1.5
    hadron = np.where(barrel, 0.95, 0.85)
    electron = np.where(pt > 100.0, np.where(barrel, 0.99, 0.90), np.where(barrel, 0.95, 0.83))
    muon = np.where(barrel, 0.99, 0.98)
    eff = np.where(abs_id == 11, electron, np.where(abs_id == 13, muon, hadron))
    return np.where(a <= 2.5, eff, 0.0)


def kinematics(px, py, pz):
    """(pT, eta, phi) of momenta; eta is clipped at |eta| = 20 for particles along the beam."""
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(np.where(pt > 0, pz / np.where(pt > 0, pt, 1.0), np.sign(pz) * 1e9))
    return pt, np.clip(eta, -20.0, 20.0), np.arctan2(py, px)


def propagate_to_calorimeter(pt, eta, phi, charge, bz=2.0, radius=1.15, half_length=3.51):
    """Where particles cross the surface of the tracker cylinder (radius, +-half_length) in a
    uniform field bz along +z. Returns (eta_pos, phi_pos, reaches): the pseudorapidity and azimuth
    of the crossing point seen from the origin, and whether the particle gets there at all (a
    charged particle with 2 rho < radius that is too central to reach an end cap curls up inside
    the tracker).

    Helix: after turning by alpha in the transverse plane, the particle is at distance
    r = 2 rho sin(alpha/2) from the axis, in direction phi0 - sign(q) alpha/2 (a positive charge
    turns clockwise seen from +z when bz > 0), and at z = rho alpha sinh(eta).
    """
    pt = np.asarray(pt, dtype=np.float64)
    eta = np.asarray(eta, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    charge = np.asarray(charge, dtype=np.float64)
    eta_pos, phi_pos = eta.copy(), phi.copy()
    reaches = np.ones(pt.shape, dtype=bool)
    sinh_eta = np.sinh(eta)

    neutral = (charge == 0) | (bz == 0)
    # Neutral particles: straight lines. The crossing direction is the momentum direction, but
    # those leaving through the end caps are still inside the calorimeter coverage, so nothing
    # to do.
    c = ~neutral
    if np.any(c):
        rho = pt[c] / (C_GEV_PER_TM * np.abs(charge[c]) * abs(bz))
        sgn = np.sign(charge[c]) * np.sign(bz)
        sh = sinh_eta[c]
        with np.errstate(divide="ignore", invalid="ignore"):
            # Barrel crossing, possible when the helix diameter exceeds the radius.
            can_barrel = 2.0 * rho >= radius
            alpha_b = 2.0 * np.arcsin(np.minimum(radius / (2.0 * rho), 1.0))
            z_b = rho * alpha_b * sh
            barrel = can_barrel & (np.abs(z_b) <= half_length)
            # End-cap crossing otherwise: the transverse arc length is half_length / |sinh eta|.
            alpha_e = np.where(sh != 0, half_length / (rho * np.abs(sh)), np.inf)
            endcap = ~barrel & np.isfinite(alpha_e)
            alpha = np.where(barrel, alpha_b, np.where(endcap, alpha_e, 0.0))
            r = np.where(barrel, radius, 2.0 * rho * np.abs(np.sin(0.5 * alpha)))
            z = np.where(barrel, z_b, np.sign(sh) * half_length)
            ok = (barrel | endcap) & (r > 0)
            eta_c = np.arcsinh(z / np.where(r > 0, r, 1.0))
        phi_c = phi[c] - sgn * 0.5 * alpha
        eta_pos[c] = np.where(ok, eta_c, eta[c])
        phi_pos[c] = np.mod(phi_c + np.pi, 2.0 * np.pi) - np.pi
        reaches[c] = ok
    return eta_pos, phi_pos, reaches


def bin_eta_phi(eta, phi, weights, n_eta, n_phi, eta_range=IMAGE_ETA_RANGE):
    """Histogram (n_eta, n_phi) of `weights` at (eta, phi): rows are eta bins over
    [-eta_range, eta_range] (entries outside are dropped), columns phi bins over [-pi, pi),
    periodic (phi and phi + 2 pi land in the same bin)."""
    eta = np.asarray(eta, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), eta.shape)
    iy = np.floor((eta + eta_range) * (n_eta / (2.0 * eta_range))).astype(np.int64)
    fx = np.mod(phi + np.pi, 2.0 * np.pi) * (n_phi / (2.0 * np.pi))
    # mod() can return exactly 2 pi for tiny negative inputs: fold that onto bin 0 as well.
    ix = np.floor(fx).astype(np.int64) % n_phi
    inside = (iy >= 0) & (iy < n_eta)
    flat = iy[inside] * n_phi + ix[inside]
    return np.bincount(flat, weights=w[inside], minlength=n_eta * n_phi).reshape(n_eta, n_phi)


@dataclass
class Response:
    """The detector's view of one event. Towers: energy (GeV), eta, phi, and `tower_em` (True for
    ECAL towers). Tracks: pT (GeV), eta, phi at the vertex."""
    tower_e: np.ndarray
    tower_eta: np.ndarray
    tower_phi: np.ndarray
    tower_em: np.ndarray
    track_pt: np.ndarray
    track_eta: np.ndarray
    track_phi: np.ndarray

    def image(self, size, eta_range=IMAGE_ETA_RANGE):
        """(3, size, size) float32: total calorimeter energy, EM energy, track count; y = eta,
        x = phi."""
        if isinstance(size, (tuple, list)):
            n_eta, n_phi = (int(s) for s in size)
        else:
            n_eta = n_phi = int(size)
        img = np.empty((3, n_eta, n_phi), dtype=np.float32)
        img[0] = bin_eta_phi(self.tower_eta, self.tower_phi, self.tower_e, n_eta, n_phi, eta_range)
        em = self.tower_em
        img[1] = bin_eta_phi(self.tower_eta[em], self.tower_phi[em], self.tower_e[em], n_eta, n_phi,
                             eta_range)
        img[2] = bin_eta_phi(self.track_eta, self.track_phi, 1.0, n_eta, n_phi, eta_range)
        return img


@dataclass(frozen=True)
class Detector:
    """Detector geometry and response (defaults: Delphes ATLAS card, see the module docstring).
    `smear = False` turns off energy smearing, thresholds, tower-centre smearing and tracking
    inefficiency (a perfect calorimeter; used to check energy bookkeeping)."""
    bz: float = 2.0
    radius: float = 1.15
    half_length: float = 3.51
    eta_max: float = 3.2
    ecal_cells: tuple = (368, 360)
    hcal_cells: tuple = (64, 36)
    ecal_energy_min: float = 0.5
    hcal_energy_min: float = 1.0
    significance_min: float = 2.0
    smear: bool = True
    track_pt_min: float = 1.0
    track_eta_max: float = 2.5

    def _towers(self, eta, phi, energy, cells, resolution, energy_min, rng):
        """Sum deposits per cell, smear, apply thresholds, place each tower in its cell."""
        n_eta, n_phi = cells
        d_eta = 2.0 * self.eta_max / n_eta
        d_phi = 2.0 * np.pi / n_phi
        iy = np.floor((eta + self.eta_max) / d_eta).astype(np.int64)
        ix = np.floor(np.mod(phi + np.pi, 2.0 * np.pi) / d_phi).astype(np.int64) % n_phi
        inside = (iy >= 0) & (iy < n_eta) & (energy > 0)
        flat = iy[inside] * n_phi + ix[inside]
        cell_ids, inverse = np.unique(flat, return_inverse=True)
        e_true = np.bincount(inverse, weights=energy[inside], minlength=len(cell_ids))
        cy, cx = np.divmod(cell_ids, n_phi)
        eta_c = -self.eta_max + (cy + 0.5) * d_eta
        if self.smear:
            sigma = resolution(e_true, eta_c)
            e = lognormal_smear(e_true, sigma, rng)
            keep = (e >= energy_min) & (e >= self.significance_min * sigma)
            e, cy, cx = e[keep], cy[keep], cx[keep]
            u = rng.random((2, len(e)))
        else:
            e = e_true
            u = np.full((2, len(e)), 0.5)
        t_eta = -self.eta_max + (cy + u[0]) * d_eta
        t_phi = -np.pi + (cx + u[1]) * d_phi
        return e, t_eta, t_phi

    def simulate(self, particles, rng):
        """Detector response (`Response`) to one event's final-state particles (a dict of arrays
        id, px, py, pz, e, charge as from `PythiaSource.next`), drawing randomness from `rng`
        (numpy Generator) in a fixed order so that a seed reproduces the event exactly."""
        pid = np.asarray(particles["id"])
        aid = np.abs(pid)
        px, py, pz = particles["px"], particles["py"], particles["pz"]
        energy = np.asarray(particles["e"], dtype=np.float64)
        charge = np.asarray(particles["charge"], dtype=np.float64)
        pt, eta, phi = kinematics(px, py, pz)

        eta_pos, phi_pos, reaches = propagate_to_calorimeter(pt, eta, phi, charge, self.bz,
                                                             self.radius, self.half_length)
        em_frac = np.where(np.isin(aid, _EM_IDS), 1.0, np.where(np.isin(aid, _SPLIT_IDS), 0.3, 0.0))
        invisible = np.isin(aid, _INVISIBLE_IDS) | (aid > 1000000)
        had_frac = np.where(invisible, 0.0, 1.0 - em_frac)
        e_dep = np.where(reaches, energy, 0.0)

        ecal = self._towers(eta_pos, phi_pos, e_dep * em_frac, self.ecal_cells, ecal_resolution,
                            self.ecal_energy_min, rng)
        hcal = self._towers(eta_pos, phi_pos, e_dep * had_frac, self.hcal_cells, hcal_resolution,
                            self.hcal_energy_min, rng)

        cand = (charge != 0) & (pt > self.track_pt_min) & (np.abs(eta) < self.track_eta_max)
        if self.smear:
            eff = track_efficiency(aid[cand], pt[cand], eta[cand])
            found = rng.random(eff.shape) < eff
            sel = np.flatnonzero(cand)[found]
        else:
            sel = np.flatnonzero(cand)

        return Response(
            tower_e=np.concatenate([ecal[0], hcal[0]]),
            tower_eta=np.concatenate([ecal[1], hcal[1]]),
            tower_phi=np.concatenate([ecal[2], hcal[2]]),
            tower_em=np.concatenate([np.ones(len(ecal[0]), bool), np.zeros(len(hcal[0]), bool)]),
            track_pt=pt[sel], track_eta=eta[sel], track_phi=phi[sel])
