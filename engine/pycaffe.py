"""pycaffe's module-level helpers (caffe.Timer, caffe.init_log, caffe.log, caffe.has_nccl,
caffe.solver_count / solver_rank and their setters), so that `import engine as caffe` scripts
that call them run unchanged.

solver_count/solver_rank describe the parallel job this process belongs to: the MPI trainer
(engine/parallel/train.py) sets them to the number of worker ranks and this rank; in a plain
process they are 1 and 0, as in Caffe without multi-GPU. Setting them by hand (as pycaffe's
multi-GPU examples do) changes what data layers built afterwards read: Caffe's rule gives record
i of a TRAIN stream to rank i mod solver_count.
"""
import logging
import time

_job = {"count": 1, "rank": 0, "multiprocess": False}


def solver_count():
    return _job["count"]


def set_solver_count(count):
    count = int(count)
    if count < 1:
        raise ValueError(f"solver_count must be at least 1, got {count}")
    _job["count"] = count


def solver_rank():
    return _job["rank"]


def set_solver_rank(rank):
    rank = int(rank)
    if not 0 <= rank < _job["count"]:
        raise ValueError(f"solver_rank {rank} is not in [0, solver_count {_job['count']})")
    _job["rank"] = rank


def set_multiprocess(flag):
    _job["multiprocess"] = bool(flag)


def has_nccl():
    """crema runs on CPUs: no NCCL (its MPI trainer does what Caffe's NCCL did)."""
    return False


def init_log(level=0, stderr=False):
    """glog-style lines on stderr for crema's log at glog's level (0 INFO, 1 WARNING, 2 ERROR,
    3 FATAL), as pycaffe's init_log."""
    from .logs import install_glog_format
    levels = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR, 3: logging.CRITICAL}
    if int(level) not in levels:
        raise ValueError(f"log level must be 0 (INFO) to 3 (FATAL), got {level}")
    install_glog_format(level=levels[int(level)]).setLevel(levels[int(level)])


def log(message):
    """An INFO line in crema's log (pycaffe's caffe.log)."""
    logging.getLogger("crema").info("%s", message)


class Timer:
    """pycaffe's Timer: start(), stop(), and the elapsed time in `ms` (wall clock, as Caffe's
    CPU timer)."""

    def __init__(self):
        self._start = None
        self._elapsed = 0.0
        self.running = False

    def start(self):
        self._start = time.perf_counter()
        self.running = True

    def stop(self):
        if self.running:
            self._elapsed = time.perf_counter() - self._start
            self.running = False

    @property
    def ms(self):
        if self.running:
            return (time.perf_counter() - self._start) * 1e3
        return self._elapsed * 1e3
