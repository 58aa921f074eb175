"""Who is who in a hybrid job: G synchronous groups of S worker ranks plus P parameter servers.

World = G * S + P (IntelCaffe's invariant, `--n_group`/`--n_server`). Workers are ranks
0 .. G*S-1 in contiguous blocks per group, the first rank of a block is its group root; servers
are the last P ranks. Rank 0 is the root of group 0 and the job's root: it tests, logs in Caffe's
format and writes snapshots.

Communicators (MPI_Comm_split, as IntelCaffe splits by MLSL colour):
- group:   the S ranks of one group (gradient allreduce, weight broadcast); None on servers
- workers: all G*S workers (data sharding, loss statistics); None on servers
- node:    the ranks sharing this node's memory (MPI_COMM_TYPE_SHARED: threads per rank)
"""
import os
from dataclasses import dataclass

from ..errors import CremaError


class TopologyError(CremaError):
    """An impossible rank layout (refused before any work starts)."""


def check_layout(world, groups, servers):
    """(group_size,) for a valid layout, or TopologyError naming what is wrong."""
    if groups < 1:
        raise TopologyError(f"-groups must be at least 1, got {groups}")
    if servers < 0:
        raise TopologyError(f"-servers must be 0 or more, got {servers}")
    if groups > 1 and servers == 0:
        raise TopologyError(f"-groups {groups} needs at least one parameter server (-servers P "
                            ">= 1): groups exchange their updates only through servers")
    workers = world - servers
    if workers < 1:
        raise TopologyError(f"{world} ranks cannot hold {servers} servers and any worker "
                            f"(world = groups x group_size + servers)")
    if workers % groups:
        raise TopologyError(f"{workers} worker ranks ({world} ranks - {servers} servers) cannot "
                            f"form {groups} groups of equal size; use a rank count N with "
                            f"(N - {servers}) divisible by {groups}")
    return workers // groups


@dataclass
class Topology:
    world_size: int
    rank: int
    groups: int
    group_size: int
    servers: int
    comm: object = None          # COMM_WORLD (or a dup of it)
    group_comm: object = None
    workers_comm: object = None
    node_comm: object = None

    @property
    def workers(self):
        return self.groups * self.group_size

    @property
    def is_server(self):
        return self.rank >= self.workers

    @property
    def server_index(self):
        return self.rank - self.workers if self.is_server else None

    @property
    def group(self):
        return None if self.is_server else self.rank // self.group_size

    @property
    def group_rank(self):
        return None if self.is_server else self.rank % self.group_size

    @property
    def is_group_root(self):
        return not self.is_server and self.group_rank == 0

    @property
    def is_root(self):
        return self.rank == 0

    def group_root_rank(self, group):
        return group * self.group_size

    def server_rank(self, index):
        return self.workers + index

    @property
    def mode(self):
        if self.servers == 0:
            return "synchronous"
        if self.group_size == 1:
            return "asynchronous"
        return "hybrid"

    def describe(self):
        return (f"{self.world_size} ranks: {self.groups} group(s) of {self.group_size} + "
                f"{self.servers} parameter server(s) ({self.mode})")

    def local_threads(self):
        """Threads for this rank's kernels: the node's cores divided by the ranks on the node
        (at least 1), so that ranks never oversubscribe the cores."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
        local = self.node_comm.Get_size() if self.node_comm is not None else 1
        return max(1, cores // local)


def make_topology(comm, groups=1, servers=0):
    """Split `comm` (an mpi4py communicator) into the layout; every rank checks the same values,
    so an impossible layout fails everywhere before any communication."""
    from mpi4py import MPI
    world, rank = comm.Get_size(), comm.Get_rank()
    group_size = check_layout(world, groups, servers)
    topo = Topology(world, rank, groups, group_size, servers, comm=comm)
    colour = 0 if topo.is_server else topo.group + 1
    topo.group_comm = comm.Split(colour, rank)
    if topo.is_server:
        topo.group_comm.Free()
        topo.group_comm = None
    workers = comm.Split(0 if topo.is_server else 1, rank)
    topo.workers_comm = None if topo.is_server else workers
    if topo.is_server:
        workers.Free()
    topo.node_comm = comm.Split_type(MPI.COMM_TYPE_SHARED, rank)
    return topo
