"""bf16 vs fp32 in one process: the HEP classifier's training step (bench/hep_step.py's net) and
a LeNet training iteration (forward + backward), per thread count, alternating fp32 / bf16
rounds (medians), with the ISA, the bf16 rows in use and the machine's load average; the HEP
convolutions pass by pass (GFLOP/s counted as direct convolution, 2*N*K*C*R*S*P*Q, for the fp32
row the layer runs -- Winograd where the rule picks it -- and the bf16 row); and the bf16 GEMM
alone vs SGEMM on the HEP convolutions' im2col products.

    python bench/bf16.py                    # HEP 64x64 batch 8, LeNet batch 64, threads 1 and 2
    python bench/bf16.py --size 224 --reps 5
    CREMA_CONV_ALGO=direct python bench/bf16.py --no-layers   # both precisions on direct
        # convolutions (no Winograd): bf16 against float32 arithmetic like for like

ratio = fp32 ms / bf16 ms (above 1: bf16 is faster). Under each step, where its time goes: the
layers with bf16 arithmetic against the rest (float32 in both precisions), and the ratio the
step would reach if those layers ran at exactly 2x float32 (the bf16 GEMM's best): the ceiling
that faster bf16 kernels alone can give the whole step."""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine  # noqa: E402
from engine import bf16, kernels  # noqa: E402
from hep_step import prototxt as hep_prototxt  # noqa: E402

