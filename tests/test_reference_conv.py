"""engine/reference/conv.py, the convolution reference every numpy path runs (and the native
kernels' tests compare with): its forward against the loop-by-loop definition conv2d_forward on
random small geometries (groups and depthwise, pads, strides, dilation, 1x1, batches), its two
backward passes as the forward's exact adjoints (<conv(x), dy> = <x, bwd_data(dy)> = <w, bwd_w>,
and the bias gradient), the dtype it computes in, batch slicing, and the batched im2col/col2im it
is built on (engine/reference/im2col.py) against the per-image ones. Needs no native module."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.reference import conv as ref_conv
from engine.reference import im2col as ref_im2col


@st.composite
def geometries(draw):
    """(N, C, H, W, M, kh, kw, ph, pw, sh, sw, dh, dw, group), small enough for the loops."""
    group = draw(st.sampled_from([1, 1, 2, 3]))
    c = group * draw(st.integers(1, 3))
    m = group * draw(st.integers(1, 3))
    if draw(st.booleans()) and group == 1:  # depthwise: one channel per group
        group, m = c, c * draw(st.integers(1, 2))
    kh, kw = draw(st.sampled_from([1, 2, 3])), draw(st.sampled_from([1, 3, 5]))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ext_h, ext_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    h = draw(st.integers(max(1, ext_h - 2 * ph), max(1, ext_h - 2 * ph) + 6))
    w = draw(st.integers(max(1, ext_w - 2 * pw), max(1, ext_w - 2 * pw) + 6))
    n = draw(st.integers(1, 3))
    return (n, c, h, w, m, kh, kw, ph, pw, sh, sw, dh, dw, group)


# Written out by hand: 1x1 (plain and strided), groups with stride and pad, dilation, depthwise,
# a pad larger than the kernel needs, a kernel covering the whole padded input.
LISTED = [
    (2, 4, 5, 6, 3, 1, 1, 0, 0, 1, 1, 1, 1, 1),
    (1, 3, 7, 6, 2, 1, 1, 0, 0, 2, 3, 1, 1, 1),
    (2, 4, 7, 6, 6, 3, 3, 1, 1, 2, 1, 1, 1, 2),
    (1, 3, 9, 8, 2, 3, 2, 2, 0, 2, 3, 2, 1, 1),
    (3, 6, 11, 10, 3, 5, 5, 3, 2, 3, 2, 1, 1, 3),
    (2, 4, 6, 5, 8, 3, 3, 1, 1, 1, 1, 2, 2, 4),
    (1, 2, 4, 3, 3, 2, 2, 3, 3, 1, 1, 1, 1, 1),
    (2, 2, 3, 3, 2, 5, 5, 1, 1, 1, 1, 1, 1, 1),
]


def split(g):
    """Shapes of x, w, dy, and the reference's keywords, of a geometry tuple."""
    n, c, h, w, m, kh, kw, ph, pw, sh, sw, dh, dw, group = g
    oh = ref_im2col.out_size(h, kh, ph, sh, dh)
    ow = ref_im2col.out_size(w, kw, pw, sw, dw)
    options = dict(pad=(ph, pw), stride=(sh, sw), dilation=(dh, dw), group=group)
    return (n, c, h, w), (m, c // group, kh, kw), (n, m, oh, ow), options


def inputs(g, seed, dtype=np.float64):
    x_shape, w_shape, y_shape, _ = split(g)
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(shape).astype(dtype)
                 for shape in (x_shape, w_shape, (w_shape[0],), y_shape))


def check_against_definition(g, seed):
    x, w, b, _ = inputs(g, seed)
    options = split(g)[3]
    want = ref_conv.conv2d_forward(x, w, b, **options)
    np.testing.assert_allclose(ref_conv.forward(x, w, b, **options), want, rtol=1e-12,
                               atol=1e-12, err_msg=f"geometry {g}")
    np.testing.assert_allclose(ref_conv.forward(x, w, None, **options),
                               ref_conv.conv2d_forward(x, w, None, **options), rtol=1e-12,
                               atol=1e-12, err_msg=f"geometry {g}, no bias")


def check_adjoint(g, seed):
    x, w, b, dy = inputs(g, seed)
    x_shape, w_shape, _, options = split(g)
    y = ref_conv.forward(x, w, None, **options)
    dx = ref_conv.backward_data(dy, w, x_shape[2:], **options)
    dw, db = ref_conv.backward_weights(x, dy, w_shape[2:], **options)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
    lhs = np.vdot(y, dy)
    np.testing.assert_allclose(np.vdot(x, dx), lhs, rtol=1e-10, atol=1e-12, err_msg=str(g))
    np.testing.assert_allclose(np.vdot(w, dw), lhs, rtol=1e-10, atol=1e-12, err_msg=str(g))
    # The bias term is linear in b: <conv(x) + b - conv(x), dy> = <b, db>.
    np.testing.assert_allclose(np.vdot(ref_conv.forward(x, w, b, **options) - y, dy),
                               np.vdot(b, db), rtol=1e-10, atol=1e-12, err_msg=str(g))


