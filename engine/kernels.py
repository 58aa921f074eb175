"""The only importer of engine._kernels. Each function here runs the native kernel when it accepts
the arrays (float32, C-contiguous, CREMA_KERNELS not set to 'reference') and the numpy reference
otherwise (for example the float64 arrays of gradient checks). Which native kernel runs is chosen
in C++ by one ordered table per op (kernels/include/crema/dispatch.h), capped by the ISA cap:
CREMA_MAX_ISA, read once, or set_max_isa() / isa_cap() within a process."""
import contextlib
import os
import warnings

import numpy as np

from .reference import conv as _ref_conv
from .reference import im2col as _ref_im2col
from .reference import winograd as _ref_winograd

try:
    from . import _kernels as _native
    _native_error = None
except ImportError as exc:  # a source checkout without a build: keep working on numpy
    _native = None
    _native_error = exc

ISAS = ("avx512", "avx2", "scalar")  # best first
_cap = os.environ.get("CREMA_MAX_ISA")
if _cap is not None and _cap not in ISAS:
    warnings.warn(f"CREMA_MAX_ISA={_cap!r} is not one of {ISAS}; ignoring it")


# The cap this process started with (CREMA_MAX_ISA): tests treat the ISAs above it as absent.
_start_cap = _native.max_isa() if _native is not None else "none"


def max_isa():
    """The ISA cap in force ('avx512' when nothing caps; 'none' without the native module)."""
    return _native.max_isa() if _native is not None else "none"


def set_max_isa(isa):
    """Cap the ISA every native kernel table may choose from now on, for the whole process
    (CREMA_MAX_ISA is the starting value, read once). ValueError for an unknown name."""
    if isa not in ISAS:
        raise ValueError(f"set_max_isa: isa must be one of {ISAS}, got {isa!r}")
    if _native is not None:
        _native.set_max_isa(isa)


@contextlib.contextmanager
def isa_cap(isa):
    """set_max_isa(isa) for the block, the previous cap restored after it."""
    old = max_isa()
    set_max_isa(isa)
    try:
        yield
    finally:
        if old in ISAS:
            set_max_isa(old)


def isa_skip_reason(isa):
    """Why `isa`'s native kernels cannot run in this process (None when they can): the CPU or
    the build lacks it, or the native module is missing. Tests skip with it."""
    if _native is None:
        return f"the native module is not built: {_native_error}"
    info = _native.cpu_info()
    if isa not in info["cpu_isas"]:
        return f"this CPU ({info['model'] or info['vendor']}) lacks {isa}"
    if isa not in info["built_isas"]:
        return f"this build of engine._kernels has no {isa} kernels"
    if ISAS.index(isa) < ISAS.index(_start_cap):
        return f"CREMA_MAX_ISA={_start_cap} caps this process below {isa}"
    return None


def runnable_isas():
    """The ISAs whose kernels this process can run (isa_skip_reason is None), best first."""
    return [isa for isa in ISAS if isa_skip_reason(isa) is None]


def native_available():
    return _native is not None and os.environ.get("CREMA_KERNELS", "native") != "reference"


def _native_ok(*arrays):
    return native_available() and all(
        a.dtype == np.float32 and a.flags.c_contiguous for a in arrays)


def cpu_info():
    """Vendor, model, logical cores, the ISAs the CPU has, the ISAs both CPU and build support
    ('usable_isas', after the ISA cap) and the one in use ('isa')."""
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


# -- pooling --------------------------------------------------------------------------------------
# geometry = (N, C, H, W, kh, kw, ph, pw, sh, sw, pooled_h, pooled_w); the caller (the Pooling
# layer) computes pooled_h/pooled_w with Caffe's formula. Windows and tie rules: see
# engine/reference/pool.py, which is also the fallback here.

_POOL_OPS = ("max_fwd", "max_bwd", "ave_fwd", "ave_bwd")


def native_accepts(*arrays):
    """Whether the native kernels take these arrays (float32, C-contiguous, native enabled)."""
    return _native_ok(*arrays)


