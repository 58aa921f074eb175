"""Concat, Slice, Split, Flatten, Reshape, Crop, Tile, Silence, BatchReindex, Filter."""
import numpy as np
import pytest

from engine.blob import Blob
from engine.errors import LayerError
from engine.testing import check_gradient, layer_from_text, run_forward


def rnd(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def fwd(text, bottoms, n_top=1):
    return run_forward(layer_from_text(text), bottoms, n_top)[1]


# -- Concat --------------------------------------------------------------------------------

def test_concat_hand_values():
    a = np.array([[1.0, 2.0]])
    b = np.array([[3.0, 4.0], [5.0, 6.0]])
    top = fwd('type: "Concat" concat_param { axis: 0 }', [a, b])
    np.testing.assert_array_equal(top[0].data, [[1, 2], [3, 4], [5, 6]])
    top = fwd('type: "Concat"', [b, b[:, :1]])  # default axis 1
    np.testing.assert_array_equal(top[0].data, [[3, 4, 3], [5, 6, 5]])


def test_concat_matches_loop_and_legacy_dim():
    a, b = rnd(2, 1, 3), rnd(2, 2, 3, seed=1)
    for text in ('type: "Concat" concat_param { axis: -2 }',
                 'type: "Concat" concat_param { concat_dim: 1 }'):
        top = fwd(text, [a, b])
        expect = np.zeros((2, 3, 3))
        for n in range(2):
            for c in range(3):
                for w in range(3):
                    expect[n, c, w] = a[n, c, w] if c < 1 else b[n, c - 1, w]
        np.testing.assert_array_equal(top[0].data, expect)


def test_concat_single_bottom_passes_through():
    a = rnd(2, 3)
    top = fwd('type: "Concat"', [a])
    np.testing.assert_array_equal(top[0].data, a)
    check_gradient('type: "Concat"', [a])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_concat_gradient(axis):
    shapes = [[2, 2, 2], [2, 2, 2], [2, 2, 2]]
    for s, extra in zip(shapes, (1, 2, 1)):
        s[axis] = extra
    check_gradient(f'type: "Concat" concat_param {{ axis: {axis} }}',
                   [rnd(*s, seed=i) for i, s in enumerate(shapes)], check_bottom=[0, 2])


def test_concat_errors():
    with pytest.raises(LayerError, match=r"bottom\[0\] has shape \(2, 3\), bottom\[1\] has shape "
                                         r"\(3, 3\)"):
        fwd('type: "Concat"', [np.ones((2, 3)), np.ones((3, 3))])
    with pytest.raises(LayerError, match="number of axes"):
        fwd('type: "Concat"', [np.ones((2, 3)), np.ones((2, 3, 1))])
    with pytest.raises(LayerError, match="not both"):
        fwd('type: "Concat" concat_param { axis: 1 concat_dim: 1 }', [np.ones((2, 3))] * 2)
    with pytest.raises(LayerError, match="axis"):
        fwd('type: "Concat" concat_param { axis: 2 }', [np.ones((2, 3))] * 2)


# -- Slice ---------------------------------------------------------------------------------

def test_slice_points_and_even():
    x = np.arange(12.0).reshape(2, 6)
    top = fwd('type: "Slice" slice_param { slice_point: 1 slice_point: 4 }', [x], 3)
    assert [t.shape for t in top] == [(2, 1), (2, 3), (2, 2)]
    np.testing.assert_array_equal(top[1].data, [[1, 2, 3], [7, 8, 9]])
    top = fwd('type: "Slice" slice_param { axis: 0 }', [x], 2)
    np.testing.assert_array_equal(top[1].data, x[1:])
    top = fwd('type: "Slice" slice_param { slice_dim: 1 }', [x], 3)
    for i in range(3):
        for r in range(2):
            for c in range(2):
                assert top[i].data[r, c] == x[r, 2 * i + c]


def test_slice_gradient():
    check_gradient('type: "Slice" slice_param { axis: -1 slice_point: 1 }', [rnd(2, 2, 3)],
                   n_top=2)
    check_gradient('type: "Slice" slice_param { axis: 0 }', [rnd(3, 2)], n_top=3)


def test_slice_errors():
    x = [np.ones((2, 6))]
    with pytest.raises(LayerError, match="strictly increasing"):
        fwd('type: "Slice" slice_param { slice_point: 3 slice_point: 2 }', x, 3)
    with pytest.raises(LayerError, match="strictly increasing"):
        fwd('type: "Slice" slice_param { slice_point: 2 slice_point: 2 }', x, 3)
    with pytest.raises(LayerError, match="evenly divide"):
        fwd('type: "Slice"', x, 4)
    with pytest.raises(LayerError, match="slice_point"):
        fwd('type: "Slice" slice_param { slice_point: 2 }', x, 3)
    with pytest.raises(LayerError, match="past the end"):
        fwd('type: "Slice" slice_param { slice_point: 7 }', x, 2)
    with pytest.raises(LayerError, match="slice_dim"):
        fwd('type: "Slice" slice_param { slice_dim: 2 }', x, 2)


# -- Split ---------------------------------------------------------------------------------

def test_split_forward_and_sum_of_diffs():
    x = rnd(2, 3)
    layer = layer_from_text('type: "Split"')
    bottom, top = run_forward(layer, [x], 3)
    for t in top:
        np.testing.assert_array_equal(t.data, x)
    for k, t in enumerate(top):
        t.diff[...] = k + 1
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, np.full((2, 3), 6.0))


