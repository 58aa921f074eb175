"""The HEP classifier's training step: crema's native kernels per layer and for the whole step,
against the same layers in PyTorch (same shapes, same process) and against the machine's
measured FMA peak.

    python bench/hep_step.py                      # batch 8, 224x224, threads 1 and 2
    python bench/hep_step.py --quick              # 64x64 input
    python bench/hep_step.py --isa avx2           # both sides limited to AVX2 (see below)
    python bench/hep_step.py --no-layers --reps 9 # only the whole-step ratios
    python bench/hep_step.py --numpy              # also time the whole step on the numpy path
    python bench/hep_step.py --algo direct        # direct kernels only (no Winograd)
    python bench/hep_step.py --precision bf16 --no-layers   # both sides in bfloat16

The net (issue 3), built with engine.Net from the prototxt text below (Input layers feed data and
labels): input N x 3 x 224 x 224; five units [Convolution 3x3, 128 outputs, pad 1 -> ReLU (in
place) -> MAX pooling 2x2 stride 2]; global AVE pooling; InnerProduct 2; SoftmaxWithLoss.

Whole step, per thread count (--threads, default 1,2): --reps rounds, each timing one crema
forward+backward and one PyTorch step (forward, loss, backward; the order alternates between
rounds, so drift in the machine's load falls on both); printed: medians and the median over
rounds of PyTorch ms / crema ms (above 1: crema is faster), with the ISA each side ran.

--precision bf16 runs crema's bf16 mode (Net.set_precision) against PyTorch's own bf16 training
(weights and activations in torch.bfloat16, channels_last: on CPUs with AVX512-BF16 its faster
layout, 2.0x its float32 step against 1.6x for NCHW at 64x64 on the 2-core EPYC); the loss is
taken in float32 on both sides. The per-layer table is float32 only.

--isa avx2 runs both sides as on an AVX2-only CPU: crema under the ISA cap (kernels.set_max_isa),
PyTorch with ATEN_CPU_CAPABILITY=avx2 and ONEDNN_MAX_CPU_ISA=AVX2 (its own switches, set before
torch is imported).

Per layer (first thread count; --no-layers skips it) it prints forward and backward ms (median of
--reps), GFLOP/s and % of peak for the convolutions (direct-algorithm flops, 2*N*K*C*R*S*P*Q per
pass; the backward of conv1 computes only the weight gradient, as the data needs none), the
kernel each pass ran, and the PyTorch time of the same operation (ratio = PyTorch ms / crema ms;
PyTorch allocates each output anew, as it does in training, and that counts in its times). The
forward and data-gradient passes of a convolution run direct or Winograd as
engine.kernels.conv_algorithm chooses (--algo sets CREMA_CONV_ALGO to force one); the %-of-peak
columns always count the direct algorithm's flops, so a Winograd pass can exceed 100%. The peak
is engine.kernels.peak_gflops() of the ISA in use times the thread count, probed right after
each convolution's timing (the machine is shared: a probe next to the measurement sees the same
contention). torch is imported only here (not a crema dependency).
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

UNITS = 5
WIDTH = 128


def prototxt(batch, size):
    layers = [
        f'layer {{ name: "data" type: "Input" top: "data" '
        f'input_param {{ shape {{ dim: {batch} dim: 3 dim: {size} dim: {size} }} }} }}',
        f'layer {{ name: "label" type: "Input" top: "label" '
        f'input_param {{ shape {{ dim: {batch} }} }} }}',
    ]
    bottom = "data"
    for i in range(1, UNITS + 1):
        layers += [
            f'layer {{ name: "conv{i}" type: "Convolution" bottom: "{bottom}" top: "conv{i}" '
            f'convolution_param {{ num_output: {WIDTH} kernel_size: 3 pad: 1 '
            f'weight_filler {{ type: "msra" }} '
            f'bias_filler {{ type: "constant" value: 0.01 }} }} }}',
            f'layer {{ name: "relu{i}" type: "ReLU" bottom: "conv{i}" top: "conv{i}" }}',
            f'layer {{ name: "pool{i}" type: "Pooling" bottom: "conv{i}" top: "pool{i}" '
            f'pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}',
        ]
        bottom = f"pool{i}"
    layers += [
        f'layer {{ name: "gap" type: "Pooling" bottom: "{bottom}" top: "gap" '
        f'pooling_param {{ pool: AVE global_pooling: true }} }}',
        'layer { name: "fc" type: "InnerProduct" bottom: "gap" top: "fc" '
        'inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }',
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }',
    ]
    return 'name: "hep"\n' + "\n".join(layers) + "\n"


def median_ms(fn, reps, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def conv_flops(shape_in, k, r=3, s=3):
    n, c, h, w = shape_in
    return 2.0 * n * k * c * r * s * h * w  # pad 1, stride 1: P = H, Q = W


# -- PyTorch counterparts -------------------------------------------------------------------------

def torch_layer_timers(torch, net, name, reps):
    """(forward ms, backward ms) of the PyTorch op equivalent to crema layer `name`."""
    f = torch.nn.functional
    layer = net.layer_dict[name]
    idx = list(net.layer_dict).index(name)
    bottoms = [net.blobs[b] for b in net.bottom_names[name]]
    x = torch.from_numpy(bottoms[0].data.copy())
    needs_dx = bool(net._bottom_need_backward[idx][0]) if net._bottom_need_backward[idx] else False
    x.requires_grad_(needs_dx)
    params = [torch.from_numpy(b.data.copy()).requires_grad_(True) for b in layer.blobs]
    if layer.type == "Convolution":
        op = lambda: f.conv2d(x, params[0], params[1], padding=1)
    elif layer.type == "ReLU":
        x.requires_grad_(True)
        op = lambda: f.relu(x)
    elif layer.type == "Pooling" and name == "gap":
        x.requires_grad_(True)
        op = lambda: f.adaptive_avg_pool2d(x, 1)
    elif layer.type == "Pooling":
        x.requires_grad_(True)
        op = lambda: f.max_pool2d(x, 2, 2)
    elif layer.type == "InnerProduct":
        x.requires_grad_(True)
        op = lambda: f.linear(x.flatten(1), params[0], params[1])
    elif layer.type == "SoftmaxWithLoss":
        x.requires_grad_(True)
        label = torch.from_numpy(net.blobs["label"].data.astype(np.int64))
        op = lambda: f.cross_entropy(x, label)
    else:
        return None, None
    with torch.no_grad():
        fwd = median_ms(op, reps)
    inputs = [t for t in [x] + params if t.requires_grad]
    if not inputs:
        return fwd, None
    y = op()
    dy = torch.ones_like(y)
    bwd = median_ms(lambda: torch.autograd.grad(y, inputs, dy, retain_graph=True), reps)
    return fwd, bwd


def torch_step(torch, net, precision="fp32"):
    """The whole training step (forward + loss + backward) of the same net in PyTorch, as a
    function; precision bf16: bf16 weights and activations in channels_last, the loss in
    float32."""
    nn, f = torch.nn, torch.nn.functional
    convs = [nn.Conv2d(3 if i == 0 else WIDTH, WIDTH, 3, padding=1) for i in range(UNITS)]
    fc = nn.Linear(WIDTH, 2)
    with torch.no_grad():
        for i, conv in enumerate(convs, 1):
            conv.weight.copy_(torch.from_numpy(net.params[f"conv{i}"][0].data))
            conv.bias.copy_(torch.from_numpy(net.params[f"conv{i}"][1].data))
    x = torch.from_numpy(net.blobs["data"].data.copy())
    if precision == "bf16":
        for m in convs + [fc]:
            m.to(dtype=torch.bfloat16, memory_format=torch.channels_last)
        x = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    params = [p for m in convs + [fc] for p in m.parameters()]
    label = torch.from_numpy(net.blobs["label"].data.astype(np.int64))

    def step():
        for p in params:
            p.grad = None
        h = x
        for conv in convs:
            h = f.max_pool2d(f.relu(conv(h), inplace=True), 2, 2)
        loss = f.cross_entropy(fc(f.adaptive_avg_pool2d(h, 1).flatten(1)).float(), label)
        loss.backward()

    return step


# -- main -----------------------------------------------------------------------------------------

def alternating(crema_step, torch_step, reps):
    """(crema ms, PyTorch ms, ratio): medians over `reps` rounds of one step each, the order
    alternating per round; ratio = median of the rounds' PyTorch ms / crema ms."""
    crema_step(), torch_step()  # warm-up: workspaces, caches, PyTorch's allocator
    times = {"crema": [], "torch": []}
    for i in range(reps):
        order = (("crema", crema_step), ("torch", torch_step))
        for side, fn in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            fn()
            times[side].append((time.perf_counter() - t0) * 1e3)
    ratios = [t / c for c, t in zip(times["crema"], times["torch"])]
    return (statistics.median(times["crema"]), statistics.median(times["torch"]),
            statistics.median(ratios))


