"""InnerProduct, Embed and Parameter: forward values, gradients, errors."""
import numpy as np
import pytest

import engine
from engine.blob import Blob
from engine.errors import LayerError
from engine.testing import check_gradient, layer_from_text, run_forward


def ip(num_output=3, extra="", weight="gaussian", bias="gaussian"):
    return (f'name: "ip" type: "InnerProduct" inner_product_param {{ num_output: {num_output} '
            f'weight_filler {{ type: "{weight}" }} bias_filler {{ type: "{bias}" }} {extra} }}')


# -- InnerProduct --------------------------------------------------------------------------

def test_inner_product_hand_values():
    layer = layer_from_text(ip(2, weight="constant", bias="constant"))
    x = np.array([[1.0, 2.0, 3.0]])
    _, top = run_forward(layer, [x])
    # Set known weights and bias, then run forward again.
    layer.blobs[0].data[...] = [[1, 0, -1], [2, 1, 0]]
    layer.blobs[1].data[...] = [0.5, -1]
    bottom = [Blob.from_array(x)]
    layer.forward(bottom, top)
    assert top[0].shape == (1, 2)
    np.testing.assert_allclose(top[0].data, [[1 - 3 + 0.5, 2 + 2 - 1]])


def _ip_loop(x, w, b, axis, transpose):
    m = int(np.prod(x.shape[:axis]))
    k = int(np.prod(x.shape[axis:]))
    xf = x.reshape(m, k)
    n = w.shape[1] if transpose else w.shape[0]
    out = np.zeros((m, n))
    for i in range(m):
        for j in range(n):
            s = 0.0 if b is None else b[j]
            for q in range(k):
                s += xf[i, q] * (w[q, j] if transpose else w[j, q])
            out[i, j] = s
    return out.reshape(x.shape[:axis] + (n,))


@pytest.mark.parametrize("axis,transpose,bias", [(1, False, True), (1, True, True),
                                                 (2, False, True), (2, True, False),
                                                 (-1, False, True)])
def test_inner_product_matches_loop(axis, transpose, bias):
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    text = ip(3, f"axis: {axis} transpose: {str(transpose).lower()} "
                 f"bias_term: {str(bias).lower()}")
    layer = layer_from_text(text)
    _, top = run_forward(layer, [x], seed=3)
    caxis = axis % 3
    k = int(np.prod(x.shape[caxis:]))
    assert layer.blobs[0].shape == ((k, 3) if transpose else (3, k))
    assert len(layer.blobs) == (2 if bias else 1)
    assert top[0].shape == x.shape[:caxis] + (3,)
    b = layer.blobs[1].data if bias else None
    np.testing.assert_allclose(top[0].data, _ip_loop(x, layer.blobs[0].data, b, caxis,
                                                     transpose))


@pytest.mark.parametrize("extra", ["", "transpose: true", "axis: 2", "axis: 2 transpose: true",
                                   "bias_term: false"])
def test_inner_product_gradient(extra):
    x = np.random.default_rng(1).standard_normal((2, 2, 3))
    check_gradient(ip(3, extra), [x])


def test_inner_product_param_diffs_accumulate():
    layer = layer_from_text(ip(2))
    x = np.random.default_rng(2).standard_normal((3, 4))
    bottom, top = run_forward(layer, [x])
    top[0].diff[...] = 1.0
    layer.backward(top, [False], bottom)
    once = [p.diff.copy() for p in layer.blobs]
    layer.backward(top, [False], bottom)
    for p, d in zip(layer.blobs, once):
        np.testing.assert_allclose(p.diff, 2 * d)
    np.testing.assert_allclose(once[1], [3.0, 3.0])  # bias gradient: sum over the 3 rows


def test_inner_product_reshape_with_other_k_fails():
    layer = layer_from_text(ip(2))
    bottom, top = run_forward(layer, [np.ones((2, 6))])
    with pytest.raises(LayerError, match=r"K = 5.*K = 6"):
        layer.reshape([Blob.from_array(np.ones((2, 5)))], top)
    # Same K with another batch size is fine.
    layer.reshape([Blob.from_array(np.ones((4, 2, 3)))], top)
    assert top[0].shape == (4, 2)


