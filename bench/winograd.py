"""Winograd F(4x4,3x3) convolution against the direct paths, measured in one process.

    python bench/winograd.py                    # HEP 128->128 layers, batch 8, maps 112..14
    python bench/winograd.py --maps 56,28 --reps 9 --threads 1
    python bench/winograd.py --accuracy         # errors against float64 (the winograd.h table)
    python bench/winograd.py --points           # the interpolation-point study (numpy, float32)

Speed: for each layer (N=8, C=K=128, 3x3, pad 1, stride 1) it times the forward pass of
  winograd F4 / F2   engine.kernels.winograd_conv2d_forward (native, caller-owned buffers,
                     filter transform cached), and its data gradient (F4, winograd bwd)
  direct native      engine.kernels.conv_forward (kernels/src/conv/conv_*), when built
  conv layer         the Convolution layer's float32 forward with CREMA_CONV_ALGO=direct (its
                     direct path) and as configured (auto: it picks per geometry)
  numpy im2col       the layer with CREMA_KERNELS=reference (numpy im2col + matmul; --numpy)
  torch              torch.nn.functional.conv2d (and torch.nn.grad.conv2d_input), when importable
Each time is the median of --reps runs after a warm-up, wall clock by default or this thread's
CPU time with --clock cpu (steadier on a shared machine; only meaningful for --threads 1).
Throughput is effective GFLOP/s counted in direct-algorithm flops, 2*N*K*C*9*P*Q, also as a
fraction of the measured single-thread FMA peak (engine.kernels.peak_gflops). The thread count
is set equally for crema (engine.set_num_threads), torch and numpy's BLAS.
"""
import argparse
import os
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--maps", default="112,56,28,14", help="comma-separated map sizes")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5, help="timed runs per measurement (>= 5)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--numpy", action="store_true", help="also time the numpy im2col path")
    ap.add_argument("--accuracy", action="store_true")
    ap.add_argument("--points", action="store_true")
    ap.add_argument("--sweep", action="store_true",
                    help="direct vs Winograd over channel counts and map sizes (the data behind "
                         "the Winograd rows' supports() rule in kernels/src/conv/conv_table.cpp)")
    return ap.parse_args()


ARGS = parse_args()
# Before numpy loads its BLAS: the same thread count everywhere.
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(ARGS.threads))
os.environ.setdefault("OMP_NUM_THREADS", str(ARGS.threads))

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import engine  # noqa: E402
from engine import kernels  # noqa: E402
from engine.blob import Blob  # noqa: E402
from engine.reference import winograd as ref  # noqa: E402
from engine.testing import layer_from_text  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is not a dependency of crema
    torch = None

CLOCK = time.thread_time if ARGS.clock == "cpu" else time.perf_counter


def median_ms(fn, reps):
    fn()
    times = []
    for _ in range(max(reps, 5)):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return statistics.median(times) * 1e3


class env:
    """Temporarily set (or, with None, unset) environment variables."""

    def __init__(self, **values):
        self.values = values

    def __enter__(self):
        self.old = {k: os.environ.get(k) for k in self.values}
        for k, v in self.values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def __exit__(self, *exc):
        for k, v in self.old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def measure_peak():
    """The FMA peak (engine.kernels.peak_gflops), best of three short runs: on a shared machine a
    run can only lose time. With --clock cpu the rate is rescaled from wall time to this thread's
    CPU time (what the kernels' times are measured in)."""
    best = 0.0
    for _ in range(3):
        w0, c0 = time.perf_counter(), time.thread_time()
        gflops = kernels.peak_gflops(seconds=0.2)
        wall, cpu = time.perf_counter() - w0, time.thread_time() - c0
        best = max(best, gflops * (wall / cpu if ARGS.clock == "cpu" and cpu > 0 else 1.0))
    return best


def conv_geometry(n, c, h, w, k, pad):
    return (n, c, h, w, k, 3, 3, pad, pad, 1, 1, 1, 1, 1)


