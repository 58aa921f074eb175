"""Winograd F(4x4,3x3) / F(2x2,3x3) convolution: the native kernels (every ISA this CPU and build
support; kernels.isa_cap picks the table row) against the numpy reference
engine/reference/winograd.py and an independent float64 direct convolution, on random seeded
shapes (odd sizes, channels not a multiple of 16, pad 0..2, batch 1 and 3); the filter cache, the
workspace and thread contract; the bindings' error paths; the engine.kernels wrappers.

Tolerance (float32 kernels against the float64 direct result, errors relative to the RMS of the
exact output, see kernels/include/crema/winograd.h): max 1e-4 -- the accuracy target of
F(4x4,3x3) -- and, over outputs of 64 elements or more, RMS 1e-5; the measured errors are about
10x smaller.
"""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from engine.kernels import isa_cap
import engine
from engine import kernels
from engine.reference import conv as ref_conv
from engine.reference import winograd as ref

from engine import _kernels as native  # must be built: a missing module fails here
ISAS = kernels.runnable_isas()
MAX_REL, RMS_REL = 1e-4, 1e-5


def direct64(x, w, b=None, pad=(0, 0)):
    """Float64 direct correlation by sliding windows (independent of both Winograd codes)."""
    ph, pw = pad
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))
    y = np.einsum("ncpqij,kcij->nkpq", win, np.asarray(w, np.float64))
    if b is not None:
        y += np.asarray(b, np.float64).reshape(1, -1, 1, 1)
    return y


def direct64_backward(dy, w, x_shape, pad):
    """The adjoint of direct64 with respect to x, scattered tap by tap."""
    ph, pw = pad
    n, c, h, wd = x_shape
    p, q = dy.shape[2:]
    dxp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    for i in range(3):
        for j in range(3):
            dxp[:, :, i:i + p, j:j + q] += np.einsum("nkpq,kc->ncpq", dy, w[:, :, i, j])
    return dxp[:, :, ph:ph + h, pw:pw + wd]


def check_close(got, want, what):
    """Errors relative to the RMS of the exact result; the message names the first bad position."""
    got = np.asarray(got, np.float64)
    scale = float(np.sqrt(np.mean(want ** 2))) or 1.0
    err = np.abs(got - want)
    assert np.all(np.isfinite(got)), f"{what}: non-finite output at {np.argwhere(~np.isfinite(got))[0]}"
    bad = err > MAX_REL * scale
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} outside {MAX_REL} x RMS "
                             f"{scale:.3g}; first at (n, c, y, x) = {pos}: got {got[pos]!r}, "
                             f"want {want[pos]!r}")
    rms = float(np.sqrt(np.mean(err ** 2))) / scale
    if err.size >= 64:  # over a handful of outputs the RMS is just the maximum again
        assert rms <= RMS_REL, f"{what}: RMS relative error {rms:.3g} > {RMS_REL}"


def wgeom(n, c, h, w, k, ph, pw, tile):
    return (n, c, h, w, k, ph, pw, tile)


def run_forward(x, w, b, g, threads=1, fill=np.nan):
    n, c, h, wd, k, ph, pw, tile = g
    y = np.full((n, k, h + 2 * ph - 2, wd + 2 * pw - 2), np.nan, np.float32)
    ws = np.full(native.winograd_workspace_size(g, threads), fill, np.float32)
    cache = np.full(native.winograd_filter_cache_size(g), fill, np.float32)
    native.winograd_forward(x, w, b, g, y, ws, cache)
    return y


def run_backward(dy, w, g, threads=1):
    n, c, h, wd, k, ph, pw, tile = g
    dx = np.full((n, c, h, wd), np.nan, np.float32)
    ws = np.full(native.winograd_workspace_size(g, threads, True), np.nan, np.float32)
    cache = np.full(native.winograd_filter_cache_size(g, True), np.nan, np.float32)
    native.winograd_backward_data(dy, w, g, dx, ws, cache)
    return dx


