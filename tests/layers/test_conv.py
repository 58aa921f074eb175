"""Convolution, Deconvolution and Im2col: forward against the naive direct loop
(engine/reference/conv.py) and hand values, the conv/deconv adjoint identity, gradient checks, and
parameter errors."""
import numpy as np
import pytest

import engine
from engine.blob import Blob
from engine.errors import LayerError
from engine.reference.conv import conv2d_forward
from engine.testing import check_gradient, layer_from_text, run_forward

FILLERS = ('weight_filler { type: "gaussian" std: 0.5 } '
           'bias_filler { type: "uniform" min: -1 max: 1 }')


def conv_text(params, kind="Convolution"):
    return f'name: "c" type: "{kind}" convolution_param {{ {params} {FILLERS} }}'


def apply(layer, bottoms, weights=None, n_top=1, dtype=np.float64):
    """setup (then overwrite the parameter data with `weights`), reshape, forward."""
    bottom = [Blob.from_array(np.asarray(b, dtype=dtype)) for b in bottoms]
    top = [Blob((), dtype=dtype) for _ in range(n_top)]
    layer.setup(bottom, top)
    if weights is not None:
        for blob, w in zip(layer.blobs, weights):
            blob.data[...] = w
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return bottom, top


# (convolution_param text, bottom shape, pad, stride, dilation, group) -- the geometry the
# reference gets is written out here by hand, independently of the layer's parsing.
GEOMETRIES = [
    ("num_output: 4 kernel_size: 3 pad: 1", (3, 3, 7, 5), (1, 1), (1, 1), (1, 1), 1),
    ("num_output: 6 kernel_size: 3 pad: 1 stride: 2 group: 2", (1, 4, 9, 7), (1, 1), (2, 2),
     (1, 1), 2),
    ("num_output: 3 kernel_size: 5 pad: 2 stride: 3 bias_term: false", (2, 2, 11, 10), (2, 2),
     (3, 3), (1, 1), 1),
    ("num_output: 6 kernel_size: 3 pad: 2 dilation: 2 group: 3", (2, 3, 7, 8), (2, 2), (1, 1),
     (2, 2), 3),
    ("num_output: 2 kernel_size: 1", (3, 5, 4, 3), (0, 0), (1, 1), (1, 1), 1),
    ("num_output: 2 kernel_size: 1 stride: 2", (1, 3, 5, 5), (0, 0), (2, 2), (1, 1), 1),
    ("num_output: 3 kernel_h: 3 kernel_w: 1 pad_h: 1 stride_h: 2 stride_w: 1", (3, 2, 7, 5),
     (1, 0), (2, 1), (1, 1), 1),
    ("num_output: 2 kernel_size: 2 kernel_size: 3 pad: 0 pad: 1 stride: 1 stride: 2 "
     "dilation: 1 dilation: 2", (1, 2, 6, 9), (0, 1), (1, 2), (1, 2), 1),
    ("num_output: 4 kernel_size: 3 stride: 2 group: 2 force_nd_im2col: true", (3, 2, 5, 7),
     (0, 0), (2, 2), (1, 1), 2),
]


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-4), (np.float64, 1e-10)])
@pytest.mark.parametrize("params,shape,pad,stride,dilation,group", GEOMETRIES)
def test_convolution_matches_direct_loop(params, shape, pad, stride, dilation, group, dtype,
                                         tol):
    x = np.random.default_rng(3).standard_normal(shape)
    layer = layer_from_text(conv_text(params))
    _, top = run_forward(layer, [x], dtype=dtype, seed=11)
    assert top[0].data.dtype == dtype
    weight = layer.blobs[0].data
    bias = layer.blobs[1].data if len(layer.blobs) > 1 else None
    expected = conv2d_forward(x.astype(dtype), weight, bias, pad, stride, dilation, group)
    assert top[0].shape == expected.shape
    np.testing.assert_allclose(top[0].data, expected, rtol=tol, atol=tol)


