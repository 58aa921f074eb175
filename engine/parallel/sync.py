"""Synchronous gradient reduction inside a group: bucketed, nonblocking, overlapped with backward.

The diff arena (engine/arena.py) is cut into buckets of whole parameters, taken from the arena's
end (the last layers, whose gradients backward produces first) towards its start: a small first
bucket (so the first allreduce starts early instead of waiting for a big bucket to fill), then
buckets of up to `bucket_bytes`. After each layer's backward step the net calls the reducer;
every bucket whose parameters are all complete (every layer using them has run: shared
parameters wait for their first user) is started with MPI_Iallreduce, in bucket order, which is
the same on every rank - a fixed issue order is what keeps ranks from deadlocking or pairing the
wrong buffers (PyTorch DDP's rule). Between layers the reducer tests its requests so that MPI
makes progress while backward computes. `finish()` waits for the rest and divides by the group
size (Caffe's and DDP's average).

With iter_size > 1 only the last backward pass of an iteration reduces (the diffs accumulate
locally before it), as DDP's no_sync.
"""
import time

import numpy as np

from .progress import wait_all


def plan_buckets(arena, param_layers, first_bucket_bytes, bucket_bytes):
    """[(lo, hi, ready_layer)]: contiguous arena ranges in issue order, with the layer index
    after whose backward step the range is complete (the smallest layer index using any of its
    parameters). Parameters are never split across buckets."""
    buckets = []
    lo = hi = None
    ready = None
    cap = first_bucket_bytes
    for k in range(len(arena) - 1, -1, -1):
        off, n = arena.segment(k)
        end = off + (arena.offsets[k + 1] - off if k + 1 < len(arena) else arena.size - off)
        first_user = min(param_layers[k]) if param_layers[k] else 0
        if hi is None:
            lo, hi, ready = off, end, first_user
        else:
            lo, ready = off, min(ready, first_user)
        if (hi - lo) * 4 >= cap:
            buckets.append((lo, hi, ready))
            hi = None
            cap = bucket_bytes
    if hi is not None:
        buckets.append((lo, hi, ready))
    return buckets


class GroupReducer:
    """Averages the arena's diff over `comm` (one synchronous group)."""

    def __init__(self, net, comm, bucket_bytes=25 << 20, first_bucket_bytes=1 << 20,
                 timeline=None):
        from mpi4py import MPI
        self.MPI = MPI
        self.net = net
        self.comm = comm
        self.size = comm.Get_size()
        self.diff = net.arena.diff
        self.buckets = plan_buckets(net.arena, net.param_layers, first_bucket_bytes,
                                    bucket_bytes)
        self.timeline = timeline
        self.requests = []
        self.next_bucket = 0
        self.armed = False
        self.passes_left = 0
        self.comm_seconds = 0.0
        self.wait_seconds = 0.0
        if self.size > 1:
            net.after_backward(self._after_layer)

    def start_iteration(self, iter_size):
        self.passes_left = iter_size
        self.next_bucket = 0
        self.requests = []
        self.armed = iter_size == 1

    def _after_layer(self, i):
        if i == 0:
            self.passes_left -= 1
        if not self.armed:
            if i == 0 and self.passes_left == 1:
                self.armed = True  # the next backward pass is the last: reduce during it
            return
        t0 = time.perf_counter()
        while self.next_bucket < len(self.buckets) and self.buckets[self.next_bucket][2] >= i:
            lo, hi, _ = self.buckets[self.next_bucket]
            self.requests.append(self.comm.Iallreduce(self.MPI.IN_PLACE, self.diff[lo:hi],
                                                      op=self.MPI.SUM))
            self.next_bucket += 1
        if self.requests:
            self.MPI.Request.Testall(self.requests)  # progress the collectives in flight
        self.comm_seconds += time.perf_counter() - t0

    def finish(self):
        """Wait for every bucket and average; returns the seconds spent waiting."""
        if self.size == 1:
            return 0.0
        t0 = time.perf_counter()
        while self.next_bucket < len(self.buckets):  # e.g. a net whose backward hook never armed
            lo, hi, _ = self.buckets[self.next_bucket]
            self.requests.append(self.comm.Iallreduce(self.MPI.IN_PLACE, self.diff[lo:hi],
                                                      op=self.MPI.SUM))
            self.next_bucket += 1
        wait_all(self.requests)
        self.requests = []
        self.diff *= np.float32(1.0 / self.size)
        waited = time.perf_counter() - t0
        self.wait_seconds += waited
        self.armed = False
        return waited

    def mean(self, value):
        """The group mean of one float (the iteration's loss)."""
        if self.size == 1:
            return np.float32(value)
        buf = np.array([value], np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return np.float32(buf[0] / self.size)
