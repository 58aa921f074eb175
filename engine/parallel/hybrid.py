"""The hybrid trainer: synchronous groups, asynchronous parameter servers, one SolverHooks object.

Every worker rank builds the same Solver from the same solver file; ParallelHooks ties it in:
  on_init            the job root broadcasts its weights, solver history, iteration and its
                     convolution algorithm choices (direct vs Winograd) to every rank; servers
                     take their slices
  on_start           arm the group's bucketed allreduce (engine/parallel/sync.py)
  on_gradients_ready wait for the buckets and average; the iteration's loss becomes the group
                     mean; signal requests (SIGINT/SIGHUP) are combined so that every rank acts
                     at the same iteration
  apply_update       with servers: the group root clips, sends the group gradient to the servers
                     and receives fresh weights; the group broadcasts them (the solver's local
                     rule is skipped). Without servers every rank applies the rule itself to the
                     identical averaged gradient, so the weights stay identical
  on_test/display    only the job root (rank 0) tests and logs
  on_snapshot        only rank 0 writes; with servers it first fetches the master weights and
                     history; in a synchronous group it gathers every rank's data position
Server ranks never build a net: they run ParameterServer.run() (engine/parallel/server.py).

For experiments, CREMA_EMULATE_STRAGGLER="RANK:FACTOR" makes worker RANK a straggler: after its
forward/backward it sleeps (FACTOR - 1) times the compute time it just took (bench/parallel.py).
"""
import os
import logging
import time

import numpy as np

from .. import kernels
from ..solvers import SolverHooks, solver_class
from .progress import wait_all
from .server import FINAL, ParameterServer, ServerLink
from .sync import GroupReducer

log = logging.getLogger("crema")


class CombinedActions:
    """solver.action_request for a rank of a parallel job. The local signal handler is polled
    once per iteration inside on_gradients_ready and the requests of the group are combined
    there; the solver then sees the combined request after the update, identically on every
    rank. During tests (rank 0 only) it answers "none", so no rank leaves the lockstep alone."""

    def __init__(self, local):
        self.local = local
        self.combined = "none"

    def poll_local(self):
        return "none" if self.local is None else self.local()

    def __call__(self):
        action, self.combined = self.combined, "none"
        return action


