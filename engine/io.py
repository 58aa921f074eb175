"""Conversions between numpy arrays and BlobProto (pycaffe's caffe.io)."""
import numpy as np

from . import crema_pb2
from .errors import WeightsError


def blobproto_to_array(blob, return_diff=False):
    """BlobProto -> float32 array. Uses `shape` when present, else the legacy num/channels/height/
    width (which Caffe writes for 4-D blobs in old files); double_data is accepted too."""
    if blob.HasField("shape"):
        shape = tuple(blob.shape.dim)
    elif blob.HasField("num") or blob.HasField("channels") or blob.HasField("height") \
            or blob.HasField("width"):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = (len(blob.data) or len(blob.double_data),)
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
