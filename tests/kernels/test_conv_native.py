"""Native convolution (engine._kernels.conv_*: one entry point per pass, direct and Winograd rows)
against float64 references, on random seeded geometries (odd sizes, channels not a multiple of
16, pads, strides 1-3, dilation 2, groups 1, 2 and depthwise, batch 1 and 3, kernels 1x1 to
11x11), forward, backward data, backward weights and bias, for every ISA this CPU and build
support (kernels.isa_cap picks the table row) and, where Winograd applies, both algorithms (the
ConvGeometry's algo_fwd / algo_bwd_data); the binding's checks; the Convolution and Deconvolution
layers' float32 (native) path against their float64 (numpy) path.

The expectation: engine/reference/conv.py's three passes run in float64 (whose forward
tests/test_reference_conv.py checks against the loop-by-loop definition, and its backward passes
as the forward's exact adjoints).
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.kernels import isa_cap
from engine import kernels
from engine.reference import conv as ref_conv
from engine.testing import layer_from_text, run_forward

from engine import _kernels as native  # must be built: a missing module fails here
ISAS = kernels.runnable_isas()


# -- float64 expectations --------------------------------------------------------------------------

def out_hw(g):
    n, c, h, w, k, kh, kw, ph, pw, sh, sw, dh, dw, grp = g
    return ((h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1,
            (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1)


def ref_options(g):
    n, c, h, w, k, kh, kw, ph, pw, sh, sw, dh, dw, grp = g
    return dict(pad=(ph, pw), stride=(sh, sw), dilation=(dh, dw), group=grp)


def f64(a):
    return np.asarray(a, np.float64)


def ref_forward(x, w, bias, g):
    return ref_conv.forward(f64(x), f64(w), None if bias is None else f64(bias), **ref_options(g))


def ref_backward_data(dy, w, g):
    return ref_conv.backward_data(f64(dy), f64(w), g[2:4], **ref_options(g))


def ref_backward_weights(x, dy, g):
    return ref_conv.backward_weights(f64(x), f64(dy), g[5:7], **ref_options(g))[0]


# -- comparison -----------------------------------------------------------------------------------

def check_close(got, want, scale, what, rtol=2e-5):
    """|got - want| <= rtol * scale + 1e-6 elementwise, where scale bounds the magnitudes summed
    into each element (the same reduction on |inputs|); the message names the first bad index."""
    got = np.asarray(got, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, want {want.shape}"
    bad = ~(np.abs(got - want) <= rtol * scale + 1e-6)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} elements differ; first at "
                             f"index {pos}: got {got[pos]!r}, want {want[pos]!r} "
                             f"(scale {scale[pos]!r})")


def make_inputs(g, seed):
    n, c, h, w, k, kh, kw, *_, grp = g
    p, q = out_hw(g)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c // grp, kh, kw)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    dy = rng.standard_normal((n, k, p, q)).astype(np.float32)
    return x, wt, b, dy


def geom(g, algo="direct"):
    """The native geometry of tuple g with both passes' algorithm set to algo."""
    return native.ConvGeometry(*g, algo_fwd=algo, algo_bwd_data=algo, algo_bwd_weights=algo)


def run_native(g, x, w, b, dy):
    """All three ops through the bindings (g a ConvGeometry), outputs pre-filled with garbage;
    dw/db start at 1 so accumulation (+=) is checked."""
    p, q = g.P, g.Q
    g0, k = g.N, g.K
    ws = np.full(native.conv_workspace_size(g), np.nan, np.float32)
    y = np.full((g0, k, p, q), np.nan, np.float32)
    native.conv_forward(x, w, b, y, g, ws)
    y_nobias = np.full_like(y, np.nan)
    native.conv_forward(x, w, None, y_nobias, g, ws)
    dx = np.full(x.shape, np.nan, np.float32)
    native.conv_backward_data(dy, w, dx, g, ws)
    dw = np.ones(w.shape, np.float32)
    db = np.ones(k, np.float32)
    native.conv_backward_weights(x, dy, dw, db, g, ws)
    dw_only = np.zeros(w.shape, np.float32)
    native.conv_backward_weights(x, dy, dw_only, None, g, ws)
    return y, y_nobias, dx, dw - 1, db - 1, dw_only


def algorithm_of(row_name):
    """The ConvAlgo a row belongs to: Winograd, or "direct" (the direct and GEMM rows)."""
    return "winograd" if row_name.startswith("winograd_") else "direct"


