"""Parallel training throughput on this machine, measured, with `crema scale`'s prediction beside
each figure.

Every configuration trains the same net (LeNet's layers on synthetic 28x28 digits read from HDF5,
batch B per worker rank) with `mpiexec -n N crema train` for a fixed number of iterations; the
throughput is rank 0's closing "images/s overall" line (all workers' samples over the longest
rank's training time). The prediction is engine.scale.predict_for_ranks on the same net, timed
here, with the machine's cores shared by the ranks (one kernel thread per rank) and the "local"
(shared-memory) network profile.

Rows: 1, 2 and 4 ranks in one synchronous group (speed-up vs 1 rank), hybrid layouts, and the
straggler experiment: one worker made 2x slower (CREMA_EMULATE_STRAGGLER) in a synchronous group
of 4 and in 4 asynchronous groups of 1 with a server; the ratio is throughput with the straggler
over throughput without. Everything is printed as ratios taken in this one run; medians of
--repeats runs.

    python bench/parallel.py [--iters 200] [--batch 32] [--repeats 3] [--max-ranks 5]
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

NET = """name: "LeNet-hdf5"
layer {{ name: "mnist" type: "HDF5Data" top: "data" top: "label"
        hdf5_data_param {{ source: "train.txt" batch_size: {batch} }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param {{ num_output: 20 kernel_size: 5 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param {{ num_output: 50 kernel_size: 5 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
        pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
        inner_product_param {{ num_output: 500 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
"""


def prepare(folder, batch, iters, n=4096):
    g = np.random.default_rng(0)
    with h5py.File(folder / "train.h5", "w") as f:
        f["data"] = g.random((n, 1, 28, 28), dtype=np.float32)
        f["label"] = g.integers(0, 10, n).astype(np.float32)
    (folder / "train.txt").write_text(str(folder / "train.h5") + "\n")
    (folder / "net.prototxt").write_text(NET.format(batch=batch))
    (folder / "solver.prototxt").write_text(
        f'net: "net.prototxt"\nbase_lr: 0.001\nmomentum: 0.9\nweight_decay: 0.0005\n'
        f'lr_policy: "fixed"\nmax_iter: {iters}\ndisplay: 0\nsnapshot_after_train: false\n'
        'random_seed: 1\n')


def measure(folder, ranks, groups, servers, straggler=None):
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or "mpiexec"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if straggler:
        env["CREMA_EMULATE_STRAGGLER"] = straggler
    cmd = [mpiexec, "-n", str(ranks), sys.executable, "-m", "engine.cli", "train", "-solver",
           "solver.prototxt", "-threads", "1", "-groups", str(groups), "-servers", str(servers)]
    res = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=env, timeout=1200)
    # (random labels: the rate is low enough that 4 asynchronous groups do not diverge)
    if res.returncode != 0:
        sys.stderr.write(res.stderr[-3000:])
        raise SystemExit(f"{' '.join(cmd)} failed")
    m = re.search(r"throughput: ([\d.]+) images/s overall", res.stderr)
    return float(m.group(1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-ranks", type=int, default=5)
    args = ap.parse_args(argv)
    from engine import kernels
    from engine.scale.calibrate import measure as calibrate
    from engine.scale.sim import ScaleConfig, simulate
    cores = len(os.sched_getaffinity(0))
    print(f"machine: {cores} cores; kernels ISA {kernels.cpu_info()['isa']}, 1 thread per rank; "
          f"LeNet layers, batch {args.batch} per worker, {args.iters} iterations, median of "
          f"{args.repeats}")
    layouts = [("sync", 1, 1, 0), ("sync", 2, 1, 0), ("sync", 4, 1, 0),
               ("hybrid", 3, 2, 1), ("hybrid", 5, 2, 1), ("async", 5, 4, 1)]
    layouts = [l for l in layouts if l[1] <= args.max_ranks]
    with tempfile.TemporaryDirectory(prefix="crema-parallel-") as tmp:
        folder = Path(tmp)
        prepare(folder, args.batch, args.iters)
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            costs = calibrate(str(folder / "net.prototxt"), runs=5, threads=1)
        finally:
            os.chdir(cwd)

        def predict(ranks, groups, servers, stragglers=0):
            contention = max(1.0, ranks / cores)
            config = ScaleConfig(model=costs, nodes=ranks, groups=groups, servers=servers,
                                 batch=args.batch, compute_scale=contention, network="local",
                                 straggler_count=stragglers, slowdown=2.0, iterations=40,
                                 warmup=5)
            return simulate(config).throughput

        measured = {}
        rows = []
        for kind, ranks, groups, servers in layouts:
            runs = [measure(folder, ranks, groups, servers) for _ in range(args.repeats)]
            measured[(ranks, groups, servers)] = statistics.median(runs)
            rows.append((f"{kind} {groups}x{(ranks - servers) // groups}+{servers}", ranks,
                         measured[(ranks, groups, servers)], predict(ranks, groups, servers)))
        base_m, base_p = rows[0][2], rows[0][3]
        print(f"{'layout':<16}{'ranks':>6}{'images/s':>11}{'vs 1 rank':>11}{'predicted':>11}"
              f"{'pred vs 1':>11}{'measured/predicted':>20}")
        for name, ranks, m, p in rows:
            print(f"{name:<16}{ranks:>6}{m:>11.1f}{m / base_m:>10.2f}x{p:>11.1f}"
                  f"{p / base_p:>10.2f}x{m / p:>19.2f}x")
        print("\nstraggler: worker rank 1 runs 2x slower (throughput with / without it)")
        for kind, ranks, groups, servers in (("sync", 4, 1, 0), ("async", 5, 4, 1)):
            if ranks > args.max_ranks:
                continue
            runs = [measure(folder, ranks, groups, servers, straggler="1:2")
                    for _ in range(args.repeats)]
            m = statistics.median(runs) / measured[(ranks, groups, servers)]
            p = predict(ranks, groups, servers, stragglers=1) / predict(ranks, groups, servers)
            print(f"  {kind} {groups}x{(ranks - servers) // groups}+{servers}: measured "
                  f"{m:.2f}x, predicted {p:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
