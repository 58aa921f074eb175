"""Neuron layers: one bottom, one top of the same shape, applied elementwise (Caffe's NeuronLayer).

In place (top is bottom) works for every layer here except AbsVal, which Caffe forbids. Where the
backward pass needs the bottom data that an in-place forward overwrites, Caffe either derives it
from the top (ReLU, ELU, Sigmoid, TanH, Exp, Swish), keeps a copy (PReLU), or -- for Power, Log,
BNLL and Clip -- silently reads the overwritten values. crema keeps a copy of the bottom for all of
the latter group, so in-place nets get the true gradient; the forward results are Caffe's.
"""
import math

import numpy as np

from .. import kernels, rng
from ..layer import Layer, TRAIN
from ..registry import register_layer


class NeuronLayer(Layer):
    """Base of the elementwise layers: one bottom, one top of the bottom's shape."""

    exact_num_bottom = 1
    exact_num_top = 1
    # True where backward needs x itself: an in-place forward then keeps a copy of it.
    keeps_bottom = False
    _x_copy = None

    def reshape(self, bottom, top):
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)
        self.kernel = "numpy"

    def forward(self, bottom, top):
        x = bottom[0].data
        self._x_copy = x.copy() if (self.keeps_bottom and top[0] is bottom[0]) else None
        top[0].data[...] = self.compute(x)

    def bottom_data(self, bottom, top):
        """The bottom data of the last forward, also when the forward ran in place."""
        return self._x_copy if self._x_copy is not None and top[0] is bottom[0] else bottom[0].data

    def compute(self, x):
        raise self.error("compute(x) is not defined")

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            # Evaluate into a new array first: in place, bottom.diff is top.diff.
            bottom[0].diff[...] = self.gradient(top, bottom)

    def gradient(self, top, bottom):
        raise self.error("gradient is not defined")


@register_layer("ReLU")
class ReLULayer(NeuronLayer):
    """y = x for x > 0, negative_slope * x otherwise. Reads relu_param.negative_slope (0).

    Backward uses the sign of the bottom data; in place that is the top data, which has the same
    sign for negative_slope >= 0 (as in Caffe)."""

    def setup(self, bottom, top):
        self.slope = float(self.param.relu_param.negative_slope)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.kernel = kernels.relu_kernel_name(bottom[0].data)

    def forward(self, bottom, top):
        kernels.relu_forward(bottom[0].data, top[0].data, self.slope)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            kernels.relu_backward(bottom[0].data, top[0].diff, bottom[0].diff, self.slope)


@register_layer("PReLU")
class PReLULayer(NeuronLayer):
    """y = max(x, 0) + a_c * min(x, 0) with a learned slope per channel (axis 1).

    prelu_param: filler (default constant 0.25), channel_shared (false: one slope per channel,
    blob shape (C,); true: one slope, a 0-axis blob of one element, as Caffe's vector<int>(0)).
    bottom: at least 2 axes (N, C, ...); top: same shape. In place keeps a copy of the bottom."""

    keeps_bottom = True

    def setup(self, bottom, top):
        p = self.param.prelu_param
        if bottom[0].num_axes < 2:
            raise self.error(f"bottom must have at least 2 axes (N, C, ...), got shape {bottom[0].shape}")
        self.channel_shared = bool(p.channel_shared)
        channels = bottom[0].shape[1]
        if not self.blobs:
            if p.HasField("filler"):
                filler = p.filler
            else:
                from ..crema_pb2 import FillerParameter
                filler = FillerParameter(type="constant", value=0.25)
            shape = () if self.channel_shared else (channels,)
            self.blobs = [self.make_param(shape, filler, dtype=bottom[0].data.dtype)]
            self.param_propagate_down = [True]
        if len(self.blobs) != 1:
            raise self.error(f"expects 1 parameter blob (the slopes), got {len(self.blobs)}")
        self._check_slopes(bottom)

    def _check_slopes(self, bottom):
        want = 1 if self.channel_shared else bottom[0].shape[1]
        if self.blobs[0].count != want:
            need = ("channel_shared needs 1 value" if self.channel_shared else
                    f"bottom shape {bottom[0].shape} has {want} channels")
            raise self.error(f"slope blob has shape {self.blobs[0].shape} "
                             f"({self.blobs[0].count} values) but {need}")

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 2:
            raise self.error(f"bottom must have at least 2 axes (N, C, ...), got shape {bottom[0].shape}")
        self._check_slopes(bottom)
        super().reshape(bottom, top)

    def _slopes(self, x):
        a = self.blobs[0].data.reshape(-1).astype(x.dtype, copy=False)
        if self.channel_shared:
            return a[0]
        return a.reshape((1, -1) + (1,) * (x.ndim - 2))

    def compute(self, x):
        return np.maximum(x, 0) + self._slopes(x) * np.minimum(x, 0)

    def backward(self, top, propagate_down, bottom):
        x = self.bottom_data(bottom, top)
        dy = top[0].diff
        neg = x <= 0
        if self.param_propagate_down[0]:
            g = dy * x * neg
            if self.channel_shared:
                self.blobs[0].diff[...] += g.sum()
            else:
                axes = (0,) + tuple(range(2, x.ndim))
                self.blobs[0].diff[...] += g.sum(axis=axes).reshape(self.blobs[0].shape)
        if propagate_down[0]:
            bottom[0].diff[...] = np.where(neg, dy * self._slopes(x), dy)


