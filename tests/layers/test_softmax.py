import numpy as np
import pytest

import engine
from engine.errors import LayerError
from engine.testing import check_gradient, layer_from_text, run_forward


def naive_softmax(x, axis):
    """Independent loop: softmax of every 1-D slice along `axis`."""
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    out = np.empty_like(x)
    for idx in np.ndindex(*x.shape[:-1]):
        row = x[idx]
        e = [np.exp(v) for v in row]
        s = sum(e)
        out[idx] = [v / s for v in e]
    return np.moveaxis(out, -1, axis)


def test_softmax_hand_values():
    layer = layer_from_text('name: "sm" type: "Softmax"')
    _, top = run_forward(layer, [np.array([[0.0, np.log(2.0), np.log(5.0)], [1.0, 1.0, 1.0]])])
    assert top[0].shape == (2, 3)
    np.testing.assert_allclose(top[0].data, [[1 / 8, 2 / 8, 5 / 8], [1 / 3, 1 / 3, 1 / 3]])
    assert layer.kernel == "numpy"


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_softmax_forward_matches_loop(axis):
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    layer = layer_from_text(f'type: "Softmax" softmax_param {{ axis: {axis} }}')
    _, top = run_forward(layer, [x])
    np.testing.assert_allclose(top[0].data, naive_softmax(x, axis), rtol=1e-12)


def test_softmax_large_values_stable():
    layer = layer_from_text('type: "Softmax"')
    _, top = run_forward(layer, [np.array([[1000.0, 1000.0], [-1000.0, -999.0]])], dtype=np.float32)
    assert np.all(np.isfinite(top[0].data))
    np.testing.assert_allclose(top[0].data[0], [0.5, 0.5])
    np.testing.assert_allclose(top[0].data[1], naive_softmax([[-1.0, 0.0]], 1)[0], rtol=1e-6)


@pytest.mark.parametrize("axis", [1, 2])
def test_softmax_gradient(axis):
    x = np.random.default_rng(1).standard_normal((2, 3, 2, 2))
    check_gradient(f'type: "Softmax" softmax_param {{ axis: {axis} }}', [x])


def test_softmax_gradient_in_place():
    x = np.random.default_rng(2).standard_normal((2, 4, 3))
    check_gradient('type: "Softmax"', [x], in_place=True)


def test_softmax_backward_formula():
    layer = layer_from_text('type: "Softmax"')
    x = np.array([[0.5, -1.0, 2.0]])
    bottom, top = run_forward(layer, [x])
    dy = np.array([[1.0, 2.0, -3.0]])
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    y = naive_softmax(x, 1)
    expected = y * (dy - np.sum(dy * y))
    np.testing.assert_allclose(bottom[0].diff, expected, rtol=1e-12)


@pytest.mark.parametrize("axis", [3, -4])
def test_softmax_bad_axis(axis):
    layer = layer_from_text(f'type: "Softmax" softmax_param {{ axis: {axis} }}')
    with pytest.raises(LayerError, match="axis"):
        run_forward(layer, [np.zeros((2, 3, 4))])


def test_softmax_registered():
    assert "Softmax" in engine.layer_type_list()
