"""Pooling kernels and the machine's FMA peak, measured in one process.

    python bench/kernels.py                 # default shapes, 5 reps (median)
    python bench/kernels.py --reps 9 --threads 1
    python bench/kernels.py --full          # adds the HEP first-layer maps at batch 8 (~200 MB)

For each shape and window (MAX 2x2 stride 2 and 3x3 stride 2, Caffe's ceil mode) it prints the
native forward (values + int32 argmax, as the Pooling layer runs it) per usable ISA, its effective
bandwidth (input + output + mask bytes / time), the native backward, the Pooling layer's numpy
path (CREMA_KERNELS=reference) and the speedup over it, and torch.nn.functional.max_pool2d with
return_indices=True when torch is importable (torch is not a dependency). Then the single-thread
FP32 FMA peak per ISA (engine.kernels.peak_gflops).

Shapes: (8, 128, 112, 112), and the HEP classifier's first-layer maps: 128 channels of 224 x 224
(the 3x3 conv + 2x2 max-pool stacks of the HEP network), one image by default since batch 8 is
~200 MB per buffer (--full).
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import engine  # noqa: E402
from engine import kernels  # noqa: E402
from engine.reference.pool import pooled_size  # noqa: E402
from engine.testing import layer_from_text  # noqa: E402
from engine.blob import Blob  # noqa: E402

WINDOWS = [((2, 2), (2, 2)), ((3, 3), (2, 2))]


def median_ms(fn, reps, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def geometry(shape, kernel, stride):
    n, c, h, w = shape
    oh = pooled_size(h, kernel[0], 0, stride[0], True, False)
    ow = pooled_size(w, kernel[1], 0, stride[1], True, False)
    return (n, c, h, w, kernel[0], kernel[1], 0, 0, stride[0], stride[1], oh, ow)


def with_cap(isa, fn):
    old = os.environ.get("CREMA_MAX_ISA")
    os.environ["CREMA_MAX_ISA"] = isa
    try:
        return fn()
    finally:
        if old is None:
            os.environ.pop("CREMA_MAX_ISA")
        else:
            os.environ["CREMA_MAX_ISA"] = old


def numpy_layer_ms(x, kernel, stride, reps):
    """The Pooling layer's numpy path (what runs without the native kernels)."""
    old = os.environ.get("CREMA_KERNELS")
    os.environ["CREMA_KERNELS"] = "reference"
    try:
        layer = layer_from_text(
            f'name: "p" type: "Pooling" pooling_param {{ pool: MAX kernel_h: {kernel[0]} '
            f'kernel_w: {kernel[1]} stride_h: {stride[0]} stride_w: {stride[1]} }}')
        bottom = [Blob.from_array(x)]
        top = [Blob((), dtype=np.float32)]
        layer.setup(bottom, top)
        layer.reshape(bottom, top)
        assert layer.kernel == "numpy"
        return median_ms(lambda: layer.forward(bottom, top), reps)
    finally:
        if old is None:
            os.environ.pop("CREMA_KERNELS")
        else:
            os.environ["CREMA_KERNELS"] = old


def torch_ms(x, kernel, stride, reps):
    try:
        import torch
        import torch.nn.functional as F
    except Exception:  # torch is optional
        return None
    torch.set_num_threads(engine.get_num_threads())
    t = torch.from_numpy(x)
    with torch.no_grad():
        return median_ms(lambda: F.max_pool2d(t, kernel, stride, ceil_mode=True,
                                              return_indices=True), reps)


def bench_shape(shape, reps, isas, rows):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for kernel, stride in WINDOWS:
        g = geometry(shape, kernel, stride)
        out = shape[:2] + g[-2:]
        y = np.empty(out, np.float32)
        mask = np.empty(out, np.int32)
        dx = np.empty(shape, np.float32)
        dy = np.random.default_rng(1).standard_normal(out).astype(np.float32)
        nbytes = x.nbytes + y.nbytes + mask.nbytes
        per_isa = {}
        for isa in isas:
            per_isa[isa] = with_cap(isa, lambda: median_ms(
                lambda: kernels.max_pool_forward(x, g, y, mask), reps))
        best_isa = isas[0]
        fwd = per_isa[best_isa]
        names = with_cap(best_isa, lambda: (kernels.pool_kernel_name("max_fwd", g, x),
                                            kernels.pool_kernel_name("max_bwd", g, x)))
        bwd = median_ms(lambda: kernels.max_pool_backward(dy, mask, g, dx), reps)
        ref = numpy_layer_ms(x, kernel, stride, reps)
        tch = torch_ms(x, kernel, stride, reps)
        rows.append({
            "shape": "x".join(map(str, shape)), "window": f"{kernel[0]}x{kernel[1]} s{stride[0]}",
            "per_isa": per_isa, "fwd": fwd, "gbs": nbytes / fwd * 1e-6, "bwd": bwd,
            "numpy": ref, "speedup": ref / fwd, "torch": tch, "names": names})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions (median); >= 5")
    ap.add_argument("--threads", type=int, default=None, help="kernel threads (default: current)")
    ap.add_argument("--full", action="store_true", help="also (8, 128, 224, 224)")
    ap.add_argument("--peak-seconds", type=float, default=0.2)
    args = ap.parse_args(argv)
    reps = max(5, args.reps)
    if args.threads:
        engine.set_num_threads(args.threads)
    info = kernels.cpu_info()
    if not kernels.native_available():
        sys.exit(f"native kernels unavailable: {info['kernels']}")
    isas = info["usable_isas"]
    shapes = [(8, 128, 112, 112), (1, 128, 224, 224)]
    if args.full:
        shapes.append((8, 128, 224, 224))
    print(f"# {info['vendor']} {info['model']}, {info['logical_cores']} logical cores, "
          f"ISAs {', '.join(isas)}, kernel threads {engine.get_num_threads()} "
          f"(OpenMP {'on' if kernels.openmp_enabled() else 'off'}), median of {reps}")
    rows = []
    for shape in shapes:
        bench_shape(shape, reps, isas, rows)

    isa_cols = "".join(f" {'fwd ' + i:>12}" for i in isas)
    print(f"\n{'shape':>16} {'window':>7}{isa_cols} {'GB/s':>7} {'bwd':>8} "
          f"{'numpy':>9} {'x numpy':>8} {'torch':>9} {'x torch':>8}")
    for r in rows:
        cols = "".join(f" {r['per_isa'][i]:>9.2f} ms" for i in isas)
        tch = (f" {r['torch']:>6.2f} ms {r['torch'] / r['fwd']:>7.2f}x" if r["torch"] is not None
               else f" {'n/a':>9} {'':>8}")
        print(f"{r['shape']:>16} {r['window']:>7}{cols} {r['gbs']:>7.1f} {r['bwd']:>5.2f} ms "
              f"{r['numpy']:>6.1f} ms {r['speedup']:>7.1f}x{tch}")
    print("\nkernels:", "; ".join(sorted({f"{a} / {b}" for a, b in (r["names"] for r in rows)})))
    print("(fwd = values + int32 argmax; GB/s = (input + output + mask bytes) / best fwd; "
          "numpy = the Pooling layer's numpy path; torch = F.max_pool2d(return_indices=True))")

    print("\nsingle-thread FP32 FMA peak:")
    for isa, gflops in kernels.peak_gflops_all(args.peak_seconds).items():
        print(f"  {isa:>7}: {gflops:8.1f} GFLOP/s")


if __name__ == "__main__":
    main()
