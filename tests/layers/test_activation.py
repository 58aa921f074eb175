"""Neuron layers: hand-computed forwards, gradient checks (also in place), errors."""
import math

import numpy as np
import pytest

import engine
from engine.blob import Blob
from engine.errors import LayerError
from engine.testing import check_gradient, layer_from_text, run_forward

SHAPE = (2, 3, 2, 2)


def away_from_zero(shape=SHAPE, seed=0, lo=0.2, hi=1.5):
    """Data with |x| in [lo, hi] and mixed signs: no kinks inside a finite-difference step."""
    g = np.random.default_rng(seed)
    return g.uniform(lo, hi, shape) * g.choice([-1.0, 1.0], shape)


def forward(text, x, phase=engine.TRAIN, seed=None):
    layer = layer_from_text(text, phase=phase)
    _, top = run_forward(layer, [np.asarray(x, dtype=np.float64)], seed=seed)
    return layer, top[0].data


NEURON_TYPES = ["ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "Power", "Exp", "Log",
                "BNLL", "Threshold", "Dropout", "Clip", "Swish"]


@pytest.mark.parametrize("type_name", NEURON_TYPES)
def test_neuron_blob_count_contract(type_name):
    cls = engine.registry.layer_class(type_name)
    assert (cls.exact_num_bottom, cls.exact_num_top) == (1, 1)


# -- ReLU ----------------------------------------------------------------------------------

def test_relu_forward_hand_values():
    _, y = forward('type: "ReLU"', [[-2.0, -0.5, 0.0, 0.5, 3.0]])
    np.testing.assert_array_equal(y, [[0, 0, 0, 0.5, 3.0]])
    _, y = forward('type: "ReLU" relu_param { negative_slope: 0.1 }', [[-2.0, 0.0, 3.0]])
    np.testing.assert_allclose(y, [[-0.2, 0.0, 3.0]])


@pytest.mark.parametrize("slope", [0.0, 0.25])
@pytest.mark.parametrize("in_place", [False, True])
def test_relu_gradient(slope, in_place):
    check_gradient(f'type: "ReLU" relu_param {{ negative_slope: {slope} }}', [away_from_zero()],
                   in_place=in_place)


def test_relu_float32_matches_numpy():
    layer = layer_from_text('type: "ReLU" relu_param { negative_slope: 0.5 }')
    x = away_from_zero().astype(np.float32)
    _, top = run_forward(layer, [x], dtype=np.float32)
    assert top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, np.where(x > 0, x, 0.5 * x), rtol=1e-6)
    assert layer.kernel


# -- PReLU ---------------------------------------------------------------------------------

def test_prelu_forward_default_slope_and_blob_shape():
    x = np.array([[[[-4.0]], [[2.0]]], [[[1.0]], [[-1.0]]]])  # (2, 2, 1, 1)
    layer, y = forward('type: "PReLU"', x)
    assert layer.blobs[0].shape == (2,)
    np.testing.assert_allclose(layer.blobs[0].data, [0.25, 0.25])
    np.testing.assert_allclose(y.reshape(2, 2), [[-1.0, 2.0], [1.0, -0.25]])


def test_prelu_per_channel_slopes_hand_values():
    layer = layer_from_text('type: "PReLU"')
    bottom = [Blob.from_array(np.array([[-1.0, -2.0, 3.0]]))]  # 2-D bottom: C = 3
    top = [Blob(())]
    layer.setup(bottom, top)
    layer.blobs[0].data[...] = [0.1, 0.5, 2.0]
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, [[-0.1, -1.0, 3.0]])


def test_prelu_channel_shared_is_a_scalar_blob():
    layer, y = forward('type: "PReLU" prelu_param { channel_shared: true '
                       'filler { type: "constant" value: 0.5 } }', [[-2.0, 4.0, -6.0]])
    assert layer.blobs[0].shape == () and layer.blobs[0].count == 1
    np.testing.assert_allclose(y, [[-1.0, 4.0, -3.0]])


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("in_place", [False, True])
def test_prelu_gradient(shared, in_place):
    text = (f'type: "PReLU" prelu_param {{ channel_shared: {str(shared).lower()} '
            'filler { type: "uniform" min: 0.1 max: 0.6 } }')
    check_gradient(text, [away_from_zero()], in_place=in_place)


def test_prelu_gradient_2d_bottom():
    check_gradient('type: "PReLU"', [away_from_zero((3, 4))])


