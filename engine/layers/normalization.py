"""Normalization layers: LRN, MVN, BatchNorm, and the broadcasting Scale and Bias layers."""
import numpy as np

from ..crema_pb2 import FillerParameter, LRNParameter
from ..errors import ShapeError
from ..layer import Layer, TEST
from ..registry import register_layer


def _canonical_axis(layer, blob, axis, what="axis"):
    try:
        return blob.canonical_axis(axis)
    except ShapeError:
        raise layer.error(f"{what} {axis} is out of range for bottom[0] of shape {blob.shape}") from None


def _window_sum(a, size, axis):
    """Sum over a centred window of odd `size` along `axis`, zero padded (size - 1) / 2 each side."""
    pad = (size - 1) // 2
    widths = [(0, 0)] * a.ndim
    widths[axis] = (pad, pad)
    padded = np.pad(a, widths)
    n = a.shape[axis]
    out = np.zeros_like(a)
    index = [slice(None)] * a.ndim
    for offset in range(size):  # loop over window offsets only; each step is a whole-array add
        index[axis] = slice(offset, offset + n)
        out += padded[tuple(index)]
    return out


@register_layer("LRN")
class LRNLayer(Layer):
    """Local response normalization, y = x * scale ^ -beta.

    lrn_param: local_size (odd, 5), alpha (1), beta (0.75), k (1), norm_region:
    ACROSS_CHANNELS: scale = k + alpha / local_size * sum of x^2 over local_size neighbouring
        channels (zero padded);
    WITHIN_CHANNEL: scale = 1 + alpha / local_size^2 * sum of x^2 over a local_size x local_size
        spatial square (zero padded). As in Caffe, which builds this from AVE pooling and a Power
        layer with shift 1, k is not used in this mode.
    bottom: (N, C, H, W); top: same shape. In place works (a copy of the bottom is kept)."""

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.param.lrn_param
        self.size = int(p.local_size)
        if self.size % 2 != 1:
            raise self.error(f"local_size must be odd (LRN only supports odd sizes), got {self.size}")
        self.alpha, self.beta, self.k = float(p.alpha), float(p.beta), float(p.k)
        self.across = p.norm_region == LRNParameter.ACROSS_CHANNELS
        if p.norm_region not in (LRNParameter.ACROSS_CHANNELS, LRNParameter.WITHIN_CHANNEL):
            raise self.error(f"unknown norm_region {p.norm_region}")

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error("bottom must have 4 axes (num, channels, height, width), "
                             f"got shape {bottom[0].shape}")
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)
        self.kernel = "numpy"

    def _neighbourhood_sum(self, a):
        if self.across:
            return _window_sum(a, self.size, 1)
        return _window_sum(_window_sum(a, self.size, 2), self.size, 3)

    def forward(self, bottom, top):
        x = bottom[0].data
        t = x.dtype.type
        if self.across:
            shift, coeff = self.k, self.alpha / self.size
        else:
            shift, coeff = 1.0, self.alpha / (self.size * self.size)
        self.coeff = coeff
        self.scale = t(shift) + t(coeff) * self._neighbourhood_sum(x * x)
        self.x = x.copy() if top[0] is bottom[0] else None
        y = x * np.power(self.scale, t(-self.beta))
        top[0].data[...] = y
        self.y = y  # kept: a later in-place layer may overwrite top data

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = self.x if self.x is not None and top[0] is bottom[0] else bottom[0].data
        t = x.dtype.type
        dy = top[0].diff
        # d/dx_i of sum_j dy_j x_j s_j^-b: the window is symmetric, so i is in j's window
        # exactly when j is in i's: dx = dy s^-b - 2 a' b x * W(dy y / s).
        ratio = self._neighbourhood_sum(dy * self.y / self.scale)
        dx = dy * np.power(self.scale, t(-self.beta)) - t(2.0 * self.coeff * self.beta) * x * ratio
        bottom[0].diff[...] = dx


