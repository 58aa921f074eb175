"""SGEMM speed: crema's engine.kernels.sgemm against numpy (OpenBLAS) and torch.matmul, in
GFLOP/s (2*M*N*K flops) and % of the machine's measured single-thread FMA peak
(engine.kernels.peak_gflops() of the ISA in use, times the thread count).

    python bench/gemm.py                 # 1 thread, median of 5
    python bench/gemm.py --threads 2 --reps 7
    python bench/gemm.py --quick         # skip 2048 and AlexNet fc6

Shapes: squares 256, 512, 1024, 2048; LeNet's InnerProduct layers at batch 64 (ip1 forward
64x800 @ 800x500, its data gradient 64x500 @ 500x800 and weight gradient 500x64 @ 64x800; ip2
64x500 @ 500x10); AlexNet's fc6/fc7/fc8 forward at batch 256 (256x9216 @ 9216x4096,
256x4096 @ 4096x4096, 256x4096 @ 4096x1000). The forward products use the layer's layout
(W stored (N, K): trans_b). All three libraries write into / get the same float32 arrays; the
thread count is set equally for crema (engine.set_num_threads), torch (torch.set_num_threads) and
numpy's BLAS (threadpoolctl when installed, else OPENBLAS_NUM_THREADS set before numpy loads).
Ratios (crema / other) are from the same run: the machine is shared, absolute numbers are noisy.
torch is imported only here (not a crema dependency).
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path


def _early_threads():
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "1"


for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = _early_threads()

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import kernels  # noqa: E402

# (name, M, N, K, trans_a, trans_b)
SQUARES = [(f"square {s}", s, s, s, False, False) for s in (256, 512, 1024, 2048)]
LENET = [("LeNet ip1 fwd", 64, 500, 800, False, True),
         ("LeNet ip1 bwd data", 64, 800, 500, False, False),
         ("LeNet ip1 bwd weight", 500, 800, 64, True, False),
         ("LeNet ip2 fwd", 64, 10, 500, False, True)]
ALEXNET = [("AlexNet fc6 fwd", 256, 4096, 9216, False, True),
           ("AlexNet fc7 fwd", 256, 4096, 4096, False, True),
           ("AlexNet fc8 fwd", 256, 1000, 4096, False, True)]


def median_s(fn, reps):
    fn()  # warm-up (packing buffers, BLAS threads)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()

    kernels.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
    except ImportError:
        pass
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None

    shapes = SQUARES + LENET + ALEXNET
    if args.quick:
        shapes = [s for s in shapes if s[0] not in ("square 2048", "AlexNet fc6 fwd")]
    print(f"sgemm kernel {kernels.sgemm_kernel_name()}, {args.threads} thread(s), "
          f"median of {args.reps}")
    print(f"{'shape':22s} {'M':>5s} {'N':>5s} {'K':>5s}  {'crema GF/s':>10s} {'%peak':>6s} "
          f"{'numpy GF/s':>10s} {'torch GF/s':>10s} {'vs numpy':>8s} {'vs torch':>8s} "
          f"{'peak':>6s}")
    rng = np.random.default_rng(0)
    pcts = []
    for name, m, n, k, ta, tb in shapes:
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        c = np.empty((m, n), np.float32)
        flops = 2.0 * m * n * k
        oa = a.T if ta else a
        ob = b.T if tb else b
        t_crema = median_s(lambda: kernels.sgemm(a, b, c, trans_a=ta, trans_b=tb), args.reps)
        # the peak probe next to the measurement sees the same contention
        peak = kernels.peak_gflops() * args.threads
        c2 = np.empty((m, n), np.float32)
        t_np = median_s(lambda: np.matmul(oa, ob, out=c2), args.reps)
        if torch is not None:
            ta_, tb_, tc = torch.from_numpy(oa), torch.from_numpy(ob), torch.from_numpy(c2)
            t_torch = median_s(lambda: torch.matmul(ta_, tb_, out=tc), args.reps)
        else:
            t_torch = float("nan")
        err = np.abs(c - c2).max() / max(1e-30, np.abs(c2).max())
        if err > 1e-4:
            print(f"  {name}: crema and numpy differ (relative {err:.2e})")
        g = flops / t_crema / 1e9
        pct = 100 * g / peak
        pcts.append((name, pct))
        print(f"{name:22s} {m:5d} {n:5d} {k:5d}  {g:10.1f} {pct:5.0f}% "
              f"{flops / t_np / 1e9:10.1f} {flops / t_torch / 1e9:10.1f} "
              f"{t_np / t_crema:8.2f} {t_torch / t_crema:8.2f} {peak:6.0f}")
    print("ratios: > 1 means crema is faster; peak = peak_gflops() x threads, probed per shape")


if __name__ == "__main__":
    main()