def _mask_ok(mask):
    return mask is None or (mask.dtype == np.int32 and mask.flags.c_contiguous)


def pool_geometry(geometry):
    """The native kernels' PoolGeometry, built once per layer reshape: the one place where a
    legacy tuple (N, C, H, W, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w, pooled_h,
    pooled_w) is converted; a PoolGeometry is returned as it is. ValueError for a geometry the
    kernels refuse."""
    if hasattr(geometry, "astuple"):
        return geometry
    return _native.PoolGeometry(*_pool_tuple(geometry))


def _pool_tuple(geometry):
    if hasattr(geometry, "astuple"):
        return geometry.astuple()
    t = tuple(int(v) for v in geometry)
    if len(t) != 12:
        raise ValueError(f"pooling geometry must be (N, C, H, W, kernel_h, kernel_w, pad_h, "
                         f"pad_w, stride_h, stride_w, pooled_h, pooled_w), got {len(t)} "
                         f"values {t}")
    return t


def _pool_args(geometry):
    g = _pool_tuple(geometry)
    n, c, h, w, kh, kw, ph, pw, sh, sw, oh, ow = g
    return g, (n, c, h, w), (kh, kw), (ph, pw), (sh, sw), (oh, ow)


def pool_kernel_name(op, geometry, *arrays):
    """The native kernel that `op` (max_fwd, max_bwd, ave_fwd, ave_bwd) runs for this geometry and
    these arrays now (after CREMA_MAX_ISA), or 'numpy' when they go to the reference path."""
    if op not in _POOL_OPS:
        raise ValueError(f"pooling op must be one of {_POOL_OPS}, got {op!r}")
    if not _native_ok(*arrays):
        return "numpy"
    try:
        return _native.pool_kernel_name(op, pool_geometry(geometry))
    except ValueError:  # a geometry the kernels do not take (an empty batch, say)
        return "numpy"


def max_pool_forward(x, geometry, y, mask=None):
    """MAX pooling x (N, C, H, W) -> y (N, C, pooled_h, pooled_w); the argmax h*W + w (-1 for an
    empty window) goes into `mask` when given (int32 for the native kernel)."""
    _, _, kernel, pad, stride, pooled = _pool_args(geometry)
    if _native_ok(x, y) and _mask_ok(mask):
        _native.max_pool_forward(x, pool_geometry(geometry), y, mask)
    else:
        from .reference import pool as ref
        top, arg = ref.max_pool_forward(x, kernel, pad, stride, pooled)
        y[...] = top
        if mask is not None:
            mask[...] = arg
    return y


def max_pool_backward(dy, mask, geometry, dx, relu_y=None, relu_slope=0.0):
    """dx = 0, then each dy goes to its argmax (windows sharing one add up). relu_y (the
    forward's output): apply first the backward of the in-place ReLU (negative_slope
    relu_slope) that produced the pooled input, at each argmax (kernels/include/crema/pool.h)."""
    _, shape, *_ = _pool_args(geometry)
    if (_native_ok(dy, dx) and mask is not None and _mask_ok(mask)
            and (relu_y is None or _native_ok(relu_y))):
        _native.max_pool_backward(dy, mask, pool_geometry(geometry), dx, relu_y,
                                  float(relu_slope))
    else:
        from .reference import pool as ref
        dx[...] = ref.max_pool_backward(dy, mask, shape, relu_y, relu_slope)
    return dx


def ave_pool_forward(x, geometry, y):
    """AVE pooling (Caffe's divisor: the window clipped to the padded image) into y."""
    _, _, kernel, pad, stride, pooled = _pool_args(geometry)
    if _native_ok(x, y):
        _native.ave_pool_forward(x, pool_geometry(geometry), y)
    else:
        from .reference import pool as ref
        y[...] = ref.ave_pool_forward(x, kernel, pad, stride, pooled)
    return y


def ave_pool_backward(dy, geometry, dx):
    """dx = 0, then dy / divisor added over each window's image elements."""
    _, shape, kernel, pad, stride, _ = _pool_args(geometry)
    if _native_ok(dy, dx):
        _native.ave_pool_backward(dy, pool_geometry(geometry), dx)
    else:
        from .reference import pool as ref
        dx[...] = ref.ave_pool_backward(dy, shape, kernel, pad, stride)
    return dx