def conv_layer(x, w, b, k, pad):
    """A Convolution layer set up for x with the given weights (reshape picks its kernels)."""
    layer = layer_from_text(
        f'name: "conv" type: "Convolution" convolution_param {{ num_output: {k} '
        f'kernel_size: 3 pad: {pad} stride: 1 }}')
    bottom, top = [Blob.from_array(x)], [Blob((), dtype=np.float32)]
    layer.setup(bottom, top)
    layer.blobs[0].data[...] = w
    layer.blobs[1].data[...] = b
    layer.reshape(bottom, top)
    return layer, bottom, top


def speed():
    engine.set_num_threads(ARGS.threads)
    if torch is not None:
        torch.set_num_threads(ARGS.threads)
    info = kernels.cpu_info()
    peak = measure_peak()
    print(f"# {info['model']}, ISA {info['isa']}, {ARGS.threads} thread(s), OpenMP "
          f"{kernels.openmp_enabled()}, single-thread FMA peak {peak:.0f} GFLOP/s, "
          f"clock {ARGS.clock}, median of {max(ARGS.reps, 5)}; torch "
          f"{torch.__version__ if torch else 'not installed'}")
    n, c = ARGS.batch, ARGS.channels
    k, pad = c, 1
    summary = []
    for hw in (int(v) for v in ARGS.maps.split(",")):
        rng = np.random.default_rng(hw)
        x = rng.standard_normal((n, c, hw, hw), dtype=np.float32)
        w = (rng.standard_normal((k, c, 3, 3), dtype=np.float32) / np.float32(np.sqrt(9 * c)))
        b = rng.standard_normal(k, dtype=np.float32)
        dy = rng.standard_normal((n, k, hw, hw), dtype=np.float32)
        g = conv_geometry(n, c, hw, hw, k, pad)
        flops = 2.0 * n * k * c * 9 * hw * hw
        y = np.empty((n, k, hw, hw), np.float32)
        dx = np.empty_like(x)
        rows = []

        def add(name, ms):
            rows.append((name, ms))

        for tile in (4, 2):
            ws = np.empty(kernels.winograd_workspace_size(g, tile=tile), np.float32)
            cache = np.zeros(kernels.winograd_filter_cache_size(g, tile=tile), np.float32)
            add(f"winograd F{tile} fwd", median_ms(
                lambda: kernels.winograd_conv2d_forward(x, w, b, y, g, ws, cache, tile), ARGS.reps))
        ws_b = np.empty(kernels.winograd_workspace_size(g, tile=4, backward=True), np.float32)
        cache_b = np.zeros(kernels.winograd_filter_cache_size(g, tile=4, backward=True),
                           np.float32)
        add("winograd F4 bwd-data", median_ms(
            lambda: kernels.winograd_conv2d_backward_data(dy, w, dx, g, ws_b, cache_b, 4),
            ARGS.reps))
        if hasattr(kernels, "conv_forward") and kernels.conv_workspace_size(g) > 0:
            cws = np.empty(kernels.conv_workspace_size(g), np.float32)
            add("direct native fwd", median_ms(
                lambda: kernels.conv_forward(x, w, b, y, g, cws), ARGS.reps))
            add("direct native bwd-data", median_ms(
                lambda: kernels.conv_backward_data(dy, w, dx, g, cws), ARGS.reps))
        with env(CREMA_CONV_ALGO="direct", CREMA_KERNELS=None):
            layer, bottom, top = conv_layer(x, w, b, k, pad)
            add("conv layer fwd (direct)", median_ms(lambda: layer.forward(bottom, top),
                                                     ARGS.reps))
        with env(CREMA_KERNELS=None):
            layer, bottom, top = conv_layer(x, w, b, k, pad)
            add(f"conv layer fwd ({getattr(layer, 'kernel', '?')})",
                median_ms(lambda: layer.forward(bottom, top), ARGS.reps))
        if ARGS.numpy:
            with env(CREMA_KERNELS="reference"):
                layer, bottom, top = conv_layer(x, w, b, k, pad)
                add("numpy im2col fwd", median_ms(lambda: layer.forward(bottom, top), ARGS.reps))
        if torch is not None:
            tx, tw, tb, tdy = (torch.from_numpy(a) for a in (x, w, b, dy))
            with torch.no_grad():
                add("torch conv2d fwd", median_ms(lambda: F.conv2d(tx, tw, tb, padding=pad),
                                                  ARGS.reps))
                add("torch conv2d_input bwd-data", median_ms(
                    lambda: torch.nn.grad.conv2d_input(tx.shape, tw, tdy, padding=pad),
                    ARGS.reps))
        times = dict(rows)
        print(f"\n## N={n} C=K={c} {hw}x{hw} pad {pad}: {flops / 1e9:.2f} GFLOP (direct count)")
        print(f"{'method':38s} {'ms':>9s} {'GFLOP/s':>9s} {'x peak':>7s}")
        for name, ms in rows:
            gf = flops / ms / 1e6
            print(f"{name:38s} {ms:9.2f} {gf:9.0f} {gf / peak:7.2f}")
        wf = times["winograd F4 fwd"]
        ratios = []
        for base in ("direct native fwd", "conv layer fwd (direct)", "numpy im2col fwd",
                     "torch conv2d fwd"):
            if base in times:
                ratios.append(f"{times[base] / wf:.2f}x vs {base}")
        if "direct native bwd-data" in times:
            ratios.append(f"bwd-data {times['direct native bwd-data'] / times['winograd F4 bwd-data']:.2f}x vs direct native")
        if "torch conv2d_input bwd-data" in times:
            ratios.append(f"bwd-data {times['torch conv2d_input bwd-data'] / times['winograd F4 bwd-data']:.2f}x vs torch")
        print("winograd F4 fwd speedup: " + ", ".join(ratios))
        summary.append((hw, ratios))
    print("\n# summary (winograd F4 forward speedup)")
    for hw, ratios in summary:
        print(f"{hw:4d}x{hw:<4d} " + "; ".join(ratios))


