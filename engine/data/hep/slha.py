"""The SUSY spectrum Pythia 8 needs for the RPV gluino signal, written as SLHA text.

Pythia 8 has no spectrum calculator: SUSY processes run only after an SLHA spectrum has been read
(Pythia 8 manual, "SUSY Les Houches Accord" page). This module writes a simplified-model spectrum:
every sparticle except the gluino (and, in the cascade model, the lightest neutralino) is put at
``HEAVY_MASS`` so that it decouples from gluino-pair production and decays, and the gluino decay is
given by an SLHA DECAY table, which Pythia uses in place of its internal widths
(``SLHA:useDecayTable = on``, the default).

Two signal models:

``direct`` (default)
    g~ -> u d s and its charge conjugate, 50 % each: the baryon-number-violating UDD coupling
    lambda''_{112} (SLHA indices: u-type generation 1, d-type generations 1 and 2) through a
    decoupled, off-shell squark. Gluino pairs give 6-quark final states.
``cascade``
    g~ -> q qbar chi~0_1 (q = u, d, s, c, equal shares) through decoupled squarks, then
    chi~0_1 -> u d s / ubar dbar sbar (50 % each, the neutralino is Majorana) via the same
    lambda''_{112}: 10-quark final states. This is the topology of the "RPV10_1400_850" sample
    (m_gluino = 1400 GeV, m_neutralino = 850 GeV) used by the NERSC HEP-CNN data
    (sparticlesteve/atlasdl data/cross_sections.txt).

Why MODSEL 4 (R-parity violation) is left at 0: with it Pythia expects the SLHA2 RPV mixing
blocks (RVNMIX, RVUMIX, RVVMIX, RVHMIX, RVAMIX, RVLMIX, USQMIX, DSQMIX) and, given them, warns that
it does not support slepton-Higgs mixing (tried with Pythia 8.317); and with a DECAY table those
couplings would not change anything generated here: the gluino and neutralino decays come from
the table, and every other sparticle is too heavy to be produced. The RVLAMUDD block is
still written, for the record of which coupling the decay table stands for.
"""

#: Mass (GeV) of every sparticle that should play no role: 5 TeV squarks make the t-channel squark
#: exchange in q qbar -> g~ g~ negligible and put squark pair production out of reach at 13 TeV.
HEAVY_MASS = 5000.0

#: Gluino mass (GeV) of the "Deep Learning at 15PF" HEP benchmark (RPV10_1400_850).
GLUINO_MASS = 1400.0
#: Neutralino mass (GeV) of the same benchmark, used by the cascade model.
NEUTRALINO_MASS = 850.0

#: Total widths (GeV) written in the DECAY tables. The physical value depends on lambda'' and on
#: the squark masses; any width above ~1e-13 GeV means a prompt decay (c*tau < 1 mm), which is the
#: assumption of the ATLAS RPV multijet search. The value only sets the Breit-Wigner line shape,
#: so it is kept far below the detector resolution.
GLUINO_WIDTH = 1.0e-2
NEUTRALINO_WIDTH = 1.0e-2

# PDG codes (PDG Monte Carlo numbering scheme).
GLUINO = 1000021
NEUTRALINO1 = 1000022
_SQUARKS = (1000001, 1000002, 1000003, 1000004, 1000005, 1000006,
            2000001, 2000002, 2000003, 2000004, 2000005, 2000006)
_SLEPTONS = (1000011, 1000012, 1000013, 1000014, 1000015, 1000016,
             2000011, 2000013, 2000015)

# Standard-model inputs (SMINPUTS, SLHA1 numbering). PDG 2022 values: 1/alpha_em(MZ) MSbar,
# G_F, alpha_s(MZ), MZ pole, mb(mb) MSbar, mt pole, mtau pole.
_SMINPUTS = ((1, 1.279520e+02), (2, 1.166379e-05), (3, 1.180000e-01), (4, 9.118760e+01),
             (5, 4.180000e+00), (6, 1.725000e+02), (7, 1.776860e+00))

# Running gauge couplings for the GAUGE block and the Higgs vev for HMIX 3. Pythia's SUSY couplings
# derive sin^2(theta_W) from g', g and v (CoupSUSY::initSUSY); these are chosen so that
# g v / 2 = mW = 80.38 GeV and sqrt(g^2 + g'^2) v / 2 = mZ = 91.19 GeV, with v = 246.22 GeV
# (v = (sqrt(2) G_F)^(-1/2)).
_VEV = 246.22
_G2 = 2.0 * 80.38 / _VEV
_G1 = ((2.0 * 91.1876 / _VEV) ** 2 - _G2 ** 2) ** 0.5
_TAN_BETA = 10.0


def _matrix(name, n):
    """An n x n identity mixing matrix: gauge eigenstates are mass eigenstates, which is enough
    for heavy, unproduced electroweakinos and sfermions (Pythia checks unitarity only)."""
    rows = [f"BLOCK {name}"]
    for i in range(1, n + 1):
        for j in range(1, n + 1):
            rows.append(f"  {i:2d} {j:2d}   {1.0 if i == j else 0.0: .8e}")
    return rows