def test_convolution_output_size_formula():
    # (H + 2p - (d(k-1)+1)) / s + 1 by hand: H=11, k=3, p=1, s=2, d=2: (11 + 2 - 5) / 2 + 1 = 5;
    # W=8: (8 + 2 - 5) / 2 + 1 = 3 (integer division of 5 / 2).
    layer = layer_from_text(conv_text("num_output: 7 kernel_size: 3 pad: 1 stride: 2 dilation: 2"))
    _, top = run_forward(layer, [np.zeros((2, 3, 11, 8))])
    assert top[0].shape == (2, 7, 5, 3)
    assert layer.blobs[0].shape == (7, 3, 3, 3) and layer.blobs[1].shape == (7,)


def test_convolution_hand_value():
    # 1 channel 3x3 input, 2x2 kernel [[1, 0], [0, -1]], bias 0.5: y = x[i,j] - x[i+1,j+1] + .5
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    layer = layer_from_text(conv_text("num_output: 1 kernel_size: 2"))
    _, top = apply(layer, [x], weights=[np.array([[[[1.0, 0.0], [0.0, -1.0]]]]), [0.5]])
    np.testing.assert_allclose(top[0].data, [[[[-3.5, -3.5], [-3.5, -3.5]]]])


def test_convolution_channel_axis_and_multiple_bottoms():
    # axis 2 of a 5-D blob: the two leading axes form the batch.
    rng = np.random.default_rng(5)
    x1 = rng.standard_normal((2, 2, 3, 5, 4))
    x2 = rng.standard_normal((2, 2, 3, 5, 4))
    layer = layer_from_text(conv_text("num_output: 2 kernel_size: 3 pad: 1 axis: 2"))
    _, top = run_forward(layer, [x1, x2], n_top=2, seed=2)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    for x, t in ((x1, top[0]), (x2, top[1])):
        expected = conv2d_forward(x.reshape(4, 3, 5, 4), w, b, (1, 1))
        assert t.shape == (2, 2, 2, 5, 4)
        np.testing.assert_allclose(t.data.reshape(4, 2, 5, 4), expected, atol=1e-10)


@pytest.mark.parametrize("params,shape", [
    ("num_output: 2 kernel_size: 3 pad: 1 stride: 2 group: 2", (2, 4, 5, 4)),
    ("num_output: 2 kernel_h: 2 kernel_w: 3 dilation: 2 pad: 1 bias_term: false", (1, 2, 5, 6)),
    ("num_output: 3 kernel_size: 1", (2, 2, 3, 3)),
])
def test_convolution_gradient(params, shape):
    x = np.random.default_rng(7).standard_normal(shape)
    check_gradient(conv_text(params), [x])


def test_convolution_gradient_two_bottoms_share_weights():
    rng = np.random.default_rng(8)
    xs = [rng.standard_normal((1, 2, 4, 4)) for _ in range(2)]
    check_gradient(conv_text("num_output: 2 kernel_size: 3 pad: 1"), xs, n_top=2)


def test_convolution_parameter_diffs_accumulate():
    x = np.random.default_rng(9).standard_normal((1, 2, 4, 4))
    layer = layer_from_text(conv_text("num_output: 2 kernel_size: 3"))
    bottom, top = apply(layer, [x])
    top[0].diff[...] = 1.0
    layer.backward(top, [False], bottom)
    once = [p.diff.copy() for p in layer.blobs]
    layer.backward(top, [False], bottom)
    for p, g in zip(layer.blobs, once):
        np.testing.assert_allclose(p.diff, 2 * g)
    assert np.all(bottom[0].diff == 0)  # propagate_down False: bottom diff untouched


# -- Deconvolution ------------------------------------------------------------------------------

