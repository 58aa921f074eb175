"""Latency-bandwidth (alpha-beta-gamma) cost model of the collectives the hybrid trainer uses.

Every message of m bytes between two nodes costs ``alpha + m / beta`` seconds (Hockney's model);
a reduction additionally costs ``gamma`` seconds per byte it combines. The collective formulas are
the standard ones for the algorithms MPICH implements (Thakur, Rabenseifner and Gropp, "Optimization
of Collective Communication Operations in MPICH", IJHPCA 2005), written here for n processes:

allreduce
  * recursive doubling:       ceil(log2 n) * (alpha + m/beta + m*gamma)
  * ring (reduce-scatter ring + allgather ring):
                              2(n-1) * alpha + 2(n-1)/n * m/beta + (n-1)/n * m*gamma
  * Rabenseifner (recursive-halving reduce-scatter + recursive-doubling allgather):
                              2 log2(p) * alpha + 2(p-1)/p * m/beta + (p-1)/p * m*gamma
    where p is the largest power of two <= n; when n is not a power of two, MPICH first folds the
    n - p extra processes into partners and sends them the result at the end, which adds
    2 * (alpha + m/beta) + m*gamma (recursive doubling pays the same fold).
  * "auto" picks as MPICH does by size: recursive doubling for messages of at most
    ``short_allreduce_bytes`` (MPICH's default MPIR_CVAR_ALLREDUCE_SHORT_MSG_SIZE is 2048), and
    for longer ones the cheaper of ring and Rabenseifner under this model. Their bandwidth terms
    are equal, so it is Rabenseifner (MPICH's long-message default) except for small odd n, where
    ring avoids the fold.

broadcast
  * binomial tree:            ceil(log2 n) * (alpha + m/beta)
  * scatter + allgather (van de Geijn): binomial scatter then ring allgather,
                              (ceil(log2 n) + n - 1) * alpha + 2(n-1)/n * m/beta,
    or with a recursive-doubling allgather, 2 ceil(log2 n) * alpha + 2(n-1)/n * m/beta.
  * "auto": binomial for messages below ``short_bcast_bytes`` (MPICH's 12288) or fewer than
    ``bcast_min_procs`` (8) processes, otherwise the cheapest of the three.

point to point: alpha + m/beta.

What the model leaves out (on purpose, to stay a model one can reason about): contention between
concurrent collectives of different groups, the dragonfly's global-link taper and adaptive routing
(we assume the network delivers the injection bandwidth to every node), message segmentation and
pipelining inside a collective, and protocol switches (eager/rendezvous) beyond what alpha absorbs.
The Cray Aries profile is therefore an optimistic lower bound on communication time at scale.
"""
from dataclasses import dataclass, replace
import math