def check_geometry(g, seed, isas=ISAS):
    x, w, b, dy = make_inputs(g, seed)
    want_y = ref_forward(x, w, b, g)
    want_y0 = want_y - b.astype(np.float64).reshape(1, -1, 1, 1)
    want_dx = ref_backward_data(dy, w, g)
    want_dw = ref_backward_weights(x, dy, g)
    want_db = dy.astype(np.float64).sum(axis=(0, 2, 3))
    ax, aw, ady = np.abs(x), np.abs(w), np.abs(dy)
    s_y = ref_forward(ax, aw, np.abs(b), g)
    s_dx = ref_backward_data(ady, aw, g)
    s_dw = ref_backward_weights(ax, ady, g)
    s_db = ady.astype(np.float64).sum(axis=(0, 2, 3))
    algos = ["direct"] + (["winograd"] if kernels.winograd_available(g) else [])
    for isa, algo in ((isa, algo) for isa in isas for algo in algos):
        gg = geom(g, algo)
        with isa_cap(isa):
            names = [native.conv_kernel_name(op, gg)
                     for op in ("fwd", "bwd_data", "bwd_weights")]
            assert all(name.endswith("_" + isa) for name in names), (isa, names)
            assert [algorithm_of(n) for n in names] == [algo, algo, algo], names
            y, y0, dx, dw, db, dw_only = run_native(gg, x, w, b, dy)
        tag = f"{isa} {names} geometry {g}"
        # Winograd's transforms round more than the direct sums (crema/winograd.h: accuracy).
        rtol = 2e-5 if algo == "direct" else 1e-4
        check_close(y, want_y, s_y, f"forward {tag}", rtol)
        check_close(y0, want_y0, s_y, f"forward without bias {tag}", rtol)
        check_close(dx, want_dx, s_dx, f"backward data {tag}", rtol)
        check_close(dw, want_dw, s_dw, f"backward weights {tag}")
        check_close(dw_only, want_dw, s_dw, f"backward weights (no bias) {tag}")
        check_close(db, want_db, s_db, f"bias gradient {tag}")


# -- random geometries ----------------------------------------------------------------------------

@st.composite
def geometries(draw):
    group_kind = draw(st.sampled_from(["1", "2", "depthwise"]))
    if group_kind == "depthwise":
        c = draw(st.integers(1, 20))
        grp = c
        k = c * draw(st.integers(1, 2))
    else:
        grp = int(group_kind)
        c = grp * draw(st.integers(1, 20))
        k = grp * draw(st.integers(1, 20))
    kh = draw(st.sampled_from([1, 3, 5, 11]))
    kw = draw(st.sampled_from([1, 3, kh]))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.sampled_from([1, 1, 2])), draw(st.sampled_from([1, 1, 2]))
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    ext_h, ext_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    h = draw(st.integers(max(1, ext_h - 2 * ph), max(1, ext_h - 2 * ph) + 14))
    w = draw(st.integers(max(1, ext_w - 2 * pw), max(1, ext_w - 2 * pw) + 14))
    n = draw(st.sampled_from([1, 3]))
    return (n, c, h, w, k, kh, kw, ph, pw, sh, sw, dh, dw, grp)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(g=geometries(), seed=st.integers(0, 2**31 - 1))
def test_random_geometries_every_isa(g, seed):
    check_geometry(g, seed)


