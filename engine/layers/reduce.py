"""Layers that combine values: Eltwise (across bottoms), Reduction (over trailing axes), ArgMax."""
import numpy as np

from ..layer import Layer
from ..registry import register_layer
from .common import canonical_axis

# EltwiseParameter.EltwiseOp and ReductionParameter.ReductionOp values (crema.proto).
_PROD, _SUM, _MAX = 0, 1, 2
_R_SUM, _R_ASUM, _R_SUMSQ, _R_MEAN = 1, 2, 3, 4


@register_layer("Eltwise")
class EltwiseLayer(Layer):
    """Element-wise product, weighted sum or maximum of the bottoms.

    eltwise_param: operation (PROD, SUM (default), MAX), coeff (one per bottom; SUM only; as in
    Caffe, coefficients given with PROD are an error and with MAX are ignored), stable_prod_grad
    (true: the PROD gradient is the product of the other bottoms; false: top / bottom[i]).
    bottoms (>= 2): all the same shape; top[0]: that shape.
    MAX ties follow Caffe's loops: bottom[0] wins over bottom[1] only when strictly greater, and
    every later bottom replaces the running maximum only when strictly greater.
    """
    min_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.param.eltwise_param
        self.op = int(p.operation)
        if self.op not in (_PROD, _SUM, _MAX):
            raise self.error(f"unknown eltwise_param.operation {self.op}")
        if len(p.coeff) not in (0, len(bottom)):
            raise self.error(f"eltwise_param takes one coeff per bottom: {len(bottom)} bottoms, "
                             f"{len(p.coeff)} coeff value(s)")
        if self.op == _PROD and len(p.coeff):
            raise self.error("eltwise_param.coeff is only for operation SUM, not PROD")
        self.coeffs = [float(c) for c in p.coeff] or [1.0] * len(bottom)
        self.stable_prod_grad = bool(p.stable_prod_grad)

    def reshape(self, bottom, top):
        for i, b in enumerate(bottom[1:], start=1):
            if b.shape != bottom[0].shape:
                raise self.error(f"all bottoms must have the same shape: bottom[0] has shape "
                                 f"{bottom[0].shape}, bottom[{i}] has shape {b.shape}")
        top[0].reshape(bottom[0].shape)
        self.kernel = "numpy"

    def forward(self, bottom, top):
        y = top[0].data
        if self.op == _PROD:
            out = bottom[0].data * bottom[1].data
            for b in bottom[2:]:
                out = out * b.data
            y[...] = out
        elif self.op == _SUM:
            out = np.zeros_like(bottom[0].data)
            for c, b in zip(self.coeffs, bottom):
                out += np.asarray(c, out.dtype) * b.data
            y[...] = out
        else:
            a, b = bottom[0].data, bottom[1].data
            first = a > b
            out = np.where(first, a, b)
            mask = np.where(first, 0, 1).astype(np.int32)
            for k, blob in enumerate(bottom[2:], start=2):
                better = blob.data > out
                out = np.where(better, blob.data, out)
                mask[better] = k
            self.max_idx = mask
            y[...] = out

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        for i, b in enumerate(bottom):
            if not propagate_down[i]:
                continue
            if self.op == _PROD:
                if self.stable_prod_grad:
                    others = [o.data for j, o in enumerate(bottom) if j != i]
                    g = others[0].copy()
                    for o in others[1:]:
                        g *= o
                else:
                    g = top[0].data / b.data
                b.diff[...] = g * dy
            elif self.op == _SUM:
                b.diff[...] = dy if self.coeffs[i] == 1.0 else np.asarray(self.coeffs[i],
                                                                          dy.dtype) * dy
            else:
                b.diff[...] = np.where(self.max_idx == i, dy, 0)