LENET = """
name: "lenet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 64 dim: 1 dim: 28 dim: 28 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 64 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 50 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" inner_product_param { num_output: 500 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def build(text, folder, name, classes):
    path = Path(folder) / f"{name}.prototxt"
    path.write_text(text)
    net = engine.Net(str(path), engine.TRAIN)
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].shape)
    net.blobs["label"].data[...] = rng.integers(0, classes, net.blobs["label"].shape)
    return net


def alternating(net, reps):
    """Median ms of forward_backward per precision, rounds alternating fp32 / bf16, and per layer
    the median ms (forward + backward, as net.forward_backward times them: fused layers
    included) per precision."""
    n = len(net.layers)
    times = {"fp32": [], "bf16": []}
    layers = {"fp32": [], "bf16": []}
    for p in times:  # warm-up (workspaces, caches)
        net.set_precision(p)
        net.forward_backward()
    for _ in range(reps):
        for p in times:
            net.set_precision(p)
            fwd, bwd = [0.0] * n, [0.0] * n
            t0 = time.perf_counter()
            net.forward_backward(fwd, bwd)
            times[p].append((time.perf_counter() - t0) * 1e3)
            layers[p].append([(f + b) * 1e3 for f, b in zip(fwd, bwd)])
    per_layer = {p: [statistics.median(r[i] for r in v) for i in range(n)]
                 for p, v in layers.items()}
    return {p: statistics.median(v) for p, v in times.items()}, per_layer


def amdahl(net, step, per_layer):
    """Where the step's time goes: the layers with bf16 arithmetic (Convolution, Deconvolution,
    InnerProduct) against the rest (float32 in both precisions: pooling, ReLU, loss, and the
    step's time outside the layers), and the step's ratio if the bf16 layers ran at exactly
    twice their float32 speed with the rest as measured."""
    bf16_types = ("Convolution", "Deconvolution", "InnerProduct")
    capable = [i for i, layer in enumerate(net.layers) if layer.type in bf16_types]
    part = {p: sum(per_layer[p][i] for i in capable) for p in per_layer}
    rest = {p: step[p] - part[p] for p in step}
    ceiling = step["fp32"] / (part["fp32"] / 2 + rest["bf16"])
    return (f"bf16 layers fp32 {part['fp32']:.2f} / bf16 {part['bf16']:.2f} ms "
            f"({part['fp32'] / part['bf16']:.2f}x); the rest fp32 {rest['fp32']:.2f} / bf16 "
            f"{rest['bf16']:.2f} ms ({100 * rest['bf16'] / step['bf16']:.0f}% of the bf16 step); "
            f"with the bf16 layers at 2.00x the step would be {ceiling:.2f}x")


def gemm_rates(reps):
    """GFLOP/s of SGEMM and the bf16 GEMM on the HEP convolutions' per-band products."""
    rng = np.random.default_rng(1)
    out = []
    for m, n, k, ta, tb, what in [(128, 1792, 1152, False, False, "fwd"),
                                  (1152, 1792, 128, True, False, "bwd_data"),
                                  (128, 1152, 1792, False, True, "bwd_weights")]:
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        ab, bb = bf16.to_bf16(a), bf16.to_bf16(b)
        c = np.zeros((m, n), np.float32)
        t = {"fp32": [], "bf16": []}
        for _ in range(reps):
            t0 = time.perf_counter()
            kernels.sgemm(a, b, c, 1.0, 0.0, ta, tb)
            t["fp32"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            bf16.gemm(ab, bb, c, 1.0, 0.0, ta, tb)
            t["bf16"].append(time.perf_counter() - t0)
        fl = 2.0 * m * n * k
        out.append((what, fl / statistics.median(t["fp32"]) / 1e9,
                    fl / statistics.median(t["bf16"]) / 1e9))
    return out


def conv_rates(batch, size, reps):
    """Per HEP convolution and pass: (label, fp32 row, fp32 GFLOP/s, bf16 row, bf16 GFLOP/s)."""
    rng = np.random.default_rng(2)
    out = []
    channels, hw = 3, size
    while hw >= 4 and len(out) < 15:
        geo = kernels.conv_geometry((batch, channels, hw, hw, 128, 3, 3, 1, 1, 1, 1, 1, 1, 1))
        x = rng.standard_normal((batch, channels, hw, hw)).astype(np.float32)
        w = (rng.standard_normal((128, channels, 3, 3)) * 0.1).astype(np.float32)
        b = np.zeros(128, np.float32)
        y = np.empty((batch, 128, hw, hw), np.float32)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx, dw, db = np.empty_like(x), np.zeros_like(w), np.zeros(128, np.float32)
        ws = np.empty(kernels.conv_workspace_size(geo), np.float32)
        caches = {op: np.zeros(kernels.conv_weight_cache_size(geo, op), np.float32)
                  for op in ("fwd", "bwd_data")}
        scratch = bf16.ConvScratch()
        passes = {
            "fwd": (lambda: kernels.conv_forward(x, w, b, y, geo, ws, relu=True,
                                                 weight_cache=caches["fwd"]),
                    lambda: bf16.conv_forward(x, w, b, y, geo, scratch, relu_slope=0.0)),
            "bwd_data": (lambda: kernels.conv_backward_data(dy, w, dx, geo, ws,
                                                            weight_cache=caches["bwd_data"]),
                         lambda: bf16.conv_backward_data(dy, w, dx, geo, scratch)),
            "bwd_weights": (lambda: kernels.conv_backward_weights(x, dy, dw, db, geo, ws),
                            lambda: bf16.conv_backward_weights(x, dy, dw, db, geo, scratch)),
        }
        flops = 2.0 * batch * 128 * channels * 9 * hw * hw
        for op, (f32, b16) in passes.items():
            if channels == 3 and op == "bwd_data":
                continue  # the first layer's data gradient is never computed
            t = {"fp32": [], "bf16": []}
            f32(), b16()
            for _ in range(reps):
                for p, fn in (("fp32", f32), ("bf16", b16)):
                    t0 = time.perf_counter()
                    fn()
                    t[p].append(time.perf_counter() - t0)
            out.append((f"C{channels} {hw}x{hw} {op}", kernels.conv_kernel_name(op, geo, x),
                        flops / statistics.median(t["fp32"]) / 1e9,
                        bf16.conv_kernel_name(op, geo),
                        flops / statistics.median(t["bf16"]) / 1e9))
        channels, hw = 128, hw // 2
    return out


def load():
    return "load %.1f %.1f %.1f" % os.getloadavg()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64, help="HEP input size (224: the paper's)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--no-layers", action="store_true", help="skip the per-convolution table")
    args = ap.parse_args()
    import tempfile
    info = kernels.cpu_info()
    print(f"CPU {info['model']}: ISA {info['isa']}, avx512_bf16 {info['avx512_bf16']}; bf16 GEMM "
          f"{bf16.kernel_name('gemm')}, conversion {bf16.kernel_name('convert')}; "
          f"{os.cpu_count()} CPUs, {load()}")
    with tempfile.TemporaryDirectory() as folder:
        hep = build(hep_prototxt(args.batch, args.size), folder, "hep", 2)
        lenet = build(LENET, folder, "lenet", 10)
        for threads in (int(t) for t in args.threads.split(",")):
            kernels.set_num_threads(threads)
            for name, net in ((f"HEP step {args.batch}x3x{args.size}^2", hep),
                              ("LeNet iteration b64", lenet)):
                ms, per_layer = alternating(net, args.reps)
                print(f"threads {threads}  {name:24s} fp32 {ms['fp32']:8.2f} ms  bf16 "
                      f"{ms['bf16']:8.2f} ms  ratio {ms['fp32'] / ms['bf16']:.2f}x  ({load()})")
                print(f"threads {threads}  {'':24s} {amdahl(net, ms, per_layer)}")
            if not args.no_layers:
                for what, f32row, f32, b16row, b16 in conv_rates(args.batch, args.size, args.reps):
                    print(f"threads {threads}  conv {what:22s} {f32row:24s} {f32:6.1f} GFLOP/s  "
                          f"{b16row:28s} {b16:6.1f} GFLOP/s  ratio {b16 / f32:.2f}x")
            for what, f32, b16 in gemm_rates(args.reps):
                print(f"threads {threads}  GEMM {what:12s} SGEMM {f32:6.1f} GFLOP/s  bf16 "
                      f"{b16:6.1f} GFLOP/s  ratio {b16 / f32:.2f}x")


if __name__ == "__main__":
    main()
