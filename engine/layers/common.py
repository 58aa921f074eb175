"""Layers with learned parameters that are plain matrices: InnerProduct, Embed, Parameter.

Also holds two small helpers that the shape and reduce families share (axis handling and the
parameter-gradient switch), so that every layer words its errors the same way.
"""
import numpy as np

from .. import bf16, kernels
from ..errors import ShapeError
from ..layer import Layer
from ..registry import register_layer


def canonical_axis(layer, blob, axis, what="axis", bottom_index=0):
    """Caffe's CanonicalAxisIndex, raised as the layer's own error (naming the parameter)."""
    try:
        return blob.canonical_axis(int(axis))
    except ShapeError:
        raise layer.error(f"{what} {axis} is out of range for bottom[{bottom_index}] of shape "
                          f"{blob.shape} ({blob.num_axes} axes)") from None


def param_needs_grad(layer, index):
    """Whether parameter blob `index` wants a gradient. The net sets param_propagate_down from
    lr_mult; before it does (a layer used alone) every parameter gets its gradient."""
    flags = layer.param_propagate_down
    return index >= len(flags) or bool(flags[index])


def _sync_param_flags(layer):
    # Layer.__init__ sized the flags for blobs given in the prototxt; setup may have made more.
    flags = list(layer.param_propagate_down)
    flags += [True] * (len(layer.blobs) - len(flags))
    layer.param_propagate_down = flags


