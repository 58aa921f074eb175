"""Native MAX / AVE pooling kernels against the loop reference (engine/reference/pool.py), on
random seeded geometries, for every ISA this CPU and build support (kernels.isa_cap picks
the table row); size checks of the bindings; the Pooling layer's float32
(native) path against its float64 (numpy) path."""
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from engine.kernels import isa_cap
import engine
from engine import kernels
from engine.reference import pool as ref
from engine.testing import layer_from_text, run_forward

from engine import _kernels as native  # must be built: a missing module fails here
from engine.kernels import pool_geometry as pg
ISAS = kernels.runnable_isas()
FLT_MAX = float(np.finfo(np.float32).max)


def first_mismatch(got, want, what, rtol=0.0, atol=0.0):
    """An assertion message naming the first differing (n, c, y, x) position, or None."""
    got, want = np.asarray(got), np.asarray(want)
    if rtol == 0 and atol == 0:
        bad = ~((got == want) | (np.isnan(got) & np.isnan(want)) if got.dtype.kind == "f"
                else got == want)
    else:
        bad = ~np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    if not bad.any():
        return None
    pos = tuple(int(i) for i in np.argwhere(bad)[0])
    return (f"{what}: {int(bad.sum())} of {bad.size} differ; first at (n, c, y, x) = {pos}: "
            f"got {got[pos]!r}, want {want[pos]!r}")


def check(got, want, what, rtol=0.0, atol=0.0):
    msg = first_mismatch(got, want, what, rtol, atol)
    assert msg is None, msg


def geometry_for(shape, kernel, pad, stride, ceil_mode):
    """Caffe's pooled size (the layer's formula), as plain Python ints throughout: the reference
    divides by Python ints, which keeps its AVE arithmetic in float32."""
    n, c, h, w = (int(v) for v in shape)
    kh, kw = (int(v) for v in kernel)
    ph, pw = (int(v) for v in pad)
    sh, sw = (int(v) for v in stride)
    any_pad = ph > 0 or pw > 0
    oh = ref.pooled_size(h, kh, ph, sh, ceil_mode, any_pad)
    ow = ref.pooled_size(w, kw, pw, sw, ceil_mode, any_pad)
    return (n, c, h, w, kh, kw, ph, pw, sh, sw, oh, ow)


def run_all_ops(x, g, dy_seed):
    """Native forward/backward of MAX and AVE (outputs pre-filled with NaN / garbage)."""
    n, c, h, w, *_, oh, ow = g
    out = (n, c, oh, ow)
    y = np.full(out, np.nan, np.float32)
    mask = np.full(out, -7, np.int32)
    native.max_pool_forward(x, pg(g), y, mask)
    y_nomask = np.full(out, np.nan, np.float32)
    native.max_pool_forward(x, pg(g), y_nomask)
    ya = np.full(out, np.nan, np.float32)
    native.ave_pool_forward(x, pg(g), ya)
    dy = np.random.default_rng(dy_seed).standard_normal(out).astype(np.float32)
    dx_max = np.full(x.shape, np.nan, np.float32)
    native.max_pool_backward(dy, mask, pg(g), dx_max)
    dx_ave = np.full(x.shape, np.nan, np.float32)
    native.ave_pool_backward(dy, pg(g), dx_ave)
    return y, mask, y_nomask, ya, dy, dx_max, dx_ave


def compare_with_reference(x, g, dy_seed, label):
    n, c, h, w, kh, kw, ph, pw, sh, sw, oh, ow = g
    kernel, pad, stride, pooled = (kh, kw), (ph, pw), (sh, sw), (oh, ow)
    want_y, want_mask = ref.max_pool_forward(x, kernel, pad, stride, pooled)
    want_ya = ref.ave_pool_forward(x, kernel, pad, stride, pooled)
    for isa in ISAS:
        with isa_cap(isa):
            names = {op: native.pool_kernel_name(op, pg(g))
                     for op in ("max_fwd", "max_bwd", "ave_fwd", "ave_bwd")}
            y, mask, y_nomask, ya, dy, dx_max, dx_ave = run_all_ops(x, g, dy_seed)
        where = f"{label} isa={isa} geometry={g} kernels={names}"
        check(y, want_y, f"MAX forward {where}")
        check(mask, want_mask, f"MAX argmax {where}")
        check(y_nomask, want_y, f"MAX forward without mask {where}")
        check(ya, want_ya, f"AVE forward {where}", rtol=1e-6, atol=1e-6)
        check(dx_max, ref.max_pool_backward(dy, want_mask, x.shape),
              f"MAX backward {where}")
        check(dx_ave, ref.ave_pool_backward(dy, x.shape, kernel, pad, stride),
              f"AVE backward {where}", rtol=1e-6, atol=1e-6)