def data(seed, n, c, h, w, k, ph, pw):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    dy = rng.standard_normal((n, k, h + 2 * ph - 2, w + 2 * pw - 2)).astype(np.float32)
    return x, wt, b, dy


def check_all(g, seed, isas=ISAS):
    """Native forward and data gradient for every ISA, and the float32 numpy reference, against
    the float64 direct results."""
    n, c, h, w, k, ph, pw, tile = g
    x, wt, b, dy = data(seed, n, c, h, w, k, ph, pw)
    want = direct64(x, wt, b, (ph, pw))
    want_dx = direct64_backward(dy.astype(np.float64), wt.astype(np.float64), x.shape, (ph, pw))
    check_close(ref.conv2d_forward(x, wt, b, (ph, pw), tile), want, f"reference float32 {g}")
    for isa in isas:
        with isa_cap(isa):
            assert native.winograd_kernel_name(g) == f"winograd_{isa}"
            check_close(run_forward(x, wt, b, g), want, f"forward {isa} {g}")
            check_close(run_backward(dy, wt, g), want_dx, f"backward_data {isa} {g}")


# -- the weight gradient --------------------------------------------------------------------------
# Runs through the convolution's entry point (the weight-gradient table's Winograd rows, forced
# with algo_bwd_weights="winograd"; the tile is winograd_choose_tile's), against the float64
# gradient of engine/reference/conv.py, with the same tolerance as the forward pass: the sums
# over tiles are split into blocks and per-thread slots like the forward's channel chunks.

def run_backward_weights(x, dy, n, c, h, w, k, ph, pw, db=True):
    g = native.ConvGeometry(n, c, h, w, k, 3, 3, ph, ph if pw is None else pw,
                            algo_bwd_weights="winograd")
    ws = np.full(kernels.conv_workspace_size(g), np.nan, np.float32)
    dw = np.ones((k, c, 3, 3), np.float32)  # the pass accumulates, as Caffe's
    dbias = np.ones(k, np.float32) if db else None
    native.conv_backward_weights(x, dy, dw, dbias, g, ws)
    return native.conv_kernel_name("bwd_weights", g), dw - 1, None if dbias is None else dbias - 1


def exact_weight_gradient(x, dy, ph, pw):
    return ref_conv.backward_weights(x.astype(np.float64), dy.astype(np.float64), (3, 3),
                                     pad=(ph, pw))


def test_reference_weight_gradient_is_exact():
    """The numpy form of the algorithm (float64) against the direct gradient, both tiles."""
    for (n, c, h, w, k, ph, pw), m in [((2, 3, 7, 9, 4, 1, 1), 4), ((1, 2, 5, 4, 3, 0, 2), 2),
                                       ((2, 5, 11, 6, 3, 2, 0), 4), ((1, 4, 4, 4, 2, 0, 0), 2)]:
        x, _, _, dy = data(n + c, n, c, h, w, k, ph, pw)
        x, dy = x.astype(np.float64), dy.astype(np.float64)
        dw, db = ref.conv2d_backward_weights(x, dy, (ph, pw), m)
        want_dw, want_db = exact_weight_gradient(x, dy, ph, pw)
        np.testing.assert_allclose(dw, want_dw, rtol=0, atol=1e-11 * np.abs(want_dw).max())
        np.testing.assert_allclose(db, want_db, rtol=0, atol=1e-12 * np.abs(want_db).max())


# (n, c, h, w, k, pad_h, pad_w): both tiles (F(2x2) where the output is a few pixels wide),
# channel tails on both sides, pads 0..2, several tile blocks and a wide 16-channel-only panel.
WGRAD_SHAPES = [(2, 5, 9, 11, 7, 1, 1), (1, 16, 4, 4, 16, 0, 0), (3, 20, 13, 6, 33, 2, 0),
                (2, 17, 8, 4, 9, 0, 1), (4, 24, 30, 26, 20, 1, 1), (1, 48, 20, 19, 16, 1, 2)]


