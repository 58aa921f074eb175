"""Predictions to put beside measured runs of the real trainer on ONE machine.

bench/parallel.py runs the MPI trainer with 1-5 ranks on this machine and measures the iteration
time; ``predict_for_ranks`` gives the simulator's figure for the same world. On one machine the
"network" is shared memory (the ``local`` network profile) and the ranks share the cores: when
ranks x threads per rank exceed the cores, every compute time is multiplied by
ranks x threads / cores (the processes time-share the cores; memory-bandwidth contention below
that point is not modelled). Server ranks count as ranks for that purpose: a parameter server
polls its receives and so occupies a core.
"""
import functools
import os
from pathlib import Path

from .calibrate import ModelCosts, measure
from .sim import MiB, ScaleConfig, simulate


@functools.lru_cache(maxsize=16)
def _calibrated(path, threads, runs):
    return measure(path, runs=runs, threads=threads)


def predict_for_ranks(model, ranks, groups=1, servers=0, batch=None, network="local",
                      cores=None, threads_per_rank=1, node_flops=None, iterations=20, warmup=3,
                      bucket_mb=25.0, first_bucket_mb=1.0, max_staleness=None, jitter=0.0,
                      seed=0, runs=3):
    """Simulated Result for `ranks` MPI processes on this machine.

    model: a prototxt path (measured here once per process and thread count, with
        engine.set_num_threads(threads_per_rank)), or a ModelCosts (with a Timing, or with
        node_flops given).
    ranks: all processes, servers included; (ranks - servers) must split into `groups` equal
        groups, as the real trainer requires.
    batch: samples per rank per iteration (default: the net's own batch).
    cores: CPU cores shared by the ranks (default os.cpu_count()).
    Result.iteration_mean_s / iteration_median_s are the figures to compare with a measured
    iteration time; Result.throughput is samples/s over all ranks.
    """
    if isinstance(model, (str, Path)):
        costs = _calibrated(str(model), int(threads_per_rank), int(runs))
    elif isinstance(model, ModelCosts):
        costs = model
    else:
        raise TypeError("model must be a prototxt path or a ModelCosts")
    ranks, groups, servers = int(ranks), int(groups), int(servers)
    workers = ranks - servers
    if workers < 1 or groups < 1 or workers % groups:
        raise ValueError(f"{ranks} ranks with {servers} server(s) do not split into {groups} "
                         "equal group(s)")
    cores = int(cores or os.cpu_count() or 1)
    contention = max(1.0, ranks * max(int(threads_per_rank), 1) / cores)
    config = ScaleConfig(model=costs, nodes=ranks, groups=groups, servers=servers, batch=batch,
                         node_flops=node_flops, compute_scale=contention, network=network,
                         first_bucket_bytes=int(first_bucket_mb * MiB),
                         bucket_bytes=int(bucket_mb * MiB), max_staleness=max_staleness,
                         jitter=jitter, iterations=iterations, warmup=warmup, seed=seed)
    result = simulate(config)
    if contention > 1:
        result.notes.append(f"compute x{contention:.2f}: {ranks} ranks x {threads_per_rank} "
                            f"thread(s) on {cores} cores")
    return result
