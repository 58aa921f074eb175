"""crema's two random streams.

- The main stream, `generator()`: fillers, Dropout, stochastic pooling, DummyData, the random
  crops and mirrors of data transforms. In a parallel job it differs per rank (seeded from
  seed + rank), so that the ranks' dropout masks and augmentations are independent, as Caffe
  seeds each solver differently.
- The data stream, `data_generator()`: everything that decides WHICH records a rank reads
  (HDF5Data file and row shuffles, the Data layer's rand_skip). Record i of a stream goes to
  rank i mod world, which partitions the records only when every rank sees the same order, so
  this stream is seeded from the seed alone and is identical on every rank.

`set_random_seed(seed, rank=0)` seeds both; with rank 0 the main stream is seeded exactly as
before the data stream existed, so single-process runs draw the same main-stream numbers as
`np.random.default_rng(seed)`. `get_state()` / `set_state()` cover both streams (a solver
snapshot saves them), and set_state also takes the older single-stream state.
"""
import numpy as np

# Mixed into the data stream's seed so that it never coincides with the main stream of any rank.
_DATA_STREAM_KEY = 0xDA7A
_STATE_FORMAT = "crema-rng-2"

_generator = np.random.default_rng()
_data_generator = np.random.default_rng()
# False until set_random_seed: the unseeded data stream is different in every process, so data
# sharding across processes cannot rely on it (engine.data.sharding warns).
_data_seeded = False


def set_random_seed(seed, rank=0):
    """Seed the main stream from seed + rank and the data stream from seed alone."""
    global _generator, _data_generator, _data_seeded
    seed, rank = int(seed), int(rank)
    if rank < 0:
        raise ValueError(f"set_random_seed: rank must be >= 0, got {rank}")
    _generator = np.random.default_rng(seed + rank)
    _data_generator = np.random.default_rng(np.random.SeedSequence([seed, _DATA_STREAM_KEY]))
    _data_seeded = True


def generator():
    """The main stream (per rank)."""
    return _generator


def data_generator():
    """The data stream (the same on every rank after set_random_seed with a shared seed)."""
    return _data_generator


def data_stream_seeded():
    """Whether set_random_seed (or set_state with a two-stream state) has fixed the data stream."""
    return _data_seeded


def spawn_data_generator():
    """A new generator seeded by one draw from the data stream. A data layer takes one at setup
    and draws its shuffles from it alone, so that its order depends only on its own reading and
    not on when other layers (a root-only test net, a second data layer) draw: ranks that
    reach a file boundary at different iterations still shuffle identically."""
    return np.random.default_rng(int(_data_generator.integers(2 ** 63)))


def get_state():
    """Both streams' full states, JSON-able (for exact resume from a solver snapshot)."""
    return {"format": _STATE_FORMAT, "main": _generator.bit_generator.state,
            "data": _data_generator.bit_generator.state}


def _from_state(state):
    # Only a bit generator's class may be named: a damaged name must not call another numpy
    # function (np.random.seed would reseed the legacy global stream).
    cls = getattr(np.random, str(state["bit_generator"]), None)
    if not (isinstance(cls, type) and issubclass(cls, np.random.BitGenerator)):
        raise ValueError(f"unknown bit generator {state['bit_generator']!r}")
    bit_gen = cls()
    bit_gen.state = state
    return np.random.Generator(bit_gen)


def set_state(state):
    """Restore get_state()'s result. A single bit-generator state (what get_state returned before
    the data stream existed) restores the main stream and leaves the data stream as it is.
    Raises KeyError / TypeError / ValueError / AttributeError on a malformed state."""
    global _generator, _data_generator, _data_seeded
    if "bit_generator" in state:
        _generator = _from_state(state)
        return
    if state.get("format") != _STATE_FORMAT:
        raise ValueError(f"unknown random state format {state.get('format')!r} "
                         f"(expected {_STATE_FORMAT!r})")
    main, data = _from_state(state["main"]), _from_state(state["data"])
    _generator, _data_generator, _data_seeded = main, data, True