@pytest.mark.parametrize("shape", WGRAD_SHAPES)
def test_native_weight_gradient_every_isa(shape):
    n, c, h, w, k, ph, pw = shape
    x, _, _, dy = data(sum(shape), n, c, h, w, k, ph, pw)
    want_dw, want_db = exact_weight_gradient(x, dy, ph, pw)
    tile = ref.choose_tile(h + 2 * ph - 2, w + 2 * pw - 2, c, k)
    check_close(ref.conv2d_backward_weights(x, dy, (ph, pw), tile)[0], want_dw,
                f"reference float32 weight gradient {shape}")
    for isa in ISAS:
        with isa_cap(isa):
            name, dw, db = run_backward_weights(x, dy, n, c, h, w, k, ph, pw)
            assert name == f"winograd_{isa}"
            check_close(dw, want_dw, f"weight gradient {isa} {shape} F({tile}x{tile})")
            check_close(db, want_db, f"bias gradient {isa} {shape}")
            _, dw_only, none = run_backward_weights(x, dy, n, c, h, w, k, ph, pw, db=False)
            assert none is None
            np.testing.assert_array_equal(dw_only, dw)


@pytest.mark.parametrize("isa", ISAS)
def test_weight_gradient_threads_and_a_one_thread_workspace(isa):
    """Two threads split the tile blocks into two slots whose sums are added at the end (so the
    rounding, not the result, may differ from one thread); a workspace with room for one slot
    runs on one thread."""
    n, c, h, w, k = 3, 24, 30, 26, 20
    x, _, _, dy = data(7, n, c, h, w, k, 1, 1)
    want_dw, _ = exact_weight_gradient(x, dy, 1, 1)
    g = native.ConvGeometry(n, c, h, w, k, 3, 3, 1, 1, algo_bwd_weights="winograd")
    old = engine.get_num_threads()
    try:
        with isa_cap(isa):
            results = []
            for threads, ws_floats in [(1, None), (2, None),
                                       (2, native.conv_min_workspace_size(g, "bwd_weights"))]:
                engine.set_num_threads(threads)
                ws = np.full(ws_floats or kernels.conv_workspace_size(g), np.nan, np.float32)
                dw = np.zeros((k, c, 3, 3), np.float32)
                native.conv_backward_weights(x, dy, dw, None, g, ws)
                check_close(dw, want_dw, f"weight gradient {isa}, {threads} threads")
                results.append(dw)
            np.testing.assert_array_equal(results[2], results[0])
    finally:
        engine.set_num_threads(old)


# -- the matrices ---------------------------------------------------------------------------------

@pytest.mark.parametrize("tile", [2, 4])
def test_native_matrices_are_the_reference_ones(tile):
    for got, want, name in zip(native.winograd_matrices(tile), ref.winograd_matrices(tile),
                               ("A^T", "G", "B^T")):
        np.testing.assert_array_equal(got, want.astype(np.float32), err_msg=f"{name} F({tile})")


@pytest.mark.parametrize("tile, points", [(2, None), (4, None), (4, ref.LAVIN_POINTS_F4),
                                          (4, (0, 1, -1, Fraction(1, 2), Fraction(-1, 2), None))])
def test_toom_cook_matrices_compute_the_1d_correlation(tile, points):
    at, g, bt = ref.winograd_matrices(tile, points)
    rng = np.random.default_rng(tile)
    for _ in range(5):
        d, f = rng.standard_normal(tile + 2), rng.standard_normal(3)
        want = np.array([d[i:i + 3] @ f for i in range(tile)])
        np.testing.assert_allclose(at @ ((g @ f) * (bt @ d)), want, rtol=0, atol=1e-12)


def test_the_f4_points_are_documented_and_integer_transforms():
    at, g, bt = ref.winograd_matrices_exact(4)
    assert ref.POINTS[4] == (0, 1, -1, Fraction(1, 2), -2, None)
    assert all(v.denominator == 1 for row in bt for v in row)  # B^T: small exact integers
    assert ref.winograd_matrices_exact(4, ref.LAVIN_POINTS_F4)[2][0] == [4, 0, -5, 0, 1, 0]


