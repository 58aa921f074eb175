"""Pooling (MAX / AVE / STOCHASTIC) and SPP (spatial pyramid pooling), with Caffe's window rules.

The layers are vectorized over N, C and the output grid: they loop only over the kh*kw kernel
offsets, each offset reading one strided view of a padded copy of the input. Window rules and the
output size are those of engine/reference/pool.py (the readable truth these layers are tested
against).
"""
import numpy as np

from .. import crema_pb2, kernels, rng
from ..blob import Blob
from ..errors import LayerError
from ..layer import Layer, TRAIN
from ..reference.pool import pooled_size
from ..registry import register_layer

MAX, AVE, STOCHASTIC = 0, 1, 2
_METHOD_NAMES = {MAX: "MAX", AVE: "AVE", STOCHASTIC: "STOCHASTIC"}
# Caffe's TEST-phase stochastic pooling starts its running sum at FLT_MIN (so 0/0 gives 0).
_FLT_MIN = float(np.finfo(np.float32).tiny)


@register_layer("Pooling")
class PoolingLayer(Layer):
    """Spatial pooling over the two last axes of a 4-D blob.

    pooling_param: pool (MAX | AVE | STOCHASTIC), kernel_size | kernel_h+kernel_w, pad | pad_h/pad_w
    (0; must be < kernel; MAX and AVE only), stride | stride_h+stride_w (1), global_pooling
    (kernel = whole input; pad must be 0 and stride 1), round_mode (CEIL | FLOOR), engine (ignored).
    bottom[0]: (N, C, H, W); top[0]: (N, C, ph, pw) with
    ph = ceil((H + 2p - k) / s) + 1 (floor for FLOOR), minus 1 when the layer has padding and the
    last window would start at or past H + p. MAX may have top[1]: the argmax mask (h*W + w within
    the plane, as float). STOCHASTIC: TRAIN samples one element per window with probability
    proportional to its (non-negative) value; TEST outputs sum(x^2) / sum(x).
    """
    exact_num_bottom = 1
    min_top = 1
    max_top = 2

    # Fused ReLU backward (set by engine.net for a MAX pooling whose bottom an in-place ReLU
    # wrote, see Net._mark_pool_relu_fusions): before each backward the net sets relu_backward
    # to the ReLU's negative_slope (None: not this call); backward sets relu_backward_applied
    # when it applied the ReLU's rule, and the net then skips the ReLU's backward.
    fused_relu_backward = None
    relu_backward = None
    relu_backward_applied = False

    def setup(self, bottom, top):
        p = self.param.pooling_param
        self.method = int(p.pool)
        if self.method not in _METHOD_NAMES:
            raise self.error(f"unknown pooling method {self.method}")
        if len(top) > 1 and self.method != MAX:
            raise self.error(f"only MAX pooling has a second top (the argmax mask); "
                             f"{_METHOD_NAMES[self.method]} pooling has {len(top)} tops")
        has_k, has_kh, has_kw = (p.HasField(f) for f in ("kernel_size", "kernel_h", "kernel_w"))
        self.global_pooling = bool(p.global_pooling)
        if self.global_pooling:
            if has_k or has_kh or has_kw:
                raise self.error("with global_pooling: true the kernel size cannot be specified "
                                 "(kernel_size / kernel_h / kernel_w are set)")
        else:
            if has_k and (has_kh or has_kw):
                raise self.error("the filter size is kernel_size OR kernel_h and kernel_w, "
                                 "not both")
            if not has_k and not (has_kh and has_kw):
                raise self.error("pooling needs kernel_size, or both kernel_h and kernel_w "
                                 "(or global_pooling: true)")
        if p.HasField("pad") and (p.HasField("pad_h") or p.HasField("pad_w")):
            raise self.error("pad is pad OR pad_h and pad_w, not both")
        if p.HasField("pad_h") != p.HasField("pad_w"):
            raise self.error("pad_h and pad_w must both be given")
        if p.HasField("stride") and (p.HasField("stride_h") or p.HasField("stride_w")):
            raise self.error("stride is stride OR stride_h and stride_w, not both")
        if p.HasField("stride_h") != p.HasField("stride_w"):
            raise self.error("stride_h and stride_w must both be given")
        if not self.global_pooling:
            if has_k:
                self.kernel_hw = (int(p.kernel_size), int(p.kernel_size))
            else:
                self.kernel_hw = (int(p.kernel_h), int(p.kernel_w))
            if min(self.kernel_hw) <= 0:
                raise self.error(f"kernel dimensions must be positive, got {self.kernel_hw}")
        self.pad_hw = ((int(p.pad_h), int(p.pad_w)) if p.HasField("pad_h")
                       else (int(p.pad), int(p.pad)))
        self.stride_hw = ((int(p.stride_h), int(p.stride_w)) if p.HasField("stride_h")
                          else (int(p.stride), int(p.stride)))
        if min(self.stride_hw) <= 0:
            raise self.error(f"stride must be positive, got {self.stride_hw}")
        if self.global_pooling:
            if self.pad_hw != (0, 0) or self.stride_hw != (1, 1):
                raise self.error(f"with global_pooling: true only pad = 0 and stride = 1 are "
                                 f"allowed, got pad {self.pad_hw} and stride {self.stride_hw}")
        if self.pad_hw != (0, 0):
            if self.method not in (MAX, AVE):
                raise self.error(f"padding is implemented only for MAX and AVE pooling, got pad "
                                 f"{self.pad_hw} with {_METHOD_NAMES[self.method]}")
            if not self.global_pooling and (self.pad_hw[0] >= self.kernel_hw[0]
                                            or self.pad_hw[1] >= self.kernel_hw[1]):
                raise self.error(f"pad {self.pad_hw} must be smaller than the kernel "
                                 f"{self.kernel_hw}")
        self.ceil_mode = int(p.round_mode) == 0
        self._check_bottom(bottom[0])

    def _check_bottom(self, b):
        if b.num_axes != 4:
            raise self.error(f"input must have 4 axes (num, channels, height, width), bottom[0] "
                             f"has shape {b.shape}")

    def reshape(self, bottom, top):
        b = bottom[0]
        self._check_bottom(b)
        n, c, h, w = b.shape
        if self.global_pooling:
            self.kernel_hw = (h, w)
        any_pad = self.pad_hw != (0, 0)
        pooled = []
        for axis, size, k, p, s in zip("HW", (h, w), self.kernel_hw, self.pad_hw,
                                       self.stride_hw):
            o = pooled_size(size, k, p, s, self.ceil_mode, any_pad)
            if o <= 0:
                raise self.error(f"kernel {k} is bigger than the padded input {size + 2 * p} "
                                 f"(size {size} + 2 * pad {p}) along {axis}: bottom[0] shape "
                                 f"{b.shape} would give {o} outputs")
            pooled.append(o)
        self.in_hw = (h, w)
        self.pooled_hw = tuple(pooled)
        top[0].reshape((n, c) + self.pooled_hw)
        if len(top) > 1:
            top[1].reshape((n, c) + self.pooled_hw)
        # The padded workspace covers every window position (ceil mode may run past H + p) and
        # the whole image (floor mode may stop short of it).
        (kh, kw), (ph, pw), (sh, sw) = self.kernel_hw, self.pad_hw, self.stride_hw
        (oh, ow) = self.pooled_hw
        self.padded_hw = (max((oh - 1) * sh + kh, ph + h), max((ow - 1) * sw + kw, pw + w))
        # Allocated on first use: the native kernels (float32 MAX/AVE) never need it.
        self.buf = None
        self.buf_spec = ((n, c) + self.padded_hw, b.data.dtype)
        # Image row/column read by offset (i, j) of each window; Caffe's window limits.
        self.rows = np.arange(oh) * sh - ph
        self.cols = np.arange(ow) * sw - pw
        # float32 MAX/AVE run in native kernels (engine.kernels decides per call; float64 and
        # CREMA_KERNELS=reference stay on the numpy path below), given the PoolGeometry made
        # here once per reshape (a tuple where the native kernels cannot take it).
        self.pool_geometry = (n, c, h, w, kh, kw, ph, pw, sh, sw, oh, ow)
        self.kernel = "numpy"
        if self.method in (MAX, AVE):
            op = "max_fwd" if self.method == MAX else "ave_fwd"
            self.kernel = kernels.pool_kernel_name(op, self.pool_geometry, b.data)
            if self.kernel != "numpy":
                self.pool_geometry = kernels.pool_geometry(self.pool_geometry)
        self.mask32 = (np.empty((n, c) + self.pooled_hw, dtype=np.int32)
                       if self.method == MAX and self.kernel != "numpy" else None)

    # -- helpers -------------------------------------------------------------------------------
    def _workspace(self):
        shape, dtype = self.buf_spec
        if self.buf is None:
            self.buf = np.empty(shape, dtype=dtype)
        return self.buf

    def _native(self, *arrays):
        return self.kernel != "numpy" and kernels.native_accepts(*arrays)

    def _fill(self, x, value):
        (h, w), (ph, pw) = self.in_hw, self.pad_hw
        self._workspace()
        self.buf.fill(value)
        self.buf[:, :, ph:ph + h, pw:pw + w] = x
        return self.buf

    def _offsets(self):
        """(i, j, slice_h, slice_w) for each kernel offset in row-major window order."""
        (kh, kw), (sh, sw), (oh, ow) = self.kernel_hw, self.stride_hw, self.pooled_hw
        for i in range(kh):
            for j in range(kw):
                yield (i, j, slice(i, i + sh * (oh - 1) + 1, sh),
                       slice(j, j + sw * (ow - 1) + 1, sw))

    def _flat_index(self, i, j):
        """(oh, ow) plane index h*W + w of offset (i, j), and whether it is inside the image."""
        h, w = self.in_hw
        r, c = self.rows + i, self.cols + j
        inside = ((r >= 0) & (r < h))[:, None] & ((c >= 0) & (c < w))[None, :]
        return r[:, None] * w + c[None, :], inside

    def _ave_divisor(self):
        # Caffe: window end clipped to H + pad first, the size of that (padded) window divides.
        (h, w), (kh, kw), (ph, pw) = self.in_hw, self.kernel_hw, self.pad_hw
        dh = np.minimum(self.rows + kh, h + ph) - self.rows
        dw = np.minimum(self.cols + kw, w + pw) - self.cols
        div = (dh[:, None] * dw[None, :]).astype(np.float64)
        # An empty window (stride > kernel only) has a non-positive size and a zero sum: give 0.
        return np.where(div > 0, div, np.inf)

    def _route(self, top_diff, index, bottom):
        """bottom.diff = scatter-add of top_diff to the plane indices `index` (-1: nowhere)."""
        n, c = top_diff.shape[:2]
        h, w = self.in_hw
        planes = (np.arange(n * c) * (h * w)).reshape(n, c, 1, 1)
        ok = index >= 0
        flat = (index + planes)[ok]
        dx = np.bincount(flat, weights=top_diff[ok], minlength=n * c * h * w)
        bottom.diff[...] = dx.reshape(bottom.shape)

    # -- forward / backward --------------------------------------------------------------------
    def forward(self, bottom, top):
        x = bottom[0].data
        if self.method in (MAX, AVE) and self._native(x, top[0].data):
            if self.method == AVE:
                kernels.ave_pool_forward(x, self.pool_geometry, top[0].data)
                return
            kernels.max_pool_forward(x, self.pool_geometry, top[0].data, self.mask32)
            self.mask = self.mask32
            if len(top) > 1:
                top[1].data[...] = self.mask32
            return
        if self.method == MAX:
            self._forward_max(x, top)
        elif self.method == AVE:
            buf = self._fill(x, 0)
            acc = np.zeros(top[0].shape, dtype=x.dtype)
            for _, _, sh, sw in self._offsets():
                acc += buf[:, :, sh, sw]
            top[0].data[...] = acc / self._ave_divisor()
        elif self.phase == TRAIN:  # STOCHASTIC, TRAIN
            self._forward_stochastic_train(x, top)
        else:  # STOCHASTIC, TEST
            buf = self._fill(x, 0)
            s1 = np.full(top[0].shape, _FLT_MIN, dtype=x.dtype)
            s2 = np.zeros(top[0].shape, dtype=x.dtype)
            for _, _, sh, sw in self._offsets():
                v = buf[:, :, sh, sw]
                s1 += v
                s2 += v * v
            self.test_sum = s1
            top[0].data[...] = s2 / s1

    def _forward_max(self, x, top):
        buf = self._fill(x, -np.inf)  # padding never wins
        # Caffe starts every window at -FLT_MAX (-DBL_MAX for double) with mask -1.
        best = np.full(top[0].shape, -np.finfo(x.dtype).max, dtype=x.dtype)
        mask = np.full(top[0].shape, -1, dtype=np.int64)
        for i, j, sh, sw in self._offsets():
            v = buf[:, :, sh, sw]
            better = v > best  # strict: the first maximum in row-major order stays
            np.copyto(best, v, where=better)
            idx, _ = self._flat_index(i, j)
            np.copyto(mask, np.broadcast_to(idx, mask.shape), where=better)
        top[0].data[...] = best
        self.mask = mask
        if len(top) > 1:
            top[1].data[...] = mask

    def _forward_stochastic_train(self, x, top):
        buf = self._fill(x, 0)
        u = rng.generator().random(size=top[0].shape)
        total = np.zeros(top[0].shape, dtype=x.dtype)
        for _, _, sh, sw in self._offsets():
            total += buf[:, :, sh, sw]
        thres = u * total
        # Walk the window in the same order as the total: the first element whose running sum
        # reaches u * total is the sample (Caffe's rule; the running sum ends equal to total).
        cum = np.zeros_like(total)
        found = np.zeros(top[0].shape, dtype=bool)
        value = np.zeros_like(total)
        index = np.full(top[0].shape, -1, dtype=np.int64)
        for i, j, sh, sw in self._offsets():
            v = buf[:, :, sh, sw]
            cum += v
            idx, inside = self._flat_index(i, j)
            hit = (cum >= thres) & ~found & inside
            np.copyto(value, v, where=hit)
            np.copyto(index, np.broadcast_to(idx, index.shape), where=hit)
            found |= hit
        self.rand_idx = index
        top[0].data[...] = value

    def backward(self, top, propagate_down, bottom):
        self.relu_backward_applied = False
        if not propagate_down[0]:
            return
        dy = top[0].diff
        dx = bottom[0].diff
        slope = self.relu_backward if self.method == MAX else None
        if slope is not None:
            relu_y = top[0].data
            if not (self.mask.dtype == np.int32 and self._native(dy, dx, relu_y)):
                # the numpy path applies the same rule, then routes as below
                dy = np.where(relu_y > 0, dy, dy.dtype.type(slope) * dy)
                slope = None
            self.relu_backward_applied = True
        if self.method == MAX and self.mask.dtype == np.int32 and self._native(dy, dx):
            kernels.max_pool_backward(dy, self.mask, self.pool_geometry, dx,
                                      relu_y=None if slope is None else top[0].data,
                                      relu_slope=0.0 if slope is None else slope)
        elif self.method == AVE and self._native(dy, dx):
            kernels.ave_pool_backward(dy, self.pool_geometry, dx)
        elif self.method == MAX:
            self._route(dy, self.mask, bottom[0])
        elif self.method == STOCHASTIC and self.phase == TRAIN:
            self._route(dy, self.rand_idx, bottom[0])
        else:
            if self.method == AVE:
                g = dy / self._ave_divisor()
            else:
                # TEST-phase stochastic: y = S2 / S1 per window, dy/dx_k = (2 x_k - y) / S1.
                # (Caffe defines no TEST backward; this is the exact gradient of the TEST output.)
                g = None
            gbuf = np.zeros(self.buf_spec[0], dtype=dy.dtype)
            if g is None:
                xbuf = self._fill(bottom[0].data, 0)
                y = top[0].data
                for _, _, sh, sw in self._offsets():
                    gbuf[:, :, sh, sw] += dy * (2 * xbuf[:, :, sh, sw] - y) / self.test_sum
            else:
                for _, _, sh, sw in self._offsets():
                    gbuf[:, :, sh, sw] += g
            (h, w), (ph, pw) = self.in_hw, self.pad_hw
            bottom[0].diff[...] = gbuf[:, :, ph:ph + h, pw:pw + w]


