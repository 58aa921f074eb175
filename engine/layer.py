"""The Layer base class: the contract every layer (built-in or Python) follows, as in pycaffe.

Diff semantics, written once here for all layers:
- parameter diffs ACCUMULATE (`blob.diff += ...`): the solver zeroes them once per iteration, and
  shared parameters add their contributions;
- bottom diffs are OVERWRITTEN (`bottom[i].diff[...] = ...`), and only where propagate_down[i];
- a loss layer scales its gradient by top[0].diff.flat[0], which the net sets to the loss weight.
Layers allocate with the dtype of their bottoms (float32 in nets, float64 in gradient checks).
"""
import numpy as np

from .blob import Blob
from .errors import LayerError
from . import fillers

TRAIN, TEST = 0, 1


class Layer:
    type = None  # set by @register_layer

    # Caffe's blob-count contracts (None = unconstrained), checked by the net before setup.
    exact_num_bottom = None
    min_bottom = None
    max_bottom = None
    exact_num_top = None
    min_top = None
    max_top = None
    equal_num_bottom_top = False
    # True: a loss layer, whose first top gets loss_weight 1 unless the prototxt says otherwise.
    is_loss = False

    def __init__(self, param, phase=TRAIN):
        self.param = param
        self.name = param.name
        self.phase = phase
        self.source = ""  # "file:line: " of the layer's definition, set by the net
        self.kernel = None  # name of the compute path chosen at reshape (for users and logs)
        from .io import blobproto_to_array
        self.blobs = [Blob.from_array(blobproto_to_array(b)) for b in param.blobs]
        self.param_propagate_down = [True] * len(self.blobs)

    # -- helpers for subclasses ------------------------------------------------------------
    def error(self, message):
        """A LayerError naming this layer; use as `raise self.error('...')`."""
        return LayerError(f"{self.source}layer '{self.name}' (type {self.type}): {message}")

    def make_param(self, shape, filler_param=None, dtype=np.float32):
        """A new parameter Blob of `shape`, filled by `filler_param` (zeros when None)."""
        blob = Blob(tuple(shape), dtype=dtype)
        if filler_param is not None:
            fillers.fill(filler_param, blob.data)
        return blob

    # -- the contract (pycaffe names and argument order) -----------------------------------
    def setup(self, bottom, top):
        """Read parameters and create self.blobs (unless loaded from the LayerParameter). Once."""

    def reshape(self, bottom, top):
        """Shape the tops (and workspaces) from the bottoms. Called whenever inputs change."""
        raise self.error(f"{type(self).__name__} does not define reshape(bottom, top)")

    def forward(self, bottom, top):
        raise self.error(f"{type(self).__name__} does not define forward(bottom, top)")

    def backward(self, top, propagate_down, bottom):
        """Layers without a gradient (data, accuracy, ...) keep this default, which does nothing."""

    def allow_force_backward(self, bottom_index):
        return True

    def __repr__(self):
        return f"<{type(self).__name__} '{self.name}' type={self.type}>"