def test_reference_float64_is_exact_and_matches_the_loop_reference():
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 3)), \
        rng.standard_normal(4)
    for pad in [(0, 0), (1, 2), (2, 1)]:
        loop = ref_conv.conv2d_forward(x, w, b, pad)
        np.testing.assert_allclose(direct64(x, w, b, pad), loop, rtol=0, atol=1e-12)
        for tile in (2, 4):
            np.testing.assert_allclose(ref.conv2d_forward(x, w, b, pad, tile), loop, rtol=0,
                                       atol=1e-12, err_msg=f"tile {tile} pad {pad}")


# -- native against the references ----------------------------------------------------------------

FIXED = [
    wgeom(1, 17, 9, 11, 33, 1, 1, 4),   # odd sizes, C and K not multiples of 16
    wgeom(3, 5, 13, 7, 19, 0, 0, 4),    # pad 0, batch 3
    wgeom(3, 20, 10, 15, 40, 2, 2, 4),  # pad 2
    wgeom(1, 31, 3, 3, 2, 0, 2, 4),     # one output row, mixed pads
    wgeom(3, 1, 1, 1, 1, 1, 1, 4),      # a single pixel in and out
    wgeom(1, 33, 12, 9, 17, 1, 0, 2),   # F(2x2)
    wgeom(3, 16, 6, 6, 16, 2, 1, 2),
    wgeom(1, 48, 17, 40, 48, 1, 1, 4),  # more than one tile block and a 32-column panel
]


@pytest.mark.parametrize("g", FIXED)
def test_native_matches_references_on_fixed_shapes(g):
    check_all(g, seed=sum(g))


shapes = st.tuples(
    st.sampled_from([1, 3]),                   # N
    st.integers(1, 40),                        # C
    st.integers(1, 17), st.integers(1, 17),    # H, W
    st.integers(1, 40),                        # K
    st.integers(0, 2), st.integers(0, 2),      # pad_h, pad_w
    st.sampled_from([2, 4]),                   # tile
).filter(lambda s: s[2] + 2 * s[5] >= 3 and s[3] + 2 * s[6] >= 3)


@settings(max_examples=40, deadline=None)
@given(g=shapes, seed=st.integers(0, 2 ** 16))
def test_native_matches_references_on_random_shapes(g, seed):
    check_all(g, seed)


@pytest.mark.parametrize("isa", ISAS)
def test_accuracy_target_on_128_channels(isa):
    """Unit-variance data, C = 128: F(4x4) stays within 1e-4 of the float64 result."""
    g = wgeom(1, 128, 20, 20, 32, 1, 1, 4)
    x, w, b, _ = data(7, 1, 128, 20, 20, 32, 1, 1)
    with isa_cap(isa):
        check_close(run_forward(x, w, b, g), direct64(x, w, b, (1, 1)), f"C=128 {isa}")


# -- buffers, cache, threads ----------------------------------------------------------------------

@pytest.mark.parametrize("isa", ISAS)
def test_results_do_not_depend_on_buffer_contents_or_repeat(isa):
    g = wgeom(3, 19, 11, 9, 21, 1, 2, 4)
    x, w, b, _ = data(1, 3, 19, 11, 9, 21, 1, 2)
    with isa_cap(isa):
        first = run_forward(x, w, b, g, fill=np.nan)
        np.testing.assert_array_equal(run_forward(x, w, b, g, fill=0.0), first)
        np.testing.assert_array_equal(run_forward(x, w, b, g, fill=1e30), first)


