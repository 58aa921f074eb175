"""bfloat16 mixed precision (issue 10): the native bf16 kernels (kernels/include/crema/bf16.h)
for the layers that run in bf16 when a net's precision is "bf16" (Convolution, Deconvolution and
InnerProduct: forward, data gradient and weight gradient).

What is bf16 and what stays float32: the operands of every matrix product -- the layer's input,
its weights and the output gradient -- are rounded to bf16 (nearest even) and multiplied with
float32 accumulation (VDPBF16PS on AVX512-BF16 CPUs; elsewhere the same exact products widened
to float32 and FMA'd). Blobs, biases, results, the master weights and their gradients in the
parameter arena, and every other layer (pooling, ReLU, losses, the solver's update) stay float32.
The bf16 copy of the weights is made on each call (the weights change every iteration; a copy is
a fraction of a percent of the layer's work).

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


# -- convolution: geometry as engine.kernels' (a ConvGeometry or the 14-tuple) --------------------

def conv_workspace_size(geometry):
    """Floats of scratch the bf16 convolution passes need for this geometry."""
    return int(_native.bf16_conv_workspace_size(kernels.conv_tuple(geometry)))


class ConvScratch:
    """A layer's bf16 convolution scratch, grown to the geometry's need on first use."""

    def __init__(self):
        self.buffer = np.empty(0, dtype=np.float32)

    def get(self, geometry):
        size = conv_workspace_size(geometry)
        if self.buffer.size < size:
            self.buffer = np.empty(size, dtype=np.float32)
        return self.buffer


def conv_forward(x, w, bias, y, geometry, scratch):
    """y = conv(x, w) + bias (bias may be None) in bf16 with float32 accumulation; w float32."""
    _native.bf16_conv_forward(x, to_bf16(w), bias, y, kernels.conv_tuple(geometry),
                              scratch.get(geometry))
    return y


def conv_backward_data(dy, w, dx, geometry, scratch):
    """dx = the data gradient of conv_forward for dy (overwrites dx)."""
    _native.bf16_conv_backward_data(dy, to_bf16(w), dx, kernels.conv_tuple(geometry),
                                    scratch.get(geometry))
    return dx


def conv_backward_weights(x, dy, dw, db, geometry, scratch):
    """dw += the weight gradient (float32 accumulation); db += sum of dy unless None."""
    _native.bf16_conv_backward_weights(x, dy, dw, db, kernels.conv_tuple(geometry),
                                       scratch.get(geometry))
    return dw
