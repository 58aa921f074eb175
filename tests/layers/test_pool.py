"""Pooling and SPP: Caffe's output-size formula by hand, forward against the loop reference
(engine/reference/pool.py) and hand values, argmax tops, stochastic pooling, gradient checks and
parameter errors."""
import numpy as np
import pytest

import engine
from engine.blob import Blob
from engine.errors import LayerError
from engine.reference import pool as ref
from engine.testing import check_gradient, layer_from_text, run_forward


def pool_text(params):
    return f'name: "p" type: "Pooling" pooling_param {{ {params} }}'


def spp_text(params):
    return f'name: "s" type: "SPP" spp_param {{ {params} }}'


def distinct(shape, seed=0):
    """Values that are all different and at least 0.1 apart (no ties, no kinks for MAX)."""
    n = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(n) * 0.1 - n * 0.05).reshape(shape)


def out_shape(params, shape, phase=engine.TRAIN):
    layer = layer_from_text(pool_text(params), phase=phase)
    _, top = run_forward(layer, [np.zeros(shape)])
    return top[0].shape


# -- output sizes (computed by hand from Caffe's formula) ---------------------------------------

def test_output_size_37x53_kernel3_stride2():
    # ceil((37 - 3) / 2) + 1 = 17 + 1 = 18; ceil((53 - 3) / 2) + 1 = 25 + 1 = 26.
    assert out_shape("kernel_size: 3 stride: 2", (1, 1, 37, 53)) == (1, 1, 18, 26)


@pytest.mark.parametrize("params,shape,expected", [
    # H=6, k=3, s=2, p=1: ceil((6+2-3)/2)+1 = ceil(2.5)+1 = 4; (4-1)*2 = 6 >= 6+1? no -> 4
    # (the last window starts at 3*2-1 = 5 < 6, inside the image: no clip).
    ("kernel_size: 3 stride: 2 pad: 1", (1, 1, 6, 6), (1, 1, 4, 4)),
    # H=5, k=2, s=2, p=1: ceil((5+2-2)/2)+1 = ceil(2.5)+1 = 4; (4-1)*2 = 6 >= 5+1 -> clip to 3
    # (the 4th window would start at 3*2-1 = 5 = H, entirely in the padding).
    ("kernel_size: 2 stride: 2 pad: 1", (1, 1, 5, 5), (1, 1, 3, 3)),
    # H=3, k=2, s=2, p=1: ceil(3/2)+1 = 3; (3-1)*2 = 4 >= 3+1 -> 2.
    # W=4: ceil(4/2)+1 = 3; (3-1)*2 = 4 >= 4+1? no -> 3.
    ("kernel_size: 2 stride: 2 pad: 1", (1, 1, 3, 4), (1, 1, 2, 3)),
    # FLOOR, H=5, k=2, s=2, p=1: floor(5/2)+1 = 3; 4 >= 6? no -> 3.
    ("kernel_size: 2 stride: 2 pad: 1 round_mode: FLOOR", (1, 1, 5, 5), (1, 1, 3, 3)),
    # FLOOR, H=6, k=3, s=2: floor(3/2)+1 = 2 (CEIL would give ceil(1.5)+1 = 3).
    ("kernel_size: 3 stride: 2 round_mode: FLOOR", (1, 1, 6, 6), (1, 1, 2, 2)),
    ("kernel_size: 3 stride: 2", (1, 1, 6, 6), (1, 1, 3, 3)),
    # The clip rule runs on both axes when either pad is non-zero (Caffe's `if (pad_h || pad_w)`):
    # H=5, kh=1, sh=3, ph=0: ceil(4/3)+1 = 3; (3-1)*3 = 6 >= 5+0 -> 2.
    # W=5, kw=2, sw=2, pw=1: ceil(5/2)+1 = 4; 6 >= 6 -> 3.
    ("kernel_h: 1 kernel_w: 2 stride_h: 3 stride_w: 2 pad_h: 0 pad_w: 1", (1, 1, 5, 5),
     (1, 1, 2, 3)),
    # Rectangular kernel, no pad: H=7, kh=3, sh=2: ceil(4/2)+1 = 3; W=8, kw=2, sw=3:
    # ceil(6/3)+1 = 3.
    ("kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3", (2, 3, 7, 8), (2, 3, 3, 3)),
])
def test_output_sizes_by_hand(params, shape, expected):
    assert out_shape(params, shape) == expected
    assert out_shape("pool: AVE " + params, shape) == expected


