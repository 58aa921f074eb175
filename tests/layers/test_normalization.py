"""LRN, MVN, BatchNorm, Scale, Bias: hand values, naive loops, gradient checks, errors."""
import math

import numpy as np
import pytest

import engine
from engine.blob import Blob
from engine.errors import LayerError
from engine.testing import check_gradient, layer_from_text, run_forward


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def forward(text, bottoms, phase=engine.TRAIN):
    layer = layer_from_text(text, phase=phase)
    _, top = run_forward(layer, [np.asarray(b, dtype=np.float64) for b in bottoms])
    return layer, top[0].data


# -- LRN -----------------------------------------------------------------------------------

def lrn_loop(x, size, alpha, beta, k, across):
    """Caffe's LRN written element by element."""
    n, c, h, w = x.shape
    half = (size - 1) // 2
    y = np.zeros_like(x)
    for i in range(n):
        for ch in range(c):
            for r in range(h):
                for q in range(w):
                    acc = 0.0
                    if across:
                        for cc in range(ch - half, ch + half + 1):
                            if 0 <= cc < c:
                                acc += x[i, cc, r, q] ** 2
                        scale = k + alpha / size * acc
                    else:
                        for rr in range(r - half, r + half + 1):
                            for qq in range(q - half, q + half + 1):
                                if 0 <= rr < h and 0 <= qq < w:
                                    acc += x[i, ch, rr, qq] ** 2
                        scale = 1.0 + alpha / (size * size) * acc  # Caffe: shift 1, k unused
                    y[i, ch, r, q] = x[i, ch, r, q] * scale ** (-beta)
    return y


def test_lrn_across_hand_values():
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    # alpha / n = 1: scales 1 + (1 + 4) = 6, 1 + (1 + 4 + 9) = 15, 1 + (4 + 9) = 14.
    _, y = forward('type: "LRN" lrn_param { local_size: 3 alpha: 3 beta: 0.5 k: 1 }', [x])
    np.testing.assert_allclose(y.ravel(), [1 / math.sqrt(6), 2 / math.sqrt(15), 3 / math.sqrt(14)])
    # Defaults (size 5, alpha 1, beta 0.75, k 1): every window holds all three channels.
    _, y = forward('type: "LRN"', [x])
    np.testing.assert_allclose(y.ravel(), np.array([1, 2, 3]) * (1 + 14 / 5) ** -0.75)


def test_lrn_within_channel_hand_values():
    x = np.ones((1, 1, 3, 3))
    # alpha / size^2 = 1, beta 1: centre 1 + 9, corners 1 + 4, edges 1 + 6. k is not used.
    _, y = forward('type: "LRN" lrn_param { local_size: 3 alpha: 9 beta: 1 k: 5 '
                   'norm_region: WITHIN_CHANNEL }', [x])
    expect = np.array([[1 / 5, 1 / 7, 1 / 5], [1 / 7, 1 / 10, 1 / 7], [1 / 5, 1 / 7, 1 / 5]])
    np.testing.assert_allclose(y[0, 0], expect)


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
@pytest.mark.parametrize("size", [1, 3, 5])
def test_lrn_matches_loop(region, size):
    x = rand((2, 4, 3, 5), seed=size)
    text = (f'type: "LRN" lrn_param {{ local_size: {size} alpha: 0.75 beta: 0.625 k: 2 '
            f'norm_region: {region} }}')
    _, y = forward(text, [x])
    np.testing.assert_allclose(y, lrn_loop(x, size, 0.75, 0.625, 2.0, region == "ACROSS_CHANNELS"),
                               rtol=1e-12)


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
@pytest.mark.parametrize("in_place", [False, True])
def test_lrn_gradient(region, in_place):
    text = (f'type: "LRN" lrn_param {{ local_size: 3 alpha: 0.9 beta: 0.75 k: 1.5 '
            f'norm_region: {region} }}')
    check_gradient(text, [rand((1, 4, 3, 3))], in_place=in_place)


