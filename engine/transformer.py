"""pycaffe's caffe.io.Transformer: turn images into net inputs and back.

    t = Transformer({"data": net.blobs["data"].data.shape})   # name -> (N, C, H, W)
    t.set_transpose("data", (2, 0, 1))      # H x W x C -> C x H x W
    t.set_channel_swap("data", (2, 1, 0))   # RGB -> BGR
    t.set_raw_scale("data", 255)            # [0, 1] -> [0, 255]
    t.set_mean("data", np.array([104, 117, 123]))
    net.blobs["data"].data[...] = t.preprocess("data", image)

preprocess order (pycaffe's): resize to the input's H x W (bilinear), transpose, channel swap,
raw scale, subtract mean, input scale. deprocess undoes the steps in reverse (not the resize).
Differences from pycaffe, all in its corner cases: preprocess never writes into the caller's array
(pycaffe scales a float32 input in place), deprocess drops only a leading batch axis of size 1
(pycaffe squeezes every axis of size 1, which breaks single-channel images), and resizing uses
resize_image below instead of scikit-image.
"""
import numpy as np

from .errors import CremaError

__all__ = ["Transformer", "TransformerError", "resize_image"]


class TransformerError(CremaError, ValueError):
    """A Transformer setting that does not fit the input it is for."""


def _axis_weights(n_out, n_in):
    """Source indices and weights of a half-pixel-centred linear resample along one axis."""
    if n_in == 1 or n_out == 0:
        zeros = np.zeros(n_out, dtype=np.int64)
        return zeros, zeros, np.zeros(n_out)
    pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0.0, n_in - 1)  # edge pixels repeat beyond the border
    lo = np.minimum(np.floor(pos).astype(np.int64), n_in - 2)
    return lo, lo + 1, pos - lo


def resize_image(im, new_dims, interp_order=1):
    """Resize an H x W (x K) image to new_dims = (H', W') by bilinear interpolation with pixel
    centres aligned (as scikit-image's resize, order 1, with edge pixels repeated).
    interp_order 0 gives nearest neighbour. Returns float32."""
    im = np.asarray(im, dtype=np.float32)
    new_h, new_w = (int(d) for d in new_dims[:2])
    if im.ndim < 2:
        raise TransformerError(f"resize_image needs an H x W (x K) image, got shape {im.shape}")
    h, w = im.shape[:2]
    if (h, w) == (new_h, new_w):
        return im.copy()
    if h == 0 or w == 0:
        raise TransformerError(f"cannot resize an empty image of shape {im.shape}")
    if interp_order == 0:
        rows = np.minimum(((np.arange(new_h) + 0.5) * h / new_h).astype(np.int64), h - 1)
        cols = np.minimum(((np.arange(new_w) + 0.5) * w / new_w).astype(np.int64), w - 1)
        return im[rows][:, cols].copy()
    if interp_order != 1:
        raise TransformerError(f"resize_image supports interp_order 0 or 1, got {interp_order}")
    r0, r1, fr = _axis_weights(new_h, h)
    c0, c1, fc = _axis_weights(new_w, w)
    extra = (1,) * (im.ndim - 2)
    fr = fr.reshape((-1, 1) + extra).astype(np.float32)
    fc = fc.reshape((1, -1) + extra).astype(np.float32)
    top = im[r0][:, c0] * (1 - fc) + im[r0][:, c1] * fc
    bottom = im[r1][:, c0] * (1 - fc) + im[r1][:, c1] * fc
    return (top * (1 - fr) + bottom * fr).astype(np.float32)


