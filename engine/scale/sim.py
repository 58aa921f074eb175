"""Discrete-event simulation (SimPy) of crema's hybrid synchronous/asynchronous training protocol.

The world is G groups of S worker nodes plus P parameter-server nodes (the last ranks); nodes left
over when (nodes - P) is not a multiple of G stay idle and are reported. G = 1, P = 0 is fully
synchronous data parallelism; S = 1 with P >= 1 is fully asynchronous; anything else is hybrid.

One iteration of a group, as the real trainer (engine/parallel) runs it:

1. read: the group holds weights of some server version (what the last exchange returned);
2. compute: forward (f) then backward (b) on every member. Backward produces gradients last layer
   first; they are cut into buckets (a small first bucket, 1 MiB by default, then buckets capped at
   25 MiB, as PyTorch DDP does), and each bucket's allreduce over the S members is issued as soon as
   the SLOWEST member has produced it (a collective completes no earlier than its last
   contributor) and runs after the previous bucket's (one communicator, issued in a fixed order),
   overlapping the rest of backward. The group then waits for all buckets;
3. update:
   * P = 0 (G = 1): every rank applies the update locally (time u);
   * P > 0: the group root sends each server its byte-balanced slice of the group gradient. A server
     applies updates one at a time, in the order they were admitted (queueing: a busy server makes
     the next group wait), and returns the slice's fresh weights; the root then broadcasts the
     weights in its group. The weights returned include every update up to the group's own, so
     the next gradient's staleness is the number of other groups' updates applied between that
     version and its own application.

Optional bounded staleness (``max_staleness = K``, stale-synchronous): no update is applied with
staleness above K. The gate keeps the groups "in flight" (read weights, gradient not yet applied)
ordered by the version they read; it applies a group's update only if every group that read
earlier can still be applied within the bound afterwards, and lets a group start an iteration only
if the same holds with it added (otherwise it waits, then re-reads fresh weights from the servers).
This keeps the invariant  (V - v_j) + (j - 1) <= K  for the j-th oldest in-flight group (V: updates
applied so far, v_j: the version it read), which bounds every staleness by K and never deadlocks:
the oldest in-flight group can always be applied. With G - 1 > K at most K + 1 groups compute at a
time, the price of the bound.

Stragglers: a chosen set of worker nodes (a fraction, at least one when the fraction is positive)
runs slower by a constant factor, and/or every node's compute time of every iteration is
multiplied by a lognormal factor of mean 1 (``jitter`` = its sigma). Everything is seeded.

Modelling choices that keep the event count at O(G x iterations x (buckets + P)) rather than
O(nodes): a group is one SimPy process; its S members are vectors of per-iteration speed factors
(numpy), and since a member's forward/backward time is nominal x factor, every bucket of the
group is ready at nominal time x max(factor). The network resources that queue are explicit SimPy
Resources: each group's communicator (its bucket allreduces and broadcasts run one at a time), each
root's and each server's injection port in and out, each server's update engine. Collective costs
come from engine.scale.network. Not modelled: contention between groups on the network, overlap of
the weight broadcast with the next forward, I/O, failures.

Time shares are per worker rank, averaged over ranks: compute = its own forward + backward (+ local
update); waiting = waiting for the group's slowest member, for a server queue (time beyond what the
server round trip costs unloaded), for the staleness bound; communication = the rest (exposed
allreduce after backward, unloaded server round trip including the server's update, broadcast).
"""
from dataclasses import dataclass, field, asdict, replace
import math
import statistics

import numpy as np
import simpy

from .calibrate import ModelCosts
from .network import ARIES, profile as network_profile

MiB = 1024 * 1024

#: Default solver-update speed, in parameter bytes per second. SGD with momentum streams about
#: five float32 arrays per parameter (read weight, gradient, history; write history, weight); at
#: ~50 GB/s of effective memory bandwidth that is ~10 GB/s of parameters. A model default.
DEFAULT_UPDATE_BYTES_PER_S = 10e9