def test_lrn_gradient_window_wider_than_input():
    check_gradient('type: "LRN" lrn_param { local_size: 5 alpha: 2 beta: 0.75 }',
                   [rand((2, 3, 1, 2))])
    check_gradient('type: "LRN" lrn_param { local_size: 5 alpha: 2 beta: 0.75 '
                   'norm_region: WITHIN_CHANNEL }', [rand((1, 1, 3, 2))])


def test_lrn_errors():
    with pytest.raises(LayerError, match="odd"):
        forward('type: "LRN" lrn_param { local_size: 4 }', [np.ones((1, 3, 2, 2))])
    with pytest.raises(LayerError, match="4 axes"):
        forward('type: "LRN"', [np.ones((2, 3))])


# -- MVN -----------------------------------------------------------------------------------

def test_mvn_hand_values():
    x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    _, y = forward('type: "MVN"', [x])
    # mean 2.5, biased variance 1.25; Caffe divides by sqrt(var) + eps.
    np.testing.assert_allclose(y.ravel(), (np.array([1, 2, 3, 4]) - 2.5) / (math.sqrt(1.25) + 1e-9))
    _, y = forward('type: "MVN" mvn_param { normalize_variance: false }', [x])
    np.testing.assert_allclose(y.ravel(), [-1.5, -0.5, 0.5, 1.5])


def test_mvn_across_channels_and_eps():
    x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 1, 2)
    _, y = forward('type: "MVN" mvn_param { eps: 0.5 }', [x])  # per channel: std 0.5
    np.testing.assert_allclose(y.ravel(), [-0.5, 0.5, -0.5, 0.5])
    _, y = forward('type: "MVN" mvn_param { across_channels: true eps: 0 }', [x])
    np.testing.assert_allclose(y.ravel(), (np.array([1, 2, 3, 4]) - 2.5) / math.sqrt(1.25))


@pytest.mark.parametrize("params", ["", "normalize_variance: false", "across_channels: true",
                                    "across_channels: true normalize_variance: false"])
@pytest.mark.parametrize("in_place", [False, True])
def test_mvn_gradient(params, in_place):
    check_gradient(f'type: "MVN" mvn_param {{ {params} }}', [rand((2, 3, 2, 2))],
                   in_place=in_place)


def test_mvn_2d_bottom():
    x = rand((3, 4))
    _, y = forward('type: "MVN"', [x])  # each (n, c) slice is a single value: y = 0
    np.testing.assert_allclose(y, 0.0)
    _, y = forward('type: "MVN" mvn_param { across_channels: true eps: 0 }', [x])
    np.testing.assert_allclose(y, (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True))


def test_mvn_rejects_scalar_bottom():
    with pytest.raises(LayerError):
        forward('type: "MVN"', [np.array(1.0)])


# -- BatchNorm -----------------------------------------------------------------------------

def bn_input():
    x = np.zeros((2, 2, 2))  # N=2, C=2, spatial 2: m = 4 values per channel
    x[:, 0, :] = [[1, 3], [5, 7]]   # mean 4, biased var 5, unbiased 20/3
    x[:, 1, :] = [[0, 0], [0, 4]]   # mean 1, biased var 3, unbiased 4
    return x


def test_batchnorm_train_forward_and_running_stats_by_hand():
    layer = layer_from_text('type: "BatchNorm" batch_norm_param { moving_average_fraction: 0.5 '
                            'eps: 0.1 }')
    x = bn_input()
    bottom, top = run_forward(layer, [x])
    assert [b.shape for b in layer.blobs] == [(2,), (2,), (1,)]
    expect = np.empty_like(x)
    expect[:, 0, :] = (x[:, 0, :] - 4) / math.sqrt(5 + 0.1)
    expect[:, 1, :] = (x[:, 1, :] - 1) / math.sqrt(3 + 0.1)
    np.testing.assert_allclose(top[0].data, expect)
    np.testing.assert_allclose(layer.blobs[2].data, [1.0])
    np.testing.assert_allclose(layer.blobs[0].data, [4.0, 1.0])
    np.testing.assert_allclose(layer.blobs[1].data, [20 / 3, 4.0])
    # Second batch: channel 0 [[0,0],[2,2]] (mean 1, unbiased var 4/3), channel 1 all 3 (var 0).
    x2 = np.zeros((2, 2, 2))
    x2[:, 0, :] = [[0, 0], [2, 2]]
    x2[:, 1, :] = 3
    bottom[0].data[...] = x2
    layer.forward(bottom, top)
    np.testing.assert_allclose(layer.blobs[2].data, [0.5 * 1 + 1])
    np.testing.assert_allclose(layer.blobs[0].data, [0.5 * 4 + 1, 0.5 * 1 + 3])
    np.testing.assert_allclose(layer.blobs[1].data, [0.5 * 20 / 3 + 4 / 3, 0.5 * 4 + 0])


