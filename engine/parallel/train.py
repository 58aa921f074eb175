"""One training job over MPI: `mpiexec -n N crema train -solver s.prototxt [-groups G]
[-servers P]`. Every rank runs `train_parallel`; see hybrid.py for what the ranks do together.

Only the job root (rank 0) writes Caffe's log on stderr; with `log_dir` every rank also writes
its own log file there (crema.rank<R>.log). The end of the run is summarised on rank 0: images/s
overall and per group, time shares (compute, gradient reduction, server round trips, broadcast)
and, with servers, the staleness histogram.
"""
import collections
import logging
import os

import numpy as np

from .. import rng
from . import progress
from .faults import Watchdog, activate
from .hybrid import ParallelHooks, run_server
from .timeline import Timeline
from .topology import make_topology

log = logging.getLogger("crema")


def mpi_world_size_from_env():
    """The world size a launcher announced in the environment (MPICH/Hydra, Open MPI, Slurm's
    PMI/PMIx), without importing MPI; None when not launched by one."""
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    if os.environ.get("SLURM_NTASKS", "").isdigit() and "SLURM_STEP_ID" in os.environ \
            and ("PMI_RANK" in os.environ or "PMIX_RANK" in os.environ):
        return int(os.environ["SLURM_NTASKS"])
    return None


def _configure_logging(topo, log_dir):
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
        from ..logs import GlogFormatter
        handler = logging.FileHandler(os.path.join(log_dir, f"crema.rank{topo.rank}.log"))
        handler.setFormatter(GlogFormatter())
        log.addHandler(handler)
    if not topo.is_root:
        # other ranks stay quiet on the terminal (their warnings and errors still show)
        for handler in log.handlers:
            if not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.WARNING)
        for handler in logging.getLogger().handlers:
            handler.setLevel(logging.WARNING)


def train_parallel(make_solver, *, groups=1, servers=0, bucket_mb=25.0, first_bucket_mb=1.0,
                   max_staleness=-1, momentum_correction=False, threads=0, log_dir="",
                   timeline_path="", stall_timeout=300.0, resume_file=None):
    """Run one rank of a parallel training job. `make_solver()` builds this worker's Solver
    (workers only; servers build none). Returns the solver on workers, None on servers."""
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    topo = make_topology(comm, groups, servers)  # an impossible layout fails on every rank
    activate(comm)
    _configure_logging(topo, log_dir)
    if threads:
        from .. import set_num_threads
        set_num_threads(threads)
    else:
        from .. import set_num_threads
        set_num_threads(topo.local_threads())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    wait_mode = progress.configure(topo.node_comm.Get_size(), cores or 1)
    if topo.is_root:
        log.info("Parallel training: %s; %d thread(s) per rank; MPI waits %s", topo.describe(),
                 topo.local_threads() if not threads else threads,
                 "by polling with back-off (more ranks than cores)" if wait_mode == "poll"
                 else "by spinning")
    watchdog = Watchdog(comm, timeout=stall_timeout, log=log) if stall_timeout > 0 else None
    timeline = Timeline(topo.rank) if timeline_path else None
    solver = hooks = None
    server_stats = None
    try:
        if topo.is_server:
            if watchdog is not None:
                watchdog.finished()  # a server waits by design; its groups' progress is watched
            server_stats = run_server(comm, topo)
        else:
            # one seed for every rank's data stream even when the solver sets none (a shuffled
            # order must be the same everywhere for record striding to partition the records)
            seed = int(np.random.SeedSequence().entropy % (1 << 31)) if topo.is_root else None
            shared_seed = topo.workers_comm.bcast(seed, root=0)
            rng.set_random_seed(shared_seed, rank=topo.rank)
            from ..pycaffe import set_solver_count, set_solver_rank
            set_solver_count(topo.workers)
            set_solver_rank(topo.rank)
            solver = make_solver()
            solver.data_rank = topo.rank
            solver.net.set_data_shard(topo.rank, topo.workers)
            if solver.param.random_seed >= 0:
                # dropout and other stochastic layers differ per rank; data shuffles do not
                rng.set_random_seed(solver.param.random_seed, rank=topo.rank)
            hooks = ParallelHooks(solver, topo, comm, bucket_mb=bucket_mb,
                                  first_bucket_mb=first_bucket_mb, max_staleness=max_staleness,
                                  momentum_correction=momentum_correction, timeline=timeline,
                                  watchdog=watchdog)
            solver.add_hooks(hooks)
            solver.solve(resume_file=resume_file)
            hooks.close(solver)
            if watchdog is not None:
                watchdog.finished()
        reports = comm.gather(hooks.report() if hooks is not None else
                              {"rank": topo.rank, "server_stats": server_stats}, root=0)
        if timeline is not None:
            timeline.gather_and_write(comm, timeline_path)
        if topo.is_root:
            summarize(topo, reports)
            if timeline is not None:
                log.info("Timeline written to %s", timeline_path)
    finally:
        if watchdog is not None:
            watchdog.close()
    return solver


def summarize(topo, reports):
    """Rank 0's closing lines: throughput, time shares, staleness."""
    workers = [r for r in reports if "samples" in r]
    servers = [r["server_stats"] for r in reports if r.get("server_stats")]
    seconds = max((r["seconds"] for r in workers), default=0.0) or 1e-9
    samples = sum(r["samples"] for r in workers)
    log.info("Parallel summary: %s", topo.describe())
    log.info("  throughput: %.1f images/s overall (%d images in %.2f s)", samples / seconds,
             samples, seconds)
    per_group = collections.defaultdict(int)
    for r in workers:
        per_group[r["group"]] += r["samples"]
    log.info("  per group: %s", ", ".join(f"group {g}: {n / seconds:.1f} images/s"
                                          for g, n in sorted(per_group.items())))
    total = sum(r["seconds"] for r in workers) or 1e-9
    shares = {k: sum(r[k] for r in workers) / total
              for k in ("compute", "reduce", "server_rtt", "broadcast")}
    log.info("  time shares (all workers): compute %.1f%%, gradient reduction %.1f%% (waiting "
             "%.1f%%), server round trips %.1f%%, weight broadcast %.1f%%",
             100 * shares["compute"], 100 * shares["reduce"],
             100 * sum(r["reduce_wait"] for r in workers) / total, 100 * shares["server_rtt"],
             100 * shares["broadcast"])
    if servers:
        staleness = [s for st in servers for s in st["staleness"]]
        if staleness:
            hist = collections.Counter(staleness)
            log.info("  staleness over %d server updates: mean %.2f, max %d (expect about "
                     "groups - 1 = %d); histogram %s", len(staleness), float(np.mean(staleness)),
                     max(staleness), topo.groups - 1,
                     ", ".join(f"{k}: {hist[k]}" for k in sorted(hist)))
        for st in servers:
            log.info("  server %d: %d updates, %.1f MB slice, %.2f s updating, contributions "
                     "per group %s", st["server"], st["updates"], st["bytes"] / 1e6,
                     st["update_seconds"], st["contributions"])