@register_layer("MVN")
class MVNLayer(Layer):
    """Mean-variance normalization over each (n, c) slice, or each n with across_channels.

    mvn_param: normalize_variance (true), across_channels (false), eps (1e-9).
    y = x - mean, divided by (sqrt(var) + eps) when normalize_variance (Caffe adds eps to the std;
    var is the biased variance). Backward is Caffe's formula
    dx = (dy - mean(dy) - y * mean(y dy)) / (sqrt(var) + eps). bottom: (N, C, ...); top: same.
    In place works."""

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.param.mvn_param
        self.normalize_variance = bool(p.normalize_variance)
        self.across_channels = bool(p.across_channels)
        self.eps = float(p.eps)

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 1:
            raise self.error(f"bottom must have at least 1 axis, got shape {bottom[0].shape}")
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)
        b = bottom[0]
        self.num = b.num if self.across_channels else b.num * b.channels
        self.kernel = "numpy"

    def _rows(self, a):
        return a.reshape(self.num, a.size // self.num if self.num else 0)

    def forward(self, bottom, top):
        x = bottom[0].data
        if x.size == 0:
            return
        xr = self._rows(x)
        d = xr - xr.mean(axis=1, keepdims=True)
        if self.normalize_variance:
            self.std = np.sqrt(np.mean(d * d, axis=1, keepdims=True)) + x.dtype.type(self.eps)
            d = d / self.std
        self.y = d
        top[0].data[...] = d.reshape(x.shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or top[0].count == 0:
            return
        dy = self._rows(top[0].diff)
        dx = dy - dy.mean(axis=1, keepdims=True)
        if self.normalize_variance:
            y = self.y
            dx = (dx - y * np.mean(y * dy, axis=1, keepdims=True)) / self.std
        bottom[0].diff[...] = dx.reshape(bottom[0].shape)


@register_layer("BatchNorm")
class BatchNormLayer(Layer):
    """Normalizes each channel (axis 1) by batch statistics (TRAIN) or stored ones.

    batch_norm_param: use_global_stats (default false in TRAIN, true in TEST),
    moving_average_fraction (0.999), eps (1e-5). y = (x - mean) / sqrt(var + eps); no learned
    scale or shift (follow with a Scale layer). Three blobs, zero-initialized: running mean sum (C,),
    running variance sum (C,), and the scale factor (1,). In TRAIN with batch statistics each
    forward updates them: s = s * maf + 1, mean = mean * maf + batch_mean,
    var = var * maf + batch_var * m / (m - 1) (m = N * spatial, unbiased when m > 1). Stored
    statistics are blob / s (0 when s is 0). As Caffe, the blobs are not learned: every param
    lr_mult is forced to 0 (ParamSpecs are added to the layer's LayerParameter, and a given nonzero
    lr_mult is an error); `param_lr_mults_forced_zero` is True to tell nets and solvers.
    bottom: (N, C, ...) or (N,); top: same shape. In place works."""

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.param.batch_norm_param
        self.maf = float(p.moving_average_fraction)
        self.use_global_stats = self.phase == TEST
        if p.HasField("use_global_stats"):
            self.use_global_stats = bool(p.use_global_stats)
        self.eps = float(p.eps)
        if bottom[0].num_axes < 1:
            raise self.error(f"bottom must have at least 1 axis, got shape {bottom[0].shape}")
        self.channels = 1 if bottom[0].num_axes == 1 else bottom[0].shape[1]
        dtype = bottom[0].data.dtype
        if not self.blobs:
            c = self.channels
            self.blobs = [self.make_param((c,), dtype=dtype), self.make_param((c,), dtype=dtype),
                          self.make_param((1,), dtype=dtype)]
        if len(self.blobs) != 3:
            raise self.error(f"expects 3 blobs (mean, variance, scale factor), got {len(self.blobs)}")
        for i, (blob, want) in enumerate(zip(self.blobs, (self.channels, self.channels, 1))):
            if blob.count != want:
                raise self.error(f"blob {i} has shape {blob.shape} but bottom shape "
                                 f"{bottom[0].shape} needs {want} values")
        # Caffe masks the statistics from the solver: lr_mult 0 for each blob.
        specs = self.param.param
        for i in range(len(self.blobs)):
            if len(specs) == i:
                specs.add(lr_mult=0.0)
            elif specs[i].lr_mult != 0:
                raise self.error(f"param {i} has lr_mult {specs[i].lr_mult}: batch normalization "
                                 "statistics cannot be configured as learned parameters "
                                 "(lr_mult must be 0)")
        self.param_lr_mults_forced_zero = True
        self.param_propagate_down = [False] * len(self.blobs)

    def reshape(self, bottom, top):
        b = bottom[0]
        channels = 1 if b.num_axes == 1 else (b.shape[1] if b.num_axes > 1 else None)
        if channels != self.channels:
            raise self.error(f"bottom shape {b.shape} has {channels} channels, the layer was set up "
                             f"with {self.channels}")
        if top[0] is not b:
            top[0].reshape(b.shape)
        self.kernel = "numpy"

    def _view(self, a):
        n = a.shape[0]
        return a.reshape(n, self.channels, a.size // (n * self.channels) if n else 0)

    def forward(self, bottom, top):
        x = bottom[0].data
        t = x.dtype.type
        xr = self._view(x)
        m = xr.shape[0] * xr.shape[2]
        if self.use_global_stats:
            s = self.blobs[2].data.reshape(-1)[0]
            factor = 0.0 if s == 0 else 1.0 / s
            mean = t(factor) * self.blobs[0].data.reshape(-1).astype(x.dtype)
            var = t(factor) * self.blobs[1].data.reshape(-1).astype(x.dtype)
        else:
            if m == 0:
                raise self.error(f"cannot compute batch statistics of an empty bottom {x.shape}")
            mean = xr.mean(axis=(0, 2))
            d = xr - mean[None, :, None]
            var = np.mean(d * d, axis=(0, 2))
            bd = [blob.data.reshape(-1) for blob in self.blobs]
            bd[2][0] = bd[2][0] * self.maf + 1
            bd[0][...] = bd[0] * self.maf + mean
            correction = m / (m - 1.0) if m > 1 else 1.0
            bd[1][...] = bd[1] * self.maf + correction * var
        self.std = np.sqrt(var + t(self.eps))
        y = (xr - mean[None, :, None]) / self.std[None, :, None]
        self.x_norm = y  # a new array: later in-place layers cannot clobber it
        top[0].data[...] = y.reshape(x.shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = self._view(top[0].diff)
        inv = 1.0 / self.std[None, :, None]
        if self.use_global_stats:
            dx = dy * inv
        else:
            # y = (x - mean) / sqrt(var + eps) with batch statistics:
            # dx = (dy - mean(dy) - mean(dy * y) * y) / sqrt(var + eps), means over N and space.
            y = self.x_norm
            dx = (dy - dy.mean(axis=(0, 2), keepdims=True)
                  - np.mean(dy * y, axis=(0, 2), keepdims=True) * y) * inv
        bottom[0].diff[...] = dx.reshape(bottom[0].shape)


def _param_region(layer, bottom0, axis, num_axes, what):
    """bottom0.shape[axis : axis + num_axes] (num_axes -1: to the end), with Caffe's checks."""
    axis = _canonical_axis(layer, bottom0, axis)
    if num_axes < -1:
        raise layer.error(f"{what}.num_axes must be non-negative, or -1 to extend to the end of "
                          f"bottom[0]; got {num_axes}")
    if num_axes >= 0 and bottom0.num_axes < axis + num_axes:
        raise layer.error(f"{what} blob's shape extends past bottom[0]'s shape {bottom0.shape} when "
                          f"applied starting with bottom[0] axis {axis} ({num_axes} axes)")
    end = bottom0.num_axes if num_axes == -1 else axis + num_axes
    return tuple(bottom0.shape[axis:end])


def _broadcast_dims(layer, bottom0, operand, axis, name):
    """(outer, dim, inner) to apply `operand` (an N-D blob) along bottom0 starting at `axis`.
    A 0-axis operand is a scalar and applies along axis 0 (Caffe's special case)."""
    axis = 0 if operand.num_axes == 0 else _canonical_axis(layer, bottom0, axis)
    if bottom0.num_axes < axis + operand.num_axes:
        raise layer.error(f"{name} of shape {operand.shape} extends past bottom[0] of shape "
                          f"{bottom0.shape} starting at axis {axis}")
    region = tuple(bottom0.shape[axis:axis + operand.num_axes])
    if region != tuple(operand.shape):
        raise layer.error(f"{name} has shape {operand.shape} but bottom[0] of shape {bottom0.shape} "
                          f"has {region} at axes {axis}..{axis + operand.num_axes - 1}")
    return (bottom0.count_range(0, axis), operand.count,
            bottom0.count_range(axis + operand.num_axes))


@register_layer("Scale")
class ScaleLayer(Layer):
    """y = x * scale (+ bias), the scale broadcast along bottom[0] from `axis`.

    scale_param: axis (1), num_axes (1; -1: all remaining axes), filler (constant 1), bias_term
    (false), bias_filler (constant 0). bottom[0]: any shape; optional bottom[1]: the scale itself
    (then no learned scale blob), with shape bottom[0].shape[axis : axis + bottom[1].num_axes].
    Blobs: [scale] (one-bottom form), then [bias] when bias_term. A 0-axis scale is a scalar.
    top: bottom[0]'s shape. In place works (a copy of the bottom is kept)."""

    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.param.scale_param
        dtype = bottom[0].data.dtype
        learned_scale = len(bottom) == 1
        if learned_scale and not self.blobs:
            shape = _param_region(self, bottom[0], p.axis, p.num_axes, "scale_param")
            filler = p.filler if p.HasField("filler") else FillerParameter(type="constant", value=1)
            self.blobs = [self.make_param(shape, filler, dtype=dtype)]
        self.bias_index = None
        if p.bias_term:
            if len(self.blobs) + len(bottom) < 3:
                bias_axes = bottom[1].num_axes if len(bottom) > 1 else p.num_axes
                shape = _param_region(self, bottom[0], p.axis, bias_axes, "scale_param (bias)")
                self.blobs.append(self.make_param(shape, p.bias_filler, dtype=dtype))
            self.bias_index = len(self.blobs) - 1
        want = int(learned_scale) + int(p.bias_term)
        if len(self.blobs) != want:
            raise self.error(f"expects {want} parameter blobs with {len(bottom)} bottoms and "
                             f"bias_term {p.bias_term}, got {len(self.blobs)}")
        self.param_propagate_down = [True] * len(self.blobs)

    def _scale_blob(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        axis = self.param.scale_param.axis
        name = "bottom[1] (the scale)" if len(bottom) > 1 else "the scale blob"
        self.dims = _broadcast_dims(self, bottom[0], self._scale_blob(bottom), axis, name)
        if self.bias_index is not None:
            self.bias_dims = _broadcast_dims(self, bottom[0], self.blobs[self.bias_index], axis,
                                             "the bias blob")
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)
        self.kernel = "numpy"

    def forward(self, bottom, top):
        x = bottom[0].data
        self.x = x.copy() if top[0] is bottom[0] else None
        o, d, i = self.dims
        y = x.reshape(o, d, i) * self._scale_blob(bottom).data.reshape(1, d, 1)
        if self.bias_index is not None:
            bo, bdim, bi = self.bias_dims
            y = y.reshape(bo, bdim, bi) + self.blobs[self.bias_index].data.reshape(1, bdim, 1)
        top[0].data[...] = y.reshape(x.shape)

    def backward(self, top, propagate_down, bottom):
        o, d, i = self.dims
        dy = top[0].diff
        if self.bias_index is not None and self.param_propagate_down[self.bias_index]:
            bo, bdim, bi = self.bias_dims
            bias = self.blobs[self.bias_index]
            bias.diff[...] += dy.reshape(bo, bdim, bi).sum(axis=(0, 2)).reshape(bias.shape)
        scale = self._scale_blob(bottom)
        learned = len(bottom) == 1
        if (learned and self.param_propagate_down[0]) or (not learned and propagate_down[1]):
            x = self.x if self.x is not None and top[0] is bottom[0] else bottom[0].data
            g = (dy * x).reshape(o, d, i).sum(axis=(0, 2)).reshape(scale.shape)
            if learned:
                scale.diff[...] += g
            else:
                scale.diff[...] = g
        if propagate_down[0]:
            dx = dy.reshape(o, d, i) * scale.data.reshape(1, d, 1)
            bottom[0].diff[...] = dx.reshape(bottom[0].shape)


@register_layer("Bias")
class BiasLayer(Layer):
    """y = x + bias, the bias broadcast along bottom[0] from `axis`.

    bias_param: axis (1), num_axes (1; -1: all remaining axes), filler (constant 0).
    bottom[0]: any shape; optional bottom[1]: the bias itself (then no learned blob), with shape
    bottom[0].shape[axis : axis + bottom[1].num_axes]. A 0-axis bias is a scalar.
    top: bottom[0]'s shape. In place works."""

    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.param.bias_param
        if len(bottom) == 1 and not self.blobs:
            shape = _param_region(self, bottom[0], p.axis, p.num_axes, "bias_param")
            self.blobs = [self.make_param(shape, p.filler, dtype=bottom[0].data.dtype)]
        want = 1 if len(bottom) == 1 else 0
        if len(self.blobs) != want:
            raise self.error(f"expects {want} parameter blobs with {len(bottom)} bottoms, "
                             f"got {len(self.blobs)}")
        self.param_propagate_down = [True] * len(self.blobs)

    def _bias_blob(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        name = "bottom[1] (the bias)" if len(bottom) > 1 else "the bias blob"
        self.dims = _broadcast_dims(self, bottom[0], self._bias_blob(bottom),
                                    self.param.bias_param.axis, name)
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)
        self.kernel = "numpy"

    def forward(self, bottom, top):
        o, d, i = self.dims
        x = bottom[0].data
        y = x.reshape(o, d, i) + self._bias_blob(bottom).data.reshape(1, d, 1)
        top[0].data[...] = y.reshape(x.shape)

    def backward(self, top, propagate_down, bottom):
        o, d, i = self.dims
        dy = top[0].diff
        bias = self._bias_blob(bottom)
        learned = len(bottom) == 1
        if (learned and self.param_propagate_down[0]) or (not learned and propagate_down[1]):
            g = dy.reshape(o, d, i).sum(axis=(0, 2)).reshape(bias.shape)
            if learned:
                bias.diff[...] += g
            else:
                bias.diff[...] = g
        if propagate_down[0] and top[0] is not bottom[0]:
            bottom[0].diff[...] = dy