@pytest.mark.parametrize("params,shape", [
    ("kernel_size: 3 pad: 1 stride: 2", (2, 3, 7, 7)),
    ("kernel_size: 3 pad: 1 stride: 2 group: 2", (1, 4, 5, 9)),
    ("kernel_h: 3 kernel_w: 2 dilation: 2 stride_h: 1 stride_w: 2", (2, 2, 6, 7)),
])
def test_deconvolution_is_the_adjoint_of_convolution(params, shape):
    # <conv(x), y> = <x, deconv(y)> with the same weight blob (M, C/g, kh, kw), no bias; the
    # geometries are chosen so that deconv(conv-sized input) has exactly x's shape.
    rng = np.random.default_rng(13)
    x = rng.standard_normal(shape)
    c = shape[1]
    conv = layer_from_text(conv_text(f"num_output: 4 bias_term: false {params}"))
    _, ctop = run_forward(conv, [x], seed=4)
    y = rng.standard_normal(ctop[0].shape)
    deconv = layer_from_text(conv_text(f"num_output: {c} bias_term: false {params}",
                                       "Deconvolution"))
    _, dtop = apply(deconv, [y], weights=[conv.blobs[0].data])
    assert deconv.blobs[0].shape == conv.blobs[0].shape
    assert dtop[0].shape == x.shape
    lhs = float(np.sum(ctop[0].data * y))
    rhs = float(np.sum(x * dtop[0].data))
    assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(lhs))


def test_deconvolution_hand_value():
    # Stride 1, 2x2 input [[1,2],[3,4]], one 2x2 kernel [[1,10],[100,1000]]: each input pixel
    # stamps value * kernel at its position: out[a,b] = sum x[i,j] w[a-i, b-j], plus bias 0.5.
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    w = np.array([[[[1.0, 10.0], [100.0, 1000.0]]]])
    layer = layer_from_text(conv_text("num_output: 1 kernel_size: 2", "Deconvolution"))
    _, top = apply(layer, [x], weights=[w, [0.5]])
    expected = np.array([[1, 12, 20],
                         [103, 1234, 2040],
                         [300, 3400, 4000]], dtype=float) + 0.5
    np.testing.assert_allclose(top[0].data[0, 0], expected)


def test_deconvolution_stride_two_stamps_blocks():
    # 2x2 kernel of ones, stride 2: every input pixel fills its own 2x2 block.
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    layer = layer_from_text(conv_text("num_output: 1 kernel_size: 2 stride: 2 bias_term: false",
                                      "Deconvolution"))
    _, top = apply(layer, [x], weights=[np.ones((1, 1, 2, 2))])
    np.testing.assert_allclose(top[0].data[0, 0], [[1, 1, 2, 2], [1, 1, 2, 2],
                                                   [3, 3, 4, 4], [3, 3, 4, 4]])


def test_deconvolution_shapes():
    # s(H-1) + d(k-1)+1 - 2p: H=4, k=3, s=2, p=1 -> 2*3 + 3 - 2 = 7; W=5, -> 2*4 + 3 - 2 = 9.
    layer = layer_from_text(conv_text("num_output: 6 kernel_size: 3 stride: 2 pad: 1 group: 2",
                                      "Deconvolution"))
    _, top = run_forward(layer, [np.zeros((2, 4, 4, 5))], dtype=np.float32)
    assert top[0].shape == (2, 6, 7, 9)
    assert layer.blobs[0].shape == (4, 3, 3, 3)  # (C_in, num_output/group, kh, kw)
    assert layer.blobs[1].shape == (6,)


@pytest.mark.parametrize("params,shape", [
    ("num_output: 2 kernel_size: 3 pad: 1 stride: 2", (2, 2, 3, 3)),
    ("num_output: 4 kernel_size: 2 group: 2 bias_term: false", (1, 2, 3, 2)),
])
def test_deconvolution_gradient(params, shape):
    x = np.random.default_rng(17).standard_normal(shape)
    check_gradient(conv_text(params, "Deconvolution"), [x])


# -- Im2col -------------------------------------------------------------------------------------