def test_batchnorm_global_stats_forward_by_hand():
    layer = layer_from_text('type: "BatchNorm" batch_norm_param { eps: 0.1 }', phase=engine.TEST)
    layer.blobs = [Blob.from_array(np.array([3.0, -1.5])), Blob.from_array(np.array([14 / 3, 3.0])),
                   Blob.from_array(np.array([1.5]))]
    x = bn_input()
    _, top = run_forward(layer, [x])
    assert layer.use_global_stats  # TEST default
    # Stored statistics are divided by the scale factor: mean (2, -1), variance (28/9, 2).
    expect = np.empty_like(x)
    expect[:, 0, :] = (x[:, 0, :] - 2) / math.sqrt(28 / 9 + 0.1)
    expect[:, 1, :] = (x[:, 1, :] + 1) / math.sqrt(2 + 0.1)
    np.testing.assert_allclose(top[0].data, expect)
    np.testing.assert_allclose(layer.blobs[0].data, [3.0, -1.5])  # unchanged in this mode


def test_batchnorm_zero_scale_factor_means_zero_statistics():
    layer = layer_from_text('type: "BatchNorm" batch_norm_param { use_global_stats: true }')
    x = bn_input()
    _, top = run_forward(layer, [x])  # fresh blobs: all zero, scale factor 0
    np.testing.assert_allclose(top[0].data, x / math.sqrt(1e-5), rtol=1e-6)


def test_batchnorm_use_global_stats_false_in_test_phase_updates():
    layer = layer_from_text('type: "BatchNorm" batch_norm_param { use_global_stats: false }',
                            phase=engine.TEST)
    run_forward(layer, [bn_input()])
    np.testing.assert_allclose(layer.blobs[2].data, [1.0])


def test_batchnorm_forces_lr_mult_zero():
    layer = layer_from_text('type: "BatchNorm"')
    run_forward(layer, [bn_input()])
    assert layer.param_lr_mults_forced_zero is True
    assert [p.lr_mult for p in layer.param.param] == [0.0, 0.0, 0.0]
    layer = layer_from_text('type: "BatchNorm" param { lr_mult: 0 } param { lr_mult: 0 }')
    run_forward(layer, [bn_input()])
    assert len(layer.param.param) == 3
    layer = layer_from_text('type: "BatchNorm" param { lr_mult: 0 } param { lr_mult: 1 }')
    with pytest.raises(LayerError, match="lr_mult"):
        run_forward(layer, [bn_input()])


def test_batchnorm_1d_and_2d_bottoms():
    layer, y = forward('type: "BatchNorm" batch_norm_param { eps: 0 }', [[1.0, 3.0]])
    assert layer.blobs[0].shape == (1,)
    np.testing.assert_allclose(y, [-1.0, 1.0])
    x = rand((4, 3))
    _, y = forward('type: "BatchNorm" batch_norm_param { eps: 0 }', [x])
    np.testing.assert_allclose(y, (x - x.mean(0)) / x.std(0))


@pytest.mark.parametrize("in_place", [False, True])
def test_batchnorm_gradient_train(in_place):
    # Each forward of the check updates the running statistics, which the TRAIN output does
    # not read: only the bottom gradient is defined (Caffe computes no parameter gradients).
    check_gradient('type: "BatchNorm"', [rand((3, 2, 2, 2))], check_params=False,
                   in_place=in_place)


