"""Fillers against Caffe's formulas (statistics on large blobs, exact values where deterministic)."""
import math

import numpy as np
import pytest
from google.protobuf import text_format

import engine
from engine import crema_pb2
from engine.fillers import fill


def filler(text):
    fp = crema_pb2.FillerParameter()
    text_format.Merge(text, fp)
    return fp


def test_constant_and_default_type():
    a = np.empty((3, 4))
    fill(filler("type: 'constant' value: 2.5"), a)
    assert np.all(a == 2.5)
    fill(filler(""), a)  # Caffe's default filler is constant 0
    assert np.all(a == 0)


def test_uniform_range_and_mean():
    engine.set_random_seed(1)
    a = fill(filler("type: 'uniform' min: -2 max: 3"), np.empty(200000))
    assert a.min() >= -2 and a.max() <= 3
    assert abs(a.mean() - 0.5) < 0.02


def test_gaussian_moments_and_sparse_keep_rate():
    engine.set_random_seed(2)
    a = fill(filler("type: 'gaussian' mean: 1 std: 3"), np.empty((100, 2000)))
    assert abs(a.mean() - 1) < 0.03 and abs(a.std() - 3) < 0.03
    # sparse: each weight kept with probability sparse / num_outputs (= shape[0] = 100)
    s = fill(filler("type: 'gaussian' std: 1 sparse: 20"), np.empty((100, 2000)))
    assert abs(np.mean(s != 0) - 0.2) < 0.005


@pytest.mark.parametrize("norm,n", [("FAN_IN", 50 * 9), ("FAN_OUT", 20 * 9), ("AVERAGE", (450 + 180) / 2)])
def test_xavier_and_msra_use_caffes_fans(norm, n):
    shape = (20, 50, 3, 3)  # fan_in = count/shape[0] = 450, fan_out = count/shape[1] = 180
    engine.set_random_seed(3)
    x = fill(filler(f"type: 'xavier' variance_norm: {norm}"), np.empty(shape))
    scale = math.sqrt(3.0 / n)
    assert np.abs(x).max() <= scale and np.abs(x).max() > 0.98 * scale
    assert abs(x.var() - scale ** 2 / 3) < 0.05 * scale ** 2 / 3
    m = fill(filler(f"type: 'msra' variance_norm: {norm}"), np.empty(shape))
    assert abs(m.std() - math.sqrt(2.0 / n)) < 0.03 * math.sqrt(2.0 / n)


def test_bilinear_kernel_values():
    a = fill(filler("type: 'bilinear'"), np.empty((2, 1, 4, 4)))
    # kernel 4: f = 2, c = (2*2 - 1 - 0) / 4 = 0.75; weights (1 - |x/2 - 0.75|) per axis
    w1 = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(a[0, 0], np.outer(w1, w1))
    np.testing.assert_allclose(a[1, 0], np.outer(w1, w1))
    b = fill(filler("type: 'bilinear'"), np.empty((1, 1, 3, 3)))
    # kernel 3: f = 2, c = (4 - 1 - 0) / 4 = 0.75 -> same per-axis rule on x = 0, 1, 2
    w2 = 1 - np.abs(np.arange(3) / 2 - 0.75)
    np.testing.assert_allclose(b[0, 0], np.outer(w2, w2))
    with pytest.raises(engine.LayerError, match="bilinear"):
        fill(filler("type: 'bilinear'"), np.empty((2, 3)))


def test_positive_unitball_rows_sum_to_one():
    engine.set_random_seed(4)
    a = fill(filler("type: 'positive_unitball'"), np.empty((5, 2, 3)))
    assert np.all(a >= 0)
    np.testing.assert_allclose(a.reshape(5, -1).sum(axis=1), 1.0)


def test_seeding_repeats_and_unknown_type_is_refused():
    engine.set_random_seed(7)
    a = fill(filler("type: 'gaussian'"), np.empty(10))
    engine.set_random_seed(7)
    b = fill(filler("type: 'gaussian'"), np.empty(10))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(engine.LayerError, match="unknown filler type 'gausian'"):
        fill(filler("type: 'gausian'"), np.empty(3))


def test_blob_basics():
    b = engine.Blob(2, 3, 4)
    assert b.shape == (2, 3, 4) and b.count == 24 and b.num_axes == 3
    assert (b.num, b.channels, b.height, b.width) == (2, 3, 4, 1)
    b.data[...] = 1
    b.reshape(4, 6)  # same count keeps the contents
    assert b.shape == (4, 6) and np.all(b.data == 1)
    b.reshape((5,))
    assert b.shape == (5,) and np.all(b.data == 0) and b.diff.shape == (5,)
    assert b.canonical_axis(-1) == 0
    with pytest.raises(engine.ShapeError):
        engine.Blob(-1, 2)
    with pytest.raises(engine.ShapeError, match="axis 3 out of range"):
        b.canonical_axis(3)


def test_blobproto_round_trip_and_legacy_shape():
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    proto = engine.io.array_to_blobproto(arr)
    assert list(proto.shape.dim) == [2, 3, 4]
    np.testing.assert_array_equal(engine.io.blobproto_to_array(proto), arr)
    legacy = crema_pb2.BlobProto(num=1, channels=2, height=1, width=3)
    legacy.data.extend([1, 2, 3, 4, 5, 6])
    assert engine.io.blobproto_to_array(legacy).shape == (1, 2, 1, 3)
    bad = crema_pb2.BlobProto()
    bad.shape.dim.extend([2, 2])
    bad.data.extend([1, 2, 3])
    with pytest.raises(engine.WeightsError, match=r"holds 3 values but its shape \(2, 2\) needs 4"):
        engine.io.blobproto_to_array(bad)
