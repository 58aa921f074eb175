"""Weight fillers with Caffe's formulas (FillerParameter). All draw from engine.rng."""
import math

import numpy as np

from .errors import LayerError
from . import rng


def _fans(shape):
    count = int(np.prod(shape))
    fan_in = count // shape[0] if shape and shape[0] else count
    fan_out = count // shape[1] if len(shape) > 1 and shape[1] else count
    return fan_in, fan_out


def _norm_n(fp, shape):
    fan_in, fan_out = _fans(shape)
    # VarianceNorm: FAN_IN = 0, FAN_OUT = 1, AVERAGE = 2
    if fp.variance_norm == 1:
        return fan_out
    if fp.variance_norm == 2:
        return (fan_in + fan_out) / 2.0
    return fan_in


def fill(filler_param, array):
    """Fill `array` (any float dtype, written in place) as `filler_param` says."""
    kind = filler_param.type
    g = rng.generator()
    shape = array.shape
    if kind == "constant":
        array[...] = filler_param.value
    elif kind == "uniform":
        array[...] = g.uniform(filler_param.min, filler_param.max, size=shape)
    elif kind == "gaussian":
        array[...] = g.normal(filler_param.mean, filler_param.std, size=shape)
        sparse = filler_param.sparse
        if sparse >= 0:
            # Caffe: each weight is kept with probability sparse / num_outputs (shape[0]).
            if array.ndim < 1:
                raise LayerError("the sparse gaussian filler needs a blob with at least one axis")
            p = sparse / float(shape[0])
            array *= g.random(size=shape) < p
    elif kind == "positive_unitball":
        x = g.uniform(0.0, 1.0, size=shape)
        num = shape[0] if array.ndim else 1
        x = x.reshape(num, -1)
        array[...] = (x / x.sum(axis=1, keepdims=True)).reshape(shape)
    elif kind == "xavier":
        scale = math.sqrt(3.0 / _norm_n(filler_param, shape))
        array[...] = g.uniform(-scale, scale, size=shape)
    elif kind == "msra":
        std = math.sqrt(2.0 / _norm_n(filler_param, shape))
        array[...] = g.normal(0.0, std, size=shape)
    elif kind == "bilinear":
        if array.ndim != 4 or shape[2] != shape[3]:
            raise LayerError(f"the bilinear filler needs a 4-D blob with square kernels, got {shape}")
        f = math.ceil(shape[3] / 2.0)
        c = (2 * f - 1 - f % 2) / (2.0 * f)
        y = np.arange(shape[2]).reshape(-1, 1)
        x = np.arange(shape[3]).reshape(1, -1)
        k = (1 - np.abs(x / f - c)) * (1 - np.abs(y / f - c))
        array[...] = k
    else:
        raise LayerError(f"unknown filler type {kind!r}; known: constant, uniform, gaussian, "
                         "positive_unitball, xavier, msra, bilinear")
    return array
