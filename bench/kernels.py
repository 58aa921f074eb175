"""Pooling and convolution kernels and the machine's FMA peak, measured in one process.

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

Convolutions (--only conv; also in the default run): the layers of LeNet (batch 64) and AlexNet
(batch 16), forward (with the algorithm engine.kernels.conv_algorithm picks, as the layer runs
it) and backward (data + weight + bias gradients) in ms, GFLOP/s (direct-algorithm flops,
2*N*K*C/G*R*S*P*Q per pass, twice that for the backward), % of peak (engine.kernels.peak_gflops()
of the ISA in use x threads) and the ratio to torch.nn.functional.conv2d / aten
convolution_backward on the same threads (x torch > 1: crema is faster), crema and torch
alternating in every round. --wcache times the HEP layers' direct forward with and without the
weight cache (conv_forward's weight_cache).

    python bench/kernels.py --first-layer   # AlexNet conv1 vs torch, 1 and 2 threads

prints, with the ISA in use and the load average, AlexNet conv1's forward and weight gradient
(dW + db) against torch per thread count (1 and 2), crema and torch alternating in every round.
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
    with kernels.isa_cap(isa):
        return fn()


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


LENET_ALEXNET = [
    # name, (N, C, H, W, K, R, S, pad_h, pad_w, stride_h, stride_w, dil_h, dil_w, group)
    ("lenet conv1", (64, 1, 28, 28, 20, 5, 5, 0, 0, 1, 1, 1, 1, 1)),
    ("lenet conv2", (64, 20, 12, 12, 50, 5, 5, 0, 0, 1, 1, 1, 1, 1)),
    ("alexnet conv1", (16, 3, 227, 227, 96, 11, 11, 0, 0, 4, 4, 1, 1, 1)),
    ("alexnet conv2", (16, 96, 27, 27, 256, 5, 5, 2, 2, 1, 1, 1, 1, 2)),
    ("alexnet conv3", (16, 256, 13, 13, 384, 3, 3, 1, 1, 1, 1, 1, 1, 1)),
    ("alexnet conv4", (16, 384, 13, 13, 384, 3, 3, 1, 1, 1, 1, 1, 1, 2)),
    ("alexnet conv5", (16, 384, 13, 13, 256, 3, 3, 1, 1, 1, 1, 1, 1, 2)),
]


def conv_flops(geo):
    n, c, h, w, k, r, s, *_, g = geo
    p, q = kernels.conv_output_hw(geo)
    return 2.0 * n * k * (c // g) * r * s * p * q


def conv_arrays(geo, seed=0):
    n, c, h, w, k, r, s, *_, g = geo
    p, q = kernels.conv_output_hw(geo)
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, c, h, w), dtype=np.float32),
            rng.standard_normal((k, c // g, r, s), dtype=np.float32) * np.float32(0.1),
            rng.standard_normal(k, dtype=np.float32),
            rng.standard_normal((n, k, p, q), dtype=np.float32))


def alternating_medians(fns, reps, warmup=1):
    """Median ms of each callable in fns (a dict), timed in rounds that call every one in turn,
    so that all of them see the same contention on a shared machine."""
    times = {name: [] for name in fns}
    for i in range(warmup + reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def crema_conv_passes(geo):
    """(fwd, bwd_weights, bwd_data, kernels) as the Convolution layer runs them: one call per
    pass on the geometry with conv_algorithm's choices, a workspace and a weight cache per
    pass."""
    x, w, b, dy = conv_arrays(geo)
    y, dx = np.empty_like(dy), np.empty_like(x)
    dw, db = np.zeros_like(w), np.zeros_like(b)
    g = kernels.conv_geometry(geo)
    ws = np.empty(max(1, kernels.conv_workspace_size(g)), np.float32)
    wc = {op: np.zeros(max(1, kernels.conv_weight_cache_size(g, op)), np.float32)
          for op in ("fwd", "bwd_data")}
    names = {op: kernels.conv_kernel_name(op, g, x) for op in kernels.CONV_OPS}

    def fwd():
        kernels.conv_forward(x, w, b, y, g, ws, weight_cache=wc["fwd"])

    def bwd_weights():
        kernels.conv_backward_weights(x, dy, dw, db, g, ws)

    def bwd_data():
        kernels.conv_backward_data(dy, w, dx, g, ws, weight_cache=wc["bwd_data"])

    return fwd, bwd_weights, bwd_data, names


def torch_conv_passes(geo):
    """(fwd, bwd_weights (weight + bias), bwd (data + weight + bias)) through torch on the
    current thread count, or None where torch is not importable (it is not a dependency)."""
    try:
        import torch
        import torch.nn.functional as F
    except Exception:  # torch is optional
        return None
    torch.set_num_threads(engine.get_num_threads())
    n, c, h, wd, k, r, s, ph, pw, sh, sw, dh, dw_, g = geo
    x, w, b, dy = (torch.from_numpy(a) for a in conv_arrays(geo))
    kw = dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw_), groups=g)

    def backward(mask):
        with torch.no_grad():
            torch.ops.aten.convolution_backward(dy, x, w, [k], [sh, sw], [ph, pw], [dh, dw_],
                                                False, [0, 0], g, mask)

    def fwd():
        with torch.no_grad():
            F.conv2d(x, w, b, **kw)

    return fwd, lambda: backward([False, True, True]), lambda: backward([True, True, True])


def bench_conv(reps):
    nt = engine.get_num_threads()
    print(f"\nconvolutions (peak = peak_gflops() x {nt} threads, probed right after each layer's "
          f"timing since the machine is shared; median of {reps}, crema and torch alternating)")
    print(f"{'layer':>14} {'fwd ms':>8} {'GFLOP/s':>8} {'%peak':>6} {'torch':>8} {'x torch':>7} "
          f"{'bwd ms':>8} {'GFLOP/s':>8} {'%peak':>6} {'torch':>8} {'x torch':>7} {'peak':>6}  "
          "kernels (fwd / bwd_data / bwd_weights)")
    for name, geo in LENET_ALEXNET:
        fwd, bwd_weights, bwd_data, names = crema_conv_passes(geo)

        def bwd():
            bwd_weights()
            bwd_data()
        fns = {"f": fwd, "b": bwd}
        theirs = torch_conv_passes(geo)
        if theirs is not None:
            fns.update(tf=theirs[0], tb=theirs[2])
        ms = alternating_medians(fns, reps)
        f, bw = ms["f"], ms["b"]
        peak = kernels.peak_gflops() * nt
        tf, tb = ms.get("tf"), ms.get("tb")
        fl = conv_flops(geo)
        gf, gb = fl / f / 1e6, 2 * fl / bw / 1e6

        def tcol(t, mine):
            return f" {t:>8.2f} {t / mine:>7.2f}" if t is not None else f" {'n/a':>8} {'':>7}"
        print(f"{name:>14} {f:>8.2f} {gf:>8.1f} {100 * gf / peak:>5.0f}%{tcol(tf, f)} "
              f"{bw:>8.2f} {gb:>8.1f} {100 * gb / peak:>5.0f}%{tcol(tb, bw)} {peak:>6.0f}  "
              f"{names['fwd']} / {names['bwd_data']} / {names['bwd_weights']}")


FIRST_LAYER = ("alexnet conv1", LENET_ALEXNET[2][1])


def bench_first_layer(reps, thread_counts=(1, 2)):
    """AlexNet conv1 (3 channels, 11x11, stride 4, batch 16) against torch, per thread count:
    forward and weight gradient (dW + db) medians, crema and torch alternating in every round;
    x torch > 1: crema is faster."""
    name, geo = FIRST_LAYER
    isa = kernels.cpu_info()["isa"]
    before = engine.get_num_threads()
    print(f"\n{name} {geo[:4]} -> {geo[4]} outputs, ISA {isa}, median of {reps}, crema and torch "
          "alternating")
    print(f"{'threads':>7} {'fwd ms':>8} {'torch':>8} {'x torch':>7} {'bwd_w ms':>8} "
          f"{'torch':>8} {'x torch':>7} {'load avg':>8}  kernels (fwd / bwd_weights)")
    try:
        for nt in thread_counts:
            engine.set_num_threads(nt)
            fwd, bwd_weights, _, names = crema_conv_passes(geo)
            theirs = torch_conv_passes(geo)
            if theirs is None:
                sys.exit("--first-layer compares against torch, which is not importable")
            ms = alternating_medians({"f": fwd, "tf": theirs[0], "w": bwd_weights,
                                      "tw": theirs[1]}, reps)
            print(f"{nt:>7} {ms['f']:>8.2f} {ms['tf']:>8.2f} {ms['tf'] / ms['f']:>7.2f} "
                  f"{ms['w']:>8.2f} {ms['tw']:>8.2f} {ms['tw'] / ms['w']:>7.2f} "
                  f"{os.getloadavg()[0]:>8.2f}  {names['fwd']} / {names['bwd_weights']}")
    finally:
        engine.set_num_threads(before)


def bench_wcache(reps, batch=8):
    """The HEP layers' direct forward with the weight cache (a warm, matching cache: repack
    skipped) against without (repack every call)."""
    print(f"\nweight cache, HEP layers (3x3, 128 outputs, pad 1, batch {batch}, direct forward, "
          f"median of {reps})")
    print(f"{'input':>16} {'no cache':>9} {'cached':>9} {'saved':>8} {'gain':>6}")
    for c, hw in ((3, 224), (128, 112), (128, 56), (128, 28), (128, 14)):
        t = (batch, c, hw, hw, 128, 3, 3, 1, 1, 1, 1, 1, 1, 1)
        geo = kernels.conv_geometry(t, algo_fwd="direct", algo_bwd_data="direct")
        x, w, b, _ = conv_arrays(t)
        y = np.empty((batch, 128, hw, hw), np.float32)
        ws = np.empty(max(1, kernels.conv_workspace_size(geo)), np.float32)
        wc = np.zeros(max(1, kernels.conv_weight_cache_size(geo)), np.float32)
        # interleaved, so both see the same contention
        t_no, t_c = [], []
        for _ in range(reps):
            t_no.append(median_ms(lambda: kernels.conv_forward(x, w, b, y, geo, ws), 1, 0))
            t_c.append(median_ms(lambda: kernels.conv_forward(x, w, b, y, geo, ws,
                                                              weight_cache=wc), 1, 1))
        a, m = statistics.median(t_no), statistics.median(t_c)
        print(f"{str((batch, c, hw, hw)):>16} {a:>6.2f} ms {m:>6.2f} ms {a - m:>5.2f} ms "
              f"{100 * (a - m) / a:>5.1f}%  ({kernels.conv_kernel_name('fwd', geo, x)})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions (median); >= 5")
    ap.add_argument("--threads", type=int, default=None, help="kernel threads (default: current)")
    ap.add_argument("--full", action="store_true", help="also (8, 128, 224, 224)")
    ap.add_argument("--peak-seconds", type=float, default=0.2)
    ap.add_argument("--only", choices=("pool", "conv"), default=None,
                    help="only the pooling or only the convolution section")
    ap.add_argument("--wcache", action="store_true",
                    help="also time the weight cache on the HEP layers")
    ap.add_argument("--first-layer", action="store_true",
                    help="only AlexNet conv1 against torch on 1 and 2 threads (forward and "
                         "weight gradient, alternating rounds, with the ISA and load average)")
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
    if args.first_layer:
        bench_first_layer(reps)
        return
    if args.wcache:
        bench_wcache(reps)
    if args.only != "pool":
        bench_conv(reps)
    if args.only == "conv":
        return
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