def test_prelu_errors():
    with pytest.raises(LayerError):
        forward('type: "PReLU"', [1.0, -1.0])  # 1-D bottom
    layer = layer_from_text('type: "PReLU"')
    layer.blobs = [Blob.from_array(np.array([0.1, 0.2]))]  # 2 slopes for 3 channels
    with pytest.raises(LayerError, match="3 channels"):
        run_forward(layer, [np.ones((1, 3))])


# -- ELU -----------------------------------------------------------------------------------

def test_elu_forward_hand_values():
    _, y = forward('type: "ELU" elu_param { alpha: 2 }', [[-math.log(2.0), 0.0, 1.5]])
    np.testing.assert_allclose(y, [[2 * (0.5 - 1), 0.0, 1.5]])


@pytest.mark.parametrize("in_place", [False, True])
def test_elu_gradient(in_place):
    check_gradient('type: "ELU" elu_param { alpha: 0.7 }', [away_from_zero()], in_place=in_place)


# -- Sigmoid, TanH -------------------------------------------------------------------------

def test_sigmoid_and_tanh_hand_values():
    x = [[0.0, math.log(3.0), -math.log(3.0)]]
    _, y = forward('type: "Sigmoid"', x)
    np.testing.assert_allclose(y, [[0.5, 0.75, 0.25]])
    _, y = forward('type: "TanH"', [[0.0, math.log(2.0), -math.log(2.0)]])
    np.testing.assert_allclose(y, [[0.0, 0.6, -0.6]])


def test_sigmoid_extreme_inputs_float32():
    layer = layer_from_text('type: "Sigmoid"')
    _, top = run_forward(layer, [np.array([-200.0, 200.0])], dtype=np.float32)
    np.testing.assert_array_equal(top[0].data, [0.0, 1.0])


@pytest.mark.parametrize("type_name", ["Sigmoid", "TanH"])
@pytest.mark.parametrize("in_place", [False, True])
def test_sigmoid_tanh_gradient(type_name, in_place):
    check_gradient(f'type: "{type_name}"', [away_from_zero()], in_place=in_place)


# -- AbsVal --------------------------------------------------------------------------------

def test_absval_forward_and_gradient():
    _, y = forward('type: "AbsVal"', [[-2.0, 0.0, 3.0]])
    np.testing.assert_array_equal(y, [[2.0, 0.0, 3.0]])
    check_gradient('type: "AbsVal"', [away_from_zero()])


def test_absval_rejects_in_place():
    with pytest.raises(LayerError, match="in-place"):
        check_gradient('type: "AbsVal"', [away_from_zero()], in_place=True)


# -- Power ---------------------------------------------------------------------------------

def test_power_forward_hand_values():
    _, y = forward('type: "Power" power_param { power: 2 scale: 3 shift: 1 }', [[1.0, -1.0, 0.0]])
    np.testing.assert_allclose(y, [[16.0, 4.0, 1.0]])
    _, y = forward('type: "Power" power_param { power: 0.5 scale: 2 }', [[2.0, 8.0]])
    np.testing.assert_allclose(y, [[2.0, 4.0]])


def test_power_constant_cases_forward_and_zero_gradient():
    # power * scale == 0: output constant (1 for power 0, shift^power for scale 0), gradient 0.
    _, y = forward('type: "Power" power_param { power: 0 shift: 5 }', [[1.0, 2.0]])
    np.testing.assert_array_equal(y, [[1.0, 1.0]])
    _, y = forward('type: "Power" power_param { power: 3 scale: 0 shift: 2 }', [[1.0, 2.0]])
    np.testing.assert_array_equal(y, [[8.0, 8.0]])
    check_gradient('type: "Power" power_param { power: 3 scale: 0 shift: 2 }', [away_from_zero()])


@pytest.mark.parametrize("params", [
    "power: 1 scale: -2 shift: 0.5",     # gradient = scale
    "power: 2 scale: 1.5 shift: -0.3",   # special case 2 scale (shift + scale x)
    "power: 2 scale: 0.5",               # power 2, no shift
    "power: 3 scale: 0.8",               # shift 0: power * y / x
    "power: -1.5 scale: 0.5 shift: 2",   # general form (base stays positive)
])
@pytest.mark.parametrize("in_place", [False, True])
def test_power_gradient(params, in_place):
    check_gradient(f'type: "Power" power_param {{ {params} }}', [away_from_zero()],
                   in_place=in_place)