@dataclass(frozen=True)
class NetworkProfile:
    """Constants of the alpha-beta-gamma model, in SI units (seconds, bytes per second).

    alpha: latency of one message (software overhead included).
    beta: bandwidth one node can inject into the network (bytes/s).
    gamma: seconds per byte to combine (sum) received data in a reduction; 0 neglects the
        arithmetic, which is memory-bound and much faster than the network on the nodes modelled.
    short_allreduce_bytes, short_bcast_bytes, bcast_min_procs: algorithm switch points (MPICH's
        defaults).
    """
    name: str
    alpha: float
    beta: float
    gamma: float = 0.0
    short_allreduce_bytes: int = 2048
    short_bcast_bytes: int = 12288
    bcast_min_procs: int = 8
    description: str = ""

    def with_overrides(self, alpha=None, beta=None, gamma=None):
        """A copy with any of alpha (s), beta (bytes/s), gamma (s/byte) replaced."""
        changes = {k: v for k, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma))
                   if v is not None}
        if not changes:
            return self
        for key, value in changes.items():
            if value < 0 or (key == "beta" and value == 0):
                raise ValueError(f"network {key} must be positive, got {value}")
        return replace(self, name=self.name + "*", **changes)

    # -- point to point ----------------------------------------------------------------------

    def p2p(self, nbytes):
        """One message of nbytes between two nodes."""
        return self.alpha + nbytes / self.beta

    # -- allreduce ---------------------------------------------------------------------------

    def allreduce_recursive_doubling(self, n, nbytes):
        if n <= 1:
            return 0.0
        p = _pow2_floor(n)
        steps = int(math.log2(p))
        t = steps * (self.alpha + nbytes / self.beta + nbytes * self.gamma)
        return t + self._fold(n, p, nbytes)

    def allreduce_ring(self, n, nbytes):
        if n <= 1:
            return 0.0
        share = (n - 1) / n
        return 2 * (n - 1) * self.alpha + 2 * share * nbytes / self.beta \
            + share * nbytes * self.gamma

    def allreduce_rabenseifner(self, n, nbytes):
        if n <= 1:
            return 0.0
        p = _pow2_floor(n)
        share = (p - 1) / p
        t = 2 * math.log2(p) * self.alpha + 2 * share * nbytes / self.beta \
            + share * nbytes * self.gamma
        return t + self._fold(n, p, nbytes)

    def _fold(self, n, p, nbytes):
        # the n - p extra processes hand their vector to a partner before, and get the result
        # back after, the power-of-two algorithm: two whole-message steps and one combine
        if n == p:
            return 0.0
        return 2 * (self.alpha + nbytes / self.beta) + nbytes * self.gamma

    def allreduce_choice(self, n, nbytes):
        """(algorithm name, seconds) that the "auto" policy uses for n processes, nbytes."""
        if n <= 1:
            return "none", 0.0
        if nbytes <= self.short_allreduce_bytes:
            return "recursive_doubling", self.allreduce_recursive_doubling(n, nbytes)
        ring = self.allreduce_ring(n, nbytes)
        rab = self.allreduce_rabenseifner(n, nbytes)
        return ("rabenseifner", rab) if rab <= ring else ("ring", ring)

    def allreduce(self, n, nbytes, algorithm="auto"):
        """Seconds for an allreduce (sum) of nbytes over n processes."""
        if algorithm == "auto":
            return self.allreduce_choice(n, nbytes)[1]
        return {"ring": self.allreduce_ring,
                "recursive_doubling": self.allreduce_recursive_doubling,
                "rabenseifner": self.allreduce_rabenseifner}[algorithm](n, nbytes)

    # -- broadcast ---------------------------------------------------------------------------

    def bcast_binomial(self, n, nbytes):
        if n <= 1:
            return 0.0
        return math.ceil(math.log2(n)) * (self.alpha + nbytes / self.beta)

    def bcast_scatter_ring_allgather(self, n, nbytes):
        if n <= 1:
            return 0.0
        return (math.ceil(math.log2(n)) + n - 1) * self.alpha \
            + 2 * (n - 1) / n * nbytes / self.beta

    def bcast_scatter_rd_allgather(self, n, nbytes):
        if n <= 1:
            return 0.0
        return 2 * math.ceil(math.log2(n)) * self.alpha + 2 * (n - 1) / n * nbytes / self.beta

    def bcast_choice(self, n, nbytes):
        """(algorithm name, seconds) that the "auto" policy uses for n processes, nbytes."""
        if n <= 1:
            return "none", 0.0
        binomial = self.bcast_binomial(n, nbytes)
        if nbytes < self.short_bcast_bytes or n < self.bcast_min_procs:
            return "binomial", binomial
        options = [("binomial", binomial),
                   ("scatter_ring_allgather", self.bcast_scatter_ring_allgather(n, nbytes)),
                   ("scatter_rd_allgather", self.bcast_scatter_rd_allgather(n, nbytes))]
        return min(options, key=lambda kv: kv[1])

    def bcast(self, n, nbytes, algorithm="auto"):
        """Seconds to broadcast nbytes from one process to n - 1 others."""
        if algorithm == "auto":
            return self.bcast_choice(n, nbytes)[1]
        return {"binomial": self.bcast_binomial,
                "scatter_ring_allgather": self.bcast_scatter_ring_allgather,
                "scatter_rd_allgather": self.bcast_scatter_rd_allgather}[algorithm](n, nbytes)


def _pow2_floor(n):
    return 1 << (int(n).bit_length() - 1)


#: Cray Aries dragonfly (the network of NERSC Cori, where "Deep Learning at 15PF" ran). MODEL
#: DEFAULTS, NOT MEASUREMENTS: alpha = 1.3 us is the order of Aries' published MPI point-to-point
#: latency between nearby nodes; beta = 8 GB/s sits at the low end of the 8-10 GB/s a node can
#: inject through its Aries NIC (Xeon Phi nodes rarely drive the full ~10 GB/s from one MPI
#: process). Reduction arithmetic is neglected (gamma = 0).
ARIES = NetworkProfile(
    "aries", alpha=1.3e-6, beta=8e9, gamma=0.0,
    description="Cray Aries dragonfly: alpha 1.3 us, beta 8 GB/s per node (model defaults)")

#: Several MPI ranks on ONE machine, talking through shared memory. MODEL DEFAULTS, NOT
#: MEASUREMENTS: alpha = 1 us for a shared-memory MPI message (software overhead included),
#: beta = 4 GB/s for a large message copied through a shared buffer (two memory copies, one core
#: each side: a few GB/s on a current server). The mpi4py call overhead is part of alpha.
LOCAL = NetworkProfile(
    "local", alpha=1e-6, beta=4e9, gamma=0.0,
    description="shared memory on one machine: alpha 1 us, beta 4 GB/s (model defaults)")

PROFILES = {"aries": ARIES, "local": LOCAL}


def profile(name_or_profile, alpha=None, beta=None, gamma=None):
    """A NetworkProfile from a preset name ("aries", "local") or a profile, with overrides."""
    if isinstance(name_or_profile, NetworkProfile):
        base = name_or_profile
    else:
        try:
            base = PROFILES[str(name_or_profile)]
        except KeyError:
            raise ValueError(f"unknown network profile '{name_or_profile}' "
                             f"(known: {', '.join(PROFILES)})") from None
    return base.with_overrides(alpha=alpha, beta=beta, gamma=gamma)
