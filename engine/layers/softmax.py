"""Softmax over one axis (Caffe's SoftmaxLayer). SoftmaxWithLoss (in loss.py) reuses the helpers."""
import numpy as np

from ..errors import ShapeError
from ..layer import Layer
from ..registry import register_layer


def softmax_axis_dims(layer, blob, axis):
    """(canonical axis, outer, channels, inner) for a softmax over `axis` of `blob`, as Caffe's
    outer_num_ = count(0, axis), inner_num_ = count(axis + 1). Bad axes raise the layer's error."""
    try:
        axis = blob.canonical_axis(axis)
    except ShapeError as exc:
        raise layer.error(f"softmax_param.axis: {exc}") from None
    if blob.num_axes == 0:
        raise layer.error(f"bottom[0] has shape {blob.shape}: softmax needs at least one axis")
    channels = blob.shape[axis]
    if channels < 1:
        raise layer.error(f"bottom[0] shape {blob.shape} has no classes along softmax axis {axis}")
    return axis, blob.count_range(0, axis), channels, blob.count_range(axis + 1)


def softmax3(x):
    """Softmax along axis 1 of an (outer, channels, inner) array. Subtracting the per-position
    maximum first keeps exp() from overflowing (Caffe does the same)."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


@register_layer("Softmax")
class SoftmaxLayer(Layer):
    """y = exp(x) / sum_c exp(x) along softmax_param.axis (default 1; negative counts from the end).

    Params: softmax_param { axis, engine (ignored: one CPU path) }.
    Bottom: any shape with at least one axis. Top: same shape. May run in place (its backward uses
    only the top data and diff, as Caffe's): dx = y * (dy - sum_c(dy * y)).
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        _, self._outer, self._channels, self._inner = softmax_axis_dims(
            self, bottom[0], self.param.softmax_param.axis)
        top[0].reshape(bottom[0].shape)
        self.kernel = "numpy"

    def _dims(self):
        return self._outer, self._channels, self._inner

    def forward(self, bottom, top):
        y = softmax3(bottom[0].data.reshape(self._dims()))
        top[0].data.reshape(self._dims())[...] = y  # y is a new array, so in place is safe

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y = top[0].data.reshape(self._dims())
        dy = top[0].diff.reshape(self._dims())
        dx = (dy - np.sum(dy * y, axis=1, keepdims=True)) * y
        bottom[0].diff.reshape(self._dims())[...] = dx