def test_split_gradient():
    check_gradient('type: "Split"', [rnd(2, 3)], n_top=3)


def test_split_in_place_refused():
    layer = layer_from_text('type: "Split"')
    b = Blob.from_array(np.ones(3))
    with pytest.raises(LayerError, match="in place"):
        layer.reshape([b], [Blob((), dtype=np.float64), b])


# -- Flatten -------------------------------------------------------------------------------

def test_flatten_shapes_and_values():
    x = rnd(2, 3, 2, 2)
    top = fwd('type: "Flatten"', [x])
    assert top[0].shape == (2, 12)
    np.testing.assert_array_equal(top[0].data, x.reshape(2, 12))
    top = fwd('type: "Flatten" flatten_param { axis: 1 end_axis: 2 }', [x])
    assert top[0].shape == (2, 6, 2)
    top = fwd('type: "Flatten" flatten_param { axis: 0 end_axis: -2 }', [x])
    assert top[0].shape == (12, 2)


def test_flatten_gradient_and_errors():
    check_gradient('type: "Flatten" flatten_param { axis: 1 end_axis: 2 }', [rnd(2, 2, 2, 1)])
    with pytest.raises(LayerError, match="end_axis"):
        fwd('type: "Flatten" flatten_param { axis: 2 end_axis: 1 }', [np.ones((2, 3, 4))])
    with pytest.raises(LayerError, match="axis"):
        fwd('type: "Flatten" flatten_param { axis: 5 }', [np.ones((2, 3))])


# -- Reshape -------------------------------------------------------------------------------

def reshape_text(dims, extra=""):
    body = " ".join(f"dim: {d}" for d in dims)
    return f'type: "Reshape" reshape_param {{ shape {{ {body} }} {extra} }}'


@pytest.mark.parametrize("dims,extra,expect", [
    ((0, -1), "", (2, 12)),
    ((-1,), "", (24,)),
    ((0, 0, 4, 1), "", (2, 3, 4, 1)),
    ((6, 2), "axis: 1", (2, 6, 2)),
    ((2, 2), "axis: 2 num_axes: 1", (2, 3, 2, 2)),
    ((1,), "axis: 0 num_axes: 0", (1, 2, 3, 4)),
    ((1,), "axis: -1 num_axes: 0", (2, 3, 4, 1)),
    ((1, 1), "axis: 1 num_axes: 0", (2, 1, 1, 3, 4)),
    ((-1, 2), "axis: -2", (2, 3, 2, 2)),  # -2: the last axis is replaced
    ((1, 0, -1), "axis: 0 num_axes: 2", (1, 3, 2, 4)),
])
def test_reshape_caffe_rules(dims, extra, expect):
    x = np.arange(24.0).reshape(2, 3, 4)
    top = fwd(reshape_text(dims, extra), [x])
    assert top[0].shape == expect
    np.testing.assert_array_equal(top[0].data.reshape(-1), x.reshape(-1))


