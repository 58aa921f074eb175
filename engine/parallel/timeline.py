"""Per-rank Chrome-trace events (chrome://tracing, Perfetto): compute, reduce, server round
trip, broadcast, wait. Each rank records spans in memory; at the end rank 0 gathers them and
writes one JSON file in which every rank is a process (pid = rank), atomically."""
import json
import os
import time

from ..fileio import atomic_write


class Timeline:
    def __init__(self, rank):
        self.rank = rank
        self.origin = time.perf_counter()
        self.events = []

    def span(self, name, t0, t1, **args):
        self.events.append({"name": name, "cat": "crema", "ph": "X", "pid": self.rank,
                            "tid": 0, "ts": (t0 - self.origin) * 1e6,
                            "dur": max(0.0, t1 - t0) * 1e6, "args": args})

    def gather_and_write(self, comm, path, origin_offsets=True):
        """Collective over `comm`: rank 0 writes every rank's events to `path`."""
        events = comm.gather(self.events, root=0)
        if comm.Get_rank() != 0:
            return None
        trace = {"traceEvents": [e for rank_events in events for e in rank_events]
                 + [{"name": "process_name", "ph": "M", "pid": r,
                     "args": {"name": f"rank {r}"}} for r in range(len(events))],
                 "displayTimeUnit": "ms"}

        def write(tmp):
            with open(tmp, "w") as f:
                json.dump(trace, f)
        atomic_write(os.fspath(path), write)
        return path
