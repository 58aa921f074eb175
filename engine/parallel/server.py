"""Parameter servers: the asynchronous link between synchronous groups.

Each of the P servers owns one byte-balanced slice [lo, hi) of the parameter arena (not whole
blobs round-robin as IntelCaffe does, which leaves one server with the largest layer). Per
iteration the root of every group sends it the group's averaged gradient for that slice; the
server applies the solver's own update rule to the slice - the very classmethod single-process
training runs (SGDSolver.compute_update and friends: lr policy, momentum, weight decay, every
solver type) with the server's own update counter as the iteration - and sends the fresh weights
of the slice back. The group root broadcasts them in its group.

Threads: a communication thread receives (it blocks in MPI, which releases the GIL, so it does
not steal time from the updates) and queues complete requests; the main thread applies updates
and sends replies. MPI is initialised with MPI_THREAD_MULTIPLE (mpi4py's default).

Staleness of an update = server updates applied between the version the group read and the one
this gradient produces, minus one (0 when nobody else updated in between). With G equally fast
groups it is about G - 1. `max_staleness` K bounds how far groups drift apart (stale-synchronous
parallel, Ho et al. 2013): a group that has contributed more than K updates beyond the slowest
active group gets its reply only when the slowest catches up.

The momentum correction (Mitliagkas et al., "Asynchrony begets momentum", 2016): asynchrony with
G groups adds an implicit momentum of about 1 - 1/G; with `momentum_correction` the servers lower
the explicit momentum to max(0, momentum - (1 - 1/G)) so that the total stays near the
single-process value.

Message protocol (on a duplicate of COMM_WORLD, so it never matches user or collective traffic):
  root -> server  HEADER  int64[kind, version_read]      kind GRAD, STATE or FINAL
  root -> server  GRAD    float32 slice                  (after a GRAD header)
  server -> root  REPLY   int64[version, stop, staleness]
  server -> root  WEIGHTS float32 slice
  server -> root  HISTORY float32 history_sets x slice   (after STATE and FINAL)
"""
import queue
import threading
import time

import numpy as np

from ..arena import ArenaLayout
from ..solvers.lr_policy import learning_rate
from .progress import wait_all, wait_any

TAG_HEADER, TAG_GRAD, TAG_REPLY, TAG_WEIGHTS, TAG_HISTORY = 2101, 2102, 2103, 2104, 2105
GRAD, STATE, FINAL = 1, 2, 3


def corrected_momentum(momentum, groups):
    """Explicit momentum that, with the implicit momentum of `groups` asynchronous groups
    (about 1 - 1/groups), totals about `momentum`."""
    return max(0.0, float(momentum) - (1.0 - 1.0 / groups))


class ParameterServer:
    """One server rank. `config` is what the job root broadcasts (see HybridTrainer): the
    SolverParameter, the arena layout, the starting weights, history and version, the slices."""

    def __init__(self, comm, topo, solver_cls, param, layout, data, history, version, max_iter,
                 max_staleness=-1, momentum_correction=False, log=None):
        self.comm, self.topo = comm, topo
        self.cls, self.param = solver_cls, param
        if momentum_correction and topo.groups > 1:
            param.momentum = corrected_momentum(param.momentum, topo.groups)
        self.layout = ArenaLayout(layout)
        self.lo, self.hi = self.layout_slices()[topo.server_index]
        self.data = data[self.lo:self.hi].copy()
        self.history = [h[self.lo:self.hi].copy() for h in history]
        self.lr_mult = self.layout.lr_mult[self.lo:self.hi]
        self.decay_mult = self.layout.decay_mult[self.lo:self.hi]
        self.version = int(version)
        self.current_step = 0
        self.max_iter = int(max_iter)
        self.max_staleness = int(max_staleness)
        self.log = log
        self.staleness = []
        self.contributions = [0] * topo.groups
        self.update_seconds = 0.0
        self.requests = queue.Queue()

    def layout_slices(self):
        from ..arena import byte_balanced_slices
        return byte_balanced_slices(self.layout.size, self.topo.servers)

    # -- communication thread --------------------------------------------------------------
    def _receive_loop(self):
        """Receive headers (and gradients) from every group root until each has said FINAL."""
        from mpi4py import MPI
        roots = [self.topo.group_root_rank(g) for g in range(self.topo.groups)]
        headers = {r: np.zeros(2, np.int64) for r in roots}
        grads = {r: np.zeros(self.hi - self.lo, np.float32) for r in roots}
        pending = {r: self.comm.Irecv(headers[r], source=r, tag=TAG_HEADER) for r in roots}
        while pending:
            ranks = list(pending)
            index = wait_any([pending[r] for r in ranks])
            root = ranks[index]
            kind, version_read = (int(v) for v in headers[root])
            if kind == GRAD:
                wait_all([self.comm.Irecv(grads[root], source=root, tag=TAG_GRAD)])
                # the root waits for our reply before it sends again: the buffer stays ours
                self.requests.put((GRAD, root, version_read, grads[root]))
            else:
                self.requests.put((kind, root, version_read, None))
            if kind == FINAL:
                del pending[root]
            else:
                pending[root] = self.comm.Irecv(headers[root], source=root, tag=TAG_HEADER)
        self.requests.put(None)

    # -- main thread -----------------------------------------------------------------------
    def run(self):
        receiver = threading.Thread(target=self._receive_loop, name="crema-ps-comm", daemon=True)
        receiver.start()
        held = []        # replies held back by max_staleness: (group, root, staleness)
        finals = []      # roots waiting for the final state (the job root)
        active = set(range(self.topo.groups))
        while True:
            item = self.requests.get()
            if item is None:
                break
            kind, root, version_read, grad = item
            group = root // self.topo.group_size
            if kind == GRAD:
                staleness = -1
                if self.version < self.max_iter:
                    staleness = self._apply(grad, version_read)
                    self.contributions[group] += 1
                held.append((group, root, staleness))
            elif kind == STATE:
                self._send_state(root)
            else:  # FINAL: this group is done; the job root also wants the final state
                active.discard(group)
                if root == 0:
                    finals.append(root)
            held = self._release(held, active)
        for root in finals:
            self._send_state(root)
        receiver.join()

    def _release(self, held, active):
        """Send the replies that max_staleness allows (all of them when it is off)."""
        keep = []
        slowest = min((self.contributions[g] for g in active), default=0)
        for group, root, staleness in held:
            ahead = self.contributions[group] - slowest
            if self.max_staleness >= 0 and group in active and ahead > self.max_staleness \
                    and self.version < self.max_iter:
                keep.append((group, root, staleness))
                continue
            self._reply(root, staleness)
        return keep

    def _apply(self, grad, version_read):
        t0 = time.perf_counter()
        it = self.version
        rate, self.current_step = learning_rate(self.param, it, self.current_step)
        self.cls.compute_update(self.param, self.data, grad, self.history, self.lr_mult,
                                self.decay_mult, rate, it)
        self.data -= grad
        staleness = max(0, it - version_read)
        self.staleness.append(staleness)
        self.version += 1
        self.update_seconds += time.perf_counter() - t0
        return staleness

    def _reply(self, root, staleness):
        stop = int(self.version >= self.max_iter)
        header = np.array([self.version, stop, staleness], np.int64)
        wait_all([self.comm.Isend(header, dest=root, tag=TAG_REPLY),
                  self.comm.Isend(self.data, dest=root, tag=TAG_WEIGHTS)])

    def _send_state(self, root):
        self._reply(root, -1)
        packed = np.concatenate(self.history) if self.history else np.zeros(0, np.float32)
        wait_all([self.comm.Isend(packed, dest=root, tag=TAG_HISTORY)])

    def stats(self):
        return {"server": self.topo.server_index, "updates": len(self.staleness),
                "staleness": self.staleness, "contributions": self.contributions,
                "update_seconds": self.update_seconds, "bytes": (self.hi - self.lo) * 4}