def test_reference_pooled_size_matches_hand_values():
    assert ref.pooled_size(37, 3, 0, 2) == 18
    assert ref.pooled_size(5, 2, 1, 2) == 3
    assert ref.pooled_size(6, 3, 0, 2, ceil_mode=False) == 2


# -- MAX / AVE against the loop reference -------------------------------------------------------

REF_CASES = [
    # (params, shape, kernel, pad, stride)
    ("kernel_size: 3 stride: 2", (2, 3, 7, 9), (3, 3), (0, 0), (2, 2)),
    ("kernel_size: 3 stride: 2 pad: 1", (1, 2, 6, 5), (3, 3), (1, 1), (2, 2)),
    ("kernel_size: 2 stride: 2 pad: 1", (2, 2, 5, 3), (2, 2), (1, 1), (2, 2)),
    ("kernel_size: 3 stride: 2 round_mode: FLOOR", (1, 2, 6, 7), (3, 3), (0, 0), (2, 2)),
    ("kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0", (1, 2, 4, 7),
     (3, 2), (1, 0), (1, 2)),
    ("kernel_size: 2 stride: 3", (1, 1, 8, 8), (2, 2), (0, 0), (3, 3)),
    # stride > kernel: ceil(4/3)+1 = 3 windows at 0, 3, 6; the last starts past H = 5 and is
    # empty (MAX: -FLT_MAX with mask -1, as Caffe; AVE: 0).
    ("kernel_size: 1 stride: 3", (1, 1, 5, 5), (1, 1), (0, 0), (3, 3)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("params,shape,kernel,pad,stride", REF_CASES)
def test_max_and_ave_match_reference(params, shape, kernel, pad, stride, dtype):
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    layer = layer_from_text(pool_text("pool: MAX " + params))
    _, top = run_forward(layer, [x], n_top=2, dtype=dtype)
    pooled = top[0].shape[2:]
    want, mask = ref.max_pool_forward(x, kernel, pad, stride, pooled)
    np.testing.assert_array_equal(top[0].data, want)
    np.testing.assert_array_equal(top[1].data, mask)

    layer = layer_from_text(pool_text("pool: AVE " + params))
    _, top = run_forward(layer, [x], dtype=dtype)
    want = ref.ave_pool_forward(x.astype(np.float64), kernel, pad, stride, pooled)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("params,shape,kernel,pad,stride", REF_CASES[:3])
def test_backward_matches_reference(params, shape, kernel, pad, stride):
    x = distinct(shape, seed=2)
    dy_rng = np.random.default_rng(3)
    for method in ("MAX", "AVE"):
        layer = layer_from_text(pool_text(f"pool: {method} " + params))
        bottom, top = run_forward(layer, [x])
        top[0].diff[...] = dy_rng.standard_normal(top[0].shape)
        layer.backward(top, [True], bottom)
        if method == "MAX":
            _, mask = ref.max_pool_forward(x, kernel, pad, stride, top[0].shape[2:])
            want = ref.max_pool_backward(top[0].diff, mask, shape)
        else:
            want = ref.ave_pool_backward(top[0].diff, shape, kernel, pad, stride)
        np.testing.assert_allclose(bottom[0].diff, want, atol=1e-12)


def test_ave_divisor_counts_padding_by_hand():
    # 2x2 input, k=2, s=2, p=1 -> 2x2 output; every window is 2x2 in the padded input (size 4)
    # but holds a single pixel: out = x / 4.
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    _, top = run_forward(layer_from_text(pool_text("pool: AVE kernel_size: 2 stride: 2 pad: 1")),
                         [x])
    np.testing.assert_allclose(top[0].data[0, 0], [[0.25, 0.5], [0.75, 1.0]])
    # 4x4 ones, k=3, s=2, p=1 -> ceil(3/2)+1 = 3 per axis (clip: 4 >= 5? no). Windows along an
    # axis: [-1, 2) size 3 holding 2 pixels; [1, 4) size 3 holding 3; [3, 6) clipped at
    # H + p = 5 to [3, 5): size 2 holding 1 pixel.
    _, top = run_forward(layer_from_text(pool_text("pool: AVE kernel_size: 3 stride: 2 pad: 1")),
                         [np.ones((1, 1, 4, 4))])
    expected = [[4 / 9, 6 / 9, 2 / 6],
                [6 / 9, 9 / 9, 3 / 6],
                [2 / 6, 3 / 6, 1 / 4]]
    np.testing.assert_allclose(top[0].data[0, 0], expected)


def test_max_argmax_top_by_hand():
    x = np.array([[[[1.0, 5.0, 2.0],
                    [7.0, 3.0, 9.0],
                    [4.0, 8.0, 6.0]]]])
    _, top = run_forward(layer_from_text(pool_text("kernel_size: 2 stride: 1")), [x], n_top=2)
    np.testing.assert_array_equal(top[0].data[0, 0], [[7, 9], [8, 9]])
    # flat index h*W + w: 7 at (1,0) -> 3, 9 at (1,2) -> 5, 8 at (2,1) -> 7.
    np.testing.assert_array_equal(top[1].data[0, 0], [[3, 5], [7, 5]])
    # With padding 1, k=2, s=2 over the same 3x3: ceil((3+2-2)/2)+1 = 3; (3-1)*2 = 4 >= 4 -> 2.
    # Windows rows [-1,1) and [1,3): top-left holds only x[0,0] = 1 (index 0).
    _, top = run_forward(layer_from_text(pool_text("kernel_size: 2 stride: 2 pad: 1")), [x],
                         n_top=2)
    np.testing.assert_array_equal(top[0].data[0, 0], [[1, 5], [7, 9]])
    np.testing.assert_array_equal(top[1].data[0, 0], [[0, 1], [3, 5]])


def test_max_ties_take_the_first_in_row_major_order():
    x = np.array([[[[2.0, 2.0], [2.0, 2.0]]]])
    layer = layer_from_text(pool_text("kernel_size: 2"))
    bottom, top = run_forward(layer, [x], n_top=2)
    assert top[1].data.item() == 0.0
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff[0, 0], [[1, 0], [0, 0]])


def test_global_pooling():
    x = np.random.default_rng(4).standard_normal((2, 3, 4, 5))
    _, top = run_forward(layer_from_text(pool_text("global_pooling: true")), [x])
    assert top[0].shape == (2, 3, 1, 1)
    np.testing.assert_allclose(top[0].data[..., 0, 0], x.max(axis=(2, 3)))
    _, top = run_forward(layer_from_text(pool_text("pool: AVE global_pooling: true")), [x])
    np.testing.assert_allclose(top[0].data[..., 0, 0], x.mean(axis=(2, 3)))
    check_gradient(pool_text("pool: AVE global_pooling: true"), [x[:1, :2]])


def test_global_pooling_follows_input_size_changes():
    layer = layer_from_text(pool_text("pool: AVE global_pooling: true"))
    bottom, top = run_forward(layer, [np.ones((1, 1, 3, 3))])
    bigger = [Blob.from_array(np.arange(20.0).reshape(1, 1, 4, 5))]
    layer.reshape(bigger, top)
    layer.forward(bigger, top)
    assert top[0].shape == (1, 1, 1, 1) and top[0].data.item() == pytest.approx(9.5)


# -- STOCHASTIC ---------------------------------------------------------------------------------

def test_stochastic_test_phase_by_hand():
    # Window [[1,2],[3,4]]: (1 + 4 + 9 + 16) / (1 + 2 + 3 + 4) = 30 / 10 = 3.
    # Window of zeros: 0 (Caffe starts the sum at FLT_MIN, so 0 / FLT_MIN = 0).
    # Window [[0,2],[0,0]]: 4 / 2 = 2.
    x = np.array([[[[1.0, 2.0, 0.0, 0.0],
                    [3.0, 4.0, 0.0, 0.0],
                    [0.0, 2.0, 5.0, 5.0],
                    [0.0, 0.0, 5.0, 5.0]]]])
    layer = layer_from_text(pool_text("pool: STOCHASTIC kernel_size: 2 stride: 2"),
                            phase=engine.TEST)
    _, top = run_forward(layer, [x])
    np.testing.assert_allclose(top[0].data[0, 0], [[3.0, 0.0], [2.0, 5.0]])


def test_stochastic_test_phase_gradient():
    x = np.random.default_rng(5).uniform(0.5, 2.0, (1, 2, 4, 5))
    layer = layer_from_text(pool_text("pool: STOCHASTIC kernel_size: 3 stride: 2"),
                            phase=engine.TEST)
    check_gradient(layer, [x])


def test_stochastic_train_gradient_goes_to_sampled_positions():
    # Non-overlapping 2x2 windows: each output is one of its window's values, and backward
    # puts exactly the top diff on that element and zero elsewhere.
    x = np.random.default_rng(6).uniform(0.1, 1.0, (2, 3, 6, 4))
    layer = layer_from_text(pool_text("pool: STOCHASTIC kernel_size: 2 stride: 2"))
    bottom, top = run_forward(layer, [x], seed=7)
    windows = x.reshape(2, 3, 3, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 3, 3, 2, 4)
    dy = np.random.default_rng(8).uniform(1.0, 2.0, top[0].shape)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    dwin = bottom[0].diff.reshape(2, 3, 3, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5) \
        .reshape(2, 3, 3, 2, 4)
    assert np.all((dwin != 0).sum(axis=-1) == 1)  # one sampled element per window
    picked = np.argmax(dwin != 0, axis=-1)
    np.testing.assert_array_equal(np.take_along_axis(windows, picked[..., None], -1)[..., 0],
                                  top[0].data)
    np.testing.assert_allclose(dwin.sum(axis=-1), dy)


def test_stochastic_train_samples_proportionally():
    # Window [0, 1, 3, 0]: the zeros are never drawn; 3 is drawn with probability 3/4.
    x = np.tile(np.array([[0.0, 1.0], [3.0, 0.0]]), (4000, 1, 1, 1))
    layer = layer_from_text(pool_text("pool: STOCHASTIC kernel_size: 2"))
    _, top = run_forward(layer, [x], seed=9)
    values = top[0].data.ravel()
    assert set(np.unique(values)) <= {1.0, 3.0}
    assert abs(np.mean(values == 3.0) - 0.75) < 0.03
    # the same seed gives the same draws
    _, again = run_forward(layer_from_text(pool_text("pool: STOCHASTIC kernel_size: 2")), [x],
                           seed=9)
    np.testing.assert_array_equal(again[0].data, top[0].data)


# -- gradient checks ----------------------------------------------------------------------------

@pytest.mark.parametrize("params,shape", [
    ("kernel_size: 3 stride: 2 pad: 1", (1, 2, 5, 4)),
    ("kernel_size: 2 stride: 1", (2, 1, 3, 4)),
    ("kernel_h: 2 kernel_w: 3 stride: 2 round_mode: FLOOR", (1, 2, 5, 6)),
])
def test_max_gradient(params, shape):
    check_gradient(pool_text(params), [distinct(shape, seed=10)])
    check_gradient(pool_text(params), [distinct(shape, seed=11)], n_top=2, top_indices=[0])


@pytest.mark.parametrize("params,shape", [
    ("pool: AVE kernel_size: 3 stride: 2 pad: 1", (1, 2, 5, 4)),
    ("pool: AVE kernel_size: 2 stride: 1", (2, 1, 3, 4)),
    ("pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 1",
     (1, 1, 6, 4)),
])
def test_ave_gradient(params, shape):
    check_gradient(pool_text(params), [np.random.default_rng(12).standard_normal(shape)])


# -- SPP ----------------------------------------------------------------------------------------

def test_spp_forward_by_levels():
    # Input 7x6, pyramid_height 3. Per level (bins = 2^l, kernel = ceil(H/bins),
    # pad = (kernel*bins - H + 1) / 2, stride = kernel), by hand:
    #   l=0: H: k=7, pad 0;        W: k=6, pad 0           -> 1x1
    #   l=1: H: k=4, pad (8-7+1)/2 = 1; W: k=3, pad (6-6+1)/2 = 0
    #        H out: ceil((7+2-4)/4)+1 = 3, (3-1)*4 = 8 >= 7+1 -> 2; W: (6-3)/3+1 = 2 -> 2x2
    #   l=2: H: k=2, pad (8-7+1)/2 = 1; W: k=2, pad (8-6+1)/2 = 1
    #        H: ceil(7/2)+1 = 5, 8 >= 8 -> 4; W: ceil(6/2)+1 = 4, 6 >= 7? no -> 4 -> 4x4
    x = distinct((2, 3, 7, 6), seed=13)
    levels = [((7, 6), (0, 0), (7, 6)), ((4, 3), (1, 0), (4, 3)), ((2, 2), (1, 1), (2, 2))]
    for method, fn in (("MAX", lambda *a: ref.max_pool_forward(*a)[0]),
                       ("AVE", ref.ave_pool_forward)):
        layer = layer_from_text(spp_text(f"pyramid_height: 3 pool: {method}"))
        _, top = run_forward(layer, [x])
        assert top[0].shape == (2, 3 * (1 + 4 + 16))
        parts = [fn(x, k, p, s, (2 ** l, 2 ** l)).reshape(2, -1)
                 for l, (k, p, s) in enumerate(levels)]
        np.testing.assert_allclose(top[0].data, np.concatenate(parts, axis=1), atol=1e-12)


def test_spp_height_one_is_global_pooling():
    x = np.random.default_rng(14).standard_normal((2, 3, 4, 5))
    _, top = run_forward(layer_from_text(spp_text("pyramid_height: 1")), [x])
    assert top[0].shape == (2, 3, 1, 1)  # Caffe: the lone pooling layer's own top
    np.testing.assert_allclose(top[0].data[..., 0, 0], x.max(axis=(2, 3)))


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_spp_gradient(method):
    check_gradient(spp_text(f"pyramid_height: 2 pool: {method}"), [distinct((1, 2, 5, 4), 15)])


# -- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("params,shape,match", [
    ("kernel_size: 3", (1, 1, 2, 5), "bigger than the padded input"),  # ceil(-1/1)+1 = 0 rows
    ("kernel_size: 2 pad: 2", (1, 1, 5, 5), "smaller than the kernel"),
    ("kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 2", (1, 1, 5, 5), "smaller than the kernel"),
    ("global_pooling: true kernel_size: 2", (1, 1, 4, 4), "global_pooling"),
    ("global_pooling: true pad: 1", (1, 1, 4, 4), "global_pooling"),
    ("global_pooling: true stride: 2", (1, 1, 4, 4), "global_pooling"),
    ("kernel_size: 2 kernel_h: 2 kernel_w: 2", (1, 1, 4, 4), "not both"),
    ("kernel_h: 2", (1, 1, 4, 4), "kernel_h and kernel_w"),
    ("stride: 1", (1, 1, 4, 4), "kernel_size"),
    ("kernel_size: 2 stride: 0", (1, 1, 4, 4), "positive"),
    ("kernel_size: 2 pad: 1 pad_h: 1 pad_w: 1", (1, 1, 4, 4), "not both"),
    ("pool: STOCHASTIC kernel_size: 3 pad: 1", (1, 1, 4, 4), "MAX and AVE"),
    ("kernel_size: 2", (1, 4, 4), "4 axes"),
])
def test_pooling_errors(params, shape, match):
    with pytest.raises(LayerError, match=match):
        run_forward(layer_from_text(pool_text(params)), [np.zeros(shape)])


def test_pooling_second_top_only_for_max():
    with pytest.raises(LayerError, match="second top"):
        run_forward(layer_from_text(pool_text("pool: AVE kernel_size: 2")),
                    [np.zeros((1, 1, 4, 4))], n_top=2)


@pytest.mark.parametrize("params,shape,match", [
    ("", (1, 1, 4, 4), "pyramid_height"),
    ("pyramid_height: 0", (1, 1, 4, 4), "pyramid_height"),
    ("pyramid_height: 2", (1, 4, 4), "4 axes"),
    # H=5 at level 2 (4 bins): kernel 2, pad (8-5+1)/2 = 2, not smaller than the kernel.
    ("pyramid_height: 3", (1, 1, 5, 8), "pyramid level 2"),
])
def test_spp_errors(params, shape, match):
    with pytest.raises(LayerError, match=match):
        run_forward(layer_from_text(spp_text(params)), [np.zeros(shape)])
