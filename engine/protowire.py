"""Protocol-buffer wire format, written by hand where it pays: big float blobs go to files as the
packed bytes of the numpy array (no per-value copy into a repeated field), and a message on the
wire is just the concatenation of its fields, so weights and solver states are streamed field by
field. The bytes equal what protobuf's own serializer writes for the same fields in order."""
import numpy as np

from . import crema_pb2


def varint(n):
    """Base-128 varint; negative int32/int64 values as 10-byte two's complement, as protobuf."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def key(field, wire_type):
    return varint((field << 3) | wire_type)


def header(field, length):
    """Tag (wire type 2: length-delimited) and length of a field."""
    return key(field, 2) + varint(length)


def float_bytes(arr):
    """The array as little-endian float32 bytes (a view when it already is one)."""
    flat = np.ascontiguousarray(arr, dtype="<f4").reshape(-1)
    return memoryview(flat).cast("B")


def blobproto_parts(data, diff=None):
    """The body of a BlobProto (packed float data (5), diff (6), shape (7)) as a list of buffers,
    without copying the big arrays; b"".join() of it parses as a BlobProto."""
    parts = []
    values = float_bytes(data)
    if values.nbytes:
        parts += [header(5, values.nbytes), values]
    if diff is not None:
        grads = float_bytes(diff)
        if grads.nbytes:
            parts += [header(6, grads.nbytes), grads]
    shape = crema_pb2.BlobShape(dim=[int(d) for d in np.shape(data)]).SerializeToString()
    parts += [header(7, len(shape)), shape]
    return parts