def test_reshape_gradient():
    check_gradient(reshape_text((0, -1, 2)), [rnd(2, 2, 2)])


def test_reshape_errors():
    x = [np.ones((2, 3, 4))]
    with pytest.raises(LayerError, match=r"\(2, 3, 4\).*\(5, 5\)"):
        fwd(reshape_text((5, 5)), x)
    with pytest.raises(LayerError, match="-1"):
        fwd(reshape_text((-1, -1)), x)
    with pytest.raises(LayerError, match="divisible"):
        fwd(reshape_text((5, -1)), x)
    with pytest.raises(LayerError, match="no axis"):
        fwd(reshape_text((0, 0, 0, 0, -1)), x)
    with pytest.raises(LayerError, match="axis"):
        fwd(reshape_text((1,), "axis: 5"), x)
    with pytest.raises(LayerError, match="num_axes"):
        fwd(reshape_text((1,), "axis: 2 num_axes: 3"), x)
    with pytest.raises(LayerError, match="num_axes"):
        fwd(reshape_text((1,), "num_axes: -2"), x)


# -- Crop ----------------------------------------------------------------------------------

def _crop_loop(a, shape, axis, offsets):
    out = np.zeros(a.shape[:axis] + shape[axis:])
    for idx in np.ndindex(out.shape):
        src = tuple(i + (offsets[k - axis] if k >= axis else 0) for k, i in enumerate(idx))
        out[idx] = a[src]
    return out


@pytest.mark.parametrize("extra,axis,offsets", [("", 2, (0, 0)),
                                                ("offset: 1", 2, (1, 1)),
                                                ("axis: 1 offset: 1 offset: 0 offset: 2", 1,
                                                 (1, 0, 2)),
                                                ("axis: -1 offset: 1", 3, (1,))])
def test_crop_matches_loop(extra, axis, offsets):
    a = rnd(2, 3, 4, 5)
    ref = np.zeros((2, 2, 3, 3))
    top = fwd(f'type: "Crop" crop_param {{ {extra} }}', [a, ref])
    expect = _crop_loop(a, ref.shape, axis, offsets)
    assert top[0].shape == expect.shape
    np.testing.assert_array_equal(top[0].data, expect)


def test_crop_gradient():
    check_gradient('type: "Crop" crop_param { axis: 1 offset: 1 }',
                   [rnd(2, 3, 4), np.zeros((2, 2, 2))], check_bottom=[0])


def test_crop_errors():
    with pytest.raises(LayerError, match="out of bounds"):
        fwd('type: "Crop" crop_param { offset: 2 }', [np.ones((1, 1, 4, 4)),
                                                     np.ones((1, 1, 3, 3))])
    with pytest.raises(LayerError, match="offsets"):
        fwd('type: "Crop" crop_param { offset: 0 offset: 0 offset: 0 }',
            [np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))])
    with pytest.raises(LayerError, match="number of axes"):
        fwd('type: "Crop"', [np.ones((1, 1, 4, 4)), np.ones((1, 3, 3))])


# -- Tile ----------------------------------------------------------------------------------

def test_tile_matches_loop():
    x = rnd(2, 3, 2)
    top = fwd('type: "Tile" tile_param { tiles: 3 }', [x])
    assert top[0].shape == (2, 9, 2)
    for n in range(2):
        for t in range(3):
            for c in range(3):
                np.testing.assert_array_equal(top[0].data[n, t * 3 + c], x[n, c])
    top = fwd('type: "Tile" tile_param { axis: -1 tiles: 2 }', [np.array([[1.0, 2.0]])])
    np.testing.assert_array_equal(top[0].data, [[1, 2, 1, 2]])


def test_tile_gradient_and_errors():
    check_gradient('type: "Tile" tile_param { axis: 1 tiles: 3 }', [rnd(2, 2, 2)])
    check_gradient('type: "Tile" tile_param { axis: 0 tiles: 2 }', [rnd(2, 3)])
    with pytest.raises(LayerError, match="positive"):
        fwd('type: "Tile" tile_param { tiles: 0 }', [np.ones((2, 3))])
    with pytest.raises(LayerError, match="specified"):
        fwd('type: "Tile"', [np.ones((2, 3))])