@dataclass
class ScaleConfig:
    """Everything one simulation needs.

    model: ModelCosts (FLOPs and parameter bytes; optionally measured times).
    nodes, groups, servers: the world (servers included in nodes).
    batch: samples per worker per iteration (default: the model's own batch, else 8).
    node_flops: FLOP/s one worker sustains in forward/backward; None uses model.timing.
    compute_scale: multiplies every compute time (e.g. ranks/cores when oversubscribed).
    update_bytes_per_s: solver update speed; None uses model.timing.update_s or the default.
    network: NetworkProfile or preset name.
    first_bucket_bytes, bucket_bytes: gradient bucket caps (DDP's 1 MiB and 25 MiB).
    straggler_fraction / straggler_count, slowdown: permanently slow worker nodes.
    jitter: sigma of the per-iteration lognormal (mean 1) factor on every node's compute time.
    max_staleness: bound K on staleness (None: unbounded).
    iterations, warmup: measured iterations per group (the slowest group does at least this
        many; faster groups do more in the same time) after `warmup` discarded ones.
    """
    model: ModelCosts
    nodes: int = 1
    groups: int = 1
    servers: int = 0
    batch: int = None
    node_flops: float = None
    compute_scale: float = 1.0
    update_bytes_per_s: float = None
    network: object = ARIES
    first_bucket_bytes: int = 1 * MiB
    bucket_bytes: int = 25 * MiB
    straggler_fraction: float = 0.0
    straggler_count: int = None
    slowdown: float = 2.0
    jitter: float = 0.0
    max_staleness: int = None
    iterations: int = 30
    warmup: int = 5
    seed: int = 0
    allreduce_algorithm: str = "auto"

    # -- derived ------------------------------------------------------------------------------

    @property
    def group_size(self):
        return (self.nodes - self.servers) // self.groups if self.groups > 0 else 0

    @property
    def workers(self):
        return self.group_size * self.groups

    @property
    def idle_nodes(self):
        return self.nodes - self.servers - self.workers

    @property
    def batch_per_worker(self):
        if self.batch:
            return int(self.batch)
        return int(self.model.batch or 8)

    @property
    def mode(self):
        if self.servers == 0:
            return "synchronous"
        return "asynchronous" if self.group_size == 1 else "hybrid"

    def net(self):
        return network_profile(self.network)

    def validate(self):
        if self.groups < 1 or self.servers < 0 or self.nodes < 1:
            raise ValueError(f"need nodes >= 1, groups >= 1, servers >= 0 (got nodes={self.nodes}, "
                             f"groups={self.groups}, servers={self.servers})")
        if self.groups > 1 and self.servers < 1:
            raise ValueError(f"{self.groups} groups need at least one parameter server "
                             "(groups exchange updates only through servers)")
        if self.group_size < 1:
            raise ValueError(f"{self.nodes} nodes cannot hold {self.groups} groups and "
                             f"{self.servers} servers")
        if self.max_staleness is not None and self.max_staleness < 0:
            raise ValueError("max_staleness must be >= 0")
        if self.iterations < 1 or self.warmup < 0:
            raise ValueError("need iterations >= 1 and warmup >= 0")
        if self.jitter < 0 or self.slowdown <= 0 or self.compute_scale <= 0:
            raise ValueError("jitter >= 0, slowdown > 0 and compute_scale > 0 required")
        if self.node_flops is None and self.model.timing is None:
            raise ValueError("give node_flops (FLOP/s per node) or a model with measured timing")
        if self.first_bucket_bytes <= 0 or self.bucket_bytes <= 0:
            raise ValueError("bucket sizes must be positive")

    def compute_times(self):
        """(forward_s, backward_s, update_s) of one nominal worker iteration."""
        batch = self.batch_per_worker
        model = self.model
        if self.node_flops is not None:
            f = batch * model.fwd_flops_per_sample / self.node_flops
            b = batch * model.bwd_flops_per_sample / self.node_flops
        else:
            f, b = model.timing.scaled(batch)
        if self.update_bytes_per_s is not None:
            u = model.param_bytes / self.update_bytes_per_s
        elif model.timing is not None and model.timing.update_s > 0:
            u = model.timing.update_s
        else:
            u = model.param_bytes / DEFAULT_UPDATE_BYTES_PER_S
        k = self.compute_scale
        return f * k, b * k, u * k


@dataclass
class GroupStats:
    group: int
    size: int
    slow_members: int
    iterations: int
    iteration_mean_s: float
    iteration_median_s: float
    samples_per_s: float
    staleness_mean: float
    share_compute: float
    share_comm: float
    share_wait: float


