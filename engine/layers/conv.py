"""Convolution, Deconvolution and Im2col: Caffe's 2-D convolution layers and its patch layout.

All three read ConvolutionParameter with Caffe's rules (BaseConvolutionLayer::LayerSetUp):
- kernel_size / pad / stride / dilation are repeated: one value for both spatial axes or one per
  axis; kernel_h/kernel_w, pad_h/pad_w, stride_h/stride_w are the 2-D-only explicit forms and
  exclude the repeated form of the same field;
- `axis` (default 1) is the channel axis; the axes before it are the batch ("num"), the two after
  it the spatial axes. Only 2 spatial axes are supported: N-D convolution is refused.
float32 Convolution/Deconvolution run the native convolution (engine.kernels.conv_*,
kernels/include/crema/conv.h): one call per pass, whose kernel table runs Winograd for the forward
and data-gradient passes where engine.kernels.conv_algorithm's per-ISA rule (measured once, the
same on every rank) prefers it, else the direct kernels (blocked layouts and register-tiled
micro-kernels, no im2col). reshape builds the layer's ConvGeometry (with those choices), sizes the
workspace and one weight cache per pass (the packed or transformed weights, recomputed only when
the weights change), and records the kernels' names: `self.kernels` names all three passes'
table rows, `self.kernel` the forward one, `self.algorithm` the forward and data-gradient
algorithm. float64 (gradient checks), CREMA_KERNELS=reference and builds without the native module
run the numpy reference of the same three passes (engine/reference/conv.py: the whole batch at
once, in the blobs' dtype; `self.kernel` is then "numpy"). engine.net may fuse an in-place ReLU
into the native forward kernel (ConvolutionLayer.relu_epilogue); the reference never fuses it.
"""
import numpy as np

from .. import bf16, kernels
from ..layer import Layer
from ..reference import conv as ref_conv
from ..registry import register_layer
from .common import canonical_axis, param_needs_grad


def _nd_error(layer, why):
    return layer.error(f"N-D convolution is not supported: crema convolves over exactly 2 spatial "
                       f"axes, but {why}")


def _two(layer, p, name, default):
    """A repeated field (or its _h/_w form) as an (h, w) pair, with Caffe's exclusivity rules."""
    values = list(getattr(p, name))
    h_name, w_name = {"kernel_size": ("kernel_h", "kernel_w"), "pad": ("pad_h", "pad_w"),
                      "stride": ("stride_h", "stride_w"), "dilation": (None, None)}[name]
    if h_name is not None and (p.HasField(h_name) or p.HasField(w_name)):
        if values:
            raise layer.error(f"either {name} or {h_name}/{w_name} may be given, not both "
                              f"({name}: {values}, {h_name}: {getattr(p, h_name)}, "
                              f"{w_name}: {getattr(p, w_name)})")
        if name != "pad" and not (p.HasField(h_name) and p.HasField(w_name)):
            # Caffe reads the missing one as 0, which its positivity check then refuses.
            raise layer.error(f"{h_name} and {w_name} must both be given")
        return int(getattr(p, h_name)), int(getattr(p, w_name))
    if not values:
        return default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    return int(values[0]), int(values[1])