# -- machine peak and threads ---------------------------------------------------------------------

def peak_gflops(isa=None, seconds=0.2):
    """Measured single-thread FP32 multiply-add throughput (GFLOP/s, 2 flops per FMA lane) of this
    CPU with `isa` (default: the ISA in use). ValueError for an ISA this CPU/build/cap lacks."""
    if _native is None:
        raise RuntimeError(f"the native module is not built: {_native_error}")
    if isa is None:
        isa = _native.cpu_info()["isa"]
    return float(_native.peak_gflops(str(isa), float(seconds)))


def peak_gflops_all(seconds=0.2):
    """{isa: GFLOP/s} for every usable ISA, best first ({} without the native module)."""
    if _native is None:
        return {}
    return {isa: peak_gflops(isa, seconds) for isa in _native.cpu_info()["usable_isas"]}


_requested_threads = 1  # what set_num_threads recorded when there is no native module


def set_num_threads(n):
    """Threads the native kernels use from now on, 1 to 1024 (OpenMP; at start OMP_NUM_THREADS or
    the number of cores). A build without OpenMP (see openmp_enabled()) runs on one thread: the
    value is only recorded there (get_num_threads() stays 1)."""
    global _requested_threads
    n = int(n)
    if not 1 <= n <= 1024:
        raise ValueError(f"set_num_threads: n must be between 1 and 1024, got {n}")
    _requested_threads = n
    if _native is not None:
        _native.set_num_threads(n)


def get_num_threads():
    """Threads the native kernels use (1 without OpenMP or without the native module)."""
    return int(_native.get_num_threads()) if _native is not None else 1


def openmp_enabled():
    return bool(_native is not None and _native.openmp_enabled())


# -- SGEMM ----------------------------------------------------------------------------------------
# c = alpha * op(a) @ op(b) + beta * c for 2-D arrays (kernels/include/crema/gemm.h). The native
# kernel takes float32 arrays whose rows are contiguous (any row stride, so slices and
# transposed views via trans_a/trans_b work without copies); its packing buffers are
# thread-local, grown once to the block sizes and reused, so a call allocates nothing.


def _gemm_ok(*arrays):
    return native_available() and all(
        a.dtype == np.float32 and a.ndim == 2 and
        (a.shape[1] <= 1 or a.strides[1] == 4) and
        (a.shape[0] <= 1 or (a.strides[0] > 0 and a.strides[0] % 4 == 0))
        for a in arrays)


def sgemm_available(*arrays):
    """Whether sgemm() would run the native kernel on these arrays."""
    return _gemm_ok(*arrays)


def sgemm_kernel_name(*arrays):
    """The native SGEMM kernel in use now (after CREMA_MAX_ISA), or 'numpy' when these arrays
    (or the settings) send sgemm() to numpy."""
    return _native.sgemm_kernel_name() if _gemm_ok(*arrays) else "numpy"


def sgemm(a, b, c, alpha=1.0, beta=0.0, trans_a=False, trans_b=False):
    """c = alpha * op(a) @ op(b) + beta * c, written into `c` (op = transpose when trans_*).
    beta == 0 ignores c's old contents (NaN included). Other dtypes/layouts run on numpy."""
    if _gemm_ok(a, b, c) and c.flags.writeable:
        _native.sgemm(a, b, c, float(alpha), float(beta), bool(trans_a), bool(trans_b))
        return c
    oa = a.T if trans_a else a
    ob = b.T if trans_b else b
    if oa.ndim != 2 or ob.ndim != 2 or c.ndim != 2 or oa.shape[1] != ob.shape[0] or \
            c.shape != (oa.shape[0], ob.shape[1]):
        raise ValueError(f"sgemm: op(a) {oa.shape} @ op(b) {ob.shape} does not fit c {c.shape}")
    prod = oa @ ob
    if alpha != 1.0:
        prod = prod * np.asarray(alpha, prod.dtype)
    if beta == 0.0:
        c[...] = prod
    else:
        c[...] = prod + np.asarray(beta, c.dtype) * c
    return c