@pytest.mark.parametrize("isa", ISAS)
def test_filter_cache_follows_weight_and_geometry_changes(isa):
    g = wgeom(1, 6, 8, 8, 5, 1, 1, 4)
    x, w, b, dy = data(2, 1, 6, 8, 8, 5, 1, 1)
    y = np.empty((1, 5, 8, 8), np.float32)
    ws = np.empty(native.winograd_workspace_size(g), np.float32)
    big = np.zeros(4 * native.winograd_filter_cache_size(g) + 64, np.float32)
    cache = big[:native.winograd_filter_cache_size(g)]
    with isa_cap(isa):
        native.winograd_forward(x, w, b, g, y, ws, cache)
        check_close(y, direct64(x, w, b, (1, 1)), "first call")
        w[2, 3, 1, 1] += 1.0  # in place, as a solver update does
        native.winograd_forward(x, w, b, g, y, ws, cache)
        check_close(y, direct64(x, w, b, (1, 1)), "after an in-place weight change")
        # The same cache contents at another alignment: the header records where U starts.
        shifted = big[1:1 + cache.size]
        shifted[...] = cache
        native.winograd_forward(x, w, b, g, y, ws, shifted)
        check_close(y, direct64(x, w, b, (1, 1)), "cache copied to another offset")
        # Another tile, then the data-gradient pass, through the same array.
        g2 = g[:7] + (2,)
        native.winograd_forward(x, w, b, g2, y, np.empty(native.winograd_workspace_size(g2),
                                                        np.float32), big)
        check_close(y, direct64(x, w, b, (1, 1)), "tile 2 with a tile-4 cache")
        dx = np.empty_like(x)
        native.winograd_backward_data(dy, w, g, dx, np.empty(
            native.winograd_workspace_size(g, 1, True), np.float32), big)
        check_close(dx, direct64_backward(dy.astype(np.float64), w.astype(np.float64), x.shape,
                                          (1, 1)), "backward with a forward cache")


@pytest.mark.parametrize("isa", ISAS)
def test_threads_give_identical_results(isa):
    """Each tile's arithmetic is the same whichever thread runs it (without OpenMP the thread
    count is only recorded and this checks the single-thread path twice)."""
    g = wgeom(3, 24, 30, 26, 20, 1, 1, 4)  # several tile blocks
    x, w, b, dy = data(4, 3, 24, 30, 26, 20, 1, 1)
    old = engine.get_num_threads()
    try:
        with isa_cap(isa):
            engine.set_num_threads(1)
            one, one_dx = run_forward(x, w, b, g), run_backward(dy, w, g)
            engine.set_num_threads(2)
            np.testing.assert_array_equal(run_forward(x, w, b, g, threads=2), one)
            np.testing.assert_array_equal(run_backward(dy, w, g, threads=2), one_dx)
            # A workspace sized for one thread still works: the call uses the slots it has.
            np.testing.assert_array_equal(run_forward(x, w, b, g, threads=1), one)
    finally:
        engine.set_num_threads(old)


def test_workspace_grows_with_threads_and_choose_tile_matches_python():
    g = wgeom(2, 32, 20, 20, 32, 1, 1, 4)
    assert native.winograd_workspace_size(g, 2) > native.winograd_workspace_size(g, 1) > 0
    for out_hw, c, k in [((1, 1), 8, 8), ((2, 2), 64, 64), ((3, 5), 3, 40), ((14, 14), 128, 128),
                         ((7, 2), 17, 33), ((112, 112), 128, 128)]:
        h, w = out_hw[0], out_hw[1]  # pad 1: output = input size
        assert native.winograd_choose_tile(wgeom(1, c, h, w, k, 1, 1, 4)) == \
            ref.choose_tile(h, w, c, k), (out_hw, c, k)
    assert ref.choose_tile(112, 112, 128, 128) == 4 and ref.choose_tile(2, 2, 64, 64) == 2


# -- error paths ----------------------------------------------------------------------------------

def _buffers(g):
    return (np.zeros(native.winograd_workspace_size(g), np.float32),
            np.zeros(native.winograd_filter_cache_size(g), np.float32))


