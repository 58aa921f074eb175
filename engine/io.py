"""Conversions between numpy arrays and BlobProto (pycaffe's caffe.io)."""
import numpy as np

from . import crema_pb2
from .errors import WeightsError


class BlobShapeError(WeightsError, ValueError):
    """A BlobProto whose shape cannot be known (pycaffe raises ValueError there)."""


def blobproto_to_array(blob, return_diff=False):
    """BlobProto -> float32 array. Uses `shape` when present, else the legacy num/channels/height/
    width (which Caffe writes for 4-D blobs in old files), else a 0-d array for a single value;
    double_data is accepted too."""
    if blob.HasField("shape"):
        shape = tuple(blob.shape.dim)
    elif blob.HasField("num") or blob.HasField("channels") or blob.HasField("height") \
            or blob.HasField("width"):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        # No shape at all is a 0-d shape (Caffe's BlobShape with no dim): a scalar, which holds
        # exactly one value. pycaffe fails to reshape more values (a ValueError); so does crema,
        # saying why.
        count = len(blob.diff or blob.double_diff) if return_diff else \
            len(blob.data or blob.double_data)
        if count != 1:
            raise BlobShapeError("BlobProto has no shape (neither `shape` nor num/channels/"
                                 f"height/width) for its {count} values; only a single value "
                                 "(a scalar) needs none")
        shape = ()
    if return_diff:
        values = blob.diff if len(blob.diff) else blob.double_diff
    else:
        values = blob.data if len(blob.data) else blob.double_data
    arr = np.asarray(values, dtype=np.float32)
    expected = int(np.prod(shape, dtype=np.int64))
    if arr.size != expected:
        raise WeightsError(f"blob holds {arr.size} values but its shape {shape} needs {expected}")
    return arr.reshape(shape)


def array_to_blobproto(arr, diff=None):
    """Array (any shape) -> BlobProto with `shape` set, as current Caffe writes. Built from the
    packed wire bytes: filling the repeated field value by value takes seconds for big arrays."""
    from .protowire import blobproto_parts
    blob = crema_pb2.BlobProto()
    blob.ParseFromString(b"".join(blobproto_parts(np.asarray(arr), diff)))
    return blob


def arraylist_to_blobprotovector_str(arraylist):
    vec = crema_pb2.BlobProtoVector()
    vec.blobs.extend(array_to_blobproto(a) for a in arraylist)
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(data):
    vec = crema_pb2.BlobProtoVector()
    vec.ParseFromString(data)
    return [blobproto_to_array(b) for b in vec.blobs]


# pycaffe's caffe.io also holds the image Transformer; it lives in its own module.
from .transformer import Transformer, resize_image  # noqa: E402,F401


def array_to_datum(arr, label=None):
    """A (C, H, W) array -> Datum: uint8 arrays go to `data` (bytes), others to float_data."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError(f"Incorrect array shape {arr.shape}: a Datum holds (C, H, W)")
    datum = crema_pb2.Datum(channels=arr.shape[0], height=arr.shape[1], width=arr.shape[2])
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(float).ravel())
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum):
    """Datum -> (C, H, W) array: uint8 from `data`, float from float_data (pycaffe's)."""
    shape = (datum.channels, datum.height, datum.width)
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape)
    return np.array(datum.float_data).astype(float).reshape(shape)


def load_image(filename, color=True):
    """An image file as float32 in [0, 1], (H, W, 3) RGB, or (H, W, 1) when color is False
    (pycaffe's load_image; gray files are repeated to 3 channels when color is True)."""
    from PIL import Image
    with Image.open(filename) as im:
        img = np.asarray(im.convert("RGB" if color else "L"), dtype=np.float32) / 255.0
    return img if color else img[:, :, None]


def oversample(images, crop_dims):
    """Ten crops per image, as pycaffe's oversample: the 4 corner crops and the center crop, then
    the same five mirrored left-right. images: (N, H, W, K) or a list of (H, W, K) arrays;
    returns float32 (10 N, ch, cw, K)."""
    images = [np.asarray(im) for im in images]
    h, w = images[0].shape[:2]
    ch, cw = int(crop_dims[0]), int(crop_dims[1])
    if ch > h or cw > w:
        raise ValueError(f"crop {ch}x{cw} is larger than the image {h}x{w}")
    tops = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw),
            (int(h / 2.0 - ch / 2.0), int(w / 2.0 - cw / 2.0))]
    out = np.empty((10 * len(images), ch, cw, images[0].shape[-1]), np.float32)
    for k, im in enumerate(images):
        five = np.stack([im[y:y + ch, x:x + cw, :] for y, x in tops])
        out[10 * k:10 * k + 5] = five
        out[10 * k + 5:10 * k + 10] = five[:, :, ::-1, :]
    return out
