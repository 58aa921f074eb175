"""LeNet's training iteration (batch 64: forward, backward, SGD update), crema against PyTorch on
the CPU, measured alternately in one process, per thread count.

    python bench/lenet_step.py                    # threads 1 and 2, 7 rounds of 50 iterations
    python bench/lenet_step.py --threads 1 --rounds 11 --iters 100

The net is Caffe's examples/mnist/lenet_train_test.prototxt with its Data layer replaced by an
Input layer (the data are random MNIST-like digits fed before each iteration, so both sides time
the same arithmetic and no data loading): conv 20 5x5 -> max pool 2/2 -> conv 50 5x5 -> max pool
2/2 -> InnerProduct 500 -> ReLU -> InnerProduct 10 -> SoftmaxWithLoss. Solver: Caffe's lenet_solver
(SGD, lr 0.01, momentum 0.9, weight decay 5e-4, lr_mult 2 on biases, "inv" policy).
crema runs `solver.step(1)`, the public pycaffe call a training script makes; PyTorch runs
zero_grad, forward, cross-entropy, backward and torch.optim.SGD.step with the same parameter
groups. Each round times --iters iterations of crema, then of PyTorch (the order alternates
between rounds, so drift in the machine's load falls on both); the ratio reported is the median
over rounds of PyTorch time / crema time (above 1: crema is faster). torch is imported only here:
it is not a crema dependency.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import engine  # noqa: E402
from engine import kernels  # noqa: E402

BATCH = 64
NET = """
name: "LeNet"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 64 dim: 1 dim: 28 dim: 28 } shape { dim: 64 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 20 kernel_size: 5 stride: 1
          weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 50 kernel_size: 5 stride: 1
          weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        inner_product_param { num_output: 500
          weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        param { lr_mult: 1 } param { lr_mult: 2 }
        inner_product_param { num_output: 10
          weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""
SOLVER = """
net: "{net}"
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "inv"
gamma: 0.0001
power: 0.75
display: 0
max_iter: 1000000
snapshot_after_train: false
random_seed: 1
"""


def digits(rng, n):
    """MNIST-like batches: sparse bright strokes on black, scaled by 1/256 as Caffe's example."""
    x = np.zeros((n, 1, 28, 28), np.float32)
    x[:, :, 4:24, 4:24] = (rng.random((n, 1, 20, 20)) > 0.8) * rng.random((n, 1, 20, 20))
    return x * np.float32(255 / 256), rng.integers(0, 10, n).astype(np.float32)


def crema_runner(folder):
    net_path = Path(folder) / "lenet.prototxt"
    net_path.write_text(NET)
    solver_path = Path(folder) / "lenet_solver.prototxt"
    solver_path.write_text(SOLVER.format(net=net_path))
    solver = engine.get_solver(str(solver_path))
    net = solver.net

    def run(batches):
        for x, y in batches:
            net.blobs["data"].data[...] = x
            net.blobs["label"].data[...] = y
            solver.step(1)
        return float(net.blobs["loss"].data)
    return run


def torch_runner(torch):
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2), nn.Conv2d(20, 50, 5),
                          nn.MaxPool2d(2, 2), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(),
                          nn.Linear(500, 10))
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    # Caffe's SGD: lr_mult 2 on biases, decay on both (decay_mult 1); torch's momentum update
    # (v = m v + g; w -= lr v) equals Caffe's at a constant rate, which is what is timed here.
    opt = torch.optim.SGD([{"params": weights, "lr": 0.01}, {"params": biases, "lr": 0.02}],
                          lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()

    def run(batches):
        for x, y in batches:
            xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
            opt.zero_grad(set_to_none=False)
            loss = loss_fn(model(xt), yt)
            loss.backward()
            opt.step()
        return loss.item()
    return run


def timed(run, batches):
    start = time.perf_counter()
    run(batches)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds (median; default 7)")
    ap.add_argument("--iters", type=int, default=50, help="iterations per round (default 50)")
    args = ap.parse_args()
    import torch  # only here: not a crema dependency

    rng = np.random.default_rng(0)
    batches = [digits(rng, BATCH) for _ in range(args.iters)]
    info = kernels.cpu_info()
    print(f"LeNet training iteration, batch {BATCH}: crema ({info['isa']} kernels, "
          f"{info['model']}) vs PyTorch {torch.__version__} CPU; {args.rounds} rounds of "
          f"{args.iters} iterations, alternating; medians")
    print(f"load average before: {_load()}")
    print(f"{'threads':>7} {'crema ms/iter':>14} {'torch ms/iter':>14} {'torch/crema':>12}")
    with tempfile.TemporaryDirectory() as folder:
        for threads in (int(t) for t in args.threads.split(",")):
            engine.set_num_threads(threads)
            torch.set_num_threads(threads)
            crema, pytorch = crema_runner(folder), torch_runner(torch)
            crema(batches[:5]), pytorch(batches[:5])  # warm-up: buffers, weight caches, JIT
            ratios, t_crema, t_torch = [], [], []
            for r in range(args.rounds):
                order = (crema, pytorch) if r % 2 == 0 else (pytorch, crema)
                times = {id(run): timed(run, batches) for run in order}
                t_crema.append(times[id(crema)]), t_torch.append(times[id(pytorch)])
                ratios.append(times[id(pytorch)] / times[id(crema)])
            per_iter = 1e3 / args.iters
            print(f"{threads:>7} {statistics.median(t_crema) * per_iter:>14.2f} "
                  f"{statistics.median(t_torch) * per_iter:>14.2f} "
                  f"{statistics.median(ratios):>11.2f}x")
    print(f"load average after: {_load()} (the machine's other work: two threads need two idle "
          "cores, so compare figures taken at similar loads)")


def _load():
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    main()