def test_inner_product_bad_params():
    with pytest.raises(LayerError, match="num_output"):
        run_forward(layer_from_text('type: "InnerProduct"'), [np.ones((2, 3))])
    with pytest.raises(LayerError, match="axis"):
        run_forward(layer_from_text(ip(2, "axis: 3")), [np.ones((2, 3))])


def test_inner_product_preloaded_blob_shape_checked():
    text = ip(2) + ' blobs { shape { dim: 2 dim: 5 } data: [0,0,0,0,0,0,0,0,0,0] }' \
                   ' blobs { shape { dim: 2 } data: [0, 0] }'
    layer = layer_from_text(text)
    with pytest.raises(LayerError, match=r"\(2, 3\)"):
        run_forward(layer, [np.ones((1, 3))])


# -- Embed ---------------------------------------------------------------------------------

def embed(extra=""):
    return ('name: "emb" type: "Embed" embed_param { num_output: 3 input_dim: 4 '
            'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } '
            + extra + ' }')


def test_embed_forward_matches_loop():
    idx = np.array([[0, 3, 1], [3, 3, 2]], dtype=float)
    layer = layer_from_text(embed())
    _, top = run_forward(layer, [idx], seed=5)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    assert layer.blobs[0].shape == (4, 3)
    assert top[0].shape == (2, 3, 3)
    for i in range(2):
        for j in range(3):
            for n in range(3):
                assert top[0].data[i, j, n] == pytest.approx(w[int(idx[i, j]), n] + b[n])


def test_embed_hand_values_no_bias():
    layer = layer_from_text(embed("bias_term: false"))
    bottom, top = run_forward(layer, [np.array([2.0, 0.0])])
    layer.blobs[0].data[...] = np.arange(12).reshape(4, 3)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, [[6, 7, 8], [0, 1, 2]])
    assert len(layer.blobs) == 1


def test_embed_gradient_params():
    idx = np.array([[1, 3], [1, 0]], dtype=float)  # a repeated index: its rows add up
    check_gradient(embed(), [idx], check_bottom=[])


def test_embed_weight_gradient_accumulates_repeats():
    layer = layer_from_text(embed())
    bottom, top = run_forward(layer, [np.array([2.0, 2.0, 1.0])])
    top[0].diff[...] = 1.0
    layer.backward(top, [False], bottom)
    np.testing.assert_array_equal(layer.blobs[0].diff[:, 0], [0, 1, 2, 0])
    np.testing.assert_array_equal(layer.blobs[1].diff, [3, 3, 3])


def test_embed_errors():
    for bad in (4.0, -1.0, 1.5):
        with pytest.raises(LayerError, match=r"\[0, 4\)"):
            run_forward(layer_from_text(embed()), [np.array([0.0, bad])])
    layer = layer_from_text(embed())
    bottom, top = run_forward(layer, [np.array([0.0, 1.0])])
    with pytest.raises(LayerError, match="backpropagate"):
        layer.backward(top, [True], bottom)
    assert layer.allow_force_backward(0) is False
    with pytest.raises(LayerError, match="input_dim"):
        run_forward(layer_from_text('type: "Embed" embed_param { num_output: 2 }'),
                    [np.zeros(2)])


# -- Parameter -----------------------------------------------------------------------------

PARAM = 'name: "p" type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }'


def test_parameter_forward_copies_blob():
    layer = layer_from_text(PARAM)
    _, top = run_forward(layer, [])
    assert top[0].shape == (2, 3)
    np.testing.assert_array_equal(top[0].data, np.zeros((2, 3)))
    layer.blobs[0].data[...] = np.arange(6).reshape(2, 3)
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data, np.arange(6).reshape(2, 3))
    top[0].diff[...] = 2.0
    layer.backward(top, [], [])
    layer.backward(top, [], [])
    np.testing.assert_array_equal(layer.blobs[0].diff, np.full((2, 3), 4.0))


def test_parameter_gradient():
    check_gradient(PARAM, [])


def test_parameter_preloaded_shape_mismatch():
    text = PARAM + ' blobs { shape { dim: 3 dim: 2 } data: [1, 2, 3, 4, 5, 6] }'
    with pytest.raises(LayerError, match=r"\(3, 2\).*\(2, 3\)"):
        run_forward(layer_from_text(text), [])


def test_registered():
    for name in ("InnerProduct", "Embed", "Parameter"):
        assert name in engine.registry.layer_type_list()
