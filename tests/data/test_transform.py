"""The Cython DataTransformer (engine.data._transform) against its numpy fallback and against
Caffe's formula written out per pixel."""
import numpy as np
import pytest

import engine
from engine.data import _transform
from engine.layers import db_data
from engine.layers.db_data import DatumTransformer, numpy_transform


def reference(x, cs_h, cs_w, h_off, w_off, flip, mean_image, mean_values, scale):
    """Caffe's DataTransformer::Transform loop, literally."""
    n, c, h, w = x.shape
    out = np.empty((n, c, cs_h, cs_w), np.float32)
    for i in range(n):
        for ch in range(c):
            for hh in range(cs_h):
                for ww in range(cs_w):
                    src = x[i, ch, h_off[i] + hh, w_off[i] + ww]
                    dst_w = cs_w - 1 - ww if flip[i] else ww
                    if mean_image is not None:
                        m = mean_image[ch, h_off[i] + hh, w_off[i] + ww]
                    elif mean_values is not None:
                        m = mean_values[0] if len(mean_values) == 1 else mean_values[ch]
                    else:
                        m = 0.0
                    out[i, ch, hh, dst_w] = (np.float32(src) - np.float32(m)) * np.float32(scale)
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("mean", ["none", "image", "values", "one"])
def test_native_matches_numpy_and_caffe(dtype, mean):
    g = np.random.default_rng(1)
    n, c, h, w, cs = 5, 3, 7, 6, 4
    x = g.integers(0, 256, (n, c, h, w)).astype(dtype)
    if dtype == np.float32:
        x += g.random(x.shape, dtype=np.float32)
    h_off = g.integers(0, h - cs + 1, n)
    w_off = g.integers(0, w - cs + 1, n)
    flip = g.integers(0, 2, n).astype(np.uint8)
    mi = g.random((c, h, w), dtype=np.float32) * 100 if mean == "image" else None
    mv = {"values": np.array([10, 20, 30], np.float32), "one": np.array([5], np.float32)}.get(mean)
    want = reference(x, cs, cs, h_off, w_off, flip, mi, mv, 0.5)
    got_native = np.empty((n, c, cs, cs), np.float32)
    got_numpy = np.empty((n, c, cs, cs), np.float32)
    _transform.transform(x, got_native, h_off, w_off, flip, mi, mv, 0.5)
    numpy_transform(x, got_numpy, h_off, w_off, flip, mi, mv, 0.5)
    np.testing.assert_allclose(got_native, want, rtol=1e-6)
    np.testing.assert_array_equal(got_native, got_numpy)


def test_no_crop_whole_image_and_bad_window():
    x = np.arange(2 * 1 * 3 * 4, dtype=np.uint8).reshape(2, 1, 3, 4)
    out = np.empty((2, 1, 3, 4), np.float32)
    _transform.transform(x, out, [0, 0], [0, 0], [0, 1])
    np.testing.assert_array_equal(out[0], x[0])
    np.testing.assert_array_equal(out[1], x[1][..., ::-1])
    with pytest.raises(ValueError, match="outside"):
        _transform.transform(x, np.empty((2, 1, 2, 2), np.float32), [0, 2], [0, 0], [0, 0])


@pytest.mark.parametrize("phase", [engine.TRAIN, engine.TEST])
def test_transformer_same_draws_native_and_fallback(phase, monkeypatch):
    g = np.random.default_rng(3)
    x = g.integers(0, 256, (6, 2, 8, 9), dtype=np.uint8)
    mean = g.random((2, 8, 9), dtype=np.float32)
    outs = []
    for native in (True, False):
        engine.set_random_seed(11)
        t = DatumTransformer(phase, scale=0.25, mirror=True, crop_size=5, mean=mean, native=native)
        assert t.native is native
        out = np.empty((6, 2, 5, 5), np.float32)
        t(x, out)
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    # the layer module falls back to numpy when the compiled module is missing
    monkeypatch.setattr(db_data, "_native_transform", None)
    assert DatumTransformer(phase).native is False