def spectrum(model="direct", gluino_mass=GLUINO_MASS, neutralino_mass=NEUTRALINO_MASS,
             heavy_mass=HEAVY_MASS):
    """SLHA1 text for Pythia's ``SLHA:file``: the decoupled spectrum plus the RPV DECAY tables of
    `model` ("direct" or "cascade", see the module docstring)."""
    if model not in ("direct", "cascade"):
        raise ValueError(f"unknown signal model '{model}' (known: direct, cascade)")
    gluino_mass = float(gluino_mass)
    heavy_mass = float(heavy_mass)
    if model == "cascade" and not 0.0 < neutralino_mass < gluino_mass - 10.0:
        raise ValueError(f"the cascade model needs 0 < m(neutralino) < m(gluino): got "
                         f"{neutralino_mass} and {gluino_mass} GeV")
    if heavy_mass <= gluino_mass:
        raise ValueError(f"decoupled sparticles ({heavy_mass} GeV) must be heavier than the "
                         f"gluino ({gluino_mass} GeV)")

    masses = {code: heavy_mass for code in _SQUARKS + _SLEPTONS}
    # Electroweakinos: increasing mass within each sector, as Pythia's mass-ordering check expects.
    masses.update({1000022: heavy_mass, 1000023: heavy_mass + 10.0, 1000025: heavy_mass + 20.0,
                   1000035: heavy_mass + 30.0, 1000024: heavy_mass + 10.0,
                   1000037: heavy_mass + 30.0})
    masses[GLUINO] = gluino_mass
    if model == "cascade":
        masses[NEUTRALINO1] = float(neutralino_mass)
    # Higgs sector: a SM-like h at 125 GeV and the heavy ones decoupled.
    masses.update({25: 125.0, 35: heavy_mass, 36: heavy_mass, 37: heavy_mass})

    out = ["# SLHA1 spectrum generated by crema (engine/data/hep/slha.py): RPV gluino simplified",
           f"# model '{model}', m(gluino) = {gluino_mass} GeV, all other sparticles at "
           f"{heavy_mass} GeV" + (f" except m(chi0_1) = {neutralino_mass} GeV"
                                  if model == "cascade" else "") + ".",
           "BLOCK MODSEL", "    1    0   # general MSSM, low-scale input",
           "BLOCK SMINPUTS"]
    out += [f"  {k:3d}   {v: .8e}" for k, v in _SMINPUTS]
    out += ["BLOCK MINPAR", f"    3   {_TAN_BETA: .8e}   # tan(beta)"]
    out += ["BLOCK MASS"] + [f"  {code:9d}   {m: .8e}" for code, m in sorted(masses.items())]
    out += _matrix("NMIX", 4) + _matrix("UMIX", 2) + _matrix("VMIX", 2)
    out += _matrix("STOPMIX", 2) + _matrix("SBOTMIX", 2) + _matrix("STAUMIX", 2)
    out += ["BLOCK ALPHA", f"   {-1.0 / _TAN_BETA: .8e}   # h-H mixing angle (decoupling limit)"]
    out += ["BLOCK HMIX Q= 1.00000000e+03",
            f"    1   {heavy_mass: .8e}   # mu",
            f"    2   {_TAN_BETA: .8e}   # tan(beta)",
            f"    3   {_VEV: .8e}   # v",
            f"    4   {heavy_mass ** 2: .8e}   # m_A^2"]
    out += ["BLOCK GAUGE Q= 1.00000000e+03",
            f"    1   {_G1: .8e}   # g'", f"    2   {_G2: .8e}   # g",
            f"    3   {1.06: .8e}   # g3 (only its presence matters: SigmaSUSY uses alpha_s)"]
    out += ["BLOCK MSOFT Q= 1.00000000e+03",
            f"    1   {masses[1000022]: .8e}   # M1", f"    2   {masses[1000024]: .8e}   # M2",
            f"    3   {gluino_mass: .8e}   # M3"]
    out += [f"   {k:2d}   {heavy_mass: .8e}" for k in (31, 32, 33, 34, 35, 36, 41, 42, 43, 44, 45,
                                                      46, 47, 48, 49)]
    out += ["BLOCK RVLAMUDD   # for the record: Pythia reads it only with MODSEL 4 = 1",
            "    1    1    2   1.00000000e-02   # lambda''_112: u d s"]

    if model == "direct":
        out += [f"DECAY {GLUINO}   {GLUINO_WIDTH: .8e}   # gluino -> u d s via lambda''_112",
                "    5.00000000e-01   3     2     1     3",
                "    5.00000000e-01   3    -2    -1    -3"]
    else:
        out += [f"DECAY {GLUINO}   {GLUINO_WIDTH: .8e}   # gluino -> q qbar chi0_1 "
                "(off-shell squarks)"]
        for q in (1, 2, 3, 4):
            out.append(f"    2.50000000e-01   3    {NEUTRALINO1}     {q}    {-q}")
        out += [f"DECAY {NEUTRALINO1}   {NEUTRALINO_WIDTH: .8e}   # chi0_1 -> u d s "
                "via lambda''_112",
                "    5.00000000e-01   3     2     1     3",
                "    5.00000000e-01   3    -2    -1    -3"]
    return "\n".join(out) + "\n"