class ParallelHooks(SolverHooks):
    def __init__(self, solver, topo, comm, bucket_mb=25.0, first_bucket_mb=1.0,
                 max_staleness=-1, momentum_correction=False, timeline=None, watchdog=None):
        self.solver, self.topo, self.comm = solver, topo, comm
        self.timeline = timeline
        self.watchdog = watchdog
        self.max_staleness = max_staleness
        self.momentum_correction = momentum_correction
        self.reducer = GroupReducer(solver.net, topo.group_comm,
                                    bucket_bytes=int(bucket_mb * (1 << 20)),
                                    first_bucket_bytes=int(first_bucket_mb * (1 << 20)))
        self.link = None
        if topo.servers and topo.is_group_root:
            self.link = ServerLink(comm, topo, solver.net.arena, solver.history_buffers)
        self.actions = CombinedActions(solver.action_request)
        solver.action_request = self.actions
        self.finished = False
        self.samples = 0
        self.t_compute = self.t_reduce = self.t_server = self.t_bcast = 0.0
        self.t_start = None
        self._t_iter = None
        self.straggle = _straggler_factor(topo.rank)

    # -- start ---------------------------------------------------------------------------
    def on_init(self, solver):
        config = None
        if self.topo.is_root:
            config = {"param": solver.param.SerializeToString(), "type": solver.param.type,
                      "layout": solver.net.arena.layout(), "version": solver.iter,
                      "max_iter": solver.param.max_iter, "max_staleness": self.max_staleness,
                      "momentum_correction": self.momentum_correction,
                      "history_sets": len(solver.history_buffers),
                      "conv_algorithms": kernels.conv_algorithm_choices()}
        config = self.comm.bcast(config, root=0)
        broadcast_state(self.comm, solver.net.arena.data, solver.history_buffers)
        if not self.topo.is_root:
            kernels.adopt_conv_algorithm_choices(config["conv_algorithms"])
            for net in [solver.net] + list(solver.test_nets):
                net.reshape()  # layers re-read the algorithm choice (and size their buffers)
            solver.iter = int(config["version"])
        if self.link is not None:
            self.link.set_versions(solver.iter)
        self.t_start = time.perf_counter()

    def on_start(self, solver):
        self._t_iter = time.perf_counter()
        self.reducer.start_iteration(solver.param.iter_size)
        if self.watchdog is not None:
            self.watchdog.beat(solver.iter)

    def on_gradients_ready(self, solver):
        t0 = time.perf_counter()
        if self.straggle > 1:
            time.sleep((self.straggle - 1) * (t0 - self._t_iter))
            t0 = time.perf_counter()
        self.t_compute += t0 - self._t_iter
        if self.watchdog is not None:
            self.watchdog.beat(solver.iter, self.watchdog.COMMUNICATE)
        self.reducer.finish()
        local = self.actions.poll_local()
        code = {"none": 0, "snapshot": 1, "stop": 2}[local]
        loss, flags = self._group_combine(solver.iteration_loss, code)
        solver.iteration_loss = loss
        self.actions.combined = "stop" if flags & 2 else "snapshot" if flags & 1 else "none"
        t1 = time.perf_counter()
        self.t_reduce += t1 - t0
        if self.timeline is not None:
            self.timeline.span("compute", self._t_iter, t0, iter=solver.iter)
            self.timeline.span("reduce", t0, t1, iter=solver.iter)

    def _group_combine(self, loss, code):
        """(group-mean loss, action flags: 1 snapshot, 2 stop) in one small allreduce: the
        ranks that asked for each action are counted, so any rank's request counts."""
        from mpi4py import MPI
        comm = self.topo.group_comm
        buf = np.array([float(loss), code == 1, code == 2], np.float64)
        if comm.Get_size() > 1:
            wait_all([comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM)])
        mean = np.float32(buf[0] / comm.Get_size())
        return mean, (1 if buf[1] else 0) | (2 if buf[2] else 0)

    # -- update ----------------------------------------------------------------------------
    def apply_update(self, solver):
        if not self.topo.servers:
            return False
        t0 = time.perf_counter()
        header = np.zeros(2, np.int64)
        if self.link is not None:
            solver.learning_rate()  # logs the rate at display iterations (servers use their own)
            solver.clip_gradients()
            version, stop = self.link.exchange(solver.net.arena.diff)
            header[:] = (version, int(stop))
        t1 = time.perf_counter()
        group = self.topo.group_comm
        if group.Get_size() > 1:
            wait_all([group.Ibcast(header, root=0), group.Ibcast(solver.net.arena.data, root=0)])
        t2 = time.perf_counter()
        self.t_server += t1 - t0
        self.t_bcast += t2 - t1
        if self.timeline is not None:
            self.timeline.span("server round trip", t0, t1, iter=solver.iter)
            self.timeline.span("broadcast", t1, t2, iter=solver.iter)
        version, stop = int(header[0]), bool(header[1])
        solver.global_iter = max(version, solver.param.max_iter) if stop else version
        if stop:
            self._leave_servers(solver)
        return True

    def after_update(self, solver):
        self.samples += self.batch_size()  # this rank's own samples; rank 0 sums all ranks
        if self.timeline is not None and self._t_iter is not None:
            self.timeline.span("iteration", self._t_iter, time.perf_counter(), iter=solver.iter)

    def batch_size(self):
        net = self.solver.net
        for name in net.inputs or []:
            return net.blobs[name].shape[0] * self.solver.param.iter_size
        for layer, tops in zip(net.layers, net._top_blobs):
            if tops and tops[0].shape:
                return tops[0].shape[0] * self.solver.param.iter_size
        return 0

    def _leave_servers(self, solver):
        """This group is done: rank 0 fetches the final master state (servers answer once every
        group has left), other group roots just say goodbye."""
        if self.finished:
            return
        self.finished = True
        if self.link is None:
            return
        if self.topo.is_root:
            version = self.link.fetch_state(FINAL)
            solver.global_iter = max(solver.global_iter or 0, version, solver.param.max_iter)
        else:
            self.link.finish()

    # -- root-only work ----------------------------------------------------------------------
    def on_test(self, solver):
        return self.topo.is_root

    def on_display(self, solver):
        return self.topo.is_root

    def on_snapshot(self, solver):
        if self.topo.servers:
            if not self.topo.is_root:
                return False
            if not self.finished:
                # the master weights and history live on the servers; rank 0 adopts them
                self.link.fetch_state()
            return True
        # synchronous: every rank reaches this at the same iteration; rank 0 keeps each rank's
        # data position beside its own so that every rank resumes where it stopped
        states = self.topo.workers_comm.gather(solver.layer_states(), root=0)
        if self.topo.is_root:
            solver.rank_layer_states = states
        return self.topo.is_root

    # -- end ---------------------------------------------------------------------------------
    def close(self, solver):
        """After training: make sure the servers were told, then report."""
        if self.topo.servers and not self.finished:
            self._leave_servers(solver)

    def report(self):
        elapsed = time.perf_counter() - (self.t_start or time.perf_counter())
        return {"rank": self.topo.rank, "group": self.topo.group, "samples": self.samples,
                "seconds": elapsed, "compute": self.t_compute, "reduce": self.t_reduce,
                "server_rtt": self.t_server, "broadcast": self.t_bcast,
                "reduce_wait": self.reducer.wait_seconds,
                "staleness": list(self.link.staleness) if self.link is not None else []}


def _straggler_factor(rank):
    spec = os.environ.get("CREMA_EMULATE_STRAGGLER", "")
    if not spec:
        return 1.0
    try:
        who, factor = spec.split(":")
        return float(factor) if int(who) == rank else 1.0
    except ValueError:
        raise ValueError(f"CREMA_EMULATE_STRAGGLER={spec!r}: expected RANK:FACTOR, e.g. 1:2") \
            from None


def broadcast_state(comm, data, history_buffers):
    """Rank 0's weights and solver history to every rank of `comm` (servers included)."""
    comm.Bcast(data, root=0)
    for h in history_buffers:
        comm.Bcast(h, root=0)


def run_server(comm, topo, log_stats=None):
    """A server rank's whole life: receive the configuration and state the job root broadcasts
    in on_init, then serve until every group has finished. Returns the server's statistics."""
    from .. import crema_pb2
    from ..arena import ArenaLayout
    config = comm.bcast(None, root=0)
    layout = ArenaLayout(config["layout"])
    data = layout.zeros()
    history = [layout.zeros() for _ in range(config["history_sets"])]
    broadcast_state(comm, data, history)
    param = crema_pb2.SolverParameter()
    param.ParseFromString(config["param"])
    server = ParameterServer(comm, topo, solver_class(config["type"]), param, config["layout"],
                             data, history, config["version"], config["max_iter"],
                             max_staleness=config["max_staleness"],
                             momentum_correction=config["momentum_correction"])
    server.run()
    return server.stats()
