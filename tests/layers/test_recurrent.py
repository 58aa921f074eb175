"""Tests of the RNN and LSTM layers (Caffe 1.0 semantics, computed without an unrolled net)."""
import math

import numpy as np
import pytest

import engine
from engine.blob import Blob
from engine.errors import LayerError
from engine.reference import recurrent as ref
from engine.testing import check_gradient, layer_from_text, run_forward

FILL = ('weight_filler { type: "uniform" min: -0.8 max: 0.8 } '
        'bias_filler { type: "uniform" min: -0.5 max: 0.5 }')


def text(kind, num_output=3, expose=False, extra=FILL):
    return (f'name: "r" type: "{kind}" recurrent_param {{ num_output: {num_output} {extra}'
            + (' expose_hidden: true' if expose else '') + ' }')


def build(layer_text, bottoms, n_top=1, params=None, seed=7, dtype=np.float64):
    """setup (+ optional parameter overwrite) + reshape + forward; returns (layer, bottom, top)."""
    layer = layer_from_text(layer_text)
    bottom = [Blob.from_array(np.asarray(b, dtype=dtype)) for b in bottoms]
    top = [Blob((), dtype=dtype) for _ in range(n_top)]
    engine.set_random_seed(seed)
    layer.setup(bottom, top)
    if params is not None:
        assert [b.shape for b in layer.blobs] == [np.shape(p) for p in params]
        layer.blobs = [Blob.from_array(np.asarray(p, dtype=dtype)) for p in params]
    else:
        layer.blobs = [Blob.from_array(b.data.astype(dtype)) for b in layer.blobs]
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return layer, bottom, top


def forward(layer, bottoms, n_top=1):
    """Forward an already set-up layer on new bottoms (same parameters)."""
    bottom = [Blob.from_array(np.asarray(b, dtype=np.float64)) for b in bottoms]
    top = [Blob((), dtype=np.float64) for _ in range(n_top)]
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return [t.data.copy() for t in top]


def rand(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=shape)


CONT = np.array([[0, 0], [1, 0], [1, 1]], dtype=np.float64)  # T=3, N=2, with a mid-sequence reset


def reference(kind, layer, bottoms, static=False, exposed=False):
    p = [b.data for b in layer.blobs]
    x, cont = bottoms[0], bottoms[1]
    xs = bottoms[2] if static else None
    states = bottoms[2 + static:] if exposed else [None, None]
    if kind == "LSTM":
        w_xc, b_c = p[0], p[1]
        w_s = p[2] if static else None
        return ref.lstm_forward(x, cont, w_xc, b_c, p[-1], x_static=xs, w_xc_static=w_s,
                                h0=states[0], c0=states[1])
    s = 1 if static else 0
    return ref.rnn_forward(x, cont, p[0], p[1], p[2 + s], p[3 + s], p[4 + s], x_static=xs,
                           w_xh_static=p[2] if static else None, h0=states[0])


# -- forward against the independent reference loop -------------------------------------------