@dataclass
class Result:
    """What a simulation predicts (per-iteration times are of one group's iteration)."""
    mode: str
    nodes: int
    groups: int
    group_size: int
    servers: int
    idle_nodes: int
    batch_per_worker: int
    iteration_mean_s: float
    iteration_median_s: float
    throughput: float            # samples per second, all groups
    flops_per_s: float           # sustained: useful FLOPs (forward + backward) per second
    flops_per_node_s: float      # flops_per_s / nodes (servers and idle nodes included)
    staleness_mean: float        # None when there are no servers
    staleness_max: int
    staleness_hist: dict
    share_compute: float
    share_comm: float
    share_wait: float
    compute_s: float             # nominal forward + backward of one worker
    update_s: float
    buckets: list                # bytes per allreduce bucket, in issue order
    allreduce_s: list            # seconds per bucket allreduce over one group
    per_group: list
    server_busy: list            # per server, busiest of its ports/update engine, share of time
    window_s: float
    stragglers: int
    notes: list = field(default_factory=list)

    def to_dict(self):
        d = asdict(self)
        d["staleness_hist"] = {str(k): v for k, v in sorted(self.staleness_hist.items())}
        return d


def make_buckets(chunks, first_cap, cap):
    """Cut the gradient stream into allreduce buckets.

    chunks: [(bytes, ready fraction of backward)] in production order (a whole parameter blob
    never splits: when adding it reaches the cap the bucket closes, as DDP does), or
    [(total bytes, None)] for a uniform stream, cut exactly at the caps.
    Returns [(bytes, ready fraction)]: a bucket is ready when its last piece is.
    """
    if len(chunks) == 1 and chunks[0][1] is None:
        total, done, out = chunks[0][0], 0, []
        while done < total:
            size = min(first_cap if not out else cap, total - done)
            done += size
            out.append((size, done / total))
        return out
    out, size, ready = [], 0, 0.0
    for nbytes, frac in chunks:
        size += nbytes
        ready = frac
        if size >= (first_cap if not out else cap):
            out.append((size, ready))
            size = 0
    if size:
        out.append((size, ready))
    return out


def balanced_slices(total_bytes, servers):
    """Byte-balanced slices of the flat parameter buffer, one per server (float32 granularity)."""
    values = total_bytes // 4
    base, extra = divmod(values, servers)
    return [4 * (base + (1 if k < extra else 0)) for k in range(servers)]


class _Port:
    """A node's injection port in one direction: one transfer at a time; busy intervals kept
    for utilisation."""

    def __init__(self, env):
        self.res = simpy.Resource(env, capacity=1)
        self.busy = []


class _Server:
    def __init__(self, env):
        self.env = env
        self.port_in, self.port_out = _Port(env), _Port(env)
        self.engine = _Port(env)
        self.applied = 0
        self._waiters = {}

    def applied_at_least(self, count):
        """Event fired once `count` updates have been applied here (updates apply in order)."""
        if self.applied >= count:
            ev = self.env.event()
            ev.succeed()
            return ev
        return self._waiters.setdefault(count, self.env.event())

    def mark_applied(self):
        self.applied += 1
        ev = self._waiters.pop(self.applied, None)
        if ev is not None:
            ev.succeed()