def layer_table(net, torch, threads, reps):
    info = kernels.cpu_info()
    isa = info["isa"]
    probe = lambda: kernels.peak_gflops(isa, 0.1) * threads
    rows, peaks = [], []
    names = list(net.layer_dict)
    for name in names:
        layer = net.layer_dict[name]
        if layer.type == "Input":
            continue
        idx = names.index(name)
        fwd = median_ms(lambda: net.forward(start=name, end=name), reps)
        bwd = None
        if net._layer_need_backward[idx]:
            bwd = median_ms(lambda: net.backward(start=name, end=name), reps)
        row = {"name": name, "type": layer.type, "fwd": fwd, "bwd": bwd,
               "kernel": getattr(layer, "kernels", None) or layer.kernel,
               "out": tuple(net.blobs[net.top_names[name][0]].shape)}
        if layer.type == "Convolution":
            peak = probe()
            peaks.append(peak)
            shape_in = net.blobs[net.bottom_names[name][0]].shape
            fl = conv_flops(shape_in, layer.num_output)
            needs_dx = any(net._bottom_need_backward[idx])
            row.update(gf_f=fl / fwd / 1e6, pk_f=100 * fl / fwd / 1e6 / peak)
            if bwd is not None:
                bfl = fl * (2 if needs_dx else 1)
                row.update(gf_b=bfl / bwd / 1e6, pk_b=100 * bfl / bwd / 1e6 / peak)
        if torch is not None:
            row["t_fwd"], row["t_bwd"] = torch_layer_timers(torch, net, name, reps)
        rows.append(row)

    def fmt(v, spec="8.2f"):
        return format(v, spec) if v is not None else " " * int(spec.split(".")[0])

    print(f"\nper layer, {threads} thread(s):")
    print(f"{'layer':7} {'out shape':18} {'fwd ms':>8} {'bwd ms':>8} {'GF/s f':>7} "
          f"{'GF/s b':>7} {'%pk f':>6} {'%pk b':>6} {'torch f':>8} {'torch b':>8} "
          f"{'x f':>5} {'x b':>5}  kernels")
    for r in rows:
        ratio_f = r["t_fwd"] / r["fwd"] if r.get("t_fwd") else None
        ratio_b = r["t_bwd"] / r["bwd"] if r.get("t_bwd") and r["bwd"] else None
        kern = r["kernel"]
        if isinstance(kern, dict):
            kern = "/".join(kern[k] for k in ("forward", "backward_data", "backward_weights"))
        print(f"{r['name']:7} {str(r['out']):18} {fmt(r['fwd'])} {fmt(r['bwd'])} "
              f"{fmt(r.get('gf_f'), '7.1f')} {fmt(r.get('gf_b'), '7.1f')} "
              f"{fmt(r.get('pk_f'), '6.1f')} {fmt(r.get('pk_b'), '6.1f')} "
              f"{fmt(r.get('t_fwd'))} {fmt(r.get('t_bwd'))} {fmt(ratio_f, '5.2f')} "
              f"{fmt(ratio_b, '5.2f')}  {kern}")
    print(f"peak probes (GFLOP/s, {isa} x {threads} thread(s), one after each convolution): "
          + ", ".join(f"{p:.0f}" for p in peaks))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    ap.add_argument("--reps", type=int, default=7, help="rounds / repetitions (median)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="64x64 input instead of 224x224")
    ap.add_argument("--isa", choices=("native", "avx2"), default="native",
                    help="avx2: crema and PyTorch both limited to AVX2")
    ap.add_argument("--no-layers", action="store_true", help="skip the per-layer table")
    ap.add_argument("--numpy", action="store_true",
                    help="also time the whole step with CREMA_KERNELS=reference (slow)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    ap.add_argument("--algo", choices=("auto", "direct", "winograd"), default="auto",
                    help="CREMA_CONV_ALGO for the convolutions' forward and data-gradient passes")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="bf16: crema's bf16 mode against PyTorch's bf16 training")
    args = ap.parse_args()
    if args.precision == "bf16" and not args.no_layers:
        ap.error("the per-layer table is float32 only: add --no-layers with --precision bf16")
    os.environ["CREMA_CONV_ALGO"] = args.algo
    if args.isa == "avx2":
        kernels.set_max_isa("avx2")
        os.environ["ATEN_CPU_CAPABILITY"] = "avx2"
        os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    threads = [int(t) for t in args.threads.split(",")]

    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch is not installed: crema only (pip install torch==2.13.0 for the ratios)")

    size = 64 if args.quick else 224
    net = engine.Net(prototxt(args.batch, size), engine.TRAIN)
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].shape)
    net.blobs["label"].data[...] = rng.integers(0, 2, net.blobs["label"].shape)
    net.set_precision(args.precision)

    info = kernels.cpu_info()
    torch_isa = torch.backends.cpu.get_cpu_capability() if torch is not None else "-"
    print(f"crema HEP step ({args.precision}): batch {args.batch}, input 3x{size}x{size}, "
          f"{args.reps} rounds "
          f"(median); crema ISA {info['isa']}; PyTorch {torch.__version__ if torch else '-'} "
          f"ISA {torch_isa}; CPU {info['model']}; load %.1f %.1f %.1f" % os.getloadavg())
    tstep = torch_step(torch, net, args.precision) if torch is not None else None
    for i, n in enumerate(threads):
        kernels.set_num_threads(n)
        if torch is not None:
            torch.set_num_threads(n)
        if i == 0 and not args.no_layers:
            layer_table(net, torch, n, args.reps)
        if tstep is None:
            step = median_ms(net.forward_backward, args.reps)
            print(f"threads {n}  whole step: crema {step:.1f} ms = "
                  f"{args.batch / step * 1e3:.1f} images/s")
            continue
        c_ms, t_ms, ratio = alternating(net.forward_backward, tstep, args.reps)
        print(f"threads {n}  whole step: crema {c_ms:.1f} ms ({args.batch / c_ms * 1e3:.1f} "
              f"images/s, ISA {info['isa']}); PyTorch {t_ms:.1f} ms (ISA {torch_isa}); "
              f"crema / PyTorch throughput = {ratio:.2f}x  (load %.1f)" % os.getloadavg()[0])
    if args.numpy:
        os.environ["CREMA_KERNELS"] = "reference"
        ref = engine.Net(prototxt(args.batch, size), engine.TRAIN)
        ref.share_with(net)
        ref.blobs["data"].data[...] = net.blobs["data"].data
        ref.blobs["label"].data[...] = net.blobs["label"].data
        nstep = median_ms(ref.forward_backward, max(1, min(args.reps, 3)))
        os.environ.pop("CREMA_KERNELS")
        step = median_ms(net.forward_backward, args.reps)
        print(f"numpy reference path: {nstep:.1f} ms per step; native speedup {nstep / step:.1f}x")


if __name__ == "__main__":
    main()