class ServerLink:
    """The group root's side of the exchange with every server."""

    def __init__(self, comm, topo, arena, history_buffers):
        self.comm, self.topo, self.arena = comm, topo, arena
        from ..arena import byte_balanced_slices
        self.slices = byte_balanced_slices(arena.size, topo.servers)
        self.versions = [0] * topo.servers
        self.history_buffers = history_buffers
        self.staleness = []

    def set_versions(self, version):
        self.versions = [int(version)] * self.topo.servers

    def exchange(self, diff):
        """Send each server its slice of `diff`, receive fresh weights into the arena; returns
        (version, stop)."""
        from mpi4py import MPI
        replies = [np.zeros(3, np.int64) for _ in self.slices]
        reqs = []
        for s, (lo, hi) in enumerate(self.slices):
            dest = self.topo.server_rank(s)
            reqs.append(self.comm.Irecv(replies[s], source=dest, tag=TAG_REPLY))
            reqs.append(self.comm.Irecv(self.arena.data[lo:hi], source=dest, tag=TAG_WEIGHTS))
        for s, (lo, hi) in enumerate(self.slices):
            dest = self.topo.server_rank(s)
            reqs.append(self.comm.Isend(np.array([GRAD, self.versions[s]], np.int64), dest=dest,
                                        tag=TAG_HEADER))
            reqs.append(self.comm.Isend(diff[lo:hi], dest=dest, tag=TAG_GRAD))
        wait_all(reqs)
        stop = False
        for s, r in enumerate(replies):
            self.versions[s] = int(r[0])
            stop |= bool(r[1])
            if r[2] >= 0:
                self.staleness.append(int(r[2]))
        return self.versions[0], stop

    def fetch_state(self, kind=STATE):
        """The servers' current weights (into the arena) and history (into history_buffers);
        kind FINAL also tells the servers this group is done. Returns the version."""
        from mpi4py import MPI
        reqs = []
        replies = [np.zeros(3, np.int64) for _ in self.slices]
        packed = []
        sets = len(self.history_buffers)
        for s, (lo, hi) in enumerate(self.slices):
            src = self.topo.server_rank(s)
            buf = np.zeros(sets * (hi - lo), np.float32)
            packed.append(buf)
            reqs.append(self.comm.Irecv(replies[s], source=src, tag=TAG_REPLY))
            reqs.append(self.comm.Irecv(self.arena.data[lo:hi], source=src, tag=TAG_WEIGHTS))
            reqs.append(self.comm.Irecv(buf, source=src, tag=TAG_HISTORY))
        for s in range(len(self.slices)):
            reqs.append(self.comm.Isend(np.array([kind, self.versions[s]], np.int64),
                                        dest=self.topo.server_rank(s), tag=TAG_HEADER))
        wait_all(reqs)
        for s, (lo, hi) in enumerate(self.slices):
            n = hi - lo
            for k, h in enumerate(self.history_buffers):
                h[lo:hi] = packed[s][k * n:(k + 1) * n]
            self.versions[s] = int(replies[s][0])
        return self.versions[0]

    def finish(self):
        """Tell every server this group is done (non-root groups)."""
        from mpi4py import MPI
        reqs = [self.comm.Isend(np.array([FINAL, self.versions[s]], np.int64),
                                dest=self.topo.server_rank(s), tag=TAG_HEADER)
                for s in range(len(self.slices))]
        wait_all(reqs)
