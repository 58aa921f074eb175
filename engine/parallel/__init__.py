"""Training one model across MPI processes: synchronous groups that average gradients with
bucketed nonblocking allreduces, asynchronous parameter servers between groups (the strategy of
Kurth et al., "Deep Learning at 15PF", SC17). mpi4py is imported only inside this package.

  topology.py  ranks, groups, servers and their communicators; layout checks
  sync.py      the group's bucketed allreduce of the diff arena, overlapped with backward
  server.py    parameter servers running the solver's own update rule on byte-balanced slices
  hybrid.py    the SolverHooks object that ties a Solver into the job
  faults.py    abort the whole job on one rank's error; the stall watchdog
  timeline.py  per-rank Chrome-trace events
  train.py     one rank's whole run (what `crema train` calls under mpiexec)
"""
from .topology import Topology, TopologyError, check_layout

__all__ = ["Topology", "TopologyError", "check_layout"]
