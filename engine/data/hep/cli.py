"""``crema data hep``: generate the HEP benchmark data set (see `engine.data.hep`).

Also runnable as ``python -m engine.data.hep ...``. Example::

    crema data hep --out data/hep --signal 2000 --background 2000 --size 64 --size 224 \\
        --seed 1 --workers 8 --pileup 0 --split train=0.7,val=0.1,test=0.2

Under MPI (``mpirun -n 16 crema data hep ...``) every rank generates its share of the blocks and
rank 0 writes the files; --workers is then ignored (one process per rank).
"""
import argparse
import json
import os
import sys

from ...errors import CremaError
from . import events, pipeline


def _floats(text):
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got '{text}'") from None


def build_parser(prog="crema data hep"):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Generate RPV-SUSY multijet signal and QCD multijet background events with "
                    "Pythia 8, pass them through an ATLAS-like fast detector, cluster large-R jets "
                    "with FastJet, apply the ATLAS RPV multijet selection and write calorimeter "
                    "images (energy, EM energy, tracks) to HDF5 (OUT/<size>/<split>.h5).")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--signal", type=int, required=True, metavar="N",
                   help="signal events to keep (after the preselection)")
    p.add_argument("--background", type=int, required=True, metavar="N",
                   help="QCD background events to keep, shared equally between the p^T_hat slices")
    p.add_argument("--size", type=int, action="append", metavar="PIXELS",
                   help="image size (square, x = phi, y = eta); repeat for several (default 64)")
    p.add_argument("--seed", type=int, default=0, help="base random seed (default 0)")
    p.add_argument("--workers", type=int, default=1, metavar="K",
                   help="worker processes (default 1); results do not depend on it")
    p.add_argument("--pileup", type=float, default=0.0, metavar="MU",
                   help="mean number of overlaid minimum-bias events (Poisson; default 0)")
    p.add_argument("--split", default="train=0.7,val=0.1,test=0.2",
                   help="split fractions (default train=0.7,val=0.1,test=0.2)")
    p.add_argument("--block-size", type=int, default=pipeline.DEFAULT_BLOCK_SIZE, metavar="N",
                   help="events per work unit; the seed of each block depends on its index, so "
                        "changing it changes the events (default %(default)s)")
    p.add_argument("--preselection", choices=pipeline.PRESELECTIONS, default="baseline",
                   help="events kept: ATLAS baseline (>= 3 large-R jets, leading > 440 GeV; "
                        "default), trigger (leading jet > 440 GeV) or none")
    p.add_argument("--pthat-slices", type=_floats,
                   default=list(events.DEFAULT_PTHAT_EDGES), metavar="E1,E2,...",
                   help="lower edges (GeV) of the QCD p^T_hat slices, the last one open "
                        "(default %s)" % ",".join(str(int(e)) for e in events.DEFAULT_PTHAT_EDGES))
    p.add_argument("--slice-fractions", type=_floats, default=None, metavar="F1,F2,...",
                   help="share of the background events per slice (default: equal)")
    p.add_argument("--signal-model", choices=("direct", "cascade"), default="direct",
                   help="gluino -> u d s (direct, default) or gluino -> q qbar chi0_1, "
                        "chi0_1 -> u d s (cascade)")
    p.add_argument("--gluino-mass", type=float, default=1400.0, help="GeV (default 1400)")
    p.add_argument("--neutralino-mass", type=float, default=850.0,
                   help="GeV, cascade model only (default 850)")
    p.add_argument("--signal-xsec-pb", type=float, default=None,
                   help="signal cross section in pb replacing Pythia's LO value")
    p.add_argument("--no-normalize", action="store_true",
                   help="store raw images (GeV, counts) instead of dividing each channel by its "
                        "training maximum (the maxima are stored either way)")
    p.add_argument("--mpi", choices=("auto", "on", "off"), default="auto",
                   help="use MPI when launched under it (default auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p


def _report(paths, out=None):
    out = out or sys.stdout
    with open(paths["meta"]) as fh:
        meta = json.load(fh)
    t = meta["timing"]
    rows = ", ".join(f"{k} {v}" for k, v in meta["rows"].items())
    print(f"wrote {rows} events at image size(s) "
          + ", ".join(str(s) for s in meta["config"]["sizes"])
          + f" to {os.path.dirname(paths['meta'])}", file=out)
    print(f"timing: {t['wall_s']:.1f} s wall with {t['workers']} process(es); per process "
          f"(per CPU second) {t['accepted_per_s_per_process']:.2f} kept and "
          f"{t['generated_per_s_per_process']:.2f} generated events/s", file=out)
    for name, p in meta["processes"].items():
        print(f"  {name:28s} sigma {p['sigma_pb']:.4g} pb, kept {p['n_accepted']} of "
              f"{p['n_generated']} ({100 * p['acceptance']:.1f} %), "
              f"{p['generated_per_s']:.1f} generated/s per process", file=out)
    for name, c in meta["classes"].items():
        eff = c["efficiency"]
        weff = c["weighted_efficiency"]
        print(f"  {name:10s} n={c['n']} <njet>={c['mean_njet']:.2f} "
              f"(weighted {c['weighted_mean_njet']:.2f}) <MJsum>={c['mean_msum']:.0f} GeV; "
              f"baseline {100 * eff['baseline']:.1f} %, SR4J {100 * eff['sr4j']:.1f} %, "
              f"SR5J {100 * eff['sr5j']:.1f} %, psr {100 * eff['psr']:.2f} % "
              f"(weighted psr {100 * weff['psr']:.3g} %)", file=out)


def main(argv=None, prog="crema data hep"):
    """Entry point: returns 0 on success, 2 on bad arguments or a generation error."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        split = pipeline.parse_split(args.split)
        paths = pipeline.generate(
            out=args.out, n_signal=args.signal, n_background=args.background,
            sizes=args.size or [64], seed=args.seed, workers=args.workers, pileup=args.pileup,
            split=split, block_size=args.block_size, preselection=args.preselection,
            pthat_edges=args.pthat_slices, slice_fractions=args.slice_fractions,
            signal_model=args.signal_model, gluino_mass=args.gluino_mass,
            neutralino_mass=args.neutralino_mass, signal_xsec_pb=args.signal_xsec_pb,
            normalize=not args.no_normalize, progress=not args.quiet, mpi=args.mpi)
    except CremaError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet and paths is not None and _is_root(args.mpi):
        _report(paths)
    return 0


def _is_root(mode):
    comm = pipeline._mpi_comm(mode)
    return comm is None or comm.Get_rank() == 0


if __name__ == "__main__":
    sys.exit(main())
