"""bf16 vs fp32 in one process: the HEP classifier's training step (bench/hep_step.py's net) and
a LeNet training iteration (forward + backward), per thread count, alternating fp32 / bf16
rounds (medians), with the ISA and the bf16 GEMM row in use; plus the bf16 GEMM alone vs SGEMM on
the HEP convolutions' products (GFLOP/s).

    python bench/bf16.py                    # HEP 64x64 batch 8, LeNet batch 64, threads 1 and 2
    python bench/bf16.py --size 224 --reps 5

ratio = fp32 ms / bf16 ms (above 1: bf16 is faster)."""
import argparse
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
    """Median ms of forward_backward per precision, rounds alternating fp32 / bf16."""
    times = {"fp32": [], "bf16": []}
    for p in times:  # warm-up (workspaces, caches)
        net.set_precision(p)
        net.forward_backward()
    for _ in range(reps):
        for p in times:
            net.set_precision(p)
            t0 = time.perf_counter()
            net.forward_backward()
            times[p].append((time.perf_counter() - t0) * 1e3)
    return {p: statistics.median(v) for p, v in times.items()}


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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64, help="HEP input size (224: the paper's)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", default="1,2")
    args = ap.parse_args()
    import tempfile
    info = kernels.cpu_info()
    print(f"CPU {info['model']}: ISA {info['isa']}, avx512_bf16 {info['avx512_bf16']}; bf16 GEMM "
          f"{bf16.kernel_name('gemm')}, conversion {bf16.kernel_name('convert')}")
    with tempfile.TemporaryDirectory() as folder:
        hep = build(hep_prototxt(args.batch, args.size), folder, "hep", 2)
        lenet = build(LENET, folder, "lenet", 10)
        for threads in (int(t) for t in args.threads.split(",")):
            kernels.set_num_threads(threads)
            for name, net in ((f"HEP step {args.batch}x3x{args.size}^2", hep),
                              ("LeNet iteration b64", lenet)):
                ms = alternating(net, args.reps)
                print(f"threads {threads}  {name:24s} fp32 {ms['fp32']:8.2f} ms  bf16 "
                      f"{ms['bf16']:8.2f} ms  ratio {ms['fp32'] / ms['bf16']:.2f}x")
            for what, f32, b16 in gemm_rates(args.reps):
                print(f"threads {threads}  GEMM {what:12s} SGEMM {f32:6.1f} GFLOP/s  bf16 "
                      f"{b16:6.1f} GFLOP/s  ratio {b16 / f32:.2f}x")


if __name__ == "__main__":
    main()
