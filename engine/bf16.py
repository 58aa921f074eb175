"""bfloat16 mixed precision (issue 10): the native bf16 kernels (kernels/include/crema/bf16.h)
for the layers that run in bf16 when a net's precision is "bf16" (Convolution, Deconvolution and
InnerProduct: forward, data gradient and weight gradient).

What is bf16 and what stays float32: the operands of every matrix product -- the layer's input,
its weights and the output gradient -- are rounded to bf16 (nearest even) and multiplied with
float32 accumulation (VDPBF16PS on AVX512-BF16 CPUs; elsewhere the same exact products widened
to float32 and FMA'd). Blobs, biases, results, the master weights and their gradients in the
parameter arena, and every other layer (pooling, ReLU, losses, the solver's update) stay float32.
The convolution passes take the float32 weights; the direct rows keep their packed bf16 copy in
the layer's ConvScratch and repack it only when the weights changed (a bitwise compare), the
im2col row rounds them on each call.

The precision is chosen per solver (SolverParameter.precision, crema's extension), by the CLI
flag `-precision` of `crema train` / `crema time`, or with Net.set_precision. Float64 arrays
(gradient checks) and CREMA_KERNELS=reference keep the float32/float64 path."""
import numpy as np

from . import kernels
from .errors import CremaError
from .kernels import _native

PRECISIONS = ("fp32", "bf16")


def check_precision(value, where):
    """`value` if it is one of PRECISIONS, else a CremaError naming `where` (a solver file, a
    flag) and the accepted values."""
    if value not in PRECISIONS:
        raise CremaError(f"{where}: precision must be one of {', '.join(PRECISIONS)}, "
                         f"got {value!r}")
    return value


def available(*arrays):
    """Whether the native bf16 kernels run for these float32 arrays."""
    return _native is not None and kernels.native_accepts(*arrays)


def kernel_name(op="gemm"):
    """The table row that runs now for op 'gemm' or 'convert' (after the ISA cap)."""
    return _native.bf16_kernel_name(op) if _native is not None else "numpy"


def rows(op="gemm"):
    """[(name, isa, runnable here)] of the native table of op 'gemm' or 'convert', best first."""
    return [tuple(r) for r in _native.bf16_rows(op)] if _native is not None else []


def to_bf16(x, out=None, row=None):
    """bf16 of the float32 array x as uint16 (into `out` when given); `row` forces a table row."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if out is None:
        out = np.empty(x.shape, dtype=np.uint16)
    _native.to_bf16(x, out, row)
    return out


def from_bf16(b, out=None):
    b = np.ascontiguousarray(b, dtype=np.uint16)
    if out is None:
        out = np.empty(b.shape, dtype=np.float32)
    _native.from_bf16(b, out)
    return out


def gemm(a, b, c, alpha=1.0, beta=0.0, trans_a=False, trans_b=False, row=None):
    """c = alpha * op(a) @ op(b) + beta * c with a, b in bf16 (uint16 arrays, or float32 arrays
    rounded here) and c float32 (C-contiguous, written in place); `row` forces a table row."""
    a = a if a.dtype == np.uint16 else to_bf16(a)
    b = b if b.dtype == np.uint16 else to_bf16(b)
    _native.bf16_gemm(np.ascontiguousarray(a), np.ascontiguousarray(b), c, float(alpha),
                      float(beta), bool(trans_a), bool(trans_b), row)
    return c


# -- convolution: geometry as engine.kernels' ConvGeometry (a legacy 14-tuple is converted by
# engine.kernels.conv_geometry, the one place that does) ------------------------------------------

CONV_OPS = ("fwd", "bwd_data", "bwd_weights")


def conv_rows(op):
    """[(name, isa, runnable here)] of the bf16 convolution table of pass `op`, best first."""
    return [tuple(r) for r in _native.bf16_conv_rows(op)] if _native is not None else []


def conv_kernel_name(op, geometry):
    """The row pass `op` runs now for this geometry (after the ISA cap)."""
    return _native.bf16_conv_kernel_name(op, kernels.conv_geometry(geometry))


def conv_workspace_size(geometry):
    """Floats of scratch the bf16 convolution passes need for this geometry (any ISA cap)."""
    return int(_native.bf16_conv_workspace_size(kernels.conv_geometry(geometry)))


class ConvScratch:
    """A layer's bf16 convolution scratch: the workspace and the forward and data-gradient
    passes' packed-weight caches (zeroed when made), grown to the geometry's need on first use."""

    def __init__(self):
        self.workspace = np.empty(0, dtype=np.float32)
        self.caches = {op: np.zeros(0, dtype=np.float32) for op in ("fwd", "bwd_data")}

    def get(self, geometry, op):
        """(workspace, cache or None) for pass `op` of the ConvGeometry `geometry`."""
        size = int(_native.bf16_conv_workspace_size(geometry))
        if self.workspace.size < size:
            self.workspace = np.empty(size, dtype=np.float32)
        if op not in self.caches:
            return self.workspace, None
        size = int(_native.bf16_conv_cache_size(geometry, op))
        if self.caches[op].size < size:
            self.caches[op] = np.zeros(size, dtype=np.float32)
        return self.workspace, self.caches[op]


def conv_forward(x, w, bias, y, geometry, scratch, relu_slope=None, row=None):
    """y = conv(x, w) + bias (bias may be None) in bf16 with float32 accumulation, w the float32
    weights; relu_slope (not None) applies a ReLU with that negative slope in the kernel's
    epilogue. `row` forces a table row (tests)."""
    geometry = kernels.conv_geometry(geometry)
    ws, cache = scratch.get(geometry, "fwd")
    _native.bf16_conv_forward(x, w, bias, y, geometry, ws, cache, relu_slope is not None,
                              float(relu_slope or 0.0), row)
    return y


def conv_backward_data(dy, w, dx, geometry, scratch, row=None):
    """dx = the data gradient of conv_forward for dy (overwrites dx)."""
    geometry = kernels.conv_geometry(geometry)
    ws, cache = scratch.get(geometry, "bwd_data")
    _native.bf16_conv_backward_data(dy, w, dx, geometry, ws, cache, row)
    return dx


def conv_backward_weights(x, dy, dw, db, geometry, scratch, row=None):
    """dw += the weight gradient (float32 accumulation); db += sum of dy unless None."""
    geometry = kernels.conv_geometry(geometry)
    ws, _ = scratch.get(geometry, "bwd_weights")
    _native.bf16_conv_backward_weights(x, dy, dw, db, geometry, ws, row)
    return dw