@pytest.mark.parametrize("in_place", [False, True])
def test_batchnorm_gradient_global_stats(in_place):
    layer = layer_from_text('type: "BatchNorm" batch_norm_param { use_global_stats: true }')
    layer.blobs = [Blob.from_array(np.array([0.4, -0.2])), Blob.from_array(np.array([1.2, 0.6])),
                   Blob.from_array(np.array([2.0]))]
    check_gradient(layer, [rand((2, 2, 3))], check_params=False, in_place=in_place)


def test_batchnorm_errors():
    layer = layer_from_text('type: "BatchNorm"')
    layer.blobs = [Blob.from_array(np.zeros(3)), Blob.from_array(np.zeros(3)),
                   Blob.from_array(np.zeros(1))]
    with pytest.raises(LayerError, match="needs 2"):
        run_forward(layer, [bn_input()])
    layer = layer_from_text('type: "BatchNorm"')
    bottom, top = run_forward(layer, [bn_input()])
    with pytest.raises(LayerError, match="channels"):
        layer.reshape([Blob.from_array(np.zeros((2, 3, 2)))], top)


# -- Scale ---------------------------------------------------------------------------------

def test_scale_hand_values_one_bottom_with_bias():
    layer = layer_from_text('type: "Scale" scale_param { bias_term: true }')
    x = np.arange(12.0).reshape(2, 3, 2)
    bottom, top = run_forward(layer, [x])
    assert [b.shape for b in layer.blobs] == [(3,), (3,)]
    np.testing.assert_array_equal(top[0].data, x)  # default filler 1, bias filler 0
    layer.blobs[0].data[...] = [1.0, -2.0, 0.5]
    layer.blobs[1].data[...] = [10.0, 0.0, -1.0]
    layer.forward(bottom, top)
    expect = x * np.array([1.0, -2.0, 0.5])[None, :, None] + np.array([10.0, 0, -1])[None, :, None]
    np.testing.assert_allclose(top[0].data, expect)


def test_scale_two_bottoms_and_axes():
    x = np.arange(24.0).reshape(2, 3, 4)
    s = np.arange(12.0).reshape(3, 4)
    _, y = forward('type: "Scale"', [x, s])
    np.testing.assert_allclose(y, x * s[None])
    s0 = np.array([2.0, -1.0])
    _, y = forward('type: "Scale" scale_param { axis: 0 }', [x, s0])
    np.testing.assert_allclose(y, x * s0[:, None, None])
    s_last = np.arange(4.0)
    _, y = forward('type: "Scale" scale_param { axis: -1 }', [x, s_last])
    np.testing.assert_allclose(y, x * s_last)
    _, y = forward('type: "Scale"', [x, np.array(3.0)])  # 0-axis scale: a scalar
    np.testing.assert_allclose(y, 3 * x)


def test_scale_num_axes_shapes():
    x = np.ones((2, 3, 4, 5))
    layer, _ = forward('type: "Scale" scale_param { num_axes: -1 }', [x])
    assert layer.blobs[0].shape == (3, 4, 5)
    layer, _ = forward('type: "Scale" scale_param { num_axes: 2 axis: 2 bias_term: true }', [x])
    assert [b.shape for b in layer.blobs] == [(4, 5), (4, 5)]
    layer, y = forward('type: "Scale" scale_param { num_axes: 0 filler { type: "constant" '
                       'value: 2 } bias_term: true }', [x])
    assert [b.shape for b in layer.blobs] == [(), ()]
    np.testing.assert_allclose(y, 2 * x)
    layer, _ = forward('type: "Scale" scale_param { bias_term: true }', [x, np.ones((3, 4))])
    assert [b.shape for b in layer.blobs] == [(3, 4)]


@pytest.mark.parametrize("params", ["", "bias_term: true bias_filler { type: \"gaussian\" }",
                                    "axis: 0 num_axes: 2", "num_axes: -1 bias_term: true",
                                    "num_axes: 0 bias_term: true"])