@register_layer("Reduction")
class ReductionLayer(Layer):
    """Reduces all axes from `axis` on to one value per leading index.

    reduction_param: operation (SUM (default), ASUM = sum of |x|, SUMSQ = sum of x^2, MEAN),
    axis (0), coeff (1; scales the result). bottom[0]: any shape; top[0]: bottom.shape[:axis]
    (a scalar, shape (), when axis is 0).
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        self.op = int(self.param.reduction_param.operation)
        if self.op not in (_R_SUM, _R_ASUM, _R_SUMSQ, _R_MEAN):
            raise self.error(f"unknown reduction_param.operation {self.op}")

    def reshape(self, bottom, top):
        p = self.param.reduction_param
        axis = canonical_axis(self, bottom[0], p.axis, "reduction_param.axis")
        top[0].reshape(tuple(bottom[0].shape[:axis]))
        self.num = bottom[0].count_range(0, axis)
        self.dim = bottom[0].count_range(axis)
        self.coeff = float(p.coeff)
        if self.op == _R_MEAN:
            # Caffe divides the coefficient by dim; dim 0 would be 0/0 there as well.
            if self.dim == 0:
                raise self.error(f"MEAN over an empty range: bottom[0] has shape "
                                 f"{bottom[0].shape} and axis {axis}")
            self.coeff /= self.dim
        self.kernel = "numpy"

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.num, self.dim)
        if self.op in (_R_SUM, _R_MEAN):
            r = x.sum(axis=1)
        elif self.op == _R_ASUM:
            r = np.abs(x).sum(axis=1)
        else:
            r = np.einsum("ij,ij->i", x, x)
        if self.coeff != 1.0:
            r = r * np.asarray(self.coeff, x.dtype)
        top[0].data[...] = r.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        g = (top[0].diff.reshape(self.num, 1) * np.asarray(self.coeff, top[0].diff.dtype))
        x = bottom[0].data.reshape(self.num, self.dim)
        if self.op in (_R_SUM, _R_MEAN):
            dx = np.broadcast_to(g, x.shape)
        elif self.op == _R_ASUM:
            dx = np.sign(x) * g
        else:
            dx = 2 * x * g
        bottom[0].diff[...] = dx.reshape(bottom[0].shape)


@register_layer("ArgMax")
class ArgMaxLayer(Layer):
    """The indices (and optionally values) of the top_k largest values.

    argmax_param: out_max_val (false), top_k (1), axis (optional).
    Without axis: per item over the flattened rest, top[0] has shape (N, 1, top_k) padded with
    trailing 1s to the bottom's number of axes (Caffe: max(num_axes, 3) axes); with out_max_val
    the second axis is 2: the indices, then the values.
    With axis: top[0] is the bottom's shape with shape[axis] = top_k, holding the indices, or the
    values when out_max_val.
    Order as Caffe's partial sort of (value, index) pairs in descending order: among equal
    values the larger index comes first. Forward only.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top):
        p = self.param.argmax_param
        self.out_max_val = bool(p.out_max_val)
        self.top_k = int(p.top_k)
        self.has_axis = p.HasField("axis")
        if self.top_k < 1:
            raise self.error(f"argmax_param.top_k must be at least 1, got {self.top_k}")

    def reshape(self, bottom, top):
        b = bottom[0]
        if self.has_axis:
            self.axis = canonical_axis(self, b, self.param.argmax_param.axis,
                                       "argmax_param.axis")
            if self.top_k > b.shape[self.axis]:
                raise self.error(f"argmax_param.top_k {self.top_k} is larger than axis "
                                 f"{self.axis} of bottom[0] of shape {b.shape}")
            shape = list(b.shape)
            shape[self.axis] = self.top_k
        else:
            if b.num_axes < 1:
                raise self.error(f"bottom[0] needs an item axis, got shape {b.shape}")
            if self.top_k > b.count_range(1):
                raise self.error(f"argmax_param.top_k {self.top_k} is larger than the "
                                 f"{b.count_range(1)} values per item of bottom[0] of shape "
                                 f"{b.shape}")
            shape = [1] * max(b.num_axes, 3)
            shape[0] = b.shape[0]
            shape[1] = 2 if self.out_max_val else 1
            shape[2] = self.top_k
        top[0].reshape(tuple(shape))
        self.kernel = "numpy"

    @staticmethod
    def _top_k(values, k):
        """values (R, D) -> (indices, values), each (R, k), ordered as Caffe's std::greater on
        (value, index) pairs: value descending, then index descending."""
        idx = np.broadcast_to(np.arange(values.shape[1]), values.shape)
        order = np.lexsort((idx, values), axis=-1)[:, ::-1][:, :k]
        return order, np.take_along_axis(values, order, axis=1)

    def forward(self, bottom, top):
        x = bottom[0].data
        k = self.top_k
        if self.has_axis:
            moved = np.moveaxis(x, self.axis, -1)
            flat = moved.reshape(-1, moved.shape[-1])
            ind, val = self._top_k(flat, k)
            out = val if self.out_max_val else ind.astype(x.dtype)
            out = out.reshape(moved.shape[:-1] + (k,))
            top[0].data[...] = np.moveaxis(out, -1, self.axis)
        else:
            flat = x.reshape(x.shape[0], -1)
            ind, val = self._top_k(flat, k)
            if self.out_max_val:
                out = np.stack([ind.astype(x.dtype), val], axis=1)  # (N, 2, k)
            else:
                out = ind.astype(x.dtype)[:, None, :]                # (N, 1, k)
            top[0].data[...] = out.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down):
            raise self.error("ArgMax has no gradient (it is forward only)")

    def allow_force_backward(self, bottom_index):
        return False
