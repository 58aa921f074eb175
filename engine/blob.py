"""Blob: an N-D array with its gradient, as in Caffe. `data` and `diff` are numpy arrays (float32 in
nets; float64 inside gradient checks) that users may write in place."""
import numpy as np

from .errors import ShapeError

INT_MAX = (1 << 31) - 1


def _as_shape(shape):
    if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
        shape = tuple(shape[0])
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise ShapeError(f"blob shape {shape} has a negative dimension")
    count = 1
    for d in shape:
        count *= d
    if count > INT_MAX:  # Caffe's Blob::Reshape: CHECK_LE(count_, INT_MAX)
        raise ShapeError(f"blob shape {shape} holds {count} elements, more than Caffe's limit "
                         f"of {INT_MAX} (INT_MAX)")
    return shape


class Blob:
    __slots__ = ("_data", "_diff", "dtype", "_bound")

    def __init__(self, *shape, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        self._data = self._diff = None
        self._bound = False  # storage is a view into a net's ParamArena
        self.reshape(*shape)

    @classmethod
    def from_array(cls, array, dtype=None):
        array = np.asarray(array)
        blob = cls(array.shape, dtype=dtype or array.dtype)
        blob._data[...] = array
        return blob

    def reshape(self, *shape):
        """Change the shape. The contents survive when the element count stays the same (a view),
        otherwise new zeroed storage is allocated (Caffe keeps capacity; numpy keeps it simple)."""
        shape = _as_shape(shape) if shape else ()
        if self._data is not None and self._data.shape == shape:
            return
        if self._data is not None and self._data.size == int(np.prod(shape, dtype=np.int64)):
            self._data = self._data.reshape(shape)
            self._diff = self._diff.reshape(shape)
            return
        if self._bound:
            raise ShapeError(f"cannot reshape a learnable parameter from {self.shape} to {shape}: "
                             "its storage is a fixed segment of the net's parameter arena")
        self._data = np.zeros(shape, dtype=self.dtype)
        self._diff = np.zeros(shape, dtype=self.dtype)

    def reshape_like(self, other):
        self.reshape(other.shape)

    def bind(self, data, diff):
        """Use these arrays (views into a ParamArena) as storage from now on."""
        self._data, self._diff, self._bound = data, diff, True

    def share_data(self, other):
        """Use `other`'s data storage (same shape required), as Caffe's ShareData."""
        if other.shape != self.shape:
            raise ShapeError(f"cannot share data between shapes {other.shape} and {self.shape}")
        self._data = other._data

    def share_diff(self, other):
        if other.shape != self.shape:
            raise ShapeError(f"cannot share diff between shapes {other.shape} and {self.shape}")
        self._diff = other._diff

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        self._data[...] = value

    @property
    def diff(self):
        return self._diff

    @diff.setter
    def diff(self, value):
        self._diff[...] = value

    @property
    def shape(self):
        return self._data.shape

    @property
    def num_axes(self):
        return self._data.ndim

    @property
    def count(self):
        return int(self._data.size)

    def count_range(self, start, end=None):
        end = self.num_axes if end is None else end
        return int(np.prod(self.shape[start:end], dtype=np.int64))

    def canonical_axis(self, axis):
        """Caffe's CanonicalAxisIndex: negative axes count from the end."""
        n = self.num_axes
        if not -n <= axis < max(n, 1):
            raise ShapeError(f"axis {axis} out of range for a blob of shape {self.shape}")
        return axis + n if axis < 0 else axis

    def _legacy(self, i):
        # Caffe's LegacyShape: missing axes of a <=4-D blob read as 1.
        return self.shape[i] if i < self.num_axes else 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def __repr__(self):
        return f"Blob(shape={self.shape}, dtype={self.dtype})"
