"""``crema data climate``: generate a synthetic ExtremeWeather-layout data set (see
engine.data.climate.generator for the physics). Also runnable as ``python -m engine.data.climate``.

Example::

    crema data climate --out data/climate --train 1000 --test 200 --labeled 0.1 --seed 1
"""
import argparse
import os
import sys
import time

from ...errors import CremaError
from . import generator as G
from .pipeline import generate


def _rates(text):
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 4 comma-separated numbers, got '{text}'") \
            from None
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected 4 means (TD,TC,ETC,AR), got '{text}'")
    return values


def build_parser(prog="crema data climate"):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Generate global CAM5-like fields (16 variables in ExtremeWeather order) with "
                    "tropical depressions, tropical cyclones, extratropical cyclones and "
                    "atmospheric rivers, and their boxes, into OUT/train.h5 and OUT/test.h5 "
                    "(ExtremeWeather layout: images, boxes, plus a labeled mask).")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--train", type=int, default=1000, metavar="N", help="training images (1000)")
    p.add_argument("--test", type=int, default=200, metavar="N", help="test images (200)")
    p.add_argument("--labeled", type=float, default=0.1, metavar="F",
                   help="fraction of training images marked labeled (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--height", type=int, default=96, help="grid rows (default 96: "
                   "ExtremeWeather's 768 coarsened 8 times)")
    p.add_argument("--width", type=int, default=144, help="grid columns (default 144)")
    p.add_argument("--noise", type=float, default=1.0, help="noise amplitude scale (default 1)")
    p.add_argument("--rates", type=_rates, default=(0.8, 0.8, 1.2, 0.8), metavar="TD,TC,ETC,AR",
                   help="mean events per image of each class (default 0.8,0.8,1.2,0.8)")
    p.add_argument("--workers", type=int, default=1, metavar="K",
                   help="worker processes (default 1); results do not depend on it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.train < 0 or args.test < 0:
            raise CremaError("--train and --test must be >= 0")
        config = G.Config(args.height, args.width, noise=args.noise, rates=args.rates)
        from tqdm import tqdm
        bar = tqdm(total=args.train + args.test, desc="climate images", unit="img",
                   file=sys.stderr, disable=args.quiet, dynamic_ncols=True)
        t0 = time.perf_counter()
        paths = generate(args.out, args.train, args.test, args.labeled, args.seed, config,
                         max(1, args.workers), progress=bar.update)
        bar.close()
    except CremaError as e:
        print(f"crema data climate: {e}", file=sys.stderr)
        return 1
    for split, path in paths.items():
        print(f"{split}: {path} ({os.path.getsize(path) / 1e6:.0f} MB)")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