# -- direct convolution ---------------------------------------------------------------------------
# geometry = (N, C, H, W, K, R, S, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w, group):
# x (N, C, H, W), w (K, C/group, R, S) (Caffe's layout), bias (K,), y (N, K, P, Q) with Caffe's
# output size. One native entry point per pass (kernels/include/crema/conv.h): each runs the row
# its table chooses -- Winograd where it applies and the pass's algorithm allows it (see
# conv_algorithm below), else direct -- with a float32 workspace of conv_workspace_size(geometry)
# floats and the pass's weight cache of conv_weight_cache_size(geometry, op) floats, both owned by
# the caller (a layer sizes them at reshape). The geometry is a native ConvGeometry (conv_geometry;
# the functions here also take the legacy 14-tuple and convert it there). The numpy fallback (any
# dtype, or no workspace) is the reference convolution, engine/reference/conv.py.

CONV_OPS = ("fwd", "bwd_data", "bwd_weights")


def conv_tuple(geometry):
    """(N, C, H, W, K, R, S, pad_h, pad_w, stride_h, stride_w, dil_h, dil_w, group) of a
    ConvGeometry or of any sequence of 14 integers."""
    if hasattr(geometry, "astuple"):
        return tuple(int(v) for v in geometry.astuple())
    t = tuple(int(v) for v in geometry)
    if len(t) != 14:
        raise ValueError(f"convolution geometry must be (N, C, H, W, K, R, S, pad_h, pad_w, "
                         f"stride_h, stride_w, dil_h, dil_w, group), got {len(t)} values {t}")
    return t


def conv_geometry(geometry, algo_fwd=None, algo_bwd_data=None, algo_bwd_weights=None):
    """The native kernels' ConvGeometry, built once per layer reshape: the one place where a
    legacy tuple (see conv_tuple) is converted. Each pass's algorithm ('direct' or 'winograd') is
    conv_algorithm's unless given; a ConvGeometry given without algorithms is returned as it is.
    ValueError for a geometry the kernels refuse."""
    given = (algo_fwd, algo_bwd_data, algo_bwd_weights)
    if hasattr(geometry, "astuple") and given == (None, None, None):
        return geometry
    t = conv_tuple(geometry)
    fwd, bwd_data, bwd_weights = (a or conv_algorithm(t, op) for a, op in zip(given, CONV_OPS))
    return _native.ConvGeometry(*t, algo_fwd=fwd, algo_bwd_data=bwd_data,
                                algo_bwd_weights=bwd_weights)