def naive_im2col(x, k, p, s, d):
    n, c, h, w = x.shape
    (kh, kw), (ph, pw), (sh, sw), (dh, dw) = k, p, s, d
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    out = np.zeros((n, c * kh * kw, oh, ow))
    for b in range(n):
        for ch in range(c):
            for i in range(kh):
                for j in range(kw):
                    for oy in range(oh):
                        for ox in range(ow):
                            yy, xx = oy * sh - ph + i * dh, ox * sw - pw + j * dw
                            if 0 <= yy < h and 0 <= xx < w:
                                out[b, (ch * kh + i) * kw + j, oy, ox] = x[b, ch, yy, xx]
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_layer_forward(dtype):
    x = np.random.default_rng(19).standard_normal((2, 3, 6, 5))
    layer = layer_from_text('name: "i" type: "Im2col" convolution_param { kernel_h: 3 kernel_w: 2 '
                            'pad_h: 1 pad_w: 0 stride_h: 2 stride_w: 1 }')
    _, top = run_forward(layer, [x], dtype=dtype)
    expected = naive_im2col(x, (3, 2), (1, 0), (2, 1), (1, 1))
    assert top[0].shape == (2, 18, 3, 4)
    np.testing.assert_allclose(top[0].data, expected.astype(dtype), atol=1e-6)


def test_im2col_layer_dilation_and_gradient():
    x = np.random.default_rng(23).standard_normal((1, 2, 5, 5))
    text = ('name: "i" type: "Im2col" convolution_param { kernel_size: 2 dilation: 2 pad: 1 '
            'stride: 2 }')
    _, top = run_forward(layer_from_text(text), [x])
    np.testing.assert_allclose(top[0].data, naive_im2col(x, (2, 2), (1, 1), (2, 2), (2, 2)))
    check_gradient(text, [x])


# -- errors -------------------------------------------------------------------------------------

def expect_error(text, shape, match=None, n_top=1):
    with pytest.raises(LayerError, match=match):
        run_forward(layer_from_text(text), [np.zeros(shape)] * n_top, n_top=n_top)


def test_error_kernel_bigger_than_padded_input():
    # H = 2, pad 1: padded 4 < kernel 5.
    expect_error(conv_text("num_output: 2 kernel_size: 5 pad: 1"), (1, 1, 2, 8), "bigger")
    expect_error(conv_text("num_output: 2 kernel_size: 3 dilation: 3"), (1, 1, 6, 8), "bigger")


def test_error_group_must_divide_channels_and_outputs():
    expect_error(conv_text("num_output: 4 kernel_size: 1 group: 2"), (1, 3, 4, 4), "divisible")
    expect_error(conv_text("num_output: 3 kernel_size: 1 group: 2"), (1, 4, 4, 4), "divisible")
    expect_error(conv_text("num_output: 3 kernel_size: 1 group: 0"), (1, 4, 4, 4), "group")


@pytest.mark.parametrize("text,shape", [
    (conv_text("num_output: 2 kernel_size: 3"), (1, 2, 4, 4, 4)),
    (conv_text("num_output: 2 kernel_size: 3 kernel_size: 3 kernel_size: 3"), (1, 2, 4, 4)),
    (conv_text("num_output: 2 kernel_size: 1 force_nd_im2col: true"), (1, 2, 4, 4, 4)),
    (conv_text("num_output: 2 kernel_size: 1 pad: 0 pad: 0 pad: 0"), (1, 2, 4, 4)),
    (conv_text("num_output: 2 kernel_size: 3"), (1, 2, 8)),
    (conv_text("num_output: 2 kernel_size: 3", "Deconvolution"), (1, 2, 4, 4, 4)),
    ('name: "i" type: "Im2col" convolution_param { kernel_size: 2 }', (1, 2, 4, 4, 4)),
])
def test_error_nd_convolution_refused(text, shape):
    expect_error(text, shape, "N-D convolution is not supported")


