"""Fail fast, never hang: one rank's error ends the whole MPI job within seconds.

An unhandled exception on one rank would otherwise leave the other ranks waiting forever in a
collective (mpi4py's documentation warns about exactly this). `abort_job` prints one line naming
the rank and the error and calls MPI_Abort on COMM_WORLD, which makes the launcher (mpiexec,
mpirun, srun) kill every rank; the exit status is non-zero.

The stall watchdog covers what no exception reports: a rank that stops making progress (a
deadlock, a hung file system, a rank stopped by a debugger). Every rank sends its iteration to
rank 0 as a heartbeat on a private communicator from a background thread; rank 0's watchdog
names the ranks whose iteration has not advanced for `timeout` seconds while the job goes on
(Horovod's stall inspector warns after 60 s), and with `abort=True` ends the job.
"""
import os
import sys
import threading
import time

import numpy as np

_active = {"comm": None, "rank": None}
TAG_BEAT = 2201
FINISHED = 1 << 62


def activate(comm):
    """Mark this process as one rank of a parallel job (abort_job then ends the whole job)."""
    _active["comm"], _active["rank"] = comm, comm.Get_rank()


def active_rank():
    return _active["rank"]


def abort_job(message, status=1):
    """Print `crema: error: rank R: message` and end every rank of the job."""
    comm = _active["comm"]
    print(f"crema: error: rank {_active['rank']}: {message}", file=sys.stderr, flush=True)
    if comm is None:
        return
    sys.stdout.flush()
    time.sleep(0.5)  # let the launcher forward the message before it kills the job
    try:
        comm.Abort(status)
    finally:  # Abort does not return; if the MPI library is gone, leave without cleanup
        os._exit(status)


class Watchdog:
    """Heartbeats to rank 0 and, on rank 0, the stall check (see the module docstring)."""

    def __init__(self, comm, timeout=60.0, period=1.0, abort=True, log=None):
        self.comm = comm.Dup()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout, self.period, self.abort = float(timeout), float(period), abort
        self.log = log
        self.iteration = -1
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._send_loop, daemon=True,
                                         name="crema-heartbeat")]
        if self.rank == 0:
            self.threads.append(threading.Thread(target=self._watch_loop, daemon=True,
                                                 name="crema-watchdog"))
        for t in self.threads:
            t.start()

    COMPUTE, COMMUNICATE = 0, 1

    def beat(self, iteration, phase=COMPUTE):
        """This rank is at `iteration`, computing (0) or inside a collective/exchange (1)."""
        self.iteration = int(iteration) * 2 + int(phase)

    def finished(self):
        """This rank has finished training: it no longer needs to make progress."""
        self.iteration = FINISHED

    def _send_loop(self):
        while not self.done.wait(self.period):
            self.comm.Send(np.array([self.iteration], np.int64), dest=0, tag=TAG_BEAT)

    def _watch_loop(self):
        from mpi4py import MPI
        start = time.monotonic()
        last = {r: (-1, start) for r in range(self.size)}
        buf = np.zeros(1, np.int64)
        status = MPI.Status()
        while not self.done.is_set():
            while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=TAG_BEAT, status=status):
                src = status.Get_source()
                self.comm.Recv(buf, source=src, tag=TAG_BEAT)
                if buf[0] != last[src][0]:
                    last[src] = (int(buf[0]), time.monotonic())
            now = time.monotonic()
            stalled = {r: it for r, (it, t) in last.items()
                       if now - t > self.timeout and it != FINISHED}
            if stalled:
                # the ranks that hold the others up are the ones furthest behind (still
                # computing while the rest wait in a collective for them); heartbeats are
                # sampled once a period, so the culprit need not be the first one noticed
                active = {r: it for r, (it, _) in last.items() if it != FINISHED}
                behind = min(active.values())
                culprits = sorted(r for r, it in active.items() if it == behind)
                where = "never reported" if behind < 0 else \
                    f"at iteration {behind // 2}" + (" (computing)" if behind % 2 == 0 else "")
                message = (f"stall: rank(s) {', '.join(map(str, culprits))} made no progress "
                           f"for {self.timeout:g} s, {where}")
                if self.abort:
                    abort_job(message + "; ending the job (-stall_timeout sets the limit)")
                if self.log is not None:
                    self.log.warning(message)
                for r in stalled:
                    last[r] = (last[r][0], now)
            time.sleep(min(self.period, 0.2))

    def close(self):
        self.done.set()
