"""Waiting for MPI requests without starving the other ranks of a crowded node.

MPICH and Open MPI wait by spinning: the waiting rank keeps its core busy. That is the fastest
way when every rank has its own core, and the slowest when ranks outnumber the cores (the
spinners take the cycles the computing ranks need - measured here: 5 ranks on 2 cores ran at a
quarter of the throughput a spin-free wait gives). `wait_all`/`wait_any` test the requests, spin
briefly, then sleep with a growing back-off (capped at 1 ms). The trainer switches to this
polite mode when its node has more ranks than cores (or CREMA_MPI_WAIT=poll; =spin forces MPI's
own blocking wait).
"""
import os
import time

_mode = {"poll": False}


def configure(ranks_on_node, cores):
    choice = os.environ.get("CREMA_MPI_WAIT", "auto")
    if choice not in ("auto", "poll", "spin"):
        raise ValueError(f"CREMA_MPI_WAIT={choice!r}: use auto, poll or spin")
    _mode["poll"] = choice == "poll" or (choice == "auto" and ranks_on_node > cores)
    return "poll" if _mode["poll"] else "spin"


def _backoff():
    delay = 0.0
    spins = 0
    while True:
        yield delay
        spins += 1
        if spins > 50:
            delay = min(1e-3, max(2e-5, delay * 2))


def wait_all(requests):
    from mpi4py import MPI
    if not _mode["poll"]:
        MPI.Request.Waitall(requests)
        return
    for delay in _backoff():
        if MPI.Request.Testall(requests):
            return
        if delay:
            time.sleep(delay)


def wait_any(requests):
    """Index of a completed request (as MPI_Waitany)."""
    from mpi4py import MPI
    if not _mode["poll"]:
        return MPI.Request.Waitany(requests)
    for delay in _backoff():
        index, done = MPI.Request.Testany(requests)
        if done:
            return index
        if delay:
            time.sleep(delay)