@pytest.mark.parametrize("g", LISTED)
def test_forward_matches_the_loop_definition_listed(g):
    check_against_definition(g, 3)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(g=geometries(), seed=st.integers(0, 2**31 - 1))
def test_forward_matches_the_loop_definition_random(g, seed):
    check_against_definition(g, seed)


@pytest.mark.parametrize("g", LISTED)
def test_backward_passes_are_the_adjoints_listed(g):
    check_adjoint(g, 5)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(g=geometries(), seed=st.integers(0, 2**31 - 1))
def test_backward_passes_are_the_adjoints_random(g, seed):
    check_adjoint(g, seed)


def test_data_gradient_takes_the_input_size_a_stride_leaves_open():
    # kernel 3, stride 2: H = 7 and H = 8 both give 3 output rows; the row H = 8 adds is read by
    # no tap, so its gradient is 0 and the rest equals the H = 7 gradient.
    rng = np.random.default_rng(7)
    w = rng.standard_normal((2, 3, 3, 3))
    dy = rng.standard_normal((1, 2, 3, 3))
    options = dict(stride=(2, 2))
    dx7 = ref_conv.backward_data(dy, w, (7, 7), **options)
    dx8 = ref_conv.backward_data(dy, w, (8, 8), **options)
    assert dx7.shape == (1, 3, 7, 7) and dx8.shape == (1, 3, 8, 8)
    np.testing.assert_array_equal(dx8[..., :7, :7], dx7)
    assert not dx8[..., 7, :].any() and not dx8[..., :, 7].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_computes_in_the_arrays_dtype(dtype):
    g = LISTED[2]
    x, w, b, dy = inputs(g, 11, dtype)
    x_shape, w_shape, _, options = split(g)
    y = ref_conv.forward(x, w, b, **options)
    dx = ref_conv.backward_data(dy, w, x_shape[2:], **options)
    dw, db = ref_conv.backward_weights(x, dy, w_shape[2:], **options)
    assert {a.dtype for a in (y, dx, dw, db)} == {np.dtype(dtype)}
    # float32 accumulates in float32: close to the float64 result, not equal to it.
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, ref_conv.conv2d_forward(x, w, b, **options), rtol=tol, atol=tol)


def test_batch_slices_give_the_whole_batch_result(monkeypatch):
    # A column budget below one image's columns: one image per slice.
    g = (5, 4, 7, 6, 6, 3, 3, 1, 1, 1, 2, 1, 1, 2)
    x, w, b, dy = inputs(g, 13)
    x_shape, w_shape, _, options = split(g)

    def passes():
        return (ref_conv.forward(x, w, b, **options),
                ref_conv.backward_data(dy, w, x_shape[2:], **options),
                *ref_conv.backward_weights(x, dy, w_shape[2:], **options))

    whole = passes()
    monkeypatch.setattr(ref_conv, "COLUMN_BUDGET", 1)
    for got, want, what in zip(passes(), whole, ("y", "dx", "dw", "db")):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13, err_msg=what)


def test_empty_batch():
    g = (0, 2, 5, 5, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1)
    x, w, b, dy = inputs(g, 17)
    x_shape, w_shape, y_shape, options = split(g)
    assert ref_conv.forward(x, w, b, **options).shape == y_shape
    assert ref_conv.backward_data(dy, w, x_shape[2:], **options).shape == x_shape
    dw, db = ref_conv.backward_weights(x, dy, w_shape[2:], **options)
    assert not dw.any() and not db.any() and dw.shape == w_shape


@pytest.mark.parametrize("geometry", [
    (3, 6, 5, 3, 2, 1, 0, 2, 1, 1, 1),
    (2, 7, 7, 2, 2, 1, 1, 2, 2, 2, 2),
    (4, 4, 5, 1, 1, 0, 0, 1, 1, 1, 1),
])
def test_batched_im2col_and_col2im_are_the_per_image_ones(geometry):
    images = np.random.default_rng(19).standard_normal((2, 3) + geometry[:3])
    cols = ref_im2col.im2col(images, geometry)
    assert cols.shape[:2] == (2, 3)
    for index in np.ndindex(2, 3):
        np.testing.assert_array_equal(cols[index], ref_im2col.im2col(images[index], geometry))
    back = ref_im2col.col2im(cols, geometry)
    assert back.shape == images.shape
    for index in np.ndindex(2, 3):
        np.testing.assert_array_equal(back[index], ref_im2col.col2im(cols[index], geometry))
