"""engine.transformer.Transformer (pycaffe's caffe.io.Transformer) and resize_image."""
import numpy as np
import pytest

from engine.errors import CremaError
from engine.transformer import Transformer, TransformerError, resize_image


def _image(h, w, c, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, size=(h, w, c)).astype(np.float32)


def _full(t, name="data", mean=None):
    t.set_transpose(name, (2, 0, 1))
    t.set_channel_swap(name, (2, 1, 0))
    t.set_raw_scale(name, 255.0)
    t.set_mean(name, np.array([104.0, 117.0, 123.0]) if mean is None else mean)
    t.set_input_scale(name, 0.5)


def test_preprocess_hand_example():
    t = Transformer({"data": (1, 3, 2, 2)})
    _full(t)
    img = _image(2, 2, 3)
    out = t.preprocess("data", img)
    assert out.shape == (3, 2, 2) and out.dtype == np.float32 and out.flags.c_contiguous
    mean_bgr = [104.0, 117.0, 123.0]
    for c in range(3):
        for y in range(2):
            for x in range(2):
                # output channel c is input channel 2 - c (RGB -> BGR)
                expected = (img[y, x, 2 - c] * 255.0 - mean_bgr[c]) * 0.5
                assert out[c, y, x] == pytest.approx(expected, rel=1e-5)


def test_preprocess_deprocess_inverse_and_no_aliasing():
    t = Transformer({"data": (2, 3, 4, 5)})
    _full(t, mean=np.arange(60, dtype=np.float32).reshape(3, 4, 5))  # full C x H x W mean
    img = _image(4, 5, 3, seed=1)
    keep = img.copy()
    out = t.preprocess("data", img)
    np.testing.assert_array_equal(img, keep)  # the caller's array is not scaled in place
    np.testing.assert_allclose(t.deprocess("data", out), img, atol=1e-5)
    np.testing.assert_allclose(t.deprocess("data", out[np.newaxis]), img, atol=1e-5)


def test_single_channel_elementwise_mean():
    t = Transformer({"gray": (1, 1, 2, 3)})
    t.set_transpose("gray", (2, 0, 1))
    t.set_mean("gray", np.ones((2, 3)))  # H x W mean of a one-channel input
    img = np.arange(6, dtype=np.float32).reshape(2, 3, 1)
    out = t.preprocess("gray", img)
    np.testing.assert_array_equal(out, (np.arange(6).reshape(1, 2, 3) - 1).astype(np.float32))
    np.testing.assert_array_equal(t.deprocess("gray", out[np.newaxis]), img)


def test_preprocess_resizes_bilinear():
    t = Transformer({"data": (1, 1, 2, 2)})
    t.set_transpose("data", (2, 0, 1))
    img = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    out = t.preprocess("data", img)
    # halving with aligned pixel centres averages 2 x 2 blocks
    np.testing.assert_allclose(out[0], [[2.5, 4.5], [10.5, 12.5]])


def test_resize_image_hand_values():
    row = np.array([[0.0, 4.0]], np.float32)  # 1 x 2
    up = resize_image(row, (1, 4))
    # centres at -0.25 (edge), 0.25, 0.75, 1.25 (edge) of the source pixels
    np.testing.assert_allclose(up, [[0.0, 1.0, 3.0, 4.0]])
    img = _image(3, 5, 2, seed=2)
    np.testing.assert_array_equal(resize_image(img, (3, 5)), img)
    assert resize_image(img, (7, 2)).shape == (7, 2, 2)
    np.testing.assert_array_equal(resize_image(np.array([[1.0, 2.0]]), (1, 4), interp_order=0),
                                  [[1.0, 1.0, 2.0, 2.0]])
    with pytest.raises(TransformerError):
        resize_image(img, (2, 2), interp_order=3)


def test_setting_errors():
    t = Transformer({"data": (1, 3, 4, 4)})
    with pytest.raises(TransformerError, match="channels"):
        t.set_mean("data", np.zeros(4))
    with pytest.raises(TransformerError, match=r"incompatible.*\(3, 4, 4\)"):
        t.set_mean("data", np.zeros((3, 4, 5)))
    with pytest.raises(TransformerError, match="invalid"):
        t.set_mean("data", np.zeros((1, 3, 4, 4)))
    with pytest.raises(TransformerError, match="transpose"):
        t.set_transpose("data", (1, 0))
    with pytest.raises(TransformerError, match="channel swap"):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(TransformerError, match="permutation"):
        t.set_channel_swap("data", (0, 0, 1))
    with pytest.raises(CremaError, match="not one of the net inputs"):
        t.preprocess("image", _image(4, 4, 3))
    with pytest.raises(ValueError):  # pycaffe raises ValueError for mean shapes
        t.set_mean("data", np.zeros(2))
