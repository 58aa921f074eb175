"""Float64 central-difference gradient checks for layers.

The checked objective is L = sum_k sum(w_k * top_k) with fixed random weights w_k, so
dL/dtop_k = w_k is what backward receives as top diffs. For a loss layer (scalar top) w is a random
scalar: the layer must scale its gradient by top[0].diff, as the net's loss weights require.
"""
import numpy as np

from google.protobuf import text_format

from ..blob import Blob
from .. import crema_pb2, rng
from ..layer import TRAIN
from ..registry import layer_class


def layer_from_text(text, phase=TRAIN, name="layer"):
    """Build a layer from the text of one LayerParameter, e.g. 'type: "ReLU" relu_param {...}'."""
    param = crema_pb2.LayerParameter()
    text_format.Merge(text, param)
    if not param.name:
        param.name = name
    param.phase = phase
    return layer_class(param.type)(param, phase)


def _blobs(arrays, dtype):
    return [Blob.from_array(np.asarray(a, dtype=dtype)) for a in arrays]


def run_forward(layer, bottoms, n_top=1, dtype=np.float64, seed=None):
    """setup + reshape + forward on fresh blobs; returns (bottom_blobs, top_blobs)."""
    bottom = _blobs(bottoms, dtype)
    top = [Blob((), dtype=dtype) for _ in range(n_top)]
    if seed is not None:
        rng.set_random_seed(seed)
    layer.setup(bottom, top)
    for b in layer.blobs:
        if b.dtype != dtype:
            _recast(b, dtype)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return bottom, top


def _recast(blob, dtype):
    data = blob.data.astype(dtype)
    blob.dtype = np.dtype(dtype)
    blob._data, blob._diff = data, np.zeros_like(data)


def check_gradient(layer, bottoms, n_top=1, check_bottom=None, check_params=True,
                   in_place=False, step=1e-5, rtol=1e-4, atol=1e-6, seed=1701,
                   top_indices=None):
    """Compare backward() with central differences of forward().

    layer: a Layer instance (fresh, not yet set up) or the text of a LayerParameter.
    bottoms: arrays (copied to float64). check_bottom: bottom indices to check (default all);
    others get propagate_down False. check_params: also check every parameter blob.
    in_place: top[0] is bottom[0] (for layers Caffe allows in place).
    top_indices: tops that enter the objective (default all).
    Raises AssertionError naming the blob, the flat position, and both values.
    """
    if isinstance(layer, str):
        layer = layer_from_text(layer)
    originals = [np.array(b, dtype=np.float64) for b in bottoms]
    bottom = _blobs(originals, np.float64)
    if in_place:
        top = [bottom[0]] + [Blob((), dtype=np.float64) for _ in range(n_top - 1)]
    else:
        top = [Blob((), dtype=np.float64) for _ in range(n_top)]
    check_bottom = list(range(len(bottom))) if check_bottom is None else list(check_bottom)
    top_indices = list(range(n_top)) if top_indices is None else list(top_indices)

    rng.set_random_seed(seed)
    layer.setup(bottom, top)
    for b in layer.blobs:
        if b.dtype != np.float64:
            _recast(b, np.float64)
    layer.reshape(bottom, top)

    def objective():
        for b, o in zip(bottom, originals):
            b.data[...] = o
        rng.set_random_seed(seed)  # stochastic layers (Dropout) repeat their draws
        layer.forward(bottom, top)
        return sum(float(np.sum(weights[k] * top[k].data)) for k in top_indices)

    wrng = np.random.default_rng(seed + 1)
    # Shapes are only known after one forward for some layers (reshape may depend on data).
    weights = {k: 0.0 for k in top_indices}
    objective()
    weights = {k: wrng.standard_normal(top[k].shape) for k in top_indices}

    objective()
    for k in range(n_top):
        top[k].diff[...] = weights[k] if k in weights else 0.0
    for p in layer.blobs:
        p.diff[...] = 0.0
    if not in_place:
        for i in check_bottom:
            bottom[i].diff[...] = np.nan  # bottom diffs must be overwritten, not accumulated
    propagate = [i in check_bottom for i in range(len(bottom))]
    layer.backward(top, propagate, bottom)
    analytic_bottom = {i: bottom[i].diff.copy() for i in check_bottom}
    analytic_params = [p.diff.copy() for p in layer.blobs] if check_params else []

    def compare(name, analytic, numeric):
        bad = ~np.isclose(analytic, numeric, rtol=rtol, atol=atol)
        if bad.any():
            pos = np.unravel_index(int(np.argmax(bad)), analytic.shape) if analytic.shape else ()
            raise AssertionError(
                f"{layer.type} '{layer.name}': gradient of {name} wrong at {pos}: "
                f"backward gives {analytic[pos]!r}, finite difference {numeric[pos]!r} "
                f"({int(bad.sum())} of {bad.size} positions off)")

    for i in check_bottom:
        numeric = np.zeros_like(originals[i])
        flat = originals[i].reshape(-1)
        for j in range(flat.size):
            saved = flat[j]
            flat[j] = saved + step
            plus = objective()
            flat[j] = saved - step
            minus = objective()
            flat[j] = saved
            numeric.reshape(-1)[j] = (plus - minus) / (2 * step)
        compare(f"bottom[{i}]", analytic_bottom[i], numeric)

    for p_idx, analytic in enumerate(analytic_params):
        data = layer.blobs[p_idx].data.reshape(-1)
        numeric = np.zeros(data.size)
        for j in range(data.size):
            saved = data[j]
            data[j] = saved + step
            plus = objective()
            data[j] = saved - step
            minus = objective()
            data[j] = saved
            numeric[j] = (plus - minus) / (2 * step)
        compare(f"param blob {p_idx}", analytic, numeric.reshape(analytic.shape))