# -- Exp -----------------------------------------------------------------------------------

def test_exp_forward_hand_values():
    _, y = forward('type: "Exp"', [[0.0, 1.0]])
    np.testing.assert_allclose(y, [[1.0, math.e]])
    _, y = forward('type: "Exp" exp_param { base: 2 scale: 3 shift: 1 }', [[0.0, 1.0, -1.0]])
    np.testing.assert_allclose(y, [[2.0, 16.0, 0.25]])


@pytest.mark.parametrize("params", ["", "base: 2 scale: 0.5 shift: -1", "base: 0.5 scale: -1.2"])
@pytest.mark.parametrize("in_place", [False, True])
def test_exp_gradient(params, in_place):
    check_gradient(f'type: "Exp" exp_param {{ {params} }}', [away_from_zero()], in_place=in_place)


@pytest.mark.parametrize("base", ["0", "-2"])
def test_exp_bad_base(base):
    with pytest.raises(LayerError, match="base"):
        forward(f'type: "Exp" exp_param {{ base: {base} }}', [1.0])


# -- Log -----------------------------------------------------------------------------------

def test_log_forward_hand_values():
    _, y = forward('type: "Log"', [[1.0, math.e]])
    np.testing.assert_allclose(y, [[0.0, 1.0]])
    _, y = forward('type: "Log" log_param { base: 2 scale: 2 shift: 4 }', [[0.0, 2.0, -1.5]])
    np.testing.assert_allclose(y, [[2.0, 3.0, 0.0]])


@pytest.mark.parametrize("params", ["", "base: 10 scale: 2 shift: 4", "base: 0.5 scale: -1 shift: 3"])
@pytest.mark.parametrize("in_place", [False, True])
def test_log_gradient(params, in_place):
    x = away_from_zero()
    if not params:
        x = np.abs(x)  # log(x) needs x > 0
    check_gradient(f'type: "Log" log_param {{ {params} }}', [x], in_place=in_place)


@pytest.mark.parametrize("base", ["0", "-3", "1"])
def test_log_bad_base(base):
    with pytest.raises(LayerError, match="base"):
        forward(f'type: "Log" log_param {{ base: {base} }}', [1.0])


# -- BNLL ----------------------------------------------------------------------------------

def test_bnll_forward_hand_values_and_no_overflow():
    _, y = forward('type: "BNLL"', [[0.0, math.log(3.0), -math.log(3.0), 1000.0, -1000.0]])
    np.testing.assert_allclose(y, [[math.log(2.0), math.log(4.0), math.log(4.0 / 3.0), 1000.0, 0.0]],
                               atol=1e-12)


@pytest.mark.parametrize("in_place", [False, True])
def test_bnll_gradient(in_place):
    check_gradient('type: "BNLL"', [away_from_zero(hi=3.0)], in_place=in_place)


def test_bnll_backward_large_input_is_finite():
    layer = layer_from_text('type: "BNLL"')
    bottom, top = run_forward(layer, [np.array([100.0, -100.0])])
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, [1.0, 0.0], atol=1e-40)


# -- Threshold -----------------------------------------------------------------------------

def test_threshold_forward_hand_values():
    _, y = forward('type: "Threshold" threshold_param { threshold: 0.5 }', [[0.2, 0.5, 0.7, -3.0]])
    np.testing.assert_array_equal(y, [[0.0, 0.0, 1.0, 0.0]])
    _, y = forward('type: "Threshold"', [[0.0, 1e-9, -1e-9]])
    np.testing.assert_array_equal(y, [[0.0, 1.0, 0.0]])


def test_threshold_backward():
    layer = layer_from_text('type: "Threshold"')
    bottom, top = run_forward(layer, [np.array([1.0, -1.0])])
    bottom[0].diff[...] = 7.0
    layer.backward(top, [False], bottom)  # nothing requested: nothing done
    np.testing.assert_array_equal(bottom[0].diff, [7.0, 7.0])
    with pytest.raises(LayerError, match="no gradient"):
        layer.backward(top, [True], bottom)


# -- Dropout -------------------------------------------------------------------------------