class _ConvGeometryMixin:
    """Parses and checks ConvolutionParameter against bottom[0] (setup), and the spatial sizes
    (reshape). Sets channel_axis, num_axes, channels, kernel, pad, stride, dilation."""

    def _parse_geometry(self, bottom0):
        p = self.param.convolution_param
        for name in ("kernel_size", "pad", "stride", "dilation"):
            if len(getattr(p, name)) > 2:
                raise _nd_error(self, f"convolution_param.{name} has {len(getattr(p, name))} "
                                      f"values {list(getattr(p, name))}")
        self.channel_axis = canonical_axis(self, bottom0, p.axis, "convolution_param.axis")
        self.num_axes = bottom0.num_axes
        n_spatial = self.num_axes - self.channel_axis - 1
        if n_spatial != 2:
            raise _nd_error(self, f"bottom[0] of shape {bottom0.shape} with channel axis "
                                  f"{self.channel_axis} has {n_spatial} spatial axes"
                            + (" (force_nd_im2col is set)" if p.force_nd_im2col else ""))
        if not p.kernel_size and not (p.HasField("kernel_h") or p.HasField("kernel_w")):
            raise self.error("convolution_param needs kernel_size, or kernel_h and kernel_w")
        self.kernel_hw = _two(self, p, "kernel_size", None)
        self.pad_hw = _two(self, p, "pad", (0, 0))
        self.stride_hw = _two(self, p, "stride", (1, 1))
        self.dilation_hw = _two(self, p, "dilation", (1, 1))
        for what, pair in (("kernel", self.kernel_hw), ("stride", self.stride_hw),
                           ("dilation", self.dilation_hw)):
            if min(pair) <= 0:
                raise self.error(f"{what} dimensions must be positive, got {pair}")
        self.channels = int(bottom0.shape[self.channel_axis])

    def _check_bottoms(self, bottom):
        b0 = bottom[0]
        if b0.num_axes != self.num_axes:
            raise self.error(f"bottom[0] has shape {b0.shape} ({b0.num_axes} axes); the number "
                             f"of axes may not change from the {self.num_axes} it had at setup")
        if b0.shape[self.channel_axis] != self.channels:
            raise self.error(f"input size incompatible with convolution kernel: bottom[0] of "
                             f"shape {b0.shape} has {b0.shape[self.channel_axis]} channels on "
                             f"axis {self.channel_axis}, the layer was set up for "
                             f"{self.channels}")
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != b0.shape:
                raise self.error(f"all bottoms must have the same shape: bottom[0] is "
                                 f"{b0.shape}, bottom[{i}] is {b.shape}")
        self.num = b0.count_range(0, self.channel_axis)
        self.in_hw = tuple(int(d) for d in b0.shape[self.channel_axis + 1:])

    def _conv_out_hw(self, in_hw):
        """Forward-convolution output size, refusing a kernel larger than the padded input."""
        out = []
        for axis, size, k, p, s, d in zip("HW", in_hw, self.kernel_hw, self.pad_hw,
                                           self.stride_hw, self.dilation_hw):
            extent = d * (k - 1) + 1
            if size + 2 * p < extent:
                raise self.error(f"kernel extent {extent} (kernel {k}, dilation {d}) is bigger "
                                 f"than the padded input {size + 2 * p} (size {size} + 2 * pad "
                                 f"{p}) along {axis}: bottom[0] shape {self.bottom_shape}")
            out.append((size + 2 * p - extent) // s + 1)
        return tuple(out)


class _BaseConvolution(_ConvGeometryMixin, Layer):
    """Shared machinery of Convolution and Deconvolution (Caffe's BaseConvolutionLayer).

    The internal convolution maps a "conv input" image (conv_in_channels x conv_in_hw) to a
    "conv output" (conv_out_channels x conv_out_hw) with weights
    (conv_out_channels, conv_in_channels / group, kh, kw). Convolution: conv input = bottom.
    Deconvolution (reverse): conv input = top, so its forward is the conv's data gradient."""
    # "bf16" (Net.set_precision): the native passes run on engine.bf16's kernels, whose scratch
    # is bf16_scratch; float64 and the numpy path are unaffected.
    precision = "fp32"

    min_bottom = 1
    min_top = 1
    equal_num_bottom_top = True
    reverse = False

    def setup(self, bottom, top):
        p = self.param.convolution_param
        self.bottom_shape = bottom[0].shape
        self._parse_geometry(bottom[0])
        if not p.HasField("num_output") or p.num_output <= 0:
            raise self.error(f"convolution_param.num_output must be set to a positive number, "
                             f"got {p.num_output}")
        self.num_output = int(p.num_output)
        self.group = int(p.group)
        if self.group <= 0:
            raise self.error(f"convolution_param.group must be positive, got {self.group}")
        if self.channels % self.group:
            raise self.error(f"the number of input channels {self.channels} (bottom[0] shape "
                             f"{bottom[0].shape}, axis {self.channel_axis}) is not divisible "
                             f"by group {self.group}")
        if self.num_output % self.group:
            raise self.error(f"num_output {self.num_output} is not divisible by group "
                             f"{self.group}")
        if self.reverse:
            self.conv_out_channels, self.conv_in_channels = self.channels, self.num_output
        else:
            self.conv_out_channels, self.conv_in_channels = self.num_output, self.channels
        kh, kw = self.kernel_hw
        w_shape = (self.conv_out_channels, self.conv_in_channels // self.group, kh, kw)
        self.bias_term = bool(p.bias_term)
        if not self.blobs:
            dtype = bottom[0].data.dtype
            self.blobs = [self.make_param(w_shape, p.weight_filler, dtype=dtype)]
            if self.bias_term:
                self.blobs.append(self.make_param((self.num_output,), p.bias_filler,
                                                  dtype=dtype))
        else:
            self._check_blobs(w_shape)
        flags = list(self.param_propagate_down)
        self.param_propagate_down = flags + [True] * (len(self.blobs) - len(flags))

    def _check_blobs(self, w_shape):
        want = 2 if self.bias_term else 1
        if len(self.blobs) != want:
            raise self.error(f"incorrect number of parameter blobs: expected {want} (bias_term "
                             f"{str(self.bias_term).lower()}), got {len(self.blobs)}")
        for i, shape in enumerate([w_shape, (self.num_output,)][:want]):
            have = tuple(self.blobs[i].shape)
            if have != shape:
                # Old models store blobs with Caffe's legacy 4-D shape (1, 1, 1, n): accept any
                # shape that only differs by leading 1s, as Caffe's legacy shape check does.
                strip = lambda s: tuple(s[next((j for j, d in enumerate(s) if d != 1), len(s)):])
                if strip(have) != strip(shape):
                    what = "weight" if i == 0 else "bias"
                    raise self.error(f"incorrect {what} shape: expected {shape}, got {have}")
                self.blobs[i].reshape(shape)

    def reshape(self, bottom, top):
        self.bottom_shape = bottom[0].shape
        self._check_bottoms(bottom)
        if self.reverse:
            out_hw = self._deconv_out_hw(self.in_hw)
            conv_in_hw = out_hw
        else:
            out_hw = self._conv_out_hw(self.in_hw)
            conv_in_hw = self.in_hw
        self.out_hw = out_hw
        self.conv_in_hw = conv_in_hw
        self.conv_out_hw = self._conv_out_hw(conv_in_hw)  # equals in_hw for deconvolution
        shape = tuple(bottom[0].shape[:self.channel_axis]) + (self.num_output,) + out_hw
        for t in top:
            t.reshape(shape)
        # The numpy reference's view of the same convolution (engine/reference/conv.py).
        self.conv_in_shape = (self.num, self.conv_in_channels) + conv_in_hw
        self.conv_out_shape = (self.num, self.conv_out_channels) + self.conv_out_hw
        self.ref_options = dict(pad=self.pad_hw, stride=self.stride_hw,
                                dilation=self.dilation_hw, group=self.group)
        self.kernel = "numpy"
        self._setup_native(bottom[0].data)

    def _setup_native(self, x):
        """For float32 with the native kernels: the layer's ConvGeometry (each pass's algorithm
        chosen there), the workspace and the per-pass weight caches, and the kernels' names."""
        kh, kw = self.kernel_hw
        self.native_geometry = (self.num, self.conv_in_channels, self.conv_in_hw[0],
                                self.conv_in_hw[1], self.conv_out_channels, kh, kw,
                                self.pad_hw[0], self.pad_hw[1], self.stride_hw[0],
                                self.stride_hw[1], self.dilation_hw[0], self.dilation_hw[1],
                                self.group)
        self.kernels = None
        if not hasattr(self, "bf16_scratch"):
            self.bf16_scratch = bf16.ConvScratch()
        if not (x.dtype == np.float32 and kernels.native_available() and self.num > 0):
            self.conv_ws = None
            return
        try:
            geometry = kernels.conv_geometry(self.native_geometry)
            size = kernels.conv_workspace_size(geometry)
        except ValueError:  # a geometry the native kernels refuse (e.g. absurdly large)
            self.conv_ws = None
            return
        self.native_geometry = geometry
        ws = getattr(self, "conv_ws", None)
        if ws is None or ws.size < size:
            self.conv_ws = np.empty(max(size, 1), dtype=np.float32)
        # Zeroed, so a cache's header never matches before its first fill; one per pass, since
        # the forward and data-gradient passes keep different forms of the same weights.
        old = getattr(self, "conv_caches", {})
        self.conv_caches = {}
        for op in ("fwd", "bwd_data"):
            csize = kernels.conv_weight_cache_size(geometry, op)
            cache = old.get(op)
            self.conv_caches[op] = (cache if cache is not None and cache.size >= csize
                                    else np.zeros(max(csize, 1), dtype=np.float32))
        names = {op: kernels.conv_kernel_name(op, geometry, x) for op in kernels.CONV_OPS}
        self.algorithm = {op: "winograd" if names[op].startswith("winograd_") else "direct"
                          for op in kernels.CONV_OPS}
        # Deconvolution's forward pass is the convolution's data gradient and vice versa.
        if self.reverse:
            self.kernels = {"forward": names["bwd_data"], "backward_data": names["fwd"],
                            "backward_weights": names["bwd_weights"]}
        else:
            self.kernels = {"forward": names["fwd"], "backward_data": names["bwd_data"],
                            "backward_weights": names["bwd_weights"]}
        self.kernel = self.kernels["forward"]

    def _conv_fwd(self, x, w, bias, y, native, relu_slope=None):
        """y = the convolution of x (the conv input) + bias unless None, overwriting y: by the
        native kernels where `native`, whose epilogue fuses a ReLU with negative_slope
        relu_slope unless None; else by the numpy reference, which never fuses."""
        if not native:
            y[...] = ref_conv.forward(x.reshape(self.conv_in_shape), w, bias,
                                      **self.ref_options).reshape(y.shape)
            return
        relu = relu_slope is not None
        if self.precision == "bf16":
            bf16.conv_forward(x, w, bias, y, self.native_geometry, self.bf16_scratch,
                              relu_slope=relu_slope)
            return
        kernels.conv_forward(x, w, bias, y, self.native_geometry, self.conv_ws, relu=relu,
                             negative_slope=float(relu_slope) if relu else 0.0,
                             weight_cache=self.conv_caches["fwd"])

    def _conv_bwd_data(self, dy, w, dx, native):
        """dx = the convolution's data gradient for dy (overwrites dx)."""
        if not native:
            dx[...] = ref_conv.backward_data(dy.reshape(self.conv_out_shape), w, self.conv_in_hw,
                                             **self.ref_options).reshape(dx.shape)
            return
        if self.precision == "bf16":
            bf16.conv_backward_data(dy, w, dx, self.native_geometry, self.bf16_scratch)
            return
        kernels.conv_backward_data(dy, w, dx, self.native_geometry, self.conv_ws,
                                   weight_cache=self.conv_caches["bwd_data"])

    def _conv_bwd_weights(self, x, dy, dw, db, native):
        """dw += the convolution's weight gradient, db += its bias gradient unless None."""
        if not native:
            grad_w, grad_b = ref_conv.backward_weights(
                x.reshape(self.conv_in_shape), dy.reshape(self.conv_out_shape), self.kernel_hw,
                **self.ref_options)
            dw += grad_w
            if db is not None:
                db += grad_b
            return
        if self.precision == "bf16":
            bf16.conv_backward_weights(x, dy, dw, db, self.native_geometry, self.bf16_scratch)
            return
        kernels.conv_backward_weights(x, dy, dw, db, self.native_geometry, self.conv_ws)

    def _native(self, *arrays):
        return self.kernels is not None and kernels.native_accepts(
            *(a for a in arrays if a is not None))

    def _deconv_out_hw(self, in_hw):
        out = []
        for axis, size, k, p, s, d in zip("HW", in_hw, self.kernel_hw, self.pad_hw,
                                           self.stride_hw, self.dilation_hw):
            extent = d * (k - 1) + 1
            o = s * (size - 1) + extent - 2 * p
            if o <= 0:
                raise self.error(f"deconvolution output size along {axis} would be {o} "
                                 f"(stride {s} * (input {size} - 1) + kernel extent {extent} "
                                 f"- 2 * pad {p}): bottom[0] shape {self.bottom_shape}")
            out.append(o)
        return tuple(out)

    def _bias_add(self, y):
        """y (a top's data) += the bias of its channel."""
        if self.bias_term:
            per_channel = y.reshape(self.num, self.num_output, -1)
            per_channel += self.blobs[1].data.reshape(-1, 1)

    def _bias_grad(self, top):
        if self.bias_term and param_needs_grad(self, 1):
            for t in top:
                dy = t.diff.reshape(self.num, self.num_output, -1)
                self.blobs[1].diff += dy.sum(axis=(0, 2)).reshape(self.blobs[1].shape)

    def _param_arrays(self, which):
        w = getattr(self.blobs[0], which)
        b = getattr(self.blobs[1], which) if self.bias_term else None
        return w, b


@register_layer("Convolution")
class ConvolutionLayer(_BaseConvolution):
    """2-D convolution (cross-correlation, as Caffe).

    convolution_param: num_output (required), bias_term (true), kernel_size | kernel_h+kernel_w,
    pad | pad_h/pad_w (0), stride | stride_h+stride_w (1), dilation (1), group (1; channels and
    num_output divisible by it), weight_filler, bias_filler, axis (1, the channel axis),
    force_nd_im2col (accepted for 2-D geometry only), engine (ignored).
    bottom[i]: (..., C, H, W) with `axis` the C axis, all bottoms the same shape;
    top[i]: (..., num_output, oh, ow), o = (H + 2p - (d(k-1)+1)) / s + 1.
    blobs: [weight (num_output, C/group, kh, kw), bias (num_output,) if bias_term].
    Several bottom/top pairs share the weights (Caffe's convention).
    """

    # Fused ReLU (set by engine.net for a Convolution whose single top an in-place ReLU consumes
    # next): before each forward the net sets relu_epilogue to the ReLU's negative_slope (None:
    # no fusion this call); forward sets relu_applied when the native kernel applied it, and the
    # net then skips the ReLU's forward. float64 / CREMA_KERNELS=reference never fuse.
    fused_relu = False
    relu_epilogue = None
    relu_applied = False

    def forward(self, bottom, top):
        w, bias = self._param_arrays("data")
        native = self._native(w, bias, *(b.data for b in bottom), *(t.data for t in top))
        slope = self.relu_epilogue if native and len(top) == 1 else None
        for b, t in zip(bottom, top):
            self._conv_fwd(b.data, w, bias, t.data, native, slope)
        self.relu_applied = slope is not None

    def backward(self, top, propagate_down, bottom):
        want_w = param_needs_grad(self, 0)
        want_b = self.bias_term and param_needs_grad(self, 1)
        w, _ = self._param_arrays("data")
        dw, db = self._param_arrays("diff")
        native = self._native(w, dw, db, *(b.data for b in bottom), *(b.diff for b in bottom),
                              *(t.diff for t in top))
        for i, (b, t) in enumerate(zip(bottom, top)):
            if want_w:
                self._conv_bwd_weights(b.data, t.diff, dw, db if want_b else None, native)
            elif want_b:
                self._bias_grad([t])
            if propagate_down[i]:
                self._conv_bwd_data(t.diff, w, b.diff, native)


@register_layer("Deconvolution")
class DeconvolutionLayer(_BaseConvolution):
    """Transposed convolution (Caffe's Deconvolution): forward is the convolution's data gradient.

    convolution_param: as Convolution (num_output is the number of output channels).
    bottom[i]: (..., C, H, W); top[i]: (..., num_output, oh, ow) with
    o = s(H - 1) + d(k - 1) + 1 - 2p.
    blobs: [weight (C, num_output/group, kh, kw), bias (num_output,) if bias_term].
    """
    reverse = True

    def forward(self, bottom, top):
        w, _ = self._param_arrays("data")
        native = self._native(w, *(b.data for b in bottom), *(t.data for t in top))
        # The convolution (top -> bottom geometry) run backwards: y = conv^T(x).
        for b, t in zip(bottom, top):
            self._conv_bwd_data(b.data, w, t.data, native)
            self._bias_add(t.data)

    def backward(self, top, propagate_down, bottom):
        self._bias_grad(top)
        want_w = param_needs_grad(self, 0)
        w, _ = self._param_arrays("data")
        dw, _ = self._param_arrays("diff")
        native = self._native(w, dw, *(b.data for b in bottom), *(b.diff for b in bottom),
                              *(t.diff for t in top))
        for i, (b, t) in enumerate(zip(bottom, top)):
            if want_w:  # the convolution's input is the top, its output the bottom
                self._conv_bwd_weights(t.diff, b.data, dw, None, native)
            if propagate_down[i]:
                self._conv_fwd(t.diff, w, None, b.diff, native)


@register_layer("Im2col")
class Im2colLayer(_ConvGeometryMixin, Layer):
    """Rearranges image patches into columns (Caffe's Im2col layer; no parameters).

    convolution_param: kernel_size | kernel_h+kernel_w, pad, stride, dilation, axis (1),
    force_nd_im2col (2-D geometry only). num_output and group are not used.
    bottom[0]: (..., C, H, W); top[0]: (..., C*kh*kw, oh, ow) with the convolution output size;
    channel row (c*kh + i)*kw + j holds the tap (i, j) of channel c.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        self.bottom_shape = bottom[0].shape
        self._parse_geometry(bottom[0])

    def reshape(self, bottom, top):
        self.bottom_shape = bottom[0].shape
        self._check_bottoms(bottom)
        self.out_hw = self._conv_out_hw(self.in_hw)
        kh, kw = self.kernel_hw
        self.col_channels = self.channels * kh * kw
        top[0].reshape(tuple(bottom[0].shape[:self.channel_axis]) + (self.col_channels,)
                       + self.out_hw)
        self.geom = ((self.channels,) + self.in_hw + self.kernel_hw + self.pad_hw
                     + self.stride_hw + self.dilation_hw)
        self.kernel = "native im2col" if kernels.native_accepts(bottom[0].data) else "numpy im2col"

    def forward(self, bottom, top):
        x = bottom[0].data.reshape((self.num, self.channels) + self.in_hw)
        y = top[0].data.reshape(self.num, self.col_channels, -1)
        for n in range(self.num):
            kernels.im2col(x[n], self.geom, y[n])

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.num, self.col_channels, -1)
        dx = bottom[0].diff.reshape((self.num, self.channels) + self.in_hw)
        for n in range(self.num):
            kernels.col2im(np.ascontiguousarray(dy[n]), self.geom, dx[n])
