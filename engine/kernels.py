"""The only importer of engine._kernels. Each function here runs the native kernel when it accepts
the arrays (float32, C-contiguous, CREMA_KERNELS not set to 'reference') and the numpy reference
otherwise (for example the float64 arrays of gradient checks)."""
import os
import warnings

import numpy as np

from .reference import im2col as _ref_im2col

try:
    from . import _kernels as _native
    _native_error = None
except ImportError as exc:  # a source checkout without a build: keep working on numpy
    _native = None
    _native_error = exc

_VALID_CAPS = ("avx512", "avx2", "scalar")
_cap = os.environ.get("CREMA_MAX_ISA")
if _cap is not None and _cap not in _VALID_CAPS:
    warnings.warn(f"CREMA_MAX_ISA={_cap!r} is not one of {_VALID_CAPS}; ignoring it")


def native_available():
    return _native is not None and os.environ.get("CREMA_KERNELS", "native") != "reference"


def _native_ok(*arrays):
    return native_available() and all(
        a.dtype == np.float32 and a.flags.c_contiguous for a in arrays)


def cpu_info():
    """Vendor, model, logical cores, the ISAs the CPU has, the ISAs both CPU and build support
    ('usable_isas', after the CREMA_MAX_ISA cap) and the one in use ('isa')."""
    if _native is None:
        return {"vendor": "unknown", "model": "unknown", "logical_cores": os.cpu_count() or 1,
                "cpu_isas": [], "built_isas": [], "usable_isas": [], "isa": "none",
                "kernels": f"reference (native module not built: {_native_error})"}
    info = dict(_native.cpu_info())
    info["kernels"] = "native" if native_available() else "reference (CREMA_KERNELS=reference)"
    return info


def im2col(im, geometry, col):
    """im (C, H, W) -> col (C*kh*kw, oh*ow), written into `col`.
    geometry = (C, H, W, kh, kw, ph, pw, sh, sw, dh, dw)."""
    if _native_ok(im, col):
        _native.im2col(im, tuple(int(g) for g in geometry), col)
    else:
        _ref_im2col.im2col(im, geometry, col)
    return col


def col2im(col, geometry, im):
    """The adjoint of im2col: im (C, H, W) = sum of the columns, written into `im`."""
    if _native_ok(col, im):
        _native.col2im(col, tuple(int(g) for g in geometry), im)
    else:
        _ref_im2col.col2im(col, geometry, im)
    return im


def relu_kernel_name(x):
    return _native.relu_kernel_name() if _native_ok(x) else "numpy"


def relu_forward(x, y, slope=0.0):
    if _native_ok(x, y):
        _native.relu_forward(x, y, float(slope))
    else:
        np.copyto(y, np.where(x > 0, x, x * np.asarray(slope, x.dtype)))
    return y


def relu_backward(x, dy, dx, slope=0.0):
    if _native_ok(x, dy, dx):
        _native.relu_backward(x, dy, dx, float(slope))
    else:
        np.copyto(dx, np.where(x > 0, dy, dy * np.asarray(slope, dy.dtype)))
    return dx