# -- Silence -------------------------------------------------------------------------------

def test_silence_zeroes_requested_diffs():
    layer = layer_from_text('type: "Silence"')
    bottom, top = run_forward(layer, [np.ones(3), np.ones((2, 2))], n_top=0)
    assert top == []
    for b in bottom:
        b.diff[...] = 7.0
    layer.backward([], [True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, np.zeros(3))
    np.testing.assert_array_equal(bottom[1].diff, np.full((2, 2), 7.0))


# -- BatchReindex --------------------------------------------------------------------------

def test_batch_reindex_forward_and_scatter_add():
    x = np.arange(6.0).reshape(3, 2)
    idx = np.array([2.0, 0.0, 2.0, 2.0])
    layer = layer_from_text('type: "BatchReindex"')
    bottom, top = run_forward(layer, [x, idx])
    assert top[0].shape == (4, 2)
    for k in range(4):
        np.testing.assert_array_equal(top[0].data[k], x[int(idx[k])])
    top[0].diff[...] = np.arange(8.0).reshape(4, 2)
    layer.backward(top, [True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [[2, 3], [0, 0], [0 + 4 + 6, 1 + 5 + 7]])
    with pytest.raises(LayerError, match="indices"):
        layer.backward(top, [False, True], bottom)
    assert layer.allow_force_backward(1) is False


def test_batch_reindex_gradient_and_errors():
    check_gradient('type: "BatchReindex"', [rnd(3, 2), np.array([1.0, 1.0, 0.0])],
                   check_bottom=[0])
    with pytest.raises(LayerError, match="outside"):
        fwd('type: "BatchReindex"', [np.ones((3, 2)), np.array([0.0, 3.0])])
    with pytest.raises(LayerError, match="outside"):
        fwd('type: "BatchReindex"', [np.ones((3, 2)), np.array([-1.0])])
    with pytest.raises(LayerError, match="one axis"):
        fwd('type: "BatchReindex"', [np.ones((3, 2)), np.zeros((2, 1))])


# -- Filter --------------------------------------------------------------------------------

def test_filter_forward_backward():
    a = np.arange(8.0).reshape(4, 2)
    b = np.arange(4.0).reshape(4, 1, 1) + 10
    sel = np.array([[1.0], [0.0], [0.5], [0.0]])
    layer = layer_from_text('type: "Filter"')
    bottom, top = run_forward(layer, [a, b, sel], n_top=2)
    np.testing.assert_array_equal(top[0].data, [[0, 1], [4, 5]])
    assert top[1].shape == (2, 1, 1)
    np.testing.assert_array_equal(top[1].data.reshape(-1), [10, 12])
    top[0].diff[...] = 1.0
    top[1].diff[...] = 2.0
    layer.backward(top, [True, True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [[1, 1], [0, 0], [1, 1], [0, 0]])
    np.testing.assert_array_equal(bottom[1].diff.reshape(-1), [2, 0, 2, 0])
    with pytest.raises(LayerError, match="selector"):
        layer.backward(top, [True, True, True], bottom)
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(2)


def test_filter_none_kept():
    a = rnd(3, 2)
    layer = layer_from_text('type: "Filter"')
    bottom, top = run_forward(layer, [a, np.zeros(3)])
    assert top[0].shape == (0, 2)
    layer.backward(top, [True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, np.zeros((3, 2)))


def test_filter_gradient_and_errors():
    check_gradient('type: "Filter"', [rnd(4, 2), np.array([0.0, 1.0, 1.0, 0.0])],
                   check_bottom=[0])
    with pytest.raises(LayerError, match="selector"):
        fwd('type: "Filter"', [np.ones((3, 2)), np.ones(4)])
    with pytest.raises(LayerError, match="selector"):
        fwd('type: "Filter"', [np.ones((3, 2)), np.ones((3, 2))])
    with pytest.raises(LayerError, match="one top per filtered bottom"):
        fwd('type: "Filter"', [np.ones((3, 2)), np.ones(3)], n_top=2)