class _StalenessGate:
    """Orders updates (one global sequence, which every server follows) and enforces the bound.
    See the module docstring for the invariant."""

    def __init__(self, env, bound):
        self.env = env
        self.bound = bound
        self.version = 0          # updates admitted so far
        self.inflight = {}        # group -> version it read
        self._applies = []        # FIFO of (group, event)
        self._reads = []          # FIFO of (group, version offered, event)

    def read(self, group, version):
        """Event -> the version the group computes on: `version` (the weights it holds) when the
        bound allows, else the current version once it does (the group must then re-read)."""
        ev = self.env.event()
        self._reads.append((group, version, ev))
        self._pump()
        return ev

    def apply(self, group):
        """Event -> (sequence number, staleness) once the group's update may be applied."""
        ev = self.env.event()
        self._applies.append((group, ev))
        self._pump()
        return ev

    def _older(self, group):
        mine = (self.inflight[group], group)
        return sorted((v, g) for g, v in self.inflight.items() if (v, g) < mine)

    def _can_apply(self, group):
        if self.bound is None:
            return True
        # each older in-flight group j (0-based) gains one foreign update now and may still see
        # the j older ones applied before itself
        return all(self.version - v + j + 1 <= self.bound
                   for j, (v, _) in enumerate(self._older(group)))

    def _can_read(self, group, version):
        if self.bound is None:
            return True
        order = sorted([(v, g) for g, v in self.inflight.items()] + [(version, group)])
        return all(self.version - v + j <= self.bound for j, (v, _) in enumerate(order))

    def _pump(self):
        changed = True
        while changed:
            changed = False
            for item in self._applies:
                group, ev = item
                if self._can_apply(group):
                    self._applies.remove(item)
                    staleness = self.version - self.inflight.pop(group)
                    ev.succeed((self.version, staleness))
                    self.version += 1
                    changed = True
                    break
            if changed:
                continue
            for item in self._reads:
                group, offered, ev = item
                for version in (offered, self.version):
                    if self._can_read(group, version):
                        self._reads.remove(item)
                        self.inflight[group] = version
                        ev.succeed(version)
                        changed = True
                        break
                if changed:
                    break


class _Group:
    def __init__(self, env, index, members_slow, rng):
        self.index = index
        self.slow = members_slow      # per-member constant factor (1 or slowdown)
        self.rng = rng
        self.channel = simpy.Resource(env, capacity=1)   # the group's communicator
        self.port_in, self.port_out = _Port(env), _Port(env)   # the root's
        self.records = []
        self.done = 0
        self.slow_members = int(np.count_nonzero(members_slow != 1.0))