@pytest.mark.parametrize("in_place", [False, True])
def test_scale_gradient_one_bottom(params, in_place):
    text = f'type: "Scale" scale_param {{ filler {{ type: "gaussian" }} {params} }}'
    check_gradient(text, [rand((2, 3, 2))], in_place=in_place)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("in_place", [False, True])
def test_scale_gradient_two_bottoms(bias, in_place):
    text = f'type: "Scale" scale_param {{ bias_term: {str(bias).lower()} ' \
           'bias_filler { type: "gaussian" } }'
    check_gradient(text, [rand((2, 3, 2)), rand((3, 2), seed=1)], in_place=in_place)


def test_scale_gradient_whole_blob_scale():
    # scale covers every element of bottom[0] (Caffe's eltwise special case)
    check_gradient('type: "Scale" scale_param { axis: 0 num_axes: -1 filler { type: "gaussian" } }',
                   [rand((2, 3))])


def test_scale_param_diffs_accumulate():
    layer = layer_from_text('type: "Scale" scale_param { bias_term: true }')
    bottom, top = run_forward(layer, [np.ones((1, 2))])
    top[0].diff[...] = [[1.0, 2.0]]
    layer.backward(top, [True], bottom)
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, [2.0, 4.0])
    np.testing.assert_allclose(layer.blobs[1].diff, [2.0, 4.0])


def test_scale_errors():
    with pytest.raises(LayerError, match="shape"):
        forward('type: "Scale"', [np.ones((2, 3, 4)), np.ones((4,))])
    with pytest.raises(LayerError, match="num_axes"):
        forward('type: "Scale" scale_param { num_axes: -2 }', [np.ones((2, 3))])
    with pytest.raises(LayerError, match="extends past"):
        forward('type: "Scale" scale_param { num_axes: 3 }', [np.ones((2, 3))])
    with pytest.raises(LayerError, match="axis"):
        forward('type: "Scale" scale_param { axis: 5 }', [np.ones((2, 3))])
    layer = layer_from_text('type: "Scale"')
    layer.blobs = [Blob.from_array(np.ones(4))]  # preloaded scale of the wrong size
    with pytest.raises(LayerError, match="shape"):
        run_forward(layer, [np.ones((2, 3))])


# -- Bias ----------------------------------------------------------------------------------

def test_bias_hand_values():
    x = np.arange(6.0).reshape(2, 3)
    layer, y = forward('type: "Bias" bias_param { filler { type: "constant" value: 0.5 } }', [x])
    assert layer.blobs[0].shape == (3,)
    np.testing.assert_allclose(y, x + 0.5)
    _, y = forward('type: "Bias" bias_param { axis: 0 }', [x, [10.0, 20.0]])
    np.testing.assert_allclose(y, x + np.array([[10.0], [20.0]]))
    _, y = forward('type: "Bias"', [x, np.array(-1.0)])
    np.testing.assert_allclose(y, x - 1)


@pytest.mark.parametrize("params", ["", "num_axes: -1", "axis: 0 num_axes: 0", "axis: -1"])
@pytest.mark.parametrize("in_place", [False, True])
def test_bias_gradient_one_bottom(params, in_place):
    check_gradient(f'type: "Bias" bias_param {{ filler {{ type: "gaussian" }} {params} }}',
                   [rand((2, 3, 2))], in_place=in_place)


@pytest.mark.parametrize("in_place", [False, True])
def test_bias_gradient_two_bottoms(in_place):
    check_gradient('type: "Bias"', [rand((2, 3, 2)), rand((3,), seed=2)], in_place=in_place)


def test_bias_errors():
    with pytest.raises(LayerError, match="shape"):
        forward('type: "Bias"', [np.ones((2, 3)), np.ones((2,))])
    with pytest.raises(LayerError, match="num_axes"):
        forward('type: "Bias" bias_param { num_axes: -3 }', [np.ones((2, 3))])
    with pytest.raises(LayerError, match="extends past"):
        forward('type: "Bias" bias_param { axis: 1 num_axes: 2 }', [np.ones((2, 3))])
    with pytest.raises(LayerError, match="axis"):
        forward('type: "Bias" bias_param { axis: -4 }', [np.ones((2, 3))])