def test_bad_geometries_are_refused():
    assert native.winograd_geometry_error(wgeom(1, 2, 5, 5, 3, 1, 1, 4)) is None
    for g, msg in [(wgeom(1, 2, 5, 5, 3, 3, 1, 4), "pad"), (wgeom(1, 2, 5, 5, 3, 1, -1, 4), "pad"),
                   (wgeom(1, 2, 1, 5, 3, 0, 0, 4), "larger than the padded input"),
                   (wgeom(0, 2, 5, 5, 3, 1, 1, 4), "positive"),
                   (wgeom(1, 2, 5, 5, -3, 1, 1, 4), "positive"),
                   (wgeom(1, 2 ** 40, 2 ** 20, 2 ** 20, 3, 1, 1, 4), "overflow")]:
        assert msg in native.winograd_geometry_error(g), g
        with pytest.raises(ValueError, match=msg):
            native.winograd_workspace_size(g)
    with pytest.raises(ValueError, match="tile"):
        native.winograd_workspace_size(wgeom(1, 2, 5, 5, 3, 1, 1, 3))
    with pytest.raises(ValueError, match="threads"):
        native.winograd_workspace_size(wgeom(1, 2, 5, 5, 3, 1, 1, 4), 0)
    with pytest.raises(ValueError, match="geometry must be"):
        native.winograd_workspace_size((1, 2, 5, 5, 3, 1, 1))


