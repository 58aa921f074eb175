"""Eltwise, Reduction, ArgMax."""
import numpy as np
import pytest

from engine.errors import LayerError
from engine.testing import check_gradient, layer_from_text, run_forward


def rnd(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def away_from_zero(*shape, seed=0):
    x = np.random.default_rng(seed).uniform(0.3, 1.5, size=shape)
    signs = np.where(np.random.default_rng(seed + 100).random(shape) < 0.5, -1.0, 1.0)
    return x * signs


def fwd(text, bottoms, n_top=1):
    return run_forward(layer_from_text(text), bottoms, n_top)[1]


# -- Eltwise -------------------------------------------------------------------------------

def test_eltwise_hand_values():
    a = np.array([1.0, -2.0, 3.0])
    b = np.array([4.0, 5.0, -6.0])
    c = np.array([0.5, 5.0, 7.0])
    np.testing.assert_allclose(fwd('type: "Eltwise"', [a, b, c])[0].data, [5.5, 8, 4])
    np.testing.assert_allclose(
        fwd('type: "Eltwise" eltwise_param { operation: SUM coeff: 1 coeff: -1 coeff: 2 }',
            [a, b, c])[0].data, [1 - 4 + 1, -2 - 5 + 10, 3 + 6 + 14])
    np.testing.assert_allclose(
        fwd('type: "Eltwise" eltwise_param { operation: PROD }', [a, b, c])[0].data,
        [2, -50, -126])
    np.testing.assert_allclose(
        fwd('type: "Eltwise" eltwise_param { operation: MAX }', [a, b, c])[0].data, [4, 5, 7])


def test_eltwise_matches_loop():
    xs = [rnd(2, 3, seed=s) for s in range(3)]
    coeffs = (0.5, -2.0, 3.0)
    top_sum = fwd('type: "Eltwise" eltwise_param { coeff: 0.5 coeff: -2 coeff: 3 }', xs)
    top_max = fwd('type: "Eltwise" eltwise_param { operation: MAX }', xs)
    top_prod = fwd('type: "Eltwise" eltwise_param { operation: PROD }', xs)
    for i in range(2):
        for j in range(3):
            s, m, p = 0.0, -np.inf, 1.0
            for k in range(3):
                s += coeffs[k] * xs[k][i, j]
                m = max(m, xs[k][i, j])
                p *= xs[k][i, j]
            assert top_sum[0].data[i, j] == pytest.approx(s)
            assert top_max[0].data[i, j] == m
            assert top_prod[0].data[i, j] == pytest.approx(p)


def test_eltwise_max_ties_follow_caffe():
    # Caffe: bottom[0] beats bottom[1] only when strictly greater (so a 0/1 tie goes to 1);
    # later bottoms replace the running max only when strictly greater.
    layer = layer_from_text('type: "Eltwise" eltwise_param { operation: MAX }')
    bottom, top = run_forward(layer, [np.array([1.0, 2.0, 1.0]), np.array([1.0, 1.0, 0.0]),
                                      np.array([0.0, 2.0, 1.0])])
    np.testing.assert_array_equal(layer.max_idx, [1, 0, 0])
    top[0].diff[...] = [10.0, 20.0, 30.0]
    layer.backward(top, [True, True, True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [0, 20, 30])
    np.testing.assert_array_equal(bottom[1].diff, [10, 0, 0])
    np.testing.assert_array_equal(bottom[2].diff, [0, 0, 0])


@pytest.mark.parametrize("text", [
    'type: "Eltwise"',
    'type: "Eltwise" eltwise_param { coeff: 0.5 coeff: -2 coeff: 1.5 }',
    'type: "Eltwise" eltwise_param { operation: PROD }',
    'type: "Eltwise" eltwise_param { operation: PROD stable_prod_grad: false }',
    'type: "Eltwise" eltwise_param { operation: MAX }',
])
def test_eltwise_gradient(text):
    # Distinct values (for MAX) and nonzero ones (for PROD): a shuffled grid of +-[0.3, 1.5].
    vals = away_from_zero(18, seed=4)
    vals = vals + np.arange(18) * 1e-2 * np.sign(vals)  # make the magnitudes distinct
    xs = [vals[k::3].reshape(2, 3) for k in range(3)]
    check_gradient(text, xs)


def test_eltwise_two_bottoms_prod_gradient():
    check_gradient('type: "Eltwise" eltwise_param { operation: PROD stable_prod_grad: false }',
                   [away_from_zero(2, 2, seed=1), away_from_zero(2, 2, seed=2)])


def test_eltwise_errors():
    with pytest.raises(LayerError, match=r"bottom\[0\] has shape \(2, 3\), bottom\[1\] has "
                                         r"shape \(3, 2\)"):
        fwd('type: "Eltwise"', [np.ones((2, 3)), np.ones((3, 2))])
    with pytest.raises(LayerError, match="one coeff per bottom"):
        fwd('type: "Eltwise" eltwise_param { coeff: 1 }', [np.ones(2), np.ones(2)])
    with pytest.raises(LayerError, match="only for operation SUM"):
        fwd('type: "Eltwise" eltwise_param { operation: PROD coeff: 1 coeff: 2 }',
            [np.ones(2), np.ones(2)])


# -- Reduction -----------------------------------------------------------------------------

OPS = {"SUM": lambda v: sum(v), "ASUM": lambda v: sum(abs(x) for x in v),
       "SUMSQ": lambda v: sum(x * x for x in v), "MEAN": lambda v: sum(v) / len(v)}


def test_reduction_hand_values():
    x = np.array([[1.0, -2.0], [3.0, -4.0]])
    top = fwd('type: "Reduction"', [x])
    assert top[0].shape == ()
    assert float(top[0].data) == -2.0
    top = fwd('type: "Reduction" reduction_param { operation: ASUM axis: 1 coeff: 2 }', [x])
    np.testing.assert_array_equal(top[0].data, [6, 14])
    top = fwd('type: "Reduction" reduction_param { operation: SUMSQ axis: -1 }', [x])
    np.testing.assert_array_equal(top[0].data, [5, 25])
    top = fwd('type: "Reduction" reduction_param { operation: MEAN }', [x])
    assert float(top[0].data) == -0.5


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_reduction_matches_loop(op, axis):
    x = rnd(2, 3, 2, seed=axis)
    top = fwd(f'type: "Reduction" reduction_param {{ operation: {op} axis: {axis} '
              f'coeff: -1.5 }}', [x])
    assert top[0].shape == x.shape[:axis]
    for idx in np.ndindex(x.shape[:axis]):
        vals = list(x[idx].reshape(-1))
        assert top[0].data[idx] == pytest.approx(-1.5 * OPS[op](vals))


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("axis", [0, 1])
def test_reduction_gradient(op, axis):
    check_gradient(f'type: "Reduction" reduction_param {{ operation: {op} axis: {axis} '
                   f'coeff: 0.7 }}', [away_from_zero(2, 2, 2, seed=3)])


def test_reduction_errors():
    with pytest.raises(LayerError, match="axis"):
        fwd('type: "Reduction" reduction_param { axis: 3 }', [np.ones((2, 3))])


# -- ArgMax --------------------------------------------------------------------------------

def _argmax_loop(items, k):
    """items: list of values; returns [(index, value)] of the k largest, Caffe's order."""
    pairs = [(v, j) for j, v in enumerate(items)]
    out = []
    for _ in range(k):
        best = None
        for p in pairs:
            if p not in out and (best is None or p > best):
                best = p
        out.append(best)
    return [(j, v) for v, j in out]


def test_argmax_hand_values_and_ties():
    x = np.array([[1.0, 3.0, 3.0, 0.0], [5.0, 1.0, 2.0, 5.0]])
    top = fwd('type: "ArgMax"', [x])
    assert top[0].shape == (2, 1, 1)
    np.testing.assert_array_equal(top[0].data.reshape(-1), [2, 3])  # ties: larger index first
    top = fwd('type: "ArgMax" argmax_param { top_k: 3 out_max_val: true }', [x])
    assert top[0].shape == (2, 2, 3)
    np.testing.assert_array_equal(top[0].data[0], [[2, 1, 0], [3, 3, 1]])
    np.testing.assert_array_equal(top[0].data[1], [[3, 0, 2], [5, 5, 2]])


def test_argmax_without_axis_matches_loop():
    x = np.round(rnd(2, 3, 2, 2) * 2) / 2  # coarse values: plenty of ties
    for out_max in (False, True):
        top = fwd(f'type: "ArgMax" argmax_param {{ top_k: 4 out_max_val: '
                  f'{str(out_max).lower()} }}', [x])
        # Caffe: max(num_axes, 3) axes, here 4: (N, 1 or 2, top_k, 1).
        assert top[0].shape == (2, 2 if out_max else 1, 4, 1)
        for n in range(2):
            expect = _argmax_loop(list(x[n].reshape(-1)), 4)
            for j, (i, v) in enumerate(expect):
                assert top[0].data[n, 0, j, 0] == i
                if out_max:
                    assert top[0].data[n, 1, j, 0] == v


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("out_max", [False, True])
def test_argmax_with_axis_matches_loop(axis, out_max):
    x = np.round(rnd(3, 4, 3, seed=7) * 2) / 2
    k = 2
    top = fwd(f'type: "ArgMax" argmax_param {{ top_k: {k} axis: {axis} '
              f'out_max_val: {str(out_max).lower()} }}', [x])
    a = axis % 3
    shape = list(x.shape)
    shape[a] = k
    assert top[0].shape == tuple(shape)
    for idx in np.ndindex(tuple(shape[:a] + [1] + shape[a + 1:])):
        line = [x[idx[:a] + (j,) + idx[a + 1:]] for j in range(x.shape[a])]
        for r, (i, v) in enumerate(_argmax_loop(line, k)):
            assert top[0].data[idx[:a] + (r,) + idx[a + 1:]] == (v if out_max else i)


def test_argmax_forward_only_and_errors():
    layer = layer_from_text('type: "ArgMax"')
    bottom, top = run_forward(layer, [rnd(2, 3)])
    layer.backward(top, [False], bottom)  # nothing asked: nothing done
    with pytest.raises(LayerError, match="forward only"):
        layer.backward(top, [True], bottom)
    assert layer.allow_force_backward(0) is False
    with pytest.raises(LayerError, match="top_k"):
        fwd('type: "ArgMax" argmax_param { top_k: 4 }', [np.ones((2, 3))])
    with pytest.raises(LayerError, match="top_k"):
        fwd('type: "ArgMax" argmax_param { top_k: 3 axis: 0 }', [np.ones((2, 3))])
    with pytest.raises(LayerError, match="top_k"):
        fwd('type: "ArgMax" argmax_param { top_k: 0 }', [np.ones((2, 3))])
    with pytest.raises(LayerError, match="axis"):
        fwd('type: "ArgMax" argmax_param { axis: 2 }', [np.ones((2, 3))])