def conv_output_hw(geometry):
    n, c, h, w, k, kh, kw, ph, pw, sh, sw, dh, dw, grp = conv_tuple(geometry)
    return ((h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1,
            (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1)


def conv_workspace_size(geometry):
    """Floats of workspace the native kernels want for every pass of this geometry, whatever the
    ISA cap, for the thread count in force (a Winograd pass given less runs on fewer threads);
    0 without the native module."""
    if _native is None:
        return 0
    return int(_native.conv_workspace_size(conv_geometry(geometry)))


def conv_weight_cache_size(geometry, op="fwd"):
    """Floats of pass `op`'s weight cache (the weight_cache of conv_forward / conv_backward_data:
    zeroed before first use, one per layer and pass). The direct blocked forward keeps the packed
    weights there, Winograd the transformed filter; each recomputes them only when the weights'
    bitwise copy differs. 0 without the native module or where no row keeps one."""
    if op not in CONV_OPS:
        raise ValueError(f"conv_weight_cache_size: op must be one of {CONV_OPS}, got {op!r}")
    if _native is None:
        return 0
    return int(_native.conv_weight_cache_size(conv_geometry(geometry), op))


def conv_kernel_name(op, geometry, *arrays):
    """The kernel `op` (fwd, bwd_data, bwd_weights) runs for this geometry with these arrays:
    the native table row's name (e.g. direct_blocked_avx512, winograd_avx2), or "numpy"."""
    if op not in CONV_OPS:
        raise ValueError(f"conv_kernel_name: op must be one of {CONV_OPS}, got {op!r}")
    if not _native_ok(*arrays):
        return "numpy"
    return _native.conv_kernel_name(op, conv_geometry(geometry))


def _conv_native(workspace, *arrays):
    return (workspace is not None and _native_ok(workspace, *(a for a in arrays if a is not None)))


def _ref_conv_layout(geometry):
    """The numpy reference's view of a geometry: x's shape (N, C, H, W), w's (K, C/group, R, S),
    dy's (N, K, P, Q), and the keywords pad, stride, dilation and group."""
    n, c, h, w, k, kh, kw, ph, pw, sh, sw, dh, dw, grp = conv_tuple(geometry)
    shapes = (n, c, h, w), (k, c // grp, kh, kw), (n, k) + conv_output_hw(geometry)
    return shapes, dict(pad=(ph, pw), stride=(sh, sw), dilation=(dh, dw), group=grp)


def _relu_inplace(y, slope):
    """y = max(y, 0) + slope * min(y, 0) in place (the numpy side of a fused ReLU epilogue)."""
    y[...] = np.maximum(y, 0) + y.dtype.type(slope) * np.minimum(y, 0)


def conv_forward(x, w, bias, y, geometry, workspace=None, relu=False, negative_slope=0.0,
                 weight_cache=None):
    """y = conv(x, w) + bias (bias may be None), written into y; relu=True fuses Caffe's ReLU:
    y = max(v, 0) + negative_slope * min(v, 0) (in the kernel's epilogue when native).
    weight_cache: None (a zeroed one for this call where the kernel keeps one) or a
    conv_weight_cache_size(geometry, "fwd") float32 array kept by the caller."""
    if _conv_native(workspace, x, w, bias, y):
        _native.conv_forward(x, w, bias, y, conv_geometry(geometry), workspace, bool(relu),
                             float(negative_slope), weight_cache)
    else:
        (x_shape, w_shape, _), options = _ref_conv_layout(geometry)
        y[...] = _ref_conv.forward(x.reshape(x_shape), w.reshape(w_shape), bias,
                                   **options).reshape(y.shape)
        if relu:
            _relu_inplace(y, negative_slope)
    return y


def conv_backward_data(dy, w, dx, geometry, workspace=None, weight_cache=None):
    """dx = the data gradient of conv_forward for dy (overwrites dx); weight_cache as for
    conv_forward, sized with op="bwd_data"."""
    if _conv_native(workspace, dy, w, dx):
        _native.conv_backward_data(dy, w, dx, conv_geometry(geometry), workspace, weight_cache)
    else:
        (x_shape, w_shape, dy_shape), options = _ref_conv_layout(geometry)
        dx[...] = _ref_conv.backward_data(dy.reshape(dy_shape), w.reshape(w_shape), x_shape[2:],
                                          **options).reshape(dx.shape)
    return dx


def conv_backward_weights(x, dy, dw, db, geometry, workspace=None):
    """dw += the weight gradient; db += the bias gradient (sum of dy over N, P, Q) unless None."""
    if _conv_native(workspace, x, dy, dw, db):
        _native.conv_backward_weights(x, dy, dw, db, conv_geometry(geometry), workspace)
    else:
        (x_shape, w_shape, dy_shape), options = _ref_conv_layout(geometry)
        grad_w, grad_b = _ref_conv.backward_weights(x.reshape(x_shape), dy.reshape(dy_shape),
                                                    w_shape[2:], **options)
        dw += grad_w.reshape(dw.shape).astype(dw.dtype, copy=False)
        if db is not None:
            db += grad_b.reshape(db.shape).astype(db.dtype, copy=False)
    return dw


# -- choosing between the direct and the Winograd convolution ------------------------------------
# The Winograd rows of the three passes' tables (kernels/include/crema/winograd.h) take 3x3,
# stride 1, dilation 1, one group, pad 0..2; they do fewer multiplications but transform every
# tile. conv_algorithm() asks the tables under the C++ rule (crema/conv.h
# conv_winograd_preferred: fixed per ISA, from measurements), so the choice needs no timing and is
# the same in every process with the same ISA; conv_geometry() records it in the geometry, whose
# passes then run exactly that algorithm.
# CREMA_CONV_ALGO=direct|winograd forces a choice (winograd only where its kernels apply).
# A parallel job still pins rank 0's choices on every rank (adopt_conv_algorithm_choices), so
# ranks on different CPUs or ISA caps run the same algorithm too.

_CONV_ALGO_VALUES = ("auto", "direct", "winograd")
_conv_algo_made = {}    # (geometry without N, op) -> algorithm: the choices made in this process
_conv_algo_pinned = {}  # the same, adopted from another process; they win over the rule


def conv_algorithm(geometry, op="fwd"):
    """'winograd' or 'direct': the algorithm to run `op` ('fwd', 'bwd_data' or 'bwd_weights') of
    this convolution with the native float32 kernels. 'winograd' only where its kernels apply
    and, unless CREMA_CONV_ALGO forces it or another process's choice was adopted, where the
    per-ISA rule says they are faster."""
    if op not in CONV_OPS:
        raise ValueError(f"conv_algorithm: op must be one of {CONV_OPS}, got {op!r}")
    mode = os.environ.get("CREMA_CONV_ALGO", "auto")
    if mode not in _CONV_ALGO_VALUES:
        raise ValueError(f"CREMA_CONV_ALGO={mode!r} is not one of {_CONV_ALGO_VALUES}")
    geometry = conv_tuple(geometry)
    if mode == "direct" or not native_available() or not winograd_available(geometry):
        return "direct"
    if mode == "winograd":
        return "winograd"
    key = (geometry[1:], op)
    if key in _conv_algo_pinned:
        return _conv_algo_pinned[key]
    algo = _native.conv_algorithm(op, _native.ConvGeometry(*geometry))
    _conv_algo_made[key] = algo
    return algo


def conv_algorithm_choices():
    """The rule's choices made so far in this process: [((geometry without N, op), algorithm)]."""
    return list(_conv_algo_made.items())


def adopt_conv_algorithm_choices(choices):
    """Pin another process's choices (a parallel job's rank 0) so that every rank runs the same
    algorithm on every geometry, even where its CPU or ISA cap would choose differently; layers
    pick them up at their next reshape."""
    for (geometry, op), algo in choices:
        _conv_algo_pinned[(tuple(int(v) for v in geometry), op)] = algo


# -- Winograd convolution with an explicit tile ---------------------------------------------------
# Layers run Winograd through conv_forward / conv_backward_data (its table rows, the tile chosen
# there); these run it directly with a given tile, for tests, bench/winograd.py and the numpy
# form of the algorithm. geometry = the convolution's (a ConvGeometry or the 14-tuple). Float32
# C-contiguous arrays run the native kernels
# (kernels/include/crema/winograd.h: F(4x4,3x3) / F(2x2,3x3), AVX-512, AVX2 or scalar); anything
# else runs engine/reference/winograd.py, the same algorithm in numpy in the arrays' dtype (exact
# to rounding in float64). Errors against the float64 direct convolution: see winograd.h.

def winograd_supported(geometry):
    """Whether the Winograd path computes this convolution: a 3x3 kernel, stride 1, dilation 1,
    one group, pad 0..2 on each axis and a non-empty output (any dtype)."""
    n, c, h, w, k, kh, kw, ph, pw, sh, sw, dh, dw, grp = conv_tuple(geometry)
    return ((kh, kw, sh, sw, dh, dw, grp) == (3, 3, 1, 1, 1, 1, 1) and 0 <= ph <= 2
            and 0 <= pw <= 2 and min(n, c, h, w, k) > 0 and h + 2 * ph > 2 and w + 2 * pw > 2)


def winograd_available(geometry):
    """winograd_supported(geometry) and the native Winograd kernels are built."""
    return (_native is not None and hasattr(_native, "winograd_forward")
            and winograd_supported(geometry))


def winograd_kernel_name(geometry, backward=False):
    """The native Winograd kernel (ISA and tile) that would run this geometry's pass."""
    return _native.winograd_kernel_name(_winograd_args(geometry, None, backward))


def _winograd_args(geometry, tile, backward):
    """(N, C, H, W, K, pad_h, pad_w, tile) for the native kernels, checking the geometry."""
    if not winograd_supported(geometry):
        raise ValueError(f"the Winograd convolution needs a 3x3 kernel, stride 1, dilation 1, "
                         f"one group, pad 0..2 and a non-empty output; got geometry "
                         f"{conv_tuple(geometry)} (N, C, H, W, K, R, S, pad_h, "
                         f"pad_w, stride_h, stride_w, dilation_h, dilation_w, group)")
    n, c, h, w, k, _, _, ph, pw = conv_tuple(geometry)[:9]
    if tile is None:
        tile = (_ref_winograd.choose_tile(h, w, k, c) if backward else
                _ref_winograd.choose_tile(h + 2 * ph - 2, w + 2 * pw - 2, c, k))
    if int(tile) not in (2, 4):
        raise ValueError(f"tile must be 4 (F(4x4,3x3)) or 2 (F(2x2,3x3)), got {tile}")
    return (n, c, h, w, k, ph, pw, int(tile))


def winograd_tile(geometry, backward=False):
    """The tile (4 or 2) used when none is given: F(4x4,3x3) unless F(2x2)'s estimated work is
    lower (outputs a few pixels wide); backward=True for the data-gradient pass."""
    return _winograd_args(geometry, None, backward)[7]


def winograd_workspace_size(geometry, threads=None, tile=None, backward=False):
    """float32 elements of the `workspace` of winograd_conv2d_forward (or, backward=True, of
    winograd_conv2d_backward_data) for `threads` threads (default: get_num_threads()); a call
    uses as many threads as its workspace has room for. 0 without the native module."""
    args = _winograd_args(geometry, tile, backward)
    threads = get_num_threads() if threads is None else int(threads)
    if _native is None:
        return 0
    return int(_native.winograd_workspace_size(args, threads, bool(backward)))


def winograd_filter_cache_size(geometry, tile=None, backward=False):
    """float32 elements of the `filter_cache` of the forward (or backward=True data-gradient)
    pass. The cache keeps the transformed filter with a copy of the weights it came from and
    recomputes it whenever the weights (compared bit for bit) or the geometry change; one cache
    per layer and pass, any initial contents. 0 without the native module."""
    args = _winograd_args(geometry, tile, backward)
    if _native is None:
        return 0
    return int(_native.winograd_filter_cache_size(args, bool(backward)))


def _winograd_native(arrays, buffers):
    return _native_ok(*(a for a in arrays if a is not None)) and all(
        b is None or _native_ok(b) for b in buffers)


def winograd_conv2d_forward(x, w, bias, y, geometry, workspace=None, filter_cache=None,
                            tile=None, relu=False, negative_slope=0.0):
    """y = conv3x3(x, w) + bias (bias may be None), written into y: x (N, C, H, W), w (K, C, 3, 3),
    bias (K,), y (N, K, H + 2 pad_h - 2, W + 2 pad_w - 2) (any shapes with those sizes).
    workspace / filter_cache: float32 arrays of winograd_workspace_size / winograd_filter_cache_
    size elements owned by the caller; None allocates them for this call only. tile: 4, 2 or
    None (winograd_tile). ValueError where winograd_supported(geometry) is False. relu=True fuses
    Caffe's ReLU into the output transform (as conv_forward)."""
    n, c, h, wd, k, ph, pw, m = args = _winograd_args(geometry, tile, False)
    p, q = h + 2 * ph - 2, wd + 2 * pw - 2
    if _winograd_native((x, w, bias, y), (workspace, filter_cache)):
        if workspace is None:
            workspace = np.empty(winograd_workspace_size(geometry, tile=m), np.float32)
        if filter_cache is None:
            filter_cache = np.zeros(winograd_filter_cache_size(geometry, tile=m), np.float32)
        _native.winograd_forward(x.reshape(n, c, h, wd), w.reshape(k, c, 3, 3),
                                 None if bias is None else bias.reshape(k), args,
                                 y.reshape(n, k, p, q), workspace, filter_cache, bool(relu),
                                 float(negative_slope))
    else:
        y[...] = _ref_winograd.conv2d_forward(
            np.asarray(x).reshape(n, c, h, wd), np.asarray(w).reshape(k, c, 3, 3),
            None if bias is None else np.asarray(bias).reshape(k), (ph, pw), m).reshape(y.shape)
        if relu:
            _relu_inplace(y, negative_slope)
    return y


def winograd_conv2d_backward_data(dy, w, dx, geometry, workspace=None, filter_cache=None,
                                  tile=None):
    """dx = the data gradient of winograd_conv2d_forward for dy (N, K, P, Q), overwritten:
    dx (N, C, H, W). Buffers as for the forward pass, sized with backward=True."""
    n, c, h, wd, k, ph, pw, m = args = _winograd_args(geometry, tile, True)
    p, q = h + 2 * ph - 2, wd + 2 * pw - 2
    if _winograd_native((dy, w, dx), (workspace, filter_cache)):
        if workspace is None:
            workspace = np.empty(winograd_workspace_size(geometry, tile=m, backward=True),
                                 np.float32)
        if filter_cache is None:
            filter_cache = np.zeros(winograd_filter_cache_size(geometry, tile=m, backward=True),
                                    np.float32)
        _native.winograd_backward_data(dy.reshape(n, k, p, q), w.reshape(k, c, 3, 3), args,
                                       dx.reshape(n, c, h, wd), workspace, filter_cache)
    else:
        dx[...] = _ref_winograd.conv2d_backward_data(
            np.asarray(dy).reshape(n, k, p, q), np.asarray(w).reshape(k, c, 3, 3), (ph, pw),
            m).reshape(dx.shape)
    return dx


# -- solver passes over the parameter arena (engine/solvers/updates.py) ---------------------------
REGULARIZATION_CODES = {"L2": 1, "L1": 2}  # the kernel's Regularization; 0: none


def solver_kernel_name(x):
    return _native.solver_kernel_name() if _native_ok(x) else "numpy"


def sgd_update(data, diff, history, lr_mult, decay_mult, *, diff_scale, weight_decay,
               regularization, rate, momentum, apply):
    """One native pass of Caffe's SGD step over matching arena slices (crema/eltwise.h SgdStep):
    diff and history become the step h, and data -= h when `apply`. `regularization` is "L2",
    "L1" or None. Returns False, touching nothing, where the native kernel cannot run on these
    arrays (the caller then runs its numpy rule)."""
    if not _native_ok(data, diff, history, lr_mult, decay_mult):
        return False
    _native.sgd_update(data, diff, history, lr_mult, decay_mult, float(diff_scale),
                       float(weight_decay), REGULARIZATION_CODES.get(regularization, 0),
                       float(rate), float(momentum), bool(apply))
    return True


def all_finite(x):
    """Whether every value of the float32 array x is finite (no NaN, no infinity)."""
    if _native_ok(x):
        return _native.all_finite(x)
    return bool(np.isfinite(np.sum(x, dtype=np.float64)))


def sgemm_pair(first, second):
    """Two independent products c = op(a) @ op(b) + beta * c, each given as (a, b, c, beta,
    trans_a, trans_b) with C-contiguous float32 arrays: side by side, one per thread, at two
    threads (see the binding), else one after the other on sgemm()."""
    arrays = first[:3] + second[:3]
    if native_available() and all(a.dtype == np.float32 and a.ndim == 2 and a.flags.c_contiguous
                                  for a in arrays):
        _native.sgemm_pair(*first[:3], float(first[3]), bool(first[4]), bool(first[5]),
                           *second[:3], float(second[3]), bool(second[4]), bool(second[5]))
        return
    for a, b, c, beta, trans_a, trans_b in (first, second):
        sgemm(a, b, c, 1.0, beta, trans_a=trans_a, trans_b=trans_b)
