"""The one random stream of crema (fillers, Dropout, shuffling, stochastic pooling).
`engine.set_random_seed(s)` resets it so that runs repeat exactly."""
import numpy as np

_generator = np.random.default_rng()


def set_random_seed(seed):
    global _generator
    _generator = np.random.default_rng(int(seed))


def generator():
    return _generator


def get_state():
    """The generator's full state (for exact resume from a solver snapshot)."""
    return _generator.bit_generator.state


def set_state(state):
    global _generator
    bit_gen = getattr(np.random, state["bit_generator"])()
    bit_gen.state = state
    _generator = np.random.Generator(bit_gen)