def test_dropout_train_forward_mask_and_scale():
    x = np.arange(1.0, 2001.0).reshape(4, 500)
    layer, y = forward('type: "Dropout" dropout_param { dropout_ratio: 0.25 }', x, seed=3)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.75)
    assert abs(kept.mean() - 0.75) < 0.05  # 2000 Bernoulli(0.75) draws
    _, y2 = forward('type: "Dropout" dropout_param { dropout_ratio: 0.25 }', x, seed=3)
    np.testing.assert_array_equal(y, y2)  # the seed fixes the mask
    _, y3 = forward('type: "Dropout" dropout_param { dropout_ratio: 0.25 }', x, seed=4)
    assert not np.array_equal(y, y3)


def test_dropout_test_phase_is_identity():
    x = away_from_zero()
    _, y = forward('type: "Dropout"', x, phase=engine.TEST)
    np.testing.assert_array_equal(y, x)
    layer = layer_from_text('type: "Dropout"', phase=engine.TEST)
    bottom, top = run_forward(layer, [x])
    top[0].diff[...] = x
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, x)


def test_dropout_ratio_zero_is_identity_in_train():
    x = away_from_zero()
    _, y = forward('type: "Dropout" dropout_param { dropout_ratio: 0 }', x, seed=1)
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("in_place", [False, True])
def test_dropout_gradient_train(in_place):
    check_gradient('type: "Dropout" dropout_param { dropout_ratio: 0.4 }', [away_from_zero()],
                   in_place=in_place)


def test_dropout_gradient_test_phase():
    layer = layer_from_text('type: "Dropout"', phase=engine.TEST)
    check_gradient(layer, [away_from_zero()], in_place=True)


@pytest.mark.parametrize("ratio", ["1", "1.5", "-0.1"])
def test_dropout_bad_ratio(ratio):
    with pytest.raises(LayerError, match="dropout_ratio"):
        forward(f'type: "Dropout" dropout_param {{ dropout_ratio: {ratio} }}', [1.0])


# -- Clip ----------------------------------------------------------------------------------

def test_clip_forward_hand_values():
    _, y = forward('type: "Clip" clip_param { min: -1 max: 2 }', [[-3.0, -1.0, 0.5, 2.0, 5.0]])
    np.testing.assert_array_equal(y, [[-1.0, -1.0, 0.5, 2.0, 2.0]])


def test_clip_gradient_passes_on_the_inclusive_range():
    layer = layer_from_text('type: "Clip" clip_param { min: -1 max: 2 }')
    bottom, top = run_forward(layer, [np.array([-3.0, -1.0, 0.5, 2.0, 5.0])])
    top[0].diff[...] = [1.0, 2.0, 3.0, 4.0, 5.0]
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [0.0, 2.0, 3.0, 4.0, 0.0])


@pytest.mark.parametrize("in_place", [False, True])
def test_clip_gradient(in_place):
    x = away_from_zero()
    x[np.abs(np.abs(x) - 0.8) < 0.05] = 0.5  # keep away from the clip points +-0.8
    check_gradient('type: "Clip" clip_param { min: -0.8 max: 0.8 }', [x], in_place=in_place)


@pytest.mark.parametrize("params", ["min: -1", "max: 1", "min: 2 max: 1"])
def test_clip_bad_params(params):
    with pytest.raises(LayerError, match="clip_param"):
        forward(f'type: "Clip" clip_param {{ {params} }}', [1.0])


# -- Swish ---------------------------------------------------------------------------------

def test_swish_forward_hand_values():
    _, y = forward('type: "Swish"', [[0.0, math.log(3.0)]])
    np.testing.assert_allclose(y, [[0.0, 0.75 * math.log(3.0)]])
    _, y = forward('type: "Swish" swish_param { beta: 2 }', [[math.log(3.0) / 2]])
    np.testing.assert_allclose(y, [[0.75 * math.log(3.0) / 2]])


@pytest.mark.parametrize("beta", [1.0, 2.5])
@pytest.mark.parametrize("in_place", [False, True])
def test_swish_gradient(beta, in_place):
    check_gradient(f'type: "Swish" swish_param {{ beta: {beta} }}', [away_from_zero()],
                   in_place=in_place)


# -- diff semantics ------------------------------------------------------------------------

def test_prelu_param_diff_accumulates():
    layer = layer_from_text('type: "PReLU"')
    bottom, top = run_forward(layer, [np.array([[-1.0, -2.0]])])
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    first = layer.blobs[0].diff.copy()
    np.testing.assert_allclose(first, [-1.0, -2.0])
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * first)