@register_layer("SPP")
class SPPLayer(Layer):
    """Spatial pyramid pooling (Caffe's SPP layer): pools the input at pyramid_height levels and
    concatenates the flattened results.

    spp_param: pyramid_height (>= 1), pool (MAX | AVE | STOCHASTIC), engine (ignored).
    Level l uses bins = 2^l, kernel = ceil(H / bins), pad = (kernel*bins - H + 1) / 2 (integer
    division), stride = kernel (same for W), i.e. an inner Pooling layer.
    bottom[0]: (N, C, H, W); top[0]: (N, sum_l C * ph_l * pw_l) (normally C * sum_l 4^l);
    with pyramid_height 1 top[0] is the single pooling output (N, C, 1, 1), as in Caffe.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.param.spp_param
        if not p.HasField("pyramid_height") or p.pyramid_height < 1:
            raise self.error(f"spp_param.pyramid_height must be at least 1, got "
                             f"{p.pyramid_height}")
        self.height = int(p.pyramid_height)
        self.method = int(p.pool)
        self._check_bottom(bottom[0])
        self.levels_hw = None

    def _check_bottom(self, b):
        if b.num_axes != 4:
            raise self.error(f"input must have 4 axes (num, channels, height, width), bottom[0] "
                             f"has shape {b.shape}")
        if b.shape[2] <= 0 or b.shape[3] <= 0:
            raise self.error(f"input dimensions cannot be zero: bottom[0] has shape {b.shape}")

    def _pooling_param(self, level, h, w):
        bins = 2 ** level
        kh, kw = -(-h // bins), -(-w // bins)
        lp = crema_pb2.LayerParameter()
        lp.name = f"{self.name}/level{level}"
        lp.type = "Pooling"
        pp = lp.pooling_param
        pp.pool = self.method
        pp.kernel_h, pp.kernel_w = kh, kw
        pp.pad_h, pp.pad_w = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        pp.stride_h, pp.stride_w = kh, kw
        return lp

    def reshape(self, bottom, top):
        b = bottom[0]
        self._check_bottom(b)
        n, c, h, w = b.shape
        if self.levels_hw != (h, w):
            # Caffe rebuilds its inner pooling layers whenever the input size changes.
            self.pools, self.level_tops = [], []
            for level in range(self.height):
                layer = PoolingLayer(self._pooling_param(level, h, w), self.phase)
                layer.source = self.source
                out = Blob((), dtype=b.data.dtype)
                try:
                    layer.setup([b], [out])
                except LayerError as exc:
                    raise self.error(f"pyramid level {level} cannot pool bottom[0] of shape "
                                     f"{b.shape}: {exc}") from None
                self.pools.append(layer)
                self.level_tops.append(out)
            self.levels_hw = (h, w)
        self.split = []
        for level, (layer, out) in enumerate(zip(self.pools, self.level_tops)):
            if out.dtype != b.data.dtype:
                self.level_tops[level] = out = Blob((), dtype=b.data.dtype)
            try:
                layer.reshape([b], [out])
            except LayerError as exc:
                raise self.error(f"pyramid level {level} cannot pool bottom[0] of shape "
                                 f"{b.shape}: {exc}") from None
            self.split.append(out.count // n if n else out.count_range(1))
        if self.height == 1:
            top[0].reshape(self.level_tops[0].shape)
        else:
            top[0].reshape((n, sum(self.split)))
        self.kernel = "numpy"

    def forward(self, bottom, top):
        n = bottom[0].shape[0]
        y = top[0].data.reshape(n, -1)
        start = 0
        for layer, out, size in zip(self.pools, self.level_tops, self.split):
            layer.forward(bottom, [out])
            y[:, start:start + size] = out.data.reshape(n, size)
            start += size

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        b = bottom[0]
        n = b.shape[0]
        dy = top[0].diff.reshape(n, -1)
        # Each level writes its own bottom gradient (Caffe's split layer); they add up.
        scratch = Blob(b.shape, dtype=b.data.dtype)
        scratch.share_data(b)
        total = np.zeros(b.shape, dtype=b.data.dtype)
        start = 0
        for layer, out, size in zip(self.pools, self.level_tops, self.split):
            out.diff[...] = dy[:, start:start + size].reshape(out.shape)
            layer.backward([out], [True], [scratch])
            total += scratch.diff
            start += size
        b.diff[...] = total