@pytest.mark.parametrize("g", [
    # HEP-like: 3x3 pad 1, channels in whole blocks and with tails, odd sizes
    (2, 32, 13, 15, 48, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    (1, 17, 9, 30, 33, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    # few input channels (first layers): the row-vector kernels, with a tail vector
    (3, 3, 17, 37, 21, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    (1, 1, 11, 70, 7, 5, 5, 2, 2, 2, 1, 1, 1, 1),
    (1, 4, 9, 19, 13, 3, 3, 1, 1, 1, 1, 2, 2, 1),
    # pad larger than the dilated kernel needs (the flipped data-gradient convolution crops)
    (2, 20, 6, 7, 18, 3, 3, 3, 2, 1, 1, 1, 1, 1),
    (1, 2, 6, 7, 3, 3, 3, 3, 3, 1, 1, 1, 1, 1),
    # strides 2 and 3 (scatter data gradient), dilation 2, groups
    (3, 24, 17, 13, 40, 3, 3, 1, 1, 2, 2, 1, 1, 2),
    (1, 18, 23, 21, 20, 5, 5, 2, 2, 3, 3, 2, 2, 2),
    (1, 3, 35, 35, 16, 11, 11, 2, 2, 4, 4, 1, 1, 1),
    # few channels with column strides 2-3 (phase planes), a tail vector and groups
    (2, 4, 19, 40, 10, 5, 5, 1, 2, 1, 2, 1, 1, 2),
    (1, 3, 23, 47, 7, 7, 7, 3, 3, 2, 3, 2, 1, 1),
    # depthwise and 1x1
    (3, 32, 14, 15, 32, 3, 3, 1, 1, 1, 1, 1, 1, 32),
    (2, 40, 10, 9, 36, 1, 1, 0, 0, 1, 1, 1, 1, 1),
    # 1x1 output, 1-pixel input
    (2, 5, 1, 1, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1),
])
def test_listed_geometries_every_isa(g):
    check_geometry(g, 11)


@pytest.mark.parametrize("g", [
    # The few-channel rows' two modes (conv_direct.isa.cpp, few_desc): flat mode (vectors over
    # an image's outputs with the row pitch Wp) where Wp is below Q rounded up to whole vectors,
    # else row mode. Q = 64, Wp = 66: row mode on both vector ISAs.
    (2, 3, 9, 64, 13, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    # Q = 57, Wp = 59: flat on both; groups, a partial last block of output channels.
    (1, 4, 8, 57, 14, 3, 3, 1, 1, 1, 1, 1, 1, 2),
    # Row stride 3 (three row phases), column stride 2 (phase planes), row dilation 2: Q = 24,
    # pitch 26 -> flat on AVX-512 (32 lanes), row mode on AVX2 (24 lanes).
    (2, 3, 30, 47, 7, 5, 5, 1, 2, 3, 2, 2, 1, 1),
    # AlexNet conv1 (Q = 55, pitch 57: flat on AVX-512, row mode on AVX2), 14 images: two
    # chunks in both modes, 7 output channels (a partial block).
    (14, 3, 227, 227, 7, 11, 11, 0, 0, 4, 4, 1, 1, 1),
])
def test_few_channel_modes_every_isa(g):
    check_geometry(g, 29)


def test_several_image_chunks_every_isa():
    # An image's blocked copy above the 8 MB chunk budget: one image per chunk, 3 chunks.
    check_geometry((3, 16, 260, 262, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1), 13,
                   isas=[i for i in ISAS if i != "scalar"])


def test_kernel_choice():
    g_main = geom((2, 128, 14, 14, 128, 3, 3, 1, 1, 1, 1, 1, 1, 1))
    g_first = geom((2, 3, 32, 32, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1))
    g_depthwise = geom((2, 32, 14, 14, 32, 3, 3, 1, 1, 1, 1, 1, 1, 32))
    g_strided_first = geom((2, 3, 32, 32, 64, 3, 3, 1, 1, 2, 2, 1, 1, 1))
    # Under the rule ('auto') the main layer runs Winograd on every ISA; forced, on any geometry
    # where it applies; never where it does not (whatever is asked).
    g_main_rule = geom(g_main.astuple(), "auto")
    g_first_wino = geom(g_first.astuple(), "winograd")
    g_depthwise_wino = geom(g_depthwise.astuple(), "winograd")
    for isa in ISAS:
        with isa_cap(isa):
            for op in ("fwd", "bwd_data", "bwd_weights"):
                assert native.conv_kernel_name(op, g_main_rule) == f"winograd_{isa}"
                assert native.conv_kernel_name(op, g_first_wino) == f"winograd_{isa}"
                assert algorithm_of(native.conv_kernel_name(op, g_depthwise_wino)) == "direct"
            # The rule keeps a 3-channel first layer's weight gradient on the few-channel row.
            assert algorithm_of(native.conv_kernel_name(
                "bwd_weights", geom(g_first.astuple(), "auto"))) == "direct"
            if isa == "scalar":
                assert native.conv_kernel_name("fwd", g_main) == "direct_scalar"
                continue
            # The few-channel rows come first; the GEMM rows follow conv_gemm_preferred
            # (conv_common.cpp): on AVX2 every forward and stride-1 data gradient, on AVX-512
            # where rounding channels up to whole vectors (and the data gradient's zero border)
            # would waste most of the direct kernel's work.
            gemm_avx2 = "gemm_avx2" if isa == "avx2" else f"direct_blocked_{isa}"
            assert native.conv_kernel_name("fwd", g_main) == gemm_avx2
            assert native.conv_kernel_name("bwd_data", g_main) == gemm_avx2
            assert native.conv_kernel_name("bwd_weights", g_main) == f"direct_blocked_{isa}"
            assert native.conv_kernel_name("fwd", g_first) == f"direct_fewc_{isa}"
            assert native.conv_kernel_name("bwd_weights", g_first) == f"direct_fewc_{isa}"
            assert native.conv_kernel_name("bwd_data", g_first) == f"gemm_{isa}"
            assert native.conv_kernel_name("fwd", g_depthwise) == f"direct_fewc_{isa}"
            assert native.conv_kernel_name("bwd_data", g_depthwise) == f"direct_fewc_{isa}"
            # A stride above 1 runs the few-channel rows over phase planes of the input.
            assert native.conv_kernel_name("fwd", g_strided_first) == f"direct_fewc_{isa}"
            assert native.conv_kernel_name("bwd_weights", g_strided_first) == f"direct_fewc_{isa}"


@pytest.mark.parametrize("g, want", [
    # LeNet conv2: the data gradient's flipped 5x5 over an 8x8 map is 2.25x the real taps
    ((64, 20, 12, 12, 50, 5, 5, 0, 0, 1, 1, 1, 1, 1),
     {"avx512": ("direct_blocked", "gemm", "direct_blocked"),
      "avx2": ("gemm", "gemm", "direct_blocked")}),
    # AlexNet conv1 (3 channels, 11x11, stride 4): the few-channel rows over 4 phase planes;
    # the data gradient (3 of 16 or 8 lanes used by the blocked kernels) through the GEMM
    ((2, 3, 51, 51, 96, 11, 11, 0, 0, 4, 4, 1, 1, 1),
     {"avx512": ("direct_fewc", "gemm", "direct_fewc"),
      "avx2": ("direct_fewc", "gemm", "direct_fewc")}),
    # AlexNet conv2 (groups 2, 48 -> 128 per group): whole vectors, the blocked kernels
    ((1, 96, 13, 13, 256, 5, 5, 2, 2, 1, 1, 1, 1, 2),
     {"avx512": ("direct_blocked", "direct_blocked", "direct_blocked"),
      "avx2": ("gemm", "gemm", "direct_blocked")}),
])
def test_gemm_rows_are_a_fixed_rule_and_match_the_reference(g, want):
    for isa in [i for i in ISAS if i != "scalar"]:
        with isa_cap(isa):
            names = tuple(native.conv_kernel_name(op, geom(g))
                          for op in ("fwd", "bwd_data", "bwd_weights"))
        assert names == tuple(f"{row}_{isa}" for row in want[isa]), (isa, names)
    check_geometry(g, 23)


def test_workspace_covers_every_isa_and_stays_in_bounds():
    # Sized once (as a layer does at reshape), it serves every ISA cap; the kernels write only
    # inside it (guard values around a view stay untouched).
    # The same for the per-pass weight caches, and for Winograd given less workspace than it
    # wants (it then runs on fewer threads).
    for t, algo in (((3, 20, 11, 13, 24, 3, 3, 1, 1, 2, 1, 1, 1, 2), "auto"),
                    ((2, 21, 11, 13, 18, 3, 3, 1, 2, 1, 1, 1, 1, 1), "winograd")):
        g = geom(t, algo)
        x, w, b, dy = make_inputs(t, 17)
        size = native.conv_workspace_size(g)
        assert size > 0
        buf = np.full(size + 64, 7.0, np.float32)
        ws = buf[32:32 + size]
        sizes = {op: native.conv_weight_cache_size(g, op) for op in ("fwd", "bwd_data")}
        caches = {op: np.full(n + 64, 7.0, np.float32) for op, n in sizes.items()}
        views = {op: c[32:32 + sizes[op]] for op, c in caches.items()}
        for v in views.values():
            v[...] = 0
        for isa in ISAS:
            with isa_cap(isa):
                y = np.empty((g.N, g.K, g.P, g.Q), np.float32)
                native.conv_forward(x, w, b, y, g, ws, weight_cache=views["fwd"])
                np.testing.assert_allclose(y, ref_forward(x, w, b, t), rtol=1e-3, atol=1e-3)
                native.conv_backward_data(dy, w, np.empty_like(x), g, ws,
                                          weight_cache=views["bwd_data"])
                native.conv_backward_weights(x, dy, np.zeros_like(w), None, g, ws)
                if algo == "winograd":
                    y2 = np.empty_like(y)
                    one_slot = kernels.winograd_workspace_size(t, threads=1)
                    assert one_slot < size or kernels.get_num_threads() == 1
                    native.conv_forward(x, w, b, y2, g, ws[:one_slot], weight_cache=views["fwd"])
                    np.testing.assert_array_equal(y2, y)
        for arr in [buf] + list(caches.values()):
            assert (arr[:32] == 7.0).all() and (arr[-32:] == 7.0).all()


def test_engine_wrappers_native_and_numpy_fallback_agree(monkeypatch):
    monkeypatch.delenv("CREMA_KERNELS", raising=False)  # this test is about the native path
    # engine.kernels.conv_* take the native kernels for float32 with a workspace, numpy otherwise
    # (float64 here): both must give the reference's values.
    g = (2, 6, 9, 8, 4, 3, 3, 1, 2, 2, 1, 1, 2, 2)
    x, w, b, dy = make_inputs(g, 19)
    p, q = out_hw(g)
    ws = np.empty(kernels.conv_workspace_size(g), np.float32)
    for dtype, workspace in ((np.float32, ws), (np.float64, None), (np.float32, None)):
        xx, ww, bb, dd = (a.astype(dtype) for a in (x, w, b, dy))
        y = kernels.conv_forward(xx, ww, bb, np.empty((2, 4, p, q), dtype), g, workspace)
        dx = kernels.conv_backward_data(dd, ww, np.empty_like(xx), g, workspace)
        dw = kernels.conv_backward_weights(xx, dd, np.ones_like(ww), np.ones_like(bb), g,
                                           workspace)
        np.testing.assert_allclose(y, ref_forward(x, w, b, g), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(dx, ref_backward_data(dy, w, g), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(dw - 1, ref_backward_weights(x, dy, g), rtol=1e-4, atol=1e-4)
    assert kernels.conv_kernel_name("fwd", g, x) != "numpy"
    assert kernels.conv_kernel_name("fwd", g, x.astype(np.float64)) == "numpy"
    with pytest.raises(ValueError, match="op must be"):
        kernels.conv_kernel_name("forward", g, x)


# -- binding checks -------------------------------------------------------------------------------

G0 = (2, 4, 6, 6, 8, 3, 3, 1, 1, 1, 1, 1, 1, 2)


def arrays(g=G0):
    x, w, b, dy = make_inputs(g, 23)
    p, q = out_hw(g)
    ws = np.empty(native.conv_workspace_size(geom(g)), np.float32)
    return x, w, b, dy, np.zeros((g[0], g[4], p, q), np.float32), ws


@pytest.mark.parametrize("bad, match", [
    ((2, 4, 6, 6, 8, 3, 3, 1, 1, 1, 1, 1, 1), "must be \\(N, C, H, W, K"),
    ((2, 4, 6, 6, 8, 3, 3, 1, 1, 1, 1, 1, 1, 3), "group must"),
    ((2, 4, 6, 6, 6, 3, 3, 1, 1, 1, 1, 1, 1, 4), "group must"),
    ((0, 4, 6, 6, 8, 3, 3, 1, 1, 1, 1, 1, 1, 2), "positive"),
    ((2, 4, 6, 6, 8, 0, 3, 1, 1, 1, 1, 1, 1, 2), "kernel sizes"),
    ((2, 4, 6, 6, 8, 3, 3, -1, 1, 1, 1, 1, 1, 2), "pad"),
    ((2, 4, 6, 6, 8, 3, 3, 1, 1, 0, 1, 1, 1, 2), "stride and dilation"),
    ((2, 4, 6, 6, 8, 3, 3, 1, 1, 1, 1, 1, 0, 2), "stride and dilation"),
    ((2, 4, 2, 6, 8, 5, 3, 1, 1, 1, 1, 1, 1, 2), "larger than the padded input"),
    ((2, 4, 6, 6, 8, 3, 3, 1, 1, 1, 1, 1, 1 << 21, 2), "too large"),
    ((1 << 19, 1 << 19, 1 << 10, 1 << 10, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1), "too large"),
])
def test_bad_geometry_is_a_value_error(bad, match):
    # A ConvGeometry is checked once, when made; engine.kernels converts tuples through it.
    x, w, b, dy, y, ws = arrays()
    calls = [lambda: kernels.conv_geometry(bad), lambda: kernels.conv_workspace_size(bad),
             lambda: kernels.conv_forward(x, w, b, y, bad, ws)]
    if len(bad) == 14:
        calls.append(lambda: native.ConvGeometry(*bad))
    for call in calls:
        with pytest.raises(ValueError, match=match):
            call()


def test_geometry_fields_and_algorithms():
    g = native.ConvGeometry(2, 4, 6, 7, 8, 3, 1, pad_h=1, stride_w=2, group=2,
                            algo_fwd="winograd")
    assert (g.N, g.C, g.H, g.W, g.K, g.R, g.S, g.pad_h, g.pad_w, g.stride_h, g.stride_w,
            g.dil_h, g.dil_w, g.group) == g.astuple() == (2, 4, 6, 7, 8, 3, 1, 1, 0, 1, 2, 1, 1, 2)
    assert (g.P, g.Q, g.algo_fwd, g.algo_bwd_data) == (6, 4, "winograd", "auto")
    assert kernels.conv_geometry(g) is g and kernels.conv_tuple(g) == g.astuple()
    with pytest.raises(AttributeError):
        g.N = 3
    with pytest.raises(ValueError, match="auto, direct or winograd"):
        native.ConvGeometry(*g.astuple(), algo_bwd_data="fft")
    import pickle
    assert pickle.loads(pickle.dumps(g)) == g


def test_wrong_sizes_and_arrays_are_value_errors():
    x, w, b, dy, y, ws = arrays()
    g = geom(G0)
    cases = [
        (lambda: native.conv_forward(x[:1], w, b, y, g, ws), "x has"),
        (lambda: native.conv_forward(x, w[:1], b, y, g, ws), "weights has"),
        (lambda: native.conv_forward(x, w, b[:3], y, g, ws), "bias has"),
        (lambda: native.conv_forward(x, w, b, y[:1], g, ws), "y has"),
        (lambda: native.conv_forward(x, w, b, y.astype(np.float64), g, ws), "float32"),
        (lambda: native.conv_forward(x, w, b, np.asfortranarray(y), g, ws), "C-contiguous"),
        (lambda: native.conv_forward(x, w, b, y, g, np.zeros(ws.size, np.float64)), "workspace"),
        (lambda: native.conv_backward_data(dy[:1], w, x.copy(), g, ws), "dy has"),
        (lambda: native.conv_backward_data(dy, w, x[:1].copy(), g, ws), "dx has"),
        (lambda: native.conv_backward_weights(x, dy, w[:1].copy(), None, g, ws), "dw has"),
        (lambda: native.conv_backward_weights(x, dy, w.copy(), b[:2].copy(), g, ws), "db has"),
        (lambda: native.conv_kernel_name("forward", g), "op must be"),
    ]
    if "scalar" not in native.conv_kernel_name("fwd", g):
        # the blocked kernels need a layout workspace; the scalar one needs next to none
        cases.append((lambda: native.conv_forward(x, w, b, y, g, ws[:10]), "workspace has"))
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
    ro = y.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        native.conv_forward(x, w, b, ro, g, ws)
    # Nothing was written by the refused calls.
    y_before = y.copy()
    with pytest.raises(ValueError):
        native.conv_forward(x, w, b[:3], y, g, ws)
    assert np.array_equal(y, y_before, equal_nan=True)


# -- the layers -----------------------------------------------------------------------------------

def conv_text(body, kind="Convolution"):
    return (f'name: "c" type: "{kind}" convolution_param {{ {body} '
            f'weight_filler {{ type: "gaussian" std: 0.5 }} '
            f'bias_filler {{ type: "gaussian" std: 0.5 }} }}')


@pytest.mark.parametrize("algo", ["direct", "winograd", "auto"])
@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
@pytest.mark.parametrize("body, shape", [
    ("num_output: 20 kernel_size: 3 pad: 1", (2, 18, 9, 11)),
    ("num_output: 6 kernel_size: 3 pad: 1 stride: 2 group: 2", (3, 4, 7, 8)),
    ("num_output: 16 kernel_h: 5 kernel_w: 3 pad_h: 2 pad_w: 1 dilation: 2", (1, 3, 12, 9)),
    ("num_output: 12 kernel_size: 3 pad: 1 group: 12", (2, 12, 6, 7)),
    ("num_output: 9 kernel_size: 1 stride: 3", (2, 17, 8, 10)),
])
def test_layer_float32_native_matches_float64(monkeypatch, algo, kind, body, shape):
    # CREMA_CONV_ALGO forces the direct or the Winograd kernels (Winograd only where they apply:
    # 3x3, stride 1, no dilation, one group); auto follows conv_algorithm's per-ISA rule.
    monkeypatch.setenv("CREMA_CONV_ALGO", algo)
    x = np.random.default_rng(41).standard_normal(shape)
    runs = {}
    for dtype in (np.float32, np.float64):
        layer = layer_from_text(conv_text(body, kind))
        bottom, top = run_forward(layer, [x, x[::-1].copy()], dtype=dtype, seed=43)
        for i, t in enumerate(top):
            t.diff[...] = np.random.default_rng(47 + i).standard_normal(t.shape)
        layer.backward(top, [True, True], bottom)
        layer.backward(top, [True, True], bottom)  # parameter diffs accumulate
        runs[dtype] = (layer, [t.data.copy() for t in top], [b.diff.copy() for b in bottom],
                       [p.diff.copy() for p in layer.blobs])
    layer32, layer64 = runs[np.float32][0], runs[np.float64][0]
    assert layer64.kernel.startswith("numpy")
    assert set(layer32.kernels) == {"forward", "backward_data", "backward_weights"}
    winograd_applies = kernels.winograd_available(layer32.native_geometry)
    for op, name in (("fwd", "forward"), ("bwd_data", "backward_data"),
                     ("bwd_weights", "backward_weights")):
        if kind == "Deconvolution":  # its passes are the convolution's, swapped
            name = {"forward": "backward_data", "backward_data": "forward"}.get(name, name)
        want = layer32.algorithm[op]
        if algo == "direct" or not winograd_applies:
            assert want == "direct", (op, want)
        elif algo == "winograd":
            assert want == "winograd", (op, want)
        else:  # auto: the per-ISA rule's choice
            assert want in ("direct", "winograd"), (op, want)
        assert algorithm_of(layer32.kernels[name]) == want, (op, layer32.kernels)
    for got_list, want_list, what in zip(runs[np.float32][1:], runs[np.float64][1:],
                                         ("top data", "bottom diff", "param diff")):
        for i, (got, want) in enumerate(zip(got_list, want_list)):
            assert got.dtype == np.float32
            scale = np.abs(want).max() + 1.0
            err = np.abs(got - want)
            if not (err <= 2e-4 * scale).all():
                pos = tuple(int(v) for v in np.argwhere(err > 2e-4 * scale)[0])
                raise AssertionError(f"{kind} {body}: {what} [{i}] differs at {pos}: "
                                     f"{got[pos]} vs {want[pos]}")


def test_conv_algorithm_choice(monkeypatch):
    g_wino = (2, 16, 12, 12, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1)
    g_other = [(2, 16, 12, 12, 16, 3, 3, 1, 1, 2, 2, 1, 1, 1),   # stride 2
               (2, 16, 12, 12, 16, 3, 3, 2, 2, 1, 1, 2, 2, 1),   # dilation 2
               (2, 16, 12, 12, 16, 3, 3, 1, 1, 1, 1, 1, 1, 2),   # groups
               (2, 16, 12, 12, 16, 5, 5, 2, 2, 1, 1, 1, 1, 1),   # 5x5
               (2, 16, 12, 12, 16, 3, 3, 3, 3, 1, 1, 1, 1, 1)]   # pad 3
    for g in g_other:
        assert not kernels.winograd_available(g)
        for mode in ("auto", "winograd", "direct"):
            monkeypatch.setenv("CREMA_CONV_ALGO", mode)
            assert kernels.conv_algorithm(g, "fwd") == "direct"
    monkeypatch.setenv("CREMA_CONV_ALGO", "bogus")
    with pytest.raises(ValueError, match="CREMA_CONV_ALGO"):
        kernels.conv_algorithm(g_wino, "fwd")
    monkeypatch.setenv("CREMA_CONV_ALGO", "auto")
    with pytest.raises(ValueError, match="op must be"):
        kernels.conv_algorithm(g_wino, "forward")
    if not kernels.winograd_available(g_wino):  # a build without the Winograd kernels
        assert kernels.conv_algorithm(g_wino, "fwd") == "direct"
        return
    monkeypatch.setenv("CREMA_CONV_ALGO", "direct")
    for op in kernels.CONV_OPS:
        assert kernels.conv_algorithm(g_wino, op) == "direct"
    monkeypatch.setenv("CREMA_CONV_ALGO", "winograd")
    for op in kernels.CONV_OPS:
        assert kernels.conv_algorithm(g_wino, op) == "winograd"
    with monkeypatch.context() as m:
        m.setenv("CREMA_KERNELS", "reference")
        assert kernels.conv_algorithm(g_wino, "fwd") == "direct"


def conv3x3(c, k, hw):
    return (4, c, hw, hw, k, 3, 3, 1, 1, 1, 1, 1, 1, 1)


@pytest.mark.parametrize("isa, want", [
    # (C, K, map) -> (forward, data gradient, weight gradient), from the measurements in
    # conv_common.cpp
    ("avx512", {(3, 32, 28): ("direct", "winograd", "direct"),
                (64, 64, 7): ("winograd", "winograd", "winograd"),
                (16, 16, 14): ("direct", "direct", "winograd"),
                (16, 16, 28): ("winograd", "winograd", "winograd"),
                (8, 64, 7): ("winograd", "winograd", "winograd"),
                (32, 3, 28): ("winograd", "direct", "winograd"),
                (512, 512, 7): ("winograd", "winograd", "direct")}),
    ("avx2", {(3, 32, 28): ("direct", "direct", "direct"),
              (8, 64, 28): ("direct", "direct", "direct"),
              (16, 16, 7): ("direct", "direct", "winograd"),
              (16, 16, 14): ("winograd", "winograd", "winograd"),
              (64, 64, 7): ("winograd", "winograd", "winograd"),
              (512, 512, 7): ("winograd", "winograd", "direct")}),
])
def test_conv_algorithm_is_a_fixed_rule_per_isa(monkeypatch, isa, want):
    """No timing: the same geometry gets the same answer every time, set by the ISA in use."""
    reason = kernels.isa_skip_reason(isa)
    if reason is not None:
        pytest.skip(reason)
    monkeypatch.delenv("CREMA_CONV_ALGO", raising=False)
    with isa_cap(isa):
        for (c, k, hw), algos in want.items():
            g = conv3x3(c, k, hw)
            for _ in range(2):
                got = tuple(kernels.conv_algorithm(g, op) for op in kernels.CONV_OPS)
                assert got == algos, (isa, c, k, hw)


def test_adopted_conv_algorithm_choices_are_pinned(monkeypatch):
    """A parallel job's rank 0 choices win over the local rule (ranks on other CPUs or caps)."""
    monkeypatch.delenv("CREMA_CONV_ALGO", raising=False)
    monkeypatch.setattr(kernels, "_conv_algo_made", {})
    monkeypatch.setattr(kernels, "_conv_algo_pinned", {})
    g = conv3x3(64, 64, 14)
    local = kernels.conv_algorithm(g, "fwd")
    assert kernels.conv_algorithm_choices() == [((g[1:], "fwd"), local)]
    other = {"winograd": "direct", "direct": "winograd"}[local]
    kernels.adopt_conv_algorithm_choices([((g[1:], "fwd"), other)])
    assert kernels.conv_algorithm(g, "fwd") == other
    assert kernels.conv_algorithm((8,) + g[1:], "fwd") == other  # any batch size
    monkeypatch.setenv("CREMA_CONV_ALGO", "direct")  # an explicit force still wins
    assert kernels.conv_algorithm(g, "fwd") == "direct"


def test_layer_reference_env_and_propagate_down(monkeypatch):
    # CREMA_KERNELS=reference keeps float32 on numpy; propagate_down False leaves the bottom diff
    # alone and a frozen weight (no param_propagate_down) is not touched by the native path,
    # while the bias still gets its gradient.
    text = conv_text("num_output: 8 kernel_size: 3 pad: 1")
    x = np.random.default_rng(53).standard_normal((2, 5, 6, 7))
    monkeypatch.setenv("CREMA_KERNELS", "reference")
    layer = layer_from_text(text)
    run_forward(layer, [x], dtype=np.float32, seed=3)
    assert layer.kernel == "numpy"
    monkeypatch.delenv("CREMA_KERNELS")
    layer = layer_from_text(text)
    bottom, top = run_forward(layer, [x], dtype=np.float32, seed=3)
    assert layer.kernel.startswith(("direct_", "gemm_"))
    layer.param_propagate_down[0] = False  # what a net sets for lr_mult: 0
    top[0].diff[...] = 1.0
    bottom[0].diff[...] = 123.0
    layer.backward(top, [False], bottom)
    assert (bottom[0].diff == 123.0).all()
    assert (layer.blobs[0].diff == 0).all()
    np.testing.assert_allclose(layer.blobs[1].diff, np.full(8, 2 * 6 * 7), rtol=1e-6)