def errors(y, want):
    e = np.abs(np.asarray(y, np.float64) - want)
    scale = np.sqrt(np.mean(want ** 2))
    return e.max() / scale, np.sqrt(np.mean(e ** 2)) / scale


def accuracy():
    """Max and RMS error relative to the output RMS, against the float64 convolution, on
    unit-variance x and w (N=2, 28x28, K=32, pad 1)."""
    print("# errors relative to the RMS of the float64 result: max / RMS")
    n, h, k, pad = 2, 28, 32, 1
    for c in (16, 128, 512, 2048):
        rng = np.random.default_rng(c)
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        w = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
        want = ref.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, (pad, pad), 2)
        g = conv_geometry(n, c, h, h, k, pad)
        line = [f"C={c:4d}"]
        for isa in kernels.cpu_info()["usable_isas"]:
            with kernels.isa_cap(isa), env(CREMA_KERNELS=None):
                for tile in (4, 2):
                    y = np.empty((n, k, h, h), np.float32)
                    kernels.winograd_conv2d_forward(x, w, None, y, g, tile=tile)
                    line.append(f"F{tile} {isa} %.1e / %.1e" % errors(y, want))
                if hasattr(kernels, "conv_forward") and kernels.conv_workspace_size(g) > 0:
                    y = np.empty((n, k, h, h), np.float32)
                    kernels.conv_forward(x, w, None, y, g,
                                         np.empty(kernels.conv_workspace_size(g), np.float32))
                    line.append(f"direct {isa} %.1e / %.1e" % errors(y, want))
        if torch is not None:
            y = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=pad).numpy()
            line.append("torch %.1e / %.1e" % errors(y, want))
        print("  ".join(line))


