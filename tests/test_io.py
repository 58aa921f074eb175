"""pycaffe's caffe.io functions under engine.io."""
import numpy as np
import pytest
from PIL import Image

from engine import crema_pb2, io


def test_datum_round_trips_uint8_and_float():
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    d = io.array_to_datum(a, label=3)
    assert d.label == 3 and d.data == a.tobytes()
    np.testing.assert_array_equal(io.datum_to_array(d), a)
    f = np.linspace(0, 1, 24).reshape(2, 3, 4)
    np.testing.assert_allclose(io.datum_to_array(io.array_to_datum(f)), f, rtol=1e-6)
    with pytest.raises(ValueError):
        io.array_to_datum(np.zeros((2, 2)))


def test_blobproto_without_shape_raises_value_error():
    blob = crema_pb2.BlobProto()
    blob.data.extend([1.0, 2.0])
    with pytest.raises(ValueError, match="no shape"):
        io.blobproto_to_array(blob)


def test_blobproto_without_shape_holding_one_value_is_a_scalar():
    blob = crema_pb2.BlobProto()
    blob.data.append(-2.5)
    arr = io.blobproto_to_array(blob)
    assert arr.shape == () and arr == np.float32(-2.5)
    blob.diff.append(4.0)
    assert io.blobproto_to_array(blob, return_diff=True) == np.float32(4.0)
    empty = crema_pb2.BlobProto()
    with pytest.raises(ValueError, match="its 0 values"):
        io.blobproto_to_array(empty)


def test_load_image_color_and_gray(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "x.png")
    rgb = io.load_image(str(tmp_path / "x.png"))
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb, a / 255.0, rtol=1e-6)
    gray = io.load_image(str(tmp_path / "x.png"), color=False)
    assert gray.shape == (5, 7, 1) and 0 <= gray.min() and gray.max() <= 1


def test_oversample_corners_center_and_mirrors():
    im = np.arange(6 * 8 * 2, dtype=np.float32).reshape(6, 8, 2)
    crops = io.oversample([im, im + 1000], (4, 4))
    assert crops.shape == (20, 4, 4, 2)
    np.testing.assert_array_equal(crops[0], im[:4, :4])       # top left
    np.testing.assert_array_equal(crops[3], im[2:, 4:])       # bottom right
    np.testing.assert_array_equal(crops[4], im[1:5, 2:6])     # center
    np.testing.assert_array_equal(crops[5], im[:4, :4][:, ::-1])  # mirrored top left
    np.testing.assert_array_equal(crops[10], im[:4, :4] + 1000)