class Simulation:
    """One run of the model; use simulate(config)."""

    def __init__(self, config):
        config.validate()
        self.cfg = config
        self.net = config.net()
        self.env = simpy.Environment()
        self.f, self.b, self.u = config.compute_times()
        S, G, P = config.group_size, config.groups, config.servers
        self.buckets = make_buckets(config.model.gradient_chunks(), config.first_bucket_bytes,
                                    config.bucket_bytes)
        self.bucket_cost = [self.net.allreduce(S, nbytes, config.allreduce_algorithm)
                            for nbytes, _ in self.buckets]
        self.bcast_cost = self.net.bcast(S, config.model.param_bytes)
        self.slices = balanced_slices(config.model.param_bytes, P) if P else []
        per_byte_update = self.u / max(config.model.param_bytes, 1)
        self.slice_update = [s * per_byte_update for s in self.slices]
        self.exchange_free = self._unloaded_exchange()
        self.stragglers = self._pick_stragglers()
        self.servers = [_Server(self.env) for _ in range(P)]
        self.gate = _StalenessGate(self.env, config.max_staleness) if P else None
        self.groups = []
        for g in range(G):
            slow = self.stragglers[g * S:(g + 1) * S]
            rng = np.random.default_rng([config.seed, 2, g])
            self.groups.append(_Group(self.env, g, slow, rng))
        self.target = config.warmup + config.iterations
        self.finished = self.env.event()
        self.warm_done = {}

    # -- setup ---------------------------------------------------------------------------------

    def _pick_stragglers(self):
        cfg = self.cfg
        W = cfg.workers
        factors = np.ones(W)
        if cfg.straggler_count is not None:
            count = int(cfg.straggler_count)
        else:
            count = int(round(cfg.straggler_fraction * W))
            if cfg.straggler_fraction > 0 and count == 0:
                count = 1
        count = min(max(count, 0), W)
        if count:
            rng = np.random.default_rng([cfg.seed, 1])
            factors[rng.choice(W, size=count, replace=False)] = cfg.slowdown
        return factors

    def _unloaded_exchange(self):
        """Seconds of the root <-> servers round trip with idle servers: the root sends the
        slices one after another, each server updates its slice and sends it back."""
        t, finish = 0.0, 0.0
        for nbytes, upd in zip(self.slices, self.slice_update):
            t += self.net.p2p(nbytes)
            finish = max(finish, t + upd + self.net.p2p(nbytes))
        return finish

    def _factors(self, group):
        """(max, mean) compute factor over the group's members for one iteration."""
        sigma = self.cfg.jitter
        if sigma > 0:
            jit = group.rng.lognormal(-0.5 * sigma * sigma, sigma, group.slow.size)
            f = jit * group.slow
            return float(f.max()), float(f.mean())
        return float(group.slow.max()), float(group.slow.mean())

    # -- processes -----------------------------------------------------------------------------

    def _transfer(self, src, dst, nbytes):
        """A point-to-point message holding the sender's out port and the receiver's in port."""
        env = self.env
        with src.res.request() as a:
            yield a
            with dst.res.request() as b:
                yield b
                start = env.now
                yield env.timeout(self.net.p2p(nbytes))
                src.busy.append((start, env.now))
                dst.busy.append((start, env.now))

    def _bucket(self, group, ready, cost):
        env = self.env
        yield env.timeout(max(ready - env.now, 0.0))
        with group.channel.request() as req:
            yield req
            yield env.timeout(cost)

    def _collective(self, group, cost):
        if cost <= 0:
            return
        with group.channel.request() as req:
            yield req
            yield self.env.timeout(cost)

    def _slice(self, group, k, seq):
        env, srv, nbytes = self.env, self.servers[k], self.slices[k]
        yield from self._transfer(group.port_out, srv.port_in, nbytes)
        yield srv.applied_at_least(seq)      # the servers follow the gate's order
        with srv.engine.res.request() as req:
            yield req
            start = env.now
            yield env.timeout(self.slice_update[k])
            srv.engine.busy.append((start, env.now))
        srv.mark_applied()
        yield from self._transfer(srv.port_out, group.port_in, nbytes)

    def _refetch(self, group, version):
        """Re-read every server's slice at `version` (after waiting at the staleness gate).
        An update that lands on a server while its slice is in transit is not credited to the
        read, so the staleness counted afterwards can only err high, never hide a violation."""
        env = self.env

        def one(k):
            srv = self.servers[k]
            yield env.timeout(self.net.p2p(0))     # the request
            yield srv.applied_at_least(version)
            yield from self._transfer(srv.port_out, group.port_in, self.slices[k])
        yield env.all_of([env.process(one(k)) for k in range(len(self.servers))])

    def _run_group(self, group):
        env, cfg = self.env, self.cfg
        S, P = cfg.group_size, cfg.servers
        fb = self.f + self.b
        version = 0
        while True:
            start = env.now
            compute = comm = wait = 0.0
            staleness = None
            if P:
                granted = yield self.gate.read(group.index, version)
                wait += env.now - start
                if granted != version:
                    t = env.now
                    yield from self._refetch(group, granted)
                    yield from self._collective(group, self.bcast_cost)
                    comm += env.now - t
                    version = granted
            cmax, cmean = self._factors(group)
            t0 = env.now
            procs = []
            if S > 1:
                for (nbytes, frac), cost in zip(self.buckets, self.bucket_cost):
                    ready = t0 + cmax * (self.f + self.b * frac)
                    procs.append(env.process(self._bucket(group, ready, cost)))
            yield env.timeout(cmax * fb)
            compute += cmean * fb
            wait += (cmax - cmean) * fb
            t = env.now
            if procs:
                yield env.all_of(procs)
            comm += env.now - t
            if P == 0:
                yield env.timeout(cmax * self.u)
                compute += cmean * self.u
                wait += (cmax - cmean) * self.u
            else:
                t = env.now
                seq, staleness = yield self.gate.apply(group.index)
                wait += env.now - t
                t = env.now
                yield env.all_of([env.process(self._slice(group, k, seq)) for k in range(P)])
                took = env.now - t
                comm += min(took, self.exchange_free)
                wait += max(0.0, took - self.exchange_free)
                t = env.now
                yield from self._collective(group, self.bcast_cost)
                comm += env.now - t
                version = seq + 1
            group.records.append((start, env.now, compute, comm, wait, staleness))
            group.done += 1
            if group.done == cfg.warmup:
                self.warm_done[group.index] = env.now
            if group.done == self.target:
                self._check_finished()

    def _check_finished(self):
        if all(g.done >= self.target for g in self.groups) and not self.finished.triggered:
            self.finished.succeed()

    # -- run -----------------------------------------------------------------------------------

    def run(self):
        cfg = self.cfg
        for group in self.groups:
            self.env.process(self._run_group(group))
        try:
            self.env.run(until=self.finished)
        except RuntimeError as exc:  # only a modelling bug can leave the groups stuck
            raise RuntimeError(f"simulation stalled at t={self.env.now:.6g}s: {exc}") from exc
        t_end = self.env.now
        t_start = max(self.warm_done.values()) if cfg.warmup else 0.0
        return self._result(t_start, t_end)

    def _result(self, t0, t1):
        cfg = self.cfg
        S, G, P = cfg.group_size, cfg.groups, cfg.servers
        window = max(t1 - t0, 1e-30)
        batch = cfg.batch_per_worker
        durations, stale = [], []
        totals = np.zeros(3)
        per_group = []
        samples = 0
        for group in self.groups:
            recs = [r for r in group.records if t0 < r[1] <= t1]
            d = [r[1] - r[0] for r in recs]
            durations += d
            parts = np.array([r[2:5] for r in recs]) if recs else np.zeros((0, 3))
            gsum = parts.sum(axis=0)
            totals += gsum * S
            gst = [r[5] for r in recs if r[5] is not None]
            stale += gst
            samples += len(recs) * S * batch
            share = gsum / gsum.sum() if gsum.sum() > 0 else np.zeros(3)
            per_group.append(GroupStats(
                group=group.index, size=S, slow_members=group.slow_members,
                iterations=len(recs),
                iteration_mean_s=float(np.mean(d)) if d else math.nan,
                iteration_median_s=float(statistics.median(d)) if d else math.nan,
                samples_per_s=len(recs) * S * batch / window,
                staleness_mean=float(np.mean(gst)) if gst else None,
                share_compute=float(share[0]), share_comm=float(share[1]),
                share_wait=float(share[2])))
        throughput = samples / window
        flops = throughput * cfg.model.flops_per_sample
        hist = {}
        for s in stale:
            hist[int(s)] = hist.get(int(s), 0) + 1
        shares = totals / totals.sum() if totals.sum() > 0 else totals
        busy = []
        for srv in self.servers:
            busy.append(max(_busy_share(p.busy, t0, t1)
                            for p in (srv.port_in, srv.port_out, srv.engine)))
        notes = []
        if cfg.idle_nodes:
            notes.append(f"{cfg.idle_nodes} node(s) idle: {cfg.nodes - P} workers do not split "
                         f"into {G} equal groups")
        return Result(
            mode=cfg.mode, nodes=cfg.nodes, groups=G, group_size=S, servers=P,
            idle_nodes=cfg.idle_nodes, batch_per_worker=batch,
            iteration_mean_s=float(np.mean(durations)),
            iteration_median_s=float(statistics.median(durations)),
            throughput=throughput, flops_per_s=flops, flops_per_node_s=flops / cfg.nodes,
            staleness_mean=float(np.mean(stale)) if stale else None,
            staleness_max=int(max(stale)) if stale else 0,
            staleness_hist=hist,
            share_compute=float(shares[0]), share_comm=float(shares[1]),
            share_wait=float(shares[2]),
            compute_s=self.f + self.b, update_s=self.u,
            buckets=[int(b) for b, _ in self.buckets] if S > 1 else [],
            allreduce_s=list(self.bucket_cost) if S > 1 else [],
            per_group=per_group, server_busy=busy, window_s=window,
            stragglers=int(np.count_nonzero(self.stragglers != 1.0)), notes=notes)


def _busy_share(intervals, t0, t1):
    total = sum(max(0.0, min(b, t1) - max(a, t0)) for a, b in intervals)
    return total / max(t1 - t0, 1e-30)


def simulate(config):
    """Run the SimPy model of `config` (a ScaleConfig) and return its Result."""
    return Simulation(config).run()


def single_node(config):
    """The same model on one synchronous node with no permanent straggler (the reference for
    scaling efficiency: what one node sustains on its own, jitter included)."""
    return simulate(replace(config, nodes=1, groups=1, servers=0, straggler_fraction=0.0,
                            straggler_count=None, max_staleness=None))


def scaling_efficiency(result, reference):
    """Sustained throughput per node at scale over the one-node throughput (every node counted,
    parameter servers and idle ones included)."""
    return result.throughput / (result.nodes * reference.throughput)