@register_layer("ELU")
class ELULayer(NeuronLayer):
    """y = x for x > 0, alpha * (exp(x) - 1) otherwise. Reads elu_param.alpha (1).
    Backward uses y + alpha for x <= 0 (the top data, so in place works as in Caffe)."""

    def setup(self, bottom, top):
        self.alpha = float(self.param.elu_param.alpha)

    def compute(self, x):
        return np.maximum(x, 0) + self.alpha * np.expm1(np.minimum(x, 0))

    def gradient(self, top, bottom):
        y, dy = top[0].data, top[0].diff
        # In place the bottom is y, whose sign is x's for alpha > 0 (Caffe reads it the same way).
        x = bottom[0].data
        return dy * np.where(x > 0, 1.0, self.alpha + y).astype(y.dtype, copy=False)


@register_layer("Sigmoid")
class SigmoidLayer(NeuronLayer):
    """y = 1 / (1 + exp(-x)), evaluated as 0.5 * tanh(0.5 x) + 0.5 (no overflow).
    Backward uses y only (in place works). sigmoid_param.engine is accepted and ignored."""

    def compute(self, x):
        return 0.5 * np.tanh(0.5 * x) + 0.5

    def gradient(self, top, bottom):
        y = top[0].data
        return top[0].diff * y * (1 - y)


@register_layer("TanH")
class TanHLayer(NeuronLayer):
    """y = tanh(x). Backward uses y only (in place works)."""

    def compute(self, x):
        return np.tanh(x)

    def gradient(self, top, bottom):
        y = top[0].data
        return top[0].diff * (1 - y * y)