@pytest.mark.parametrize("params,match", [
    ("num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3", "not both"),
    ("num_output: 2 kernel_h: 3", "kernel_h and kernel_w"),
    ("num_output: 2 kernel_size: 3 stride: 2 stride_h: 2 stride_w: 2", "not both"),
    ("num_output: 2 kernel_size: 3 pad: 1 pad_h: 1", "not both"),
    ("num_output: 2", "kernel_size"),
    ("num_output: 2 kernel_size: 0", "positive"),
    ("num_output: 2 kernel_size: 3 stride: 0", "positive"),
    ("kernel_size: 3", "num_output"),
    ("num_output: 2 kernel_size: 3 axis: 4", "axis"),
])
def test_error_bad_convolution_parameters(params, match):
    expect_error(conv_text(params), (1, 2, 5, 5), match)


def test_error_deconvolution_output_not_positive():
    # s(H-1) + d(k-1)+1 - 2p with H = 1, k = 2, p = 1: 0 + 2 - 2 = 0 rows.
    expect_error(conv_text("num_output: 1 kernel_size: 2 pad: 1", "Deconvolution"), (1, 1, 1, 3),
                 "output size")


def test_error_preloaded_weights_wrong_shape_and_channel_change():
    layer = layer_from_text(conv_text("num_output: 2 kernel_size: 3"))
    layer.blobs = [Blob((2, 3, 3, 3)), Blob((2,))]
    with pytest.raises(LayerError, match="weight shape"):
        apply(layer, [np.zeros((1, 2, 5, 5))])
    layer = layer_from_text(conv_text("num_output: 2 kernel_size: 3"))
    bottom, top = apply(layer, [np.zeros((1, 2, 5, 5))])
    with pytest.raises(LayerError, match="channels"):
        layer.reshape([Blob((1, 3, 5, 5), dtype=np.float64)], top)


def test_preloaded_legacy_bias_shape_accepted():
    layer = layer_from_text(conv_text("num_output: 2 kernel_size: 1"))
    layer.blobs = [Blob.from_array(np.ones((2, 1, 1, 1))),
                   Blob.from_array(np.array([[[[1.0, 2.0]]]]))]
    _, top = apply(layer, [np.ones((1, 1, 2, 2))])
    np.testing.assert_allclose(top[0].data[0, :, 0, 0], [2.0, 3.0])
    assert layer.blobs[1].shape == (2,)


def test_kernel_name_reports_the_path():
    layer = layer_from_text(conv_text("num_output: 2 kernel_size: 3"))
    run_forward(layer, [np.zeros((1, 1, 4, 4))])
    assert layer.kernel == "numpy"  # float64 never goes native: the reference
    assert engine.kernels.native_available() in (True, False)


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
def test_float32_path_matches_float64_with_and_without_native_kernels(monkeypatch, native, kind):
    # float32 runs the native direct convolution when engine._kernels is built; without it (or
    # with CREMA_KERNELS=reference) the numpy reference. Both must agree with the float64 numpy path,
    # forward and backward.
    if not native:
        monkeypatch.setattr(engine.kernels, "_native", None)
    text = conv_text("num_output: 4 kernel_size: 3 pad: 1 stride: 2 group: 2", kind)
    rng = np.random.default_rng(29)
    x = rng.standard_normal((2, 2, 5, 6))
    results = {}
    for dtype in (np.float32, np.float64):
        layer = layer_from_text(text)
        bottom, top = run_forward(layer, [x], dtype=dtype, seed=31)
        top[0].diff[...] = np.random.default_rng(37).standard_normal(top[0].shape)
        layer.backward(top, [True], bottom)
        results[dtype] = (top[0].data, bottom[0].diff, layer.blobs[0].diff, layer.blobs[1].diff)
        if dtype == np.float32:
            # float32 runs the native (direct or GEMM) convolution kernels when they are built.
            if engine.kernels.native_available():
                assert layer.kernel.startswith(("direct_", "gemm_")), layer.kernel
            else:
                assert layer.kernel == "numpy"
    for a, b in zip(results[np.float32], results[np.float64]):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    if not native:
        assert not engine.kernels.native_available()
