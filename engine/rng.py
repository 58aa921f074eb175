"""The one random stream of crema (fillers, Dropout, shuffling, stochastic pooling).
`engine.set_random_seed(s)` resets it so that runs repeat exactly."""
import numpy as np

_generator = np.random.default_rng()


def set_random_seed(seed):
    global _generator
    _generator = np.random.default_rng(int(seed))


def generator():
    return _generator