@register_layer("InnerProduct")
class InnerProductLayer(Layer):
    """Fully connected layer: top = bottom (M x K) * W^T + b.

    inner_product_param: num_output (N, required), bias_term (true), weight_filler, bias_filler,
    axis (1; the axes from `axis` on are flattened: K = count(axis:), M = count(:axis)),
    transpose (false: W is (N, K); true: W is stored (K, N)).
    bottom[0]: any shape with count(axis:) == K; top[0]: bottom.shape[:axis] + (N,).
    blobs: [W, b (N,) if bias_term].
    """
    exact_num_bottom = 1
    exact_num_top = 1
    # "bf16" (Net.set_precision): the three products run on engine.bf16's GEMM (float32 arrays
    # only; the bias and its gradient stay float32).
    precision = "fp32"

    def setup(self, bottom, top):
        p = self.param.inner_product_param
        if not p.HasField("num_output") or p.num_output <= 0:
            raise self.error("inner_product_param.num_output must be set to a positive number, "
                             f"got {p.num_output}")
        self.N = int(p.num_output)
        self.bias_term = bool(p.bias_term)
        self.transpose = bool(p.transpose)
        axis = canonical_axis(self, bottom[0], p.axis, "inner_product_param.axis")
        self.K = bottom[0].count_range(axis)
        w_shape = (self.K, self.N) if self.transpose else (self.N, self.K)
        if not self.blobs:
            dtype = bottom[0].data.dtype
            self.blobs = [self.make_param(w_shape, p.weight_filler, dtype=dtype)]
            if self.bias_term:
                self.blobs.append(self.make_param((self.N,), p.bias_filler, dtype=dtype))
        else:
            self._check_blobs(w_shape)
        _sync_param_flags(self)

    def _check_blobs(self, w_shape):
        want = 2 if self.bias_term else 1
        if len(self.blobs) != want:
            raise self.error(f"expected {want} parameter blob(s) (bias_term "
                             f"{str(self.bias_term).lower()}), got {len(self.blobs)}")
        if tuple(self.blobs[0].shape) != w_shape:
            raise self.error(f"weight blob has shape {self.blobs[0].shape}, expected {w_shape} "
                             f"(num_output {self.N}, input size {self.K}, transpose "
                             f"{str(self.transpose).lower()})")
        if self.bias_term and self.blobs[1].count != self.N:
            raise self.error(f"bias blob has shape {self.blobs[1].shape}, expected ({self.N},)")

    def reshape(self, bottom, top):
        p = self.param.inner_product_param
        self.axis = canonical_axis(self, bottom[0], p.axis, "inner_product_param.axis")
        new_k = bottom[0].count_range(self.axis)
        if new_k != self.K:
            raise self.error(
                f"input size incompatible with inner product parameters: bottom[0] of shape "
                f"{bottom[0].shape} gives K = {new_k} from axis {self.axis} on, but the "
                f"weights were made for K = {self.K}")
        self.M = bottom[0].count_range(0, self.axis)
        top[0].reshape(tuple(bottom[0].shape[:self.axis]) + (self.N,))
        # float32 runs on the native SGEMM (engine.kernels.sgemm); float64 (gradient checks) and
        # CREMA_KERNELS=reference stay on numpy.
        arrays = (bottom[0].data, top[0].data, self.blobs[0].data)
        if self.bias_term:
            arrays += (self.blobs[1].data,)
        self.kernel = kernels.sgemm_kernel_name() if self._native_gemm(*arrays) else "numpy"

    def _native_gemm(self, *arrays):
        return all(a.flags.c_contiguous for a in arrays) and kernels.sgemm_available(
            *(a.reshape(1, -1) for a in arrays))

    def _gemm(self, a, b, c, alpha=1.0, beta=0.0, trans_a=False, trans_b=False):
        """c = alpha op(a) op(b) + beta c on the native GEMM of the layer's precision."""
        gemm = bf16.gemm if self.precision == "bf16" else kernels.sgemm
        gemm(a, b, c, alpha, beta, trans_a=trans_a, trans_b=trans_b)

    def _weight_nk(self):
        w = self.blobs[0].data
        return w.T if self.transpose else w

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.M, self.K)
        w = self.blobs[0].data
        arrays = (x, top[0].data, w) + ((self.blobs[1].data,) if self.bias_term else ())
        if self._native_gemm(*arrays):
            y = top[0].data.reshape(self.M, self.N)  # a view: the blob is C-contiguous
            if self.bias_term:
                y[...] = self.blobs[1].data.reshape(1, self.N)
            self._gemm(x, w, y, 1.0, 1.0 if self.bias_term else 0.0, trans_b=not self.transpose)
            return
        y = x @ self._weight_nk().T
        if self.bias_term:
            y = y + self.blobs[1].data.reshape(1, self.N)
        top[0].data[...] = y.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.M, self.N)
        x = bottom[0].data.reshape(self.M, self.K)
        w = self.blobs[0]
        if self._native_gemm(dy, x, w.data, w.diff, bottom[0].diff):
            # dW (K, N) += x^T dy (transpose) or dW (N, K) += dy^T x; dx = dy op(W)
            weight_grad = ((x, dy) if self.transpose else (dy, x)) + (w.diff, 1.0, True, False)
            data_grad = (dy, w.data, bottom[0].diff.reshape(self.M, self.K), 0.0, False,
                         self.transpose)
            if self.bias_term and param_needs_grad(self, 1):
                self.blobs[1].diff += dy.sum(axis=0).reshape(self.blobs[1].shape)
            wanted = [g for g, want in ((weight_grad, param_needs_grad(self, 0)),
                                        (data_grad, propagate_down[0])) if want]
            if len(wanted) == 2 and self.precision == "fp32":
                kernels.sgemm_pair(*wanted)  # independent products: side by side
                return
            for a, b, c, beta, trans_a, trans_b in wanted:
                self._gemm(a, b, c, 1.0, beta, trans_a=trans_a, trans_b=trans_b)
            return
        if param_needs_grad(self, 0):
            if self.transpose:
                self.blobs[0].diff += x.T @ dy          # (K, N)
            else:
                self.blobs[0].diff += dy.T @ x          # (N, K)
        if self.bias_term and param_needs_grad(self, 1):
            self.blobs[1].diff += dy.sum(axis=0).reshape(self.blobs[1].shape)
        if propagate_down[0]:
            bottom[0].diff[...] = (dy @ self._weight_nk()).reshape(bottom[0].shape)