@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("static", [False, True])
def test_forward_matches_reference(kind, static):
    # x has trailing axes (T, N, 2, 2): the layers flatten from axis 2.
    bottoms = [rand(3, 2, 2, 2), CONT] + ([rand(2, 3, seed=1)] if static else [])
    layer, _, top = build(text(kind), bottoms)
    expected = reference(kind, layer, bottoms, static=static)
    assert top[0].shape == (3, 2, 3)
    np.testing.assert_allclose(top[0].data, expected[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_forward_expose_hidden_matches_reference(kind):
    n_states = 2 if kind == "LSTM" else 1
    states = [rand(1, 2, 3, seed=10 + j) for j in range(n_states)]
    cont = np.array([[1, 0], [1, 1], [0, 1]], dtype=np.float64)
    bottoms = [rand(3, 2, 2), cont, rand(2, 4, seed=3)] + states
    layer, _, top = build(text(kind, expose=True), bottoms, n_top=1 + n_states)
    expected = reference(kind, layer, bottoms, static=True, exposed=True)
    for k in range(1 + n_states):
        np.testing.assert_allclose(top[k].data, expected[k], rtol=1e-12, atol=1e-12)


def test_lstm_hand_computed():
    # T=2, N=1, H=1, D=1; gates i, f, o, g. Step 1 (cont 0, h_0 = c_0 = 0):
    #   a = W_xc x + b = (0.6, -0.1, 0.7, 1.25); c_1 = s(0.6) tanh(1.25) = 0.54770;
    #   h_1 = s(0.7) tanh(c_1) = 0.33329. Step 2 (cont 1, x = -2): a = W_xc x + b + W_hc h_1.
    params = [[[0.5], [-0.3], [0.8], [1.2]], [0.1, 0.2, -0.1, 0.05], [[0.4], [0.6], [-0.7], [0.9]]]
    x = np.array([1.0, -2.0]).reshape(2, 1, 1)
    cont = np.array([[0.0], [1.0]])
    _, _, top = build(text("LSTM", 1, expose=True),
                      [x, cont, np.zeros((1, 1, 1)), np.zeros((1, 1, 1))], n_top=3, params=params)

    def s(v):
        return 1.0 / (1.0 + math.exp(-v))
    a = [0.5 * -2.0 + 0.1 + 0.4 * 0.3332881755420841, -0.3 * -2.0 + 0.2 + 0.6 * 0.3332881755420841,
         0.8 * -2.0 - 0.1 - 0.7 * 0.3332881755420841, 1.2 * -2.0 + 0.05 + 0.9 * 0.3332881755420841]
    c2 = s(a[1]) * 0.5476996816067403 + s(a[0]) * math.tanh(a[3])
    h2 = s(a[2]) * math.tanh(c2)
    assert h2 == pytest.approx(0.011788035737152057, abs=1e-14)
    np.testing.assert_allclose(top[0].data.ravel(), [0.3332881755420841, 0.011788035737152057],
                               rtol=1e-12)
    np.testing.assert_allclose(top[1].data.ravel(), [0.011788035737152057], rtol=1e-12)
    np.testing.assert_allclose(top[2].data.ravel(), [0.09354230247481604], rtol=1e-12)


def test_rnn_hand_computed():
    # W_xh 0.7, b_h -0.2, W_hh 0.5, W_ho 1.5, b_o 0.3; x = (1, -2), cont = (0, 1):
    #   h_1 = tanh(0.5) = 0.462117, o_1 = tanh(1.5 h_1 + 0.3) = 0.758713,
    #   h_2 = tanh(-1.4 - 0.2 + 0.5 h_1) = -0.878451, o_2 = tanh(1.5 h_2 + 0.3) = -0.768918.
    params = [[[0.7]], [-0.2], [[0.5]], [[1.5]], [0.3]]
    x = np.array([1.0, -2.0]).reshape(2, 1, 1)
    cont = np.array([[0.0], [1.0]])
    _, _, top = build(text("RNN", 1, expose=True), [x, cont, np.full((1, 1, 1), 5.0)], n_top=2,
                      params=params)
    # h_0 = 5 is ignored: cont_1 = 0 starts a fresh sequence.
    np.testing.assert_allclose(top[0].data.ravel(), [0.7587132116630249, -0.768918294906365],
                               rtol=1e-12)
    np.testing.assert_allclose(top[1].data.ravel(), [-0.8784507187468975], rtol=1e-12)


# -- sequence semantics -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_cont_zero_resets_state(kind):
    x = rand(5, 2, 2)
    cont = np.array([[0, 0], [1, 1], [0, 0], [1, 1], [1, 1]], dtype=np.float64)
    layer, _, top = build(text(kind), [x, cont])
    (fresh,) = forward(layer, [x[2:], cont[2:]])
    np.testing.assert_allclose(top[0].data[2:], fresh, rtol=1e-13, atol=1e-13)
    # Without the reset the second part differs, so the test above is not vacuous.
    cont_no_reset = cont.copy()
    cont_no_reset[2] = 1
    (continued,) = forward(layer, [x, cont_no_reset])
    assert np.abs(continued[2:] - fresh).max() > 1e-3


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_x_static_changes_output(kind):
    x = rand(3, 2, 2)
    layer, _, top = build(text(kind), [x, CONT, rand(2, 3, seed=4)])
    (other,) = forward(layer, [x, CONT, rand(2, 3, seed=5)])
    assert np.abs(top[0].data - other).min() > 0.0
    assert np.abs(top[0].data - other).max() > 1e-3
    # Each stream's static input only affects that stream.
    xs = rand(2, 3, seed=4)
    xs2 = xs.copy()
    xs2[1] += 0.5
    (a,) = forward(layer, [x, CONT, xs])
    (b,) = forward(layer, [x, CONT, xs2])
    np.testing.assert_array_equal(a[:, 0], b[:, 0])
    assert np.abs(a[:, 1] - b[:, 1]).max() > 1e-3


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("static", [False, True])
def test_expose_hidden_split_equals_full_run(kind, static):
    n_states = 2 if kind == "LSTM" else 1
    x = rand(4, 2, 3)
    cont = np.array([[0, 0], [1, 1], [1, 1], [1, 0]], dtype=np.float64)
    xs = [rand(2, 2, seed=6)] if static else []
    zeros = [np.zeros((1, 2, 3))] * n_states
    layer, _, top = build(text(kind, expose=True), [x, cont] + xs + zeros, n_top=1 + n_states)
    full = [t.data.copy() for t in top]
    first = forward(layer, [x[:2], cont[:2]] + xs + zeros, 1 + n_states)
    second = forward(layer, [x[2:], cont[2:]] + xs + first[1:], 1 + n_states)
    np.testing.assert_allclose(np.concatenate([first[0], second[0]]), full[0], rtol=1e-13,
                               atol=1e-14)
    for k in range(1, 1 + n_states):
        np.testing.assert_allclose(second[k], full[k], rtol=1e-13, atol=1e-14)
    # Zero initial states give the same output as the layer without expose_hidden.
    plain, _, plain_top = build(text(kind), [x, cont] + xs)
    np.testing.assert_allclose(plain_top[0].data, full[0], rtol=1e-13, atol=1e-14)


def test_lstm_final_hidden_state_is_last_output():
    x = rand(3, 2, 2)
    zeros = [np.zeros((1, 2, 3))] * 2
    _, _, top = build(text("LSTM", expose=True), [x, CONT] + zeros, n_top=3)
    np.testing.assert_array_equal(top[1].data[0], top[0].data[-1])


def test_timesteps_may_change_between_reshapes():
    layer, _, top = build(text("LSTM"), [rand(3, 2, 2), CONT])
    (short,) = forward(layer, [rand(3, 2, 2)[:1], CONT[:1]])
    assert short.shape == (1, 2, 3)
    np.testing.assert_allclose(short, top[0].data[:1], rtol=1e-13)


def test_float32_run():
    layer, _, top = build(text("RNN"), [rand(3, 2, 2), CONT], dtype=np.float32)
    assert top[0].data.dtype == np.float32
    assert layer.kernel == "numpy"
    expected = reference("RNN", layer, [rand(3, 2, 2), CONT])
    np.testing.assert_allclose(top[0].data, expected[0], rtol=1e-5, atol=1e-6)


# -- parameters and fillers -------------------------------------------------------------------

def test_lstm_param_layout_and_fillers():
    layer, _, _ = build(text("LSTM", 3, extra='weight_filler { type: "constant" value: 0.25 }'),
                        [rand(3, 2, 2, 2), CONT, rand(2, 5)])
    assert [b.shape for b in layer.blobs] == [(12, 4), (12,), (12, 5), (12, 3)]
    for i in (0, 2, 3):
        assert np.all(layer.blobs[i].data == 0.25)
    assert np.all(layer.blobs[1].data == 0.0)  # default bias filler: constant 0


def test_rnn_param_layout_and_fillers():
    layer, _, _ = build(text("RNN", 2, extra='bias_filler { type: "constant" value: 0.5 }'),
                        [rand(3, 2, 4), CONT])
    assert [b.shape for b in layer.blobs] == [(2, 4), (2,), (2, 2), (2, 2), (2,)]
    for i in (0, 2, 3):
        assert np.all(layer.blobs[i].data == 0.0)  # default weight filler: constant 0
    for i in (1, 4):
        assert np.all(layer.blobs[i].data == 0.5)
    layer, _, _ = build(text("RNN", 2), [rand(3, 2, 4), CONT, rand(2, 1, 3)])
    assert [b.shape for b in layer.blobs] == [(2, 4), (2,), (2, 3), (2, 2), (2, 2), (2,)]


def test_fillers_repeat_with_seed():
    a, _, _ = build(text("LSTM"), [rand(3, 2, 2), CONT], seed=3)
    b, _, _ = build(text("LSTM"), [rand(3, 2, 2), CONT], seed=3)
    for pa, pb in zip(a.blobs, b.blobs):
        np.testing.assert_array_equal(pa.data, pb.data)
    assert np.abs(a.blobs[0].data).max() > 0


def test_blob_count_contract():
    lstm = layer_from_text(text("LSTM", expose=True))
    assert (lstm.min_bottom, lstm.max_bottom, lstm.exact_num_top) == (4, 5, 3)
    rnn = layer_from_text(text("RNN"))
    assert (rnn.min_bottom, rnn.max_bottom, rnn.exact_num_top) == (2, 3, 1)
    assert not rnn.allow_force_backward(1)
    assert rnn.allow_force_backward(0) and rnn.allow_force_backward(2)


# -- gradients (float64 central differences; cont is never checked) ---------------------------

GRAD_CONT = np.array([[1, 0], [1, 1], [0, 1]], dtype=np.float64)


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_gradient_plain(kind):
    check_gradient(text(kind, 3), [rand(3, 2, 2), GRAD_CONT], check_bottom=[0])


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_gradient_static(kind):
    check_gradient(text(kind, 2), [rand(3, 2, 2), GRAD_CONT, rand(2, 2, seed=2)],
                   check_bottom=[0, 2])


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("static", [False, True])
def test_gradient_expose_hidden(kind, static):
    n_states = 2 if kind == "LSTM" else 1
    xs = [rand(2, 2, seed=2)] if static else []
    states = [rand(1, 2, 2, seed=20 + j) for j in range(n_states)]
    offset = 2 + len(xs)
    check_gradient(text(kind, 2, expose=True), [rand(3, 2, 2), GRAD_CONT] + xs + states,
                   n_top=1 + n_states,
                   check_bottom=[0] + ([2] if static else [])
                   + list(range(offset, offset + n_states)))


def test_gradient_only_final_state_top():
    # The final states alone (top[0] out of the objective) still reach x and h_0/c_0.
    states = [rand(1, 2, 2, seed=30), rand(1, 2, 2, seed=31)]
    check_gradient(text("LSTM", 2, expose=True), [rand(3, 2, 1), GRAD_CONT] + states, n_top=3,
                   check_bottom=[0, 2, 3], top_indices=[1, 2])


def test_param_diffs_accumulate_and_respect_propagate_flags():
    layer, bottom, top = build(text("RNN", 2), [rand(3, 2, 2), GRAD_CONT])
    top[0].diff[...] = rand(3, 2, 2, seed=9)
    bottom[0].diff[...] = 7.0
    layer.backward(top, [False, False], bottom)
    once = [b.diff.copy() for b in layer.blobs]
    assert np.all(bottom[0].diff == 7.0)  # propagate_down False leaves the bottom diff alone
    layer.param_propagate_down[0] = False
    layer.backward(top, [True, False], bottom)
    np.testing.assert_array_equal(layer.blobs[0].diff, once[0])
    for i in range(1, len(once)):
        np.testing.assert_allclose(layer.blobs[i].diff, 2 * once[i], rtol=1e-14)


# -- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_cont_shape_mismatch(kind):
    layer = layer_from_text(text(kind))
    bottom = [Blob.from_array(rand(3, 2, 2)), Blob.from_array(np.ones((3, 1)))]
    with pytest.raises(LayerError) as info:
        layer.setup(bottom, [Blob(())])
    assert "(3, 1)" in str(info.value) and "(3, 2, 2)" in str(info.value)
    assert "cont" in str(info.value)
    with pytest.raises(LayerError) as info:
        layer_from_text(text(kind)).setup(
            [Blob.from_array(rand(3, 2, 2)), Blob.from_array(np.ones((3, 2, 1)))], [Blob(())])
    assert "(3, 2, 1)" in str(info.value) and "(3, 2, 2)" in str(info.value)


def test_cont_shape_mismatch_at_reshape():
    layer, bottom, top = build(text("LSTM"), [rand(3, 2, 2), CONT])
    with pytest.raises(LayerError, match="cont"):
        layer.reshape([Blob.from_array(rand(3, 2, 2)), Blob.from_array(np.ones((2, 2)))], top)


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("param", ["", "num_output: 0"])
def test_num_output_missing_or_zero(kind, param):
    layer = layer_from_text(f'name: "r" type: "{kind}" recurrent_param {{ {param} }}')
    with pytest.raises(LayerError, match="num_output"):
        layer.setup([Blob.from_array(rand(3, 2, 2)), Blob.from_array(CONT)], [Blob(())])


def test_x_needs_two_axes():
    layer = layer_from_text(text("RNN"))
    with pytest.raises(LayerError, match="at least 2 axes"):
        layer.setup([Blob.from_array(np.ones(3)), Blob.from_array(np.ones((3, 1)))], [Blob(())])


def test_x_static_stream_mismatch():
    layer = layer_from_text(text("LSTM"))
    with pytest.raises(LayerError, match="x_static"):
        layer.setup([Blob.from_array(rand(3, 2, 2)), Blob.from_array(CONT),
                     Blob.from_array(rand(3, 4))], [Blob(())])


def test_input_dim_change_rejected():
    layer, _, top = build(text("LSTM"), [rand(3, 2, 2), CONT])
    with pytest.raises(LayerError, match="W_xc"):
        layer.reshape([Blob.from_array(rand(3, 2, 5)), Blob.from_array(CONT)], top)


@pytest.mark.parametrize("kind,n_states", [("LSTM", 2), ("RNN", 1)])
def test_exposed_state_shape_mismatch(kind, n_states):
    layer = layer_from_text(text(kind, expose=True))
    states = [Blob.from_array(np.zeros((1, 2, 3)))] * (n_states - 1) + [
        Blob.from_array(np.zeros((1, 2, 4)))]
    bottom = [Blob.from_array(rand(3, 2, 2)), Blob.from_array(CONT)] + states
    top = [Blob(()) for _ in range(1 + n_states)]
    layer.setup(bottom, top)
    with pytest.raises(LayerError, match=r"\(1, 2, 4\)"):
        layer.reshape(bottom, top)


def test_wrong_bottom_and_top_counts():
    layer = layer_from_text(text("LSTM", expose=True))
    with pytest.raises(LayerError, match="bottoms"):
        layer.setup([Blob.from_array(rand(3, 2, 2)), Blob.from_array(CONT)], [Blob(())] * 3)
    layer = layer_from_text(text("RNN"))
    with pytest.raises(LayerError, match="tops"):
        layer.setup([Blob.from_array(rand(3, 2, 2)), Blob.from_array(CONT)],
                    [Blob(()), Blob(())])


def test_backward_to_cont_raises():
    layer, bottom, top = build(text("LSTM"), [rand(3, 2, 2), CONT])
    top[0].diff[...] = 1.0
    with pytest.raises(LayerError, match="cont"):
        layer.backward(top, [True, True], bottom)


def test_preloaded_blobs_checked():
    layer = layer_from_text(text("RNN", 2))
    layer.blobs = [Blob((2, 2)), Blob((2,))]
    with pytest.raises(LayerError, match="parameter blobs"):
        layer.setup([Blob.from_array(rand(3, 2, 2)), Blob.from_array(CONT)], [Blob(())])
    layer = layer_from_text(text("RNN", 2))
    layer.blobs = [Blob((2, 3)), Blob((2,)), Blob((2, 2)), Blob((2, 2)), Blob((2,))]
    with pytest.raises(LayerError, match=r"W_xh.*\(2, 2\)"):
        layer.setup([Blob.from_array(rand(3, 2, 2)), Blob.from_array(CONT)], [Blob(())])


# LSTMUnit
def test_lstm_unit_matches_the_reference_and_its_gradient():
    from engine.reference.recurrent import lstm_unit_forward
    g = np.random.default_rng(21)
    n, d = 3, 2
    c_prev = g.standard_normal((1, n, d))
    x = g.standard_normal((1, n, 4 * d))
    cont = np.array([[1.0, 0.0, 1.0]])
    _, top = run_forward(layer_from_text('type: "LSTMUnit"'), [c_prev, x, cont], n_top=2)
    c, h = lstm_unit_forward(c_prev, x, cont)
    np.testing.assert_allclose(top[0].data, c, rtol=1e-12)
    np.testing.assert_allclose(top[1].data, h, rtol=1e-12)
    check_gradient('type: "LSTMUnit"', [c_prev, x, cont], n_top=2, check_bottom=[0, 1])


def test_lstm_unit_refuses_mismatched_shapes():
    from engine.errors import LayerError
    with pytest.raises(LayerError, match="4 x hidden size 2"):
        run_forward(layer_from_text('type: "LSTMUnit"'),
                    [np.zeros((1, 3, 2)), np.zeros((1, 3, 6)), np.ones((1, 3))], n_top=2)
