"""Which records of a data stream each process reads (Caffe's multi-process rule).

In the TRAIN phase record i of a layer's stream (counted from the first record read, across
wrap-arounds) goes to rank i mod world, so one pass of `world` ranks reads every record once.
In TEST every rank reads every record, so that each rank's test scores cover the whole set.

A layer that reads a record stream implements `set_shard(rank, world)`; the built-in ones
(Data, HDF5Data, MemoryData) get it from `ShardedReader`. A Python layer may define its own
`set_shard(rank, world)`: the factory returns the user's object itself, so `set_data_shard`
finds the method there, after checking the arguments with the layer's own error.

    from engine.data.sharding import set_data_shard, data_shard
    set_data_shard(net, rank, world)   # -> names of the layers that took the shard
    data_shard(net)                    # -> {layer name: (rank, world)}

Record order must be the same on every rank for striding to partition the records: shuffles
draw from engine.rng's data stream, which `engine.rng.set_random_seed(seed, rank)` seeds from
the seed alone. Seed before building the net (layers draw their shuffling generator and
rand_skip at setup), with one seed shared by all ranks; set the shard before the first batch and
before loading a saved reading position (load_state_dict checks the saved world size and raises
ShardMismatchError for another one).
"""
import operator
import warnings

from .. import pycaffe, rng
from ..errors import CremaError, LayerError
from ..layer import TEST


class ShardMismatchError(LayerError):
    """A saved reading position belongs to a job of another world size. Its own class so that
    a caller that resumes across world sizes on purpose (a hybrid snapshot continued in one
    process) can catch it and decide: skip the position, or load it with the shard keys
    replaced, accepting that records near the saved position may be skipped or repeated."""


def _as_int(value):
    if isinstance(value, bool):
        raise TypeError("a bool is not a rank or world size")
    return operator.index(value)


def check_shard(rank, world, error=CremaError):
    """(rank, world) as ints, or `error(message)` raised when world < 1 or rank not in
    [0, world). `error` is a layer's `error` method, so that the message names the layer."""
    try:
        rank, world = _as_int(rank), _as_int(world)
    except TypeError:
        raise error(f"set_shard needs integer rank and world, got rank {rank!r} and world "
                    f"{world!r}") from None
    if world < 1:
        raise error(f"world_size {world} must be at least 1")
    if not 0 <= rank < world:
        raise error(f"rank {rank} is not in [0, world_size {world})")
    return rank, world


class ShardedReader:
    """Mixin for layers that read a record stream: attributes `rank` and `world_size` (also set
    by hand by older code; checked when reading), `set_shard`, `shard`, and the state_dict keys
    that record the shard a reading position belongs to. Put it before Layer in the bases."""

    # Until set_shard (or an assignment) gives one, a layer reads the shard of pycaffe's
    # solver_rank / solver_count (1 and 0 in a plain process; the MPI trainer sets them).
    @property
    def rank(self):
        return self.__dict__.get("_shard_rank", pycaffe.solver_rank())

    @rank.setter
    def rank(self, value):
        self.__dict__["_shard_rank"] = value

    @property
    def world_size(self):
        return self.__dict__.get("_shard_world", pycaffe.solver_count())

    @world_size.setter
    def world_size(self, value):
        self.__dict__["_shard_world"] = value

    def set_shard(self, rank, world):
        """Read rank `rank`'s share of the stream in a job of `world` ranks (TRAIN phase only;
        TEST reads everything)."""
        self.rank, self.world_size = check_shard(rank, world, self.error)

    @property
    def shard(self):
        return int(self.rank), int(self.world_size)

    @property
    def draws_from_data_stream(self):
        """True when this layer's reading order depends on engine.rng's data stream."""
        return False

    def _reading_shard(self):
        """(rank, world, stride) for the next read; stride is whether this rank skips records.
        Checked here too because `rank` / `world_size` may have been assigned directly."""
        rank, world = check_shard(self.rank, self.world_size, self.error)
        return rank, world, world > 1 and self.phase != TEST

    def _shard_state(self):
        rank, world = self.shard
        return {"shard_rank": rank, "shard_world": world}

    def _check_shard_state(self, state):
        """Refuse a reading position saved by a job of another world size: its offsets stride
        the stream differently, so resuming would skip or repeat records. States saved before
        the shard was recorded carry no world size and are accepted."""
        saved = state.get("shard_world")
        if saved is None:
            return
        world = self.shard[1]
        if int(saved) != world:
            message = self.error(  # the layer's own prefix (file:line, name, type)
                f"cannot resume: the reading position was saved by rank "
                f"{int(state.get('shard_rank', 0))} of a world of {int(saved)} ranks, and this "
                f"layer reads for a world of {world} (rank {self.shard[0]}); resume with "
                f"{int(saved)} ranks")
            raise ShardMismatchError(str(message))


def _sharded_layers(net):
    return [layer for layer in net.layers if callable(getattr(layer, "set_shard", None))]


def set_data_shard(net, rank, world):
    """Call set_shard(rank, world) on every layer of `net` that has it; returns their names.
    The arguments are checked (with each layer's error, naming it) before any layer changes."""
    layers = _sharded_layers(net)
    for layer in layers:
        check_shard(rank, world, getattr(layer, "error", CremaError))
    rank, world = check_shard(rank, world)
    if world > 1 and not rng.data_stream_seeded() and any(
            getattr(layer, "draws_from_data_stream", False) for layer in layers):
        warnings.warn("data layers shuffle or skip with engine.rng's data stream, which was never "
                      "seeded: every process draws a different order, so the ranks' shards "
                      "overlap. Call engine.rng.set_random_seed(seed, rank) with one seed shared "
                      "by all ranks before building the net", stacklevel=2)
    for layer in layers:
        layer.set_shard(rank, world)
    return [layer.name for layer in layers]


def data_shard(net):
    """{layer name: (rank, world)} for every layer of `net` with set_shard; None where a layer
    (a Python layer) does not say which shard it reads."""
    out = {}
    for layer in _sharded_layers(net):
        shard = getattr(layer, "shard", None)
        if shard is None and hasattr(layer, "rank") and hasattr(layer, "world_size"):
            shard = (int(layer.rank), int(layer.world_size))
        out[layer.name] = tuple(shard) if shard is not None else None
    return out