def points():
    """The float32 error of F(4x4,3x3) per interpolation-point set (numpy reference, C=128)."""
    inf, half = None, Fraction(1, 2)
    sets = {"0,1,-1,2,-2 (Lavin)": (0, 1, -1, 2, -2, inf),
            "0,1,-1,1/2,-2 (crema)": (0, 1, -1, half, -2, inf),
            "0,1,-1,2,-1/2": (0, 1, -1, 2, -half, inf),
            "0,1,-1,1/2,-1/2": (0, 1, -1, half, -half, inf),
            "0,1/2,-1/2,2,-2": (0, half, -half, 2, -2, inf),
            "0,1,-1,1/2,2": (0, 1, -1, half, 2, inf)}
    rng = np.random.default_rng(1)
    n, c, k, h = 2, 128, 32, 28
    x = rng.standard_normal((n, c, h, h))
    w = rng.standard_normal((k, c, 3, 3))
    want = ref.conv2d_forward(x, w, None, (1, 1), 2)
    print("# F(4x4,3x3) in float32 (numpy reference), C=128: max / RMS error relative to RMS")
    print(f"{'F(2x2) 0,1,-1':24s} %.2e / %.2e" % errors(
        ref.conv2d_forward(x.astype(np.float32), w.astype(np.float32), None, (1, 1), 2), want))
    for name, pts in sets.items():
        y = ref.conv2d_forward(x.astype(np.float32), w.astype(np.float32), None, (1, 1), 4, pts)
        print(f"{name:24s} %.2e / %.2e" % errors(y, want))


SWEEP_CHANNELS = [(3, 32), (3, 64), (8, 8), (8, 64), (16, 16), (16, 64), (32, 32), (64, 16),
                  (64, 64), (128, 128), (256, 64), (256, 256)]


def sweep():
    """Milliseconds of the direct and the Winograd kernel (its default tile) for forward and
    data-gradient passes, batch --batch, pad 1, over SWEEP_CHANNELS (C, K) and --maps, on the ISA
    in use (run once per CREMA_MAX_ISA). ratio = direct / winograd (> 1: Winograd is faster)."""
    engine.set_num_threads(ARGS.threads)
    info = kernels.cpu_info()
    print(f"# sweep: {info['model']}, ISA {info['isa']}, {ARGS.threads} thread(s), batch "
          f"{ARGS.batch}, clock {ARGS.clock}, median of {max(ARGS.reps, 5)}")
    print(f"{'C':>4} {'K':>4} {'map':>4} {'pass':>8} {'direct ms':>10} {'winograd ms':>12} "
          f"{'ratio':>6}")
    rng = np.random.default_rng(0)
    for c, k in SWEEP_CHANNELS:
        for hw in (int(m) for m in ARGS.maps.split(",")):
            geo = conv_geometry(ARGS.batch, c, hw, hw, k, 1)
            x = rng.standard_normal((ARGS.batch, c, hw, hw), dtype=np.float32)
            w = rng.standard_normal((k, c, 3, 3), dtype=np.float32)
            y = np.empty((ARGS.batch, k, hw, hw), np.float32)
            dx = np.empty_like(x)
            ws = np.empty(max(1, kernels.conv_workspace_size(geo)), np.float32)
            for op, backward in (("fwd", False), ("bwd_data", True)):
                wws = np.empty(kernels.winograd_workspace_size(geo, backward=backward), np.float32)
                cache = np.zeros(kernels.winograd_filter_cache_size(geo, backward=backward),
                                 np.float32)
                if backward:
                    direct = median_ms(lambda: kernels.conv_backward_data(y, w, dx, geo, ws),
                                       ARGS.reps)
                    wino = median_ms(lambda: kernels.winograd_conv2d_backward_data(
                        y, w, dx, geo, wws, cache), ARGS.reps)
                else:
                    direct = median_ms(lambda: kernels.conv_forward(x, w, None, y, geo, ws),
                                       ARGS.reps)
                    wino = median_ms(lambda: kernels.winograd_conv2d_forward(
                        x, w, None, y, geo, wws, cache), ARGS.reps)
                print(f"{c:>4} {k:>4} {hw:>4} {op:>8} {direct:>10.3f} {wino:>12.3f} "
                      f"{direct / wino:>6.2f}", flush=True)


if __name__ == "__main__":
    if ARGS.accuracy:
        accuracy()
    elif ARGS.points:
        points()
    elif ARGS.sweep:
        sweep()
    else:
        speed()