class Transformer:
    """Per-input preprocessing settings; `inputs` maps input names to their (N, C, H, W) shape."""

    def __init__(self, inputs):
        self.inputs = {name: tuple(int(d) for d in shape) for name, shape in inputs.items()}
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def _check_input(self, in_):
        if in_ not in self.inputs:
            raise TransformerError(f"{in_!r} is not one of the net inputs: "
                                   f"{', '.join(map(repr, self.inputs))}")

    def preprocess(self, in_, data):
        """Image (H x W x K, e.g. float in [0, 1]) -> C x H x W float32 input for `in_`."""
        self._check_input(in_)
        caffe_in = np.array(data, dtype=np.float32)  # a copy: the caller's array stays as it was
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if transpose is not None:
            if caffe_in.ndim != len(transpose):
                raise TransformerError(f"transpose order {transpose} for {in_!r} does not fit an "
                                       f"image of shape {caffe_in.shape}")
            caffe_in = caffe_in.transpose(transpose)
        if channel_swap is not None:
            if caffe_in.shape[0] != len(channel_swap):
                raise TransformerError(f"channel swap {channel_swap} for {in_!r} needs "
                                       f"{len(channel_swap)} channels on axis 0; the image has "
                                       f"shape {caffe_in.shape}")
            caffe_in = caffe_in[list(channel_swap), :, :]
        if raw_scale is not None:
            caffe_in *= raw_scale
        if mean is not None:
            try:
                caffe_in -= mean
            except ValueError:
                raise TransformerError(f"mean of shape {np.shape(mean)} for {in_!r} does not fit "
                                       f"the image of shape {caffe_in.shape}") from None
        if input_scale is not None:
            caffe_in *= input_scale
        return np.ascontiguousarray(caffe_in, dtype=np.float32)

    def deprocess(self, in_, data):
        """Inverse of preprocess (without the resize): C x H x W (or 1 x C x H x W) -> image."""
        self._check_input(in_)
        decaf_in = np.array(data, dtype=np.float32)
        if decaf_in.ndim == 4 and decaf_in.shape[0] == 1:
            decaf_in = decaf_in[0]
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            decaf_in /= input_scale
        if mean is not None:
            decaf_in += mean
        if raw_scale is not None:
            decaf_in /= raw_scale
        if channel_swap is not None:
            decaf_in = decaf_in[np.argsort(channel_swap), :, :]
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_, order):
        """Axis order applied to the image, e.g. (2, 0, 1) for H x W x C -> C x H x W."""
        self._check_input(in_)
        order = tuple(int(o) for o in order)
        if len(order) != len(self.inputs[in_]) - 1:
            raise TransformerError(f"transpose order {order} must have as many axes as the input "
                                   f"{in_!r} without its batch axis ({len(self.inputs[in_]) - 1})")
        if sorted(order) != list(range(len(order))):
            raise TransformerError(f"transpose order {order} is not a permutation of the axes")
        self.transpose[in_] = order

    def set_channel_swap(self, in_, order):
        """Channel order after the transpose, e.g. (2, 1, 0) for RGB -> BGR."""
        self._check_input(in_)
        order = tuple(int(o) for o in order)
        channels = self.inputs[in_][1]
        if len(order) != channels:
            raise TransformerError(f"channel swap {order} must list as many channels as the input "
                                   f"{in_!r} has ({channels})")
        if sorted(order) != list(range(channels)):
            raise TransformerError(f"channel swap {order} is not a permutation of the channels")
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_, scale):
        """Multiply the image (after transpose and channel swap) by `scale`, e.g. 255."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Subtract a per-channel mean (C values) or an elementwise mean (C x H x W, or H x W
        for a single channel)."""
        self._check_input(in_)
        mean = np.asarray(mean, dtype=np.float32)
        shape = self.inputs[in_]
        if mean.ndim == 1:
            if mean.shape[0] != shape[1]:
                raise TransformerError(f"mean has {mean.shape[0]} channels but the input {in_!r} "
                                       f"(shape {shape}) has {shape[1]}")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            ms = mean.shape
            if len(ms) == 2:
                ms = (1,) + ms
            if len(ms) != 3:
                raise TransformerError(f"mean shape {mean.shape} is invalid: give C values, "
                                       "C x H x W, or H x W")
            if ms != shape[1:]:
                raise TransformerError(f"mean shape {mean.shape} is incompatible with the input "
                                       f"{in_!r} of shape {shape} (needs {shape[1:]})")
            mean = mean.reshape(ms)
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Multiply the input by `scale` after the mean subtraction."""
        self._check_input(in_)
        self.input_scale[in_] = scale
