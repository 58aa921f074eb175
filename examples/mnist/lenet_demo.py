"""crema's main job until the HEP demo lands: LeNet forward and backward on synthetic digits.

Builds LeNet from lenet_train.prototxt, trains it for a few dozen plain-SGD steps (momentum 0.9,
Caffe's update with lr_mult) on ten noisy class templates, then reports loss, accuracy on fresh
samples, and the time per forward+backward. The solvers of `crema train` come later; this loop
uses only the pycaffe-style API (net.forward/backward, net.learnable_params).
"""
import argparse
import time
from pathlib import Path

import numpy as np

import engine

HERE = Path(__file__).resolve().parent


def synthetic_digits(rng, templates, n):
    labels = rng.integers(0, len(templates), n)
    images = templates[labels] + 0.35 * rng.standard_normal((n, 1, 28, 28))
    return np.clip(images, 0, 1).astype(np.float32), labels.astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    info = engine.kernels.cpu_info()
    print(f"crema {engine.__version__}: {info['model']} ({info['vendor']}), "
          f"{info['logical_cores']} logical cores, kernels: {info['kernels']}, ISA {info['isa']}")
    engine.set_random_seed(args.seed)
    net = engine.Net(str(HERE / "lenet_train.prototxt"), engine.TRAIN)
    for name, layer in net.layer_dict.items():
        print(f"  {name:9s} {layer.type:16s} top {tuple(net.blobs[net.top_names[name][0]].shape)}"
              if net.top_names[name] else f"  {name}")

    rng = np.random.default_rng(args.seed)
    templates = (rng.random((10, 1, 28, 28)) > 0.7).astype(np.float64)
    history = [np.zeros_like(b.data) for b in net.learnable_params]
    times = []
    for it in range(args.iters + 1):
        x, y = synthetic_digits(rng, templates, 64)
        net.clear_param_diffs()
        t0 = time.perf_counter()
        out = net.forward(data=x, label=y)
        net.backward()
        times.append(time.perf_counter() - t0)
        for blob, hist, lr in zip(net.learnable_params, history, net.params_lr):
            hist[...] = 0.9 * hist + args.lr * lr * blob.diff  # Caffe's SGD with momentum
            blob.data[...] -= hist
        if it % 10 == 0:
            print(f"iteration {it:3d}: loss = {float(out['loss']):.4f}, "
                  f"batch accuracy = {float(out['accuracy']):.3f}")

    x, y = synthetic_digits(rng, templates, 64)
    out = net.forward(data=x, label=y)
    ms = 1000 * float(np.median(times))
    print(f"held-out accuracy {float(out['accuracy']):.3f}, loss {float(out['loss']):.4f}; "
          f"forward+backward of batch 64: {ms:.1f} ms median ({64 / ms * 1000:.0f} images/s)")
    if float(out["loss"]) >= 2.0:
        raise SystemExit("LeNet did not learn the synthetic digits: loss stayed near chance")


if __name__ == "__main__":
    main()