@register_layer("AbsVal")
class AbsValLayer(NeuronLayer):
    """y = |x|; dx = sign(x) dy with sign(0) = 0. Not in place (Caffe forbids it)."""

    def setup(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.error("AbsVal does not allow in-place computation (top is its bottom)")

    def reshape(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.error("AbsVal does not allow in-place computation (top is its bottom)")
        super().reshape(bottom, top)

    def compute(self, x):
        return np.abs(x)

    def gradient(self, top, bottom):
        return top[0].diff * np.sign(bottom[0].data)


@register_layer("Power")
class PowerLayer(NeuronLayer):
    """y = (shift + scale * x) ^ power. Reads power_param power (1), scale (1), shift (0).

    As Caffe: when power * scale == 0 the output is the constant (power == 0 ? 1 : shift^power)
    and the gradient 0; the gradient for power == 1 is scale, for power == 2 is
    2 scale (shift + scale x), for shift == 0 is power * y / x (NaN at x == 0, as Caffe), and
    otherwise power * scale * y / (shift + scale x)."""

    keeps_bottom = True

    def setup(self, bottom, top):
        p = self.param.power_param
        self.power, self.scale, self.shift = float(p.power), float(p.scale), float(p.shift)
        self.diff_scale = self.power * self.scale

    def compute(self, x):
        if self.diff_scale == 0:
            value = 1.0 if self.power == 0 else self.shift ** self.power
            return np.full(x.shape, value, dtype=x.dtype)
        t = x
        if self.scale != 1:
            t = t * x.dtype.type(self.scale)
        if self.shift != 0:
            t = t + x.dtype.type(self.shift)
        if self.power != 1:
            with np.errstate(invalid="ignore", divide="ignore"):
                t = np.power(t, x.dtype.type(self.power))
        return t

    def gradient(self, top, bottom):
        dy = top[0].diff
        if self.diff_scale == 0:
            return np.zeros_like(dy)
        if self.power == 1:
            return dy * dy.dtype.type(self.diff_scale)
        x = self.bottom_data(bottom, top)
        y = top[0].data
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.power == 2:
                g = self.diff_scale * self.scale * x + self.diff_scale * self.shift
            elif self.shift == 0:
                g = self.power * (y / x)
            else:
                g = self.diff_scale * (y / (self.scale * x + self.shift))
        return dy * g.astype(dy.dtype, copy=False)


def _base_log(layer, p):
    """Caffe's checks on exp_param/log_param.base: -1 means e, else strictly positive."""
    base = float(p.base)
    if base != -1 and not base > 0:
        raise layer.error(f"base must be strictly positive (or -1 for e), got {base}")
    log_base = 1.0 if base == -1 else math.log(base)
    if math.isnan(log_base) or math.isinf(log_base):
        raise layer.error(f"log(base) = log({base}) = {log_base} is not finite")
    return base, log_base


@register_layer("Exp")
class ExpLayer(NeuronLayer):
    """y = base ^ (shift + scale * x). Reads exp_param base (-1 means e), scale (1), shift (0).
    Backward uses y only: dx = dy * y * scale * ln(base) (in place works)."""

    def setup(self, bottom, top):
        p = self.param.exp_param
        base, log_base = _base_log(self, p)
        self.inner_scale = log_base * float(p.scale)
        shift = float(p.shift)
        self.outer_scale = 1.0 if shift == 0 else (math.exp(shift) if base == -1 else base ** shift)

    def compute(self, x):
        with np.errstate(over="ignore"):
            y = np.exp(x * x.dtype.type(self.inner_scale))
        if self.outer_scale != 1:
            y *= x.dtype.type(self.outer_scale)
        return y

    def gradient(self, top, bottom):
        return top[0].diff * top[0].data * top[0].data.dtype.type(self.inner_scale)


@register_layer("Log")
class LogLayer(NeuronLayer):
    """y = log_base(shift + scale * x). Reads log_param base (-1 means e), scale (1), shift (0).
    dx = dy * scale / (ln(base) * (shift + scale x)). base 1 is rejected (1/ln(1) is infinite)."""

    keeps_bottom = True

    def setup(self, bottom, top):
        p = self.param.log_param
        base, log_base = _base_log(self, p)
        if log_base == 0:
            raise self.error(f"base {base} gives an infinite 1/log(base)")
        self.base_scale = 1.0 / log_base
        self.scale, self.shift = float(p.scale), float(p.shift)
        self.backward_num_scale = self.scale / log_base

    def compute(self, x):
        t = x
        if self.scale != 1:
            t = t * x.dtype.type(self.scale)
        if self.shift != 0:
            t = t + x.dtype.type(self.shift)
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.log(t)
        if self.base_scale != 1:
            y = y * x.dtype.type(self.base_scale)
        return y

    def gradient(self, top, bottom):
        x = self.bottom_data(bottom, top)
        with np.errstate(invalid="ignore", divide="ignore"):
            g = self.backward_num_scale / (self.scale * x + self.shift)
        return top[0].diff * g.astype(x.dtype, copy=False)


@register_layer("BNLL")
class BNLLLayer(NeuronLayer):
    """Binomial normal log likelihood: y = log(1 + exp(x)), evaluated without overflow
    (x + log(1 + exp(-x)) for x > 0). dx = dy * e / (1 + e) with e = exp(min(x, 50)) (Caffe's
    threshold)."""

    keeps_bottom = True
    THRESHOLD = 50.0

    def compute(self, x):
        return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))

    def gradient(self, top, bottom):
        x = self.bottom_data(bottom, top)
        e = np.exp(np.minimum(x, x.dtype.type(self.THRESHOLD)))
        return top[0].diff * e / (e + 1)