@register_layer("Embed")
class EmbedLayer(Layer):
    """A lookup table: each bottom value is an index into the rows of W.

    embed_param: num_output (N), input_dim (K, the vocabulary size), bias_term (true),
    weight_filler, bias_filler. bottom[0]: integer indices stored as floats, values in [0, K);
    top[0]: bottom.shape + (N,). blobs: [W (K, N), b (N,) if bias_term].
    No gradient flows to the indices (Caffe refuses to backpropagate to the input).
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.param.embed_param
        if p.num_output <= 0:
            raise self.error(f"embed_param.num_output must be positive, got {p.num_output}")
        if p.input_dim <= 0:
            raise self.error(f"embed_param.input_dim must be positive, got {p.input_dim}")
        self.N, self.K = int(p.num_output), int(p.input_dim)
        self.bias_term = bool(p.bias_term)
        if not self.blobs:
            dtype = bottom[0].data.dtype
            self.blobs = [self.make_param((self.K, self.N), p.weight_filler, dtype=dtype)]
            if self.bias_term:
                self.blobs.append(self.make_param((self.N,), p.bias_filler, dtype=dtype))
        else:
            want = 2 if self.bias_term else 1
            if len(self.blobs) != want:
                raise self.error(f"expected {want} parameter blob(s), got {len(self.blobs)}")
            if tuple(self.blobs[0].shape) != (self.K, self.N):
                raise self.error(f"weight blob has shape {self.blobs[0].shape}, expected "
                                 f"{(self.K, self.N)} (input_dim, num_output)")
            if self.bias_term and self.blobs[1].count != self.N:
                raise self.error(f"bias blob has shape {self.blobs[1].shape}, "
                                 f"expected ({self.N},)")
        _sync_param_flags(self)

    def reshape(self, bottom, top):
        top[0].reshape(tuple(bottom[0].shape) + (self.N,))
        self.kernel = "numpy"

    def _indices(self, bottom):
        x = bottom[0].data.reshape(-1)
        idx = x.astype(np.int64)  # Caffe: static_cast<int>, then checks it round-trips
        bad = (idx < 0) | (idx >= self.K) | (idx != x)
        if bad.any():
            j = int(np.argmax(bad))
            raise self.error(f"bottom[0] of shape {bottom[0].shape} holds {x[j]!r} at flat "
                             f"position {j}: indices must be integers in [0, {self.K}) "
                             f"(embed_param.input_dim)")
        return idx

    def forward(self, bottom, top):
        self._idx = self._indices(bottom)
        y = self.blobs[0].data[self._idx]
        if self.bias_term:
            y = y + self.blobs[1].data.reshape(1, self.N)
        top[0].data[...] = y.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error("cannot backpropagate to the Embed input (the indices)")
        dy = top[0].diff.reshape(-1, self.N)
        if param_needs_grad(self, 0):
            idx = self._indices(bottom)
            # np.add.at: repeated indices add up, as Caffe's per-item axpy does.
            np.add.at(self.blobs[0].diff, idx, dy)
        if self.bias_term and param_needs_grad(self, 1):
            self.blobs[1].diff += dy.sum(axis=0).reshape(self.blobs[1].shape)

    def allow_force_backward(self, bottom_index):
        return False


@register_layer("Parameter")
class ParameterLayer(Layer):
    """Exposes one learned blob as a top, so other layers can use it as an input.

    parameter_param.shape: the blob's shape. No bottoms; top[0] has that shape.
    Caffe's top shares data and diff with the blob; here forward copies the data into the top and
    backward adds the top diff into the blob's diff (the same result for the solver, which zeroes
    parameter diffs each iteration).
    """
    exact_num_bottom = 0
    exact_num_top = 1

    def setup(self, bottom, top):
        shape = tuple(int(d) for d in self.param.parameter_param.shape.dim)
        if any(d < 0 for d in shape):
            raise self.error(f"parameter_param.shape {shape} has a negative dimension")
        self.shape = shape
        if not self.blobs:
            # Caffe creates a zeroed blob; there is no filler for it (weights come from a file,
            # from sharing, or from the user).
            self.blobs = [self.make_param(shape, None, dtype=top[0].data.dtype)]
        elif tuple(self.blobs[0].shape) != shape:
            raise self.error(f"parameter blob has shape {self.blobs[0].shape}, but "
                             f"parameter_param.shape is {shape}")
        _sync_param_flags(self)

    def reshape(self, bottom, top):
        top[0].reshape(self.blobs[0].shape)
        self.kernel = "numpy"

    def forward(self, bottom, top):
        top[0].data[...] = self.blobs[0].data

    def backward(self, top, propagate_down, bottom):
        if param_needs_grad(self, 0):
            self.blobs[0].diff += top[0].diff