def kernel_pad(draw_k, draw_p):
    return draw_p if draw_p < draw_k else draw_k - 1


@st.composite
def pool_cases(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    ph = kernel_pad(kh, draw(st.integers(0, 2)))
    pw = kernel_pad(kw, draw(st.integers(0, 2)))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ceil_mode = draw(st.booleans())
    # Odd and even sizes, from smaller than the kernel (with padding) to rows wide enough for
    # whole unmasked vector blocks at every stride (16 lanes x stride 3 = 48 columns).
    h = draw(st.integers(max(1, kh - 2 * ph), 19))
    w = draw(st.integers(max(1, kw - 2 * pw), 72))
    n = draw(st.sampled_from([1, 3]))
    c = draw(st.integers(1, 17))
    c = max(1, min(c, 6000 // (n * h * w)))  # keeps the loop reference quick
    g = geometry_for((n, c, h, w), (kh, kw), (ph, pw), (sh, sw), ceil_mode)
    if g[-2] <= 0 or g[-1] <= 0:
        g = geometry_for((n, c, h + kh, w + kw), (kh, kw), (ph, pw), (sh, sw), ceil_mode)
    return g, ceil_mode, draw(st.integers(0, 2**16)), draw(st.booleans())


@settings(max_examples=120, deadline=None)
@given(case=pool_cases())
def test_pooling_matches_reference_on_every_isa(case):
    g, ceil_mode, seed, ties = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(g[:4]).astype(np.float32)
    if ties:  # small integers: many equal values, so the first-maximum rule is exercised
        x = np.round(x * 1.5).astype(np.float32)
    compare_with_reference(x, g, seed + 1, f"{'CEIL' if ceil_mode else 'FLOOR'} seed={seed}")


@pytest.mark.parametrize("shape,kernel,pad,stride,ceil_mode", [
    ((2, 3, 37, 53), (3, 3), (0, 0), (2, 2), True),     # AlexNet-like, odd sizes
    ((1, 2, 33, 67), (2, 2), (0, 0), (2, 2), True),     # 2x2 s2, a vector tail
    ((1, 2, 16, 32), (2, 2), (1, 1), (2, 2), True),     # padding on both sides, exact vectors
    ((3, 5, 11, 13), (3, 2), (1, 1), (1, 2), False),    # rectangular, FLOOR
    ((1, 1, 5, 5), (1, 1), (0, 0), (3, 3), True),       # stride > kernel: empty windows
    ((1, 2, 9, 100), (9, 100), (0, 0), (1, 1), True),   # global pooling of a wide plane
    ((1, 1, 3, 200), (1, 5), (0, 2), (1, 4), True),     # stride 4 (gather path), long row
    ((1, 3, 4, 150), (3, 3), (1, 1), (3, 3), True),     # stride 3, unmasked gathers inside
    ((1, 2, 6, 45), (3, 20), (1, 3), (1, 1), True),     # wide windows: AVE backward gathers
    ((2, 3, 10, 224), (2, 2), (0, 0), (2, 2), True),    # HEP-like rows, whole vector blocks
    ((2, 4, 1, 1), (1, 1), (0, 0), (1, 1), True),       # 1x1 planes
])
def test_pooling_fixed_geometries(shape, kernel, pad, stride, ceil_mode):
    g = geometry_for(shape, kernel, pad, stride, ceil_mode)
    x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
    compare_with_reference(x, g, 5, "fixed")


def test_empty_windows_give_lowest_and_minus_one():
    g = geometry_for((1, 1, 5, 5), (1, 1), (0, 0), (3, 3), True)   # windows at 0, 3, 6
    assert g[-2:] == (3, 3)
    x = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
    for isa in ISAS:
        with isa_cap(isa):
            y = np.zeros((1, 1, 3, 3), np.float32)
            mask = np.zeros((1, 1, 3, 3), np.int32)
            native.max_pool_forward(x, pg(g), y, mask)
            ya = np.full((1, 1, 3, 3), np.nan, np.float32)
            native.ave_pool_forward(x, pg(g), ya)
        assert y[0, 0, 2, 2] == -FLT_MAX and mask[0, 0, 2, 2] == -1, isa
        assert (mask[0, 0, :, 2] == -1).all() and (mask[0, 0, 2, :] == -1).all(), isa
        assert mask[0, 0, 1, 1] == 3 * 5 + 3 and ya[0, 0, 2, 2] == 0.0, isa


def test_special_values_follow_the_reference():
    # NaN never wins (x > best is false), -inf never beats the -FLT_MAX start; +inf wins.
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 13, 35)).astype(np.float32)
    flat = x.reshape(-1)
    idx = rng.choice(flat.size, 60, replace=False)
    flat[idx[:20]] = np.nan
    flat[idx[20:40]] = -np.inf
    flat[idx[40:]] = np.inf
    x[1, 2] = -np.inf  # a whole plane of -inf: -FLT_MAX and mask -1 everywhere
    for stride in (1, 2, 3):
        g = geometry_for(x.shape, (3, 3), (1, 1), (stride, stride), True)
        want_y, want_mask = ref.max_pool_forward(x, (3, 3), (1, 1), (stride, stride), g[-2:])
        for isa in ISAS:
            with isa_cap(isa):
                y = np.empty((2, 3) + g[-2:], np.float32)
                mask = np.empty((2, 3) + g[-2:], np.int32)
                native.max_pool_forward(x, pg(g), y, mask)
            check(y, want_y, f"MAX forward with inf/NaN isa={isa} stride={stride}")
            check(mask, want_mask, f"MAX argmax with inf/NaN isa={isa} stride={stride}")
            assert (mask[1, 2] == -1).all() and (y[1, 2] == -FLT_MAX).all()


def test_kernel_names_follow_the_cap():
    overlapping = geometry_for((1, 1, 9, 9), (3, 3), (0, 0), (2, 2), True)
    disjoint = geometry_for((1, 1, 8, 8), (2, 2), (0, 0), (2, 2), True)
    for isa in ISAS:
        with isa_cap(isa):
            assert native.pool_kernel_name("max_fwd", pg(overlapping)) == f"max_pool_fwd_{isa}"
            assert native.pool_kernel_name("ave_fwd", pg(overlapping)) == f"ave_pool_fwd_{isa}"
            # overlapping windows: the argmax scatter-add stays scalar on every ISA
            assert native.pool_kernel_name("max_bwd", pg(overlapping)) == "max_pool_bwd_scalar"
            want = {"avx512": "max_pool_bwd_avx512_disjoint"}.get(isa, "max_pool_bwd_scalar")
            assert native.pool_kernel_name("max_bwd", pg(disjoint)) == want
            assert native.pool_kernel_name("ave_bwd", pg(overlapping)) == f"ave_pool_bwd_{isa}"
            # int32 lane arithmetic that would overflow goes to the scalar kernels
            huge = (1, 1, 4, 4, 2, 2, 0, 0, 1 << 30, 1 << 30, 1, 4)
            assert native.pool_kernel_name("max_fwd", pg(huge)) == "max_pool_fwd_scalar"
            y = np.zeros((1, 1, 1, 4), np.float32)
            native.max_pool_forward(np.ones((1, 1, 4, 4), np.float32), pg(huge), y)
            assert y[0, 0, 0, 0] == 1 and (y[0, 0, 0, 1:] == -FLT_MAX).all()
    with pytest.raises(ValueError, match="op must be"):
        native.pool_kernel_name("min_fwd", pg(overlapping))


def test_threads_do_not_change_results():
    shape = (3, 17, 31, 45)   # large enough to run in parallel
    x = np.random.default_rng(11).standard_normal(shape).astype(np.float32)
    g = geometry_for(shape, (3, 3), (1, 1), (2, 2), True)
    old = engine.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            engine.set_num_threads(n)
            results.append(run_all_ops(x, g, 3))
    finally:
        engine.set_num_threads(old)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


# -- bindings reject what they cannot take -------------------------------------------------------

G = (2, 3, 7, 9, 3, 3, 1, 1, 2, 2, 4, 5)   # N C H W kh kw ph pw sh sw oh ow


def arrays(g=G):
    n, c, h, w, *_, oh, ow = g
    return (np.zeros((n, c, h, w), np.float32), np.zeros((n, c, oh, ow), np.float32),
            np.zeros((n, c, oh, ow), np.int32))


def test_bindings_accept_a_consistent_call():
    x, y, mask = arrays()
    native.max_pool_forward(x, pg(G), y, mask)
    native.max_pool_backward(y, mask, pg(G), x)
    native.ave_pool_forward(x, pg(G), y)
    native.ave_pool_backward(y, pg(G), x)


@pytest.mark.parametrize("bad,match", [
    (G[:11], "pooling geometry must be"),
    (G[:4] + (3, 3, 3, 1) + G[8:], "smaller than the kernel"),
    (G[:8] + (0, 2) + G[10:], "positive"),
    ((0,) + G[1:], "positive"),
    (G[:10] + (0, 5), "pooled sizes"),
    (G[:4] + (3, 3, -1, 1) + G[8:], "non-negative"),
    ((1, 1, 1 << 16, 1 << 16, 3, 3, 0, 0, 1, 1, 4, 4), "2\\^31"),
])
def test_bindings_reject_bad_geometry(bad, match):
    # A PoolGeometry is checked once, when made (engine.kernels converts tuples through it).
    x, y, mask = arrays()
    with pytest.raises(ValueError, match=match):
        pg(bad)
    with pytest.raises(ValueError, match=match):
        kernels.max_pool_forward(x, bad, y, mask)
    if len(bad) == 12:
        with pytest.raises(ValueError, match=match):
            native.PoolGeometry(*bad)


def test_geometry_fields():
    g = pg(G)
    assert (g.N, g.C, g.H, g.W, g.kernel_h, g.kernel_w, g.pad_h, g.pad_w, g.stride_h,
            g.stride_w, g.pooled_h, g.pooled_w) == g.astuple() == G
    assert pg(g) is g
    with pytest.raises(AttributeError):
        g.N = 3
    import pickle
    assert pickle.loads(pickle.dumps(g)) == g


def test_bindings_reject_wrong_sizes():
    x, y, mask = arrays()
    with pytest.raises(ValueError, match="x has 377 elements"):
        native.max_pool_forward(np.zeros(377, np.float32), pg(G), y, mask)
    with pytest.raises(ValueError, match="y has 119 elements"):
        native.max_pool_forward(x, pg(G), np.zeros(119, np.float32), mask)
    with pytest.raises(ValueError, match="mask has"):
        native.max_pool_forward(x, pg(G), y, np.zeros(119, np.int32))
    with pytest.raises(ValueError, match="int32"):
        native.max_pool_forward(x, pg(G), y, mask.astype(np.int64))
    with pytest.raises(ValueError, match="int32"):
        native.max_pool_forward(x, pg(G), y, mask.astype(np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        native.max_pool_forward(x, pg(G), y, np.zeros((2, 3, 5, 4), np.int32).transpose(0, 1, 3, 2))
    with pytest.raises(ValueError, match="mask has"):
        native.max_pool_backward(y, np.zeros(7, np.int32), pg(G), x)
    with pytest.raises(ValueError, match="dx has"):
        native.max_pool_backward(y, mask, pg(G), np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="dy has"):
        native.ave_pool_backward(np.zeros(3, np.float32), pg(G), x)
    with pytest.raises(ValueError, match="y has"):
        native.ave_pool_forward(x, pg(G), np.zeros((2, 3, 4, 4), np.float32))
    with pytest.raises(TypeError):  # outputs are never silently converted copies
        native.ave_pool_forward(x, pg(G), y.astype(np.float64))
    ro = y.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        native.ave_pool_forward(x, pg(G), ro)


def test_max_backward_skips_masks_outside_the_plane():
    x, y, _ = arrays()
    dy = np.ones_like(y)
    for isa in ISAS:
        with isa_cap(isa):
            for g in (G, G[:8] + (3, 3) + (3, 3)):   # overlapping and disjoint windows
                out = g[:2] + g[-2:]
                # distinct values (a forward pass never repeats an argmax of disjoint windows)
                mask = (np.random.default_rng(0).permutation(2000)[:int(np.prod(out))] - 1000)
                mask = mask.reshape(out).astype(np.int32)
                dx = np.full(x.shape, np.nan, np.float32)
                native.max_pool_backward(dy[..., :g[-2], :g[-1]].copy(), mask, pg(g), dx)
                inside = (mask >= 0) & (mask < 7 * 9)
                assert dx.sum() == inside.sum() and not np.isnan(dx).any()


@pytest.mark.parametrize("kernel, stride, slope", [((2, 2), (2, 2), 0.0), ((3, 3), (2, 2), 0.0),
                                                   ((2, 3), (2, 3), 0.25)])
def test_max_backward_applies_the_relu_backward_at_the_argmax(kernel, stride, slope):
    """relu_y: max backward of (ReLU backward at each argmax) equals ReLU backward of max
    backward (kernels/include/crema/pool.h), on the output of a real ReLU + MAX forward."""
    shape = (2, 5, 12, 17)
    g = geometry_for(shape, kernel, (0, 0), stride, True)
    pre = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    x = np.where(pre > 0, pre, np.float32(slope) * pre)  # the in-place ReLU's output
    rng = np.random.default_rng(6)
    dy = rng.standard_normal((2, 5) + g[-2:]).astype(np.float32)
    y, mask = ref.max_pool_forward(x, kernel, (0, 0), stride, g[-2:])
    unfused = ref.max_pool_backward(dy, mask, shape)
    unfused = np.where(x > 0, unfused, np.float32(slope) * unfused)  # the ReLU layer's rule
    assert (y <= 0).any() and (unfused != 0).any()
    np.testing.assert_array_equal(ref.max_pool_backward(dy, mask, shape, y, slope), unfused)
    for isa in ISAS:
        with isa_cap(isa):
            dx = np.full(shape, np.nan, np.float32)
            native.max_pool_backward(dy, mask.astype(np.int32), pg(g), dx, y, slope)
            np.testing.assert_array_equal(dx, unfused, err_msg=f"{isa} {kernel} {stride}")
    with pytest.raises(ValueError, match="relu_y has"):
        native.max_pool_backward(dy, mask.astype(np.int32), pg(g), dx, y[:1].copy(), slope)


# -- engine.kernels wrappers and the Pooling layer -----------------------------------------------

def test_wrappers_fall_back_to_the_reference_for_float64():
    g = geometry_for((2, 3, 7, 9), (3, 3), (1, 1), (2, 2), True)
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 9))
    y = np.empty((2, 3) + g[-2:])
    mask = np.empty((2, 3) + g[-2:], np.int64)
    assert kernels.pool_kernel_name("max_fwd", g, x) == "numpy"
    kernels.max_pool_forward(x, g, y, mask)
    want_y, want_mask = ref.max_pool_forward(x, (3, 3), (1, 1), (2, 2), g[-2:])
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(mask, want_mask)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    assert kernels.pool_kernel_name("max_fwd", g, x32).startswith("max_pool_fwd_")
    kernels.ave_pool_forward(x32, g, y32)
    np.testing.assert_allclose(y32, ref.ave_pool_forward(x32, (3, 3), (1, 1), (2, 2), g[-2:]),
                               rtol=1e-6, atol=1e-6)


def pool_text(params):
    return f'name: "p" type: "Pooling" pooling_param {{ {params} }}'


LAYER_CASES = [
    "pool: MAX kernel_size: 3 stride: 2",
    "pool: MAX kernel_size: 2 stride: 2 pad: 1",
    "pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0",
    "pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR",
    "pool: MAX global_pooling: true",
    "pool: AVE kernel_size: 3 stride: 2 pad: 1",
    "pool: AVE kernel_size: 2 stride: 1",
    "pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 1",
    "pool: AVE kernel_size: 3 stride: 3 round_mode: FLOOR",
    "pool: AVE global_pooling: true",
]


@pytest.mark.parametrize("params", LAYER_CASES)
@pytest.mark.parametrize("shape", [(2, 3, 11, 13), (1, 17, 8, 35)])
def test_layer_float32_native_path_equals_float64_reference_path(params, shape, monkeypatch):
    monkeypatch.delenv("CREMA_KERNELS", raising=False)
    x = np.random.default_rng(len(params)).standard_normal(shape)
    x32 = x.astype(np.float32)
    n_top = 2 if "MAX" in params else 1
    runs = {}
    for dtype in (np.float32, np.float64):
        layer = layer_from_text(pool_text(params))
        bottom, top = run_forward(layer, [x32.astype(dtype)], n_top=n_top, dtype=dtype)
        top[0].diff[...] = np.random.default_rng(2).standard_normal(top[0].shape)
        layer.backward(top, [True], bottom)
        runs[dtype] = (layer.kernel, top, bottom)
    k32, top32, bottom32 = runs[np.float32]
    k64, top64, bottom64 = runs[np.float64]
    assert k64 == "numpy" and k32.startswith(("max_pool_fwd_", "ave_pool_fwd_")), (k32, k64)
    assert top32[0].data.dtype == np.float32
    if "MAX" in params:
        check(top32[0].data, top64[0].data.astype(np.float32), f"MAX top {params}")
        check(top32[1].data, top64[1].data, f"MAX argmax top {params}")
        # overlapping windows add up float32 gradients (float64 in the reference path)
        check(bottom32[0].diff, bottom64[0].diff, f"MAX diff {params}", rtol=1e-6, atol=1e-7)
    else:
        check(top32[0].data, top64[0].data, f"AVE top {params}", rtol=1e-5, atol=1e-6)
        check(bottom32[0].diff, bottom64[0].diff, f"AVE diff {params}", rtol=1e-5, atol=1e-6)
    # CREMA_KERNELS=reference sends float32 to numpy too, with the same results.
    monkeypatch.setenv("CREMA_KERNELS", "reference")
    layer = layer_from_text(pool_text(params))
    bottom, top = run_forward(layer, [x32], n_top=n_top, dtype=np.float32)
    assert layer.kernel == "numpy"
    check(top[0].data, top32[0].data, f"reference-mode top {params}", rtol=1e-6, atol=1e-6)


def test_spp_uses_the_native_pooling():
    layer = layer_from_text('name: "s" type: "SPP" spp_param { pyramid_height: 3 pool: MAX }')
    x = np.random.default_rng(4).standard_normal((2, 3, 7, 6))
    _, top32 = run_forward(layer, [x], dtype=np.float32)
    assert all(p.kernel.startswith("max_pool_fwd_") for p in layer.pools)
    layer64 = layer_from_text('name: "s" type: "SPP" spp_param { pyramid_height: 3 pool: MAX }')
    _, top64 = run_forward(layer64, [x.astype(np.float32)], dtype=np.float64)
    check(top32[0].data, top64[0].data.astype(np.float32), "SPP MAX")


# -- no access outside the arrays ----------------------------------------------------------------

GUARDED_SCRIPT = r'''
import ctypes, mmap, os, sys
import numpy as np
from engine import _kernels as native, kernels
from engine.kernels import pool_geometry as pg
from engine.reference import pool as ref

PAGE = mmap.PAGESIZE
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
keep = []

def guarded(shape, dtype, at_end):
    """An array whose first (at_end=False) or last byte touches a PROT_NONE page."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    pages = -(-nbytes // PAGE)
    mm = mmap.mmap(-1, (pages + 2) * PAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    for off in (0, (pages + 1) * PAGE):
        assert libc.mprotect(base + off, PAGE, 0) == 0
    start = PAGE + (pages * PAGE - nbytes if at_end else 0)
    keep.append(mm)
    return np.frombuffer(mm, dtype=dtype, count=int(np.prod(shape)), offset=start).reshape(shape)

rng = np.random.default_rng(0)
for isa in kernels.cpu_info()["usable_isas"]:
    kernels.set_max_isa(isa)
    for (h, w, k, p, s) in [(7, 9, 3, 1, 2), (5, 37, 2, 1, 1), (3, 70, 4, 0, 2), (4, 61, 5, 2, 3),
                            (2, 100, 3, 1, 4), (1, 1, 1, 0, 1), (6, 33, 2, 0, 2), (9, 17, 5, 4, 1)]:
        oh = ref.pooled_size(h, k, p, s, True, p > 0)
        ow = ref.pooled_size(w, k, p, s, True, p > 0)
        g = (2, 3, h, w, k, k, p, p, s, s, oh, ow)
        for at_end in (False, True):
            x = guarded((2, 3, h, w), np.float32, at_end)
            x[...] = rng.standard_normal(x.shape)
            y = guarded((2, 3, oh, ow), np.float32, at_end)
            mask = guarded((2, 3, oh, ow), np.int32, at_end)
            dx = guarded((2, 3, h, w), np.float32, at_end)
            native.max_pool_forward(x, pg(g), y, mask)
            native.max_pool_backward(y, mask, pg(g), dx)
            native.ave_pool_forward(x, pg(g), y)
            native.ave_pool_backward(y, pg(g), dx)
print("ok")
'''


def test_kernels_touch_nothing_outside_the_arrays(tmp_path):
    """Every array of the call sits against an inaccessible page (before it, then after it):
    a read or write past either end, masked vector lanes included, would kill the child."""
    import subprocess
    import sys
    script = tmp_path / "guarded.py"
    script.write_text(GUARDED_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("CREMA_MAX_ISA", "CREMA_KERNELS")}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), (
        f"exit {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