def test_forward_checks_every_array():
    g = wgeom(2, 3, 6, 5, 4, 1, 0, 4)
    x, w, b, _ = data(0, 2, 3, 6, 5, 4, 1, 0)
    y = np.zeros((2, 4, 6, 3), np.float32)
    ws, cache = _buffers(g)
    f = native.winograd_forward
    f(x, w, b, g, y, ws, cache)
    f(x, w, None, g, y, ws, cache)
    with pytest.raises(ValueError, match=r"x has shape \(2, 3, 5, 6\), expected \(2, 3, 6, 5\)"):
        f(np.zeros((2, 3, 5, 6), np.float32), w, b, g, y, ws, cache)
    with pytest.raises(ValueError, match="weight has shape"):
        f(x, np.zeros((4, 3, 5, 5), np.float32), b, g, y, ws, cache)
    with pytest.raises(ValueError, match="y has shape"):
        f(x, w, b, g, np.zeros((2, 4, 6, 5), np.float32), ws, cache)
    with pytest.raises(ValueError, match="bias must have shape"):
        f(x, w, np.zeros(5, np.float32), g, y, ws, cache)
    with pytest.raises(ValueError, match="workspace has"):
        f(x, w, b, g, y, ws[:-1], cache)
    with pytest.raises(ValueError, match="filter_cache has"):
        f(x, w, b, g, y, ws, cache[:-1])
    with pytest.raises(ValueError, match="y must be a C-contiguous float32"):
        f(x, w, b, g, y.astype(np.float64), ws, cache)
    with pytest.raises(ValueError, match="y must be a C-contiguous float32"):
        f(x, w, b, g, np.zeros((2, 4, 3, 6), np.float32).transpose(0, 1, 3, 2), ws, cache)
    with pytest.raises(ValueError, match="workspace must be a C-contiguous float32"):
        f(x, w, b, g, y, [0.0] * ws.size, cache)
    ro = y.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        f(x, w, b, g, ro, ws, cache)
    shared = np.zeros(y.size + ws.size, np.float32)
    with pytest.raises(ValueError, match="share memory"):
        f(x, w, b, g, shared[:y.size].reshape(y.shape), shared[y.size // 2:], cache)
    with pytest.raises(ValueError, match="share memory"):
        f(x, w, b, g, y, ws, ws[:cache.size])


def test_backward_checks_every_array():
    g = wgeom(1, 3, 4, 4, 2, 0, 0, 4)
    w = np.zeros((2, 3, 3, 3), np.float32)
    dy = np.zeros((1, 2, 2, 2), np.float32)
    dx = np.zeros((1, 3, 4, 4), np.float32)
    ws = np.zeros(native.winograd_workspace_size(g, 1, True), np.float32)
    cache = np.zeros(native.winograd_filter_cache_size(g, True), np.float32)
    native.winograd_backward_data(dy, w, g, dx, ws, cache)
    with pytest.raises(ValueError, match="dy has shape"):
        native.winograd_backward_data(dx, w, g, dx.copy(), ws, cache)
    with pytest.raises(ValueError, match="dx has shape"):
        native.winograd_backward_data(dy, w, g, dy.copy(), ws, cache)
    with pytest.raises(ValueError, match="workspace has"):
        native.winograd_backward_data(dy, w, g, dx, ws[:10], cache)
    with pytest.raises(ValueError, match="share memory"):
        native.winograd_backward_data(dy, w, g, dx, ws, ws[:cache.size])


# -- the engine.kernels wrappers ------------------------------------------------------------------

def conv_geometry(n, c, h, w, k, ph, pw, kernel=3, stride=1, dilation=1, group=1):
    return (n, c, h, w, k, kernel, kernel, ph, pw, stride, stride, dilation, dilation, group)


def test_supported_predicate():
    assert kernels.winograd_supported(conv_geometry(8, 128, 56, 56, 128, 1, 1))
    assert kernels.winograd_supported(conv_geometry(1, 1, 1, 1, 1, 1, 1))
    assert kernels.winograd_supported(conv_geometry(1, 3, 3, 3, 1, 0, 0))
    for g in [conv_geometry(1, 4, 8, 8, 4, 1, 1, stride=2),
              conv_geometry(1, 4, 8, 8, 4, 1, 1, dilation=2),
              conv_geometry(1, 4, 8, 8, 4, 1, 1, group=2),
              conv_geometry(1, 4, 8, 8, 4, 2, 2, kernel=5),
              conv_geometry(1, 4, 8, 8, 4, 3, 1),
              conv_geometry(1, 4, 2, 8, 4, 0, 0),
              conv_geometry(0, 4, 8, 8, 4, 1, 1)]:
        assert not kernels.winograd_supported(g), g
    with pytest.raises(ValueError, match="3x3 kernel, stride 1"):
        kernels.winograd_conv2d_forward(np.zeros((1, 4, 8, 8), np.float32),
                                        np.zeros((4, 4, 3, 3), np.float32), None,
                                        np.zeros((1, 4, 4, 4), np.float32),
                                        conv_geometry(1, 4, 8, 8, 4, 1, 1, stride=2))
    with pytest.raises(ValueError, match="tile must be"):
        kernels.winograd_workspace_size(conv_geometry(1, 4, 8, 8, 4, 1, 1), tile=3)


@pytest.mark.parametrize("mode", ["native", "float64", "reference"])
def test_engine_wrappers_forward_and_backward(mode, monkeypatch):
    n, c, h, w, k, ph, pw = 3, 9, 7, 10, 11, 2, 1
    g = conv_geometry(n, c, h, w, k, ph, pw)
    x, wt, b, dy = data(5, n, c, h, w, k, ph, pw)
    want = direct64(x, wt, b, (ph, pw))
    want_dx = direct64_backward(dy.astype(np.float64), wt.astype(np.float64), x.shape, (ph, pw))
    if mode == "float64":  # gradient checks: the numpy reference, exact to rounding
        x, wt, b, dy = (a.astype(np.float64) for a in (x, wt, b, dy))
    if mode == "reference":
        monkeypatch.setenv("CREMA_KERNELS", "reference")
    y = np.full(want.shape, np.nan, x.dtype)
    dx = np.full(x.shape, np.nan, x.dtype)
    kernels.winograd_conv2d_forward(x, wt, b, y, g)  # buffers allocated for the call
    kernels.winograd_conv2d_backward_data(dy, wt, dx, g)
    if mode == "float64":
        np.testing.assert_allclose(y, want, rtol=0, atol=1e-10)
        np.testing.assert_allclose(dx, want_dx, rtol=0, atol=1e-10)
    else:
        check_close(y, want, f"wrapper forward {mode}")
        check_close(dx, want_dx, f"wrapper backward {mode}")
    if mode == "native":  # caller-owned buffers, reused across calls
        for tile in (4, 2):
            ws = np.empty(kernels.winograd_workspace_size(g, tile=tile), np.float32)
            cache = np.zeros(kernels.winograd_filter_cache_size(g, tile=tile), np.float32)
            y2 = np.full(want.shape, np.nan, np.float32)
            kernels.winograd_conv2d_forward(x, wt, b, y2, g, ws, cache, tile=tile)
            check_close(y2, want, f"wrapper forward tile {tile}")