@register_layer("Threshold")
class ThresholdLayer(NeuronLayer):
    """y = 1 if x > threshold else 0. Reads threshold_param.threshold (0). Not differentiable:
    backward raises if a gradient is requested for the bottom (Caffe: NOT_IMPLEMENTED)."""

    def setup(self, bottom, top):
        self.threshold = float(self.param.threshold_param.threshold)

    def compute(self, x):
        return (x > x.dtype.type(self.threshold)).astype(x.dtype)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error("Threshold has no gradient; do not backpropagate through it "
                             "(set propagate_down: false or remove the loss path)")


@register_layer("Dropout")
class DropoutLayer(NeuronLayer):
    """TRAIN: y = x * mask / (1 - ratio), mask ~ Bernoulli(1 - ratio) from engine.rng; TEST: y = x.
    Reads dropout_param.dropout_ratio (0.5), which must be in [0, 1). Backward uses the mask
    (in place works)."""

    def setup(self, bottom, top):
        ratio = float(self.param.dropout_param.dropout_ratio)
        if not 0.0 <= ratio < 1.0:
            raise self.error(f"dropout_ratio must be in [0, 1), got {ratio}")
        self.ratio = ratio
        self.scale = 1.0 / (1.0 - ratio)
        self.mask = None

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.phase == TRAIN:
            self.mask = rng.generator().random(size=x.shape) < (1.0 - self.ratio)
            top[0].data[...] = x * self.mask * x.dtype.type(self.scale)
        elif top[0] is not bottom[0]:
            top[0].data[...] = x

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff
        if self.phase == TRAIN:
            bottom[0].diff[...] = dy * self.mask * dy.dtype.type(self.scale)
        elif top[0] is not bottom[0]:
            bottom[0].diff[...] = dy


@register_layer("Clip")
class ClipLayer(NeuronLayer):
    """y = max(min, min(x, max)). Reads clip_param min, max (both required, min <= max).
    The gradient passes where min <= x <= max (both ends inclusive, as Caffe)."""

    keeps_bottom = True

    def setup(self, bottom, top):
        p = self.param.clip_param
        if not (p.HasField("min") and p.HasField("max")):
            raise self.error("clip_param needs both min and max")
        self.lo, self.hi = float(p.min), float(p.max)
        if self.lo > self.hi:
            raise self.error(f"clip_param min {self.lo} is greater than max {self.hi}")

    def compute(self, x):
        t = x.dtype.type
        return np.maximum(t(self.lo), np.minimum(x, t(self.hi)))

    def gradient(self, top, bottom):
        x = self.bottom_data(bottom, top)
        t = x.dtype.type
        return top[0].diff * ((x >= t(self.lo)) & (x <= t(self.hi)))


@register_layer("Swish")
class SwishLayer(NeuronLayer):
    """y = x * sigmoid(beta * x). Reads swish_param.beta (1).
    dx = dy * (beta y + s (1 - beta y)) with s = sigmoid(beta x) kept from forward (in place works)."""

    def setup(self, bottom, top):
        self.beta = float(self.param.swish_param.beta)

    def compute(self, x):
        self.sig = 0.5 * np.tanh(0.5 * x.dtype.type(self.beta) * x) + 0.5
        return x * self.sig

    def gradient(self, top, bottom):
        y, s = top[0].data, self.sig
        by = self.beta * y
        return top[0].diff * (by + s * (1 - by))
