"""The "WindowData" layer (Caffe's WindowDataLayer, R-CNN's fine-tuning input): batches of image
windows, warped to crop_size x crop_size, with their class labels.

Window file (window_data_param.source), whitespace-separated, repeated per image:
    # image_index          (0, 1, 2, ... in order)
    image_path             (prefixed by root_folder)
    channels               (3: colour, BGR as Caffe's OpenCV decoding; 1: gray)
    height
    width
    num_windows
    class_index overlap x1 y1 x2 y2      (num_windows lines; 0-based inclusive pixel corners)
A window with overlap >= fg_threshold is foreground (its class must be > 0); one with
overlap < bg_threshold is background (label 0); others are not used.

Each batch: batch_size - int(batch_size * fg_fraction) background windows, then the foreground
ones, each drawn uniformly at random (with replacement) from its list, and mirrored with
probability 1/2 when transform_param.mirror is set; draws come from engine.rng's main stream in
forward (in both phases, as Caffe), so a solver snapshot resumes them exactly.
Geometry, as Caffe: crop_mode "warp" warps the window itself to crop_size x crop_size; with
context_pad = p (or crop_mode "square", which first makes the window square about its centre)
the window is enlarged about its centre by crop_size / (crop_size - 2 p), the part inside the
image is warped at the same scale, and the part outside stays zero (the mean, once subtracted);
mirroring mirrors that padding too. Values: (pixel - mean) * window_data_param.scale, the mean
from transform_param.mean_file (its centre crop_size x crop_size, taken at the output position)
or mean_value (one, or one per channel), over the warped pixels only.

Parameters read: window_data_param source, batch_size, fg_threshold, bg_threshold, fg_fraction,
context_pad, crop_mode, cache_images (keep the encoded files in memory), root_folder, scale;
transform_param crop_size (required), mirror, mean_file, mean_value. As in Caffe,
transform_param.scale and the legacy window_data_param crop_size, mirror and mean_file are not
used (a warning says so; the net upgrader moves the legacy ones of old nets).
Differences from Caffe: images are decoded with Pillow and warped with engine's bilinear resize
in float (OpenCV rounds the warped window to 8 bits); the window file is checked at setup
(indices in order, windows inside the image, images present, consistent channel counts) and
every refusal names the file and line, where Caffe aborts or reads out of bounds.
"""
import logging
import os
import warnings

import numpy as np

from .. import rng
from ..data.lmdb_io import decode_image
from ..layer import Layer
from ..registry import register_layer
from ..transformer import resize_image
from .db_data import DataLayer

_log = logging.getLogger("crema")

CROP_MODES = ("warp", "square")


def c_round(value):
    """C's round(): halves away from zero (Caffe rounds window corners and sizes with it)."""
    return int(np.sign(value) * np.floor(abs(value) + 0.5))


class _Image:
    """One image of the window file: path, the header's (channels, height, width), the line of
    its header, and its encoded bytes when cached."""

    def __init__(self, path, shape, line):
        self.path, self.shape, self.line = path, shape, line
        self.encoded = None


@register_layer("WindowData")
class WindowDataLayer(Layer):
    """Caffe's WindowDataLayer: window file -> data (N, C, crop, crop) + label (N,). See the
    module docstring for the file format, sampling and geometry."""
    exact_num_bottom = 0
    exact_num_top = 2
    _load_mean_file = DataLayer._load_mean_file

    def setup(self, bottom, top):
        p, t = self.param.window_data_param, self.param.transform_param
        if not p.source:
            raise self.error("window_data_param source is empty: give a window file")
        if p.batch_size <= 0:
            raise self.error("window_data_param batch_size must be positive")
        self.crop_size = int(t.crop_size)
        if self.crop_size <= 0:
            raise self.error("transform_param crop_size must be positive: WindowData warps every "
                             "window to crop_size x crop_size")
        if p.crop_mode not in CROP_MODES:
            raise self.error(f"window_data_param crop_mode must be 'warp' or 'square', got "
                             f"'{p.crop_mode}'")
        if 2 * p.context_pad >= self.crop_size:
            raise self.error(f"window_data_param context_pad {p.context_pad} leaves no room for "
                             f"the window in a crop of {self.crop_size}")
        for field in ("crop_size", "mirror", "mean_file"):
            if p.HasField(field):
                warnings.warn(f"WindowData layer '{self.name}': window_data_param.{field} is a "
                              "legacy field and is not used; use transform_param", stacklevel=2)
        if t.HasField("scale"):
            warnings.warn(f"WindowData layer '{self.name}': transform_param.scale is not used by "
                          "WindowData (as in Caffe); set window_data_param.scale", stacklevel=2)
        self.batch_size = int(p.batch_size)
        self.num_fg = int(np.float32(self.batch_size) * np.float32(p.fg_fraction))
        self._images, self.fg_windows, self.bg_windows = self._read_window_file(p.source)
        self.channels = self._images[0].shape[0]
        self._check_window_lists(p)
        self._mean = self._setup_mean(t)
        top[0].reshape((self.batch_size, self.channels, self.crop_size, self.crop_size))
        top[1].reshape((self.batch_size,))

    # -- the window file ----------------------------------------------------------------------
    def _read_window_file(self, source):
        """Parse and check the window file: (images, foreground windows, background windows);
        a window is (image index, label, overlap, x1, y1, x2, y2)."""
        try:
            with open(source) as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise self.error(f"cannot open window_data_param source '{source}': "
                             f"{e.strerror}") from None
        except UnicodeDecodeError:
            raise self.error(f"window file '{source}' is not text (invalid UTF-8)") from None
        tokens = [(tok, number) for number, line in enumerate(lines, 1) for tok in line.split()]
        p = self.param.window_data_param
        position = 0

        def take(what, convert=str):
            nonlocal position
            if position == len(tokens):
                raise self.error(f"{source}:{len(lines)}: the file ends where {what} was "
                                 "expected")
            token, number = tokens[position]
            position += 1
            try:
                return convert(token), number
            except ValueError:
                raise self.error(f"{source}:{number}: expected {what}, got '{token}'") from None

        images, fg, bg = [], [], []
        while position < len(tokens):
            mark, line = take("'#' (the start of an image entry)")
            if mark != "#":
                raise self.error(f"{source}:{line}: expected '#' starting an image entry "
                                 f"('# image_index'), got '{mark}'")
            index, line = take("the image index after '#'", int)
            if index != len(images):
                raise self.error(f"{source}:{line}: image index {index} is out of order; "
                                 f"expected {len(images)} (indices count 0, 1, 2, ...)")
            name, path_line = take("an image path")
            path = os.path.join(p.root_folder, name) if p.root_folder else name
            shape = tuple(take(f"the image's {what} (a positive integer)", int)[0]
                          for what in ("channels", "height", "width"))
            if shape[0] not in (1, 3) or min(shape[1:]) <= 0:
                raise self.error(f"{source}:{tokens[position - 1][1]}: image '{path}' has "
                                 f"channels, height, width {shape}; channels must be 1 or 3 "
                                 "and the sizes positive")
            if images and shape[0] != images[0].shape[0]:
                raise self.error(f"{source}:{path_line}: image '{path}' has {shape[0]} channels, "
                                 f"the first image {images[0].shape[0]}; all must agree")
            if not os.path.isfile(path):
                raise self.error(f"{source}:{path_line}: image '{path}' not found")
            image = _Image(path, shape, path_line)
            if p.cache_images:
                with open(path, "rb") as f:
                    image.encoded = f.read()
            images.append(image)
            num_windows, _ = take("the number of windows", int)
            for _ in range(num_windows):
                label, line = take("a window's class index", int)
                overlap, _ = take("a window's overlap", float)
                x1, y1, x2, y2 = (take(f"a window's {c}", int)[0] for c in ("x1", "y1", "x2", "y2"))
                height, width = shape[1:]
                if not (0 <= x1 <= x2 < width and 0 <= y1 <= y2 < height):
                    raise self.error(f"{source}:{line}: window ({x1}, {y1}, {x2}, {y2}) is not "
                                     f"inside image '{path}' of {height} x {width} (x1 y1 x2 y2 "
                                     "are 0-based inclusive corners)")
                if overlap >= p.fg_threshold:
                    if label <= 0:
                        raise self.error(f"{source}:{line}: window with overlap {overlap} >= "
                                         f"fg_threshold {p.fg_threshold} is foreground and needs "
                                         f"a class index > 0, got {label}")
                    fg.append((index, label, overlap, x1, y1, x2, y2))
                elif overlap < p.bg_threshold:
                    bg.append((index, 0, 0.0, x1, y1, x2, y2))
        if not images:
            raise self.error(f"window file '{source}' lists no images")
        _log.info("WindowData layer '%s': %d images, %d foreground and %d background windows "
                  "in '%s'", self.name, len(images), len(fg), len(bg), source)
        return images, fg, bg

    def _check_window_lists(self, p):
        if self.num_fg and not self.fg_windows:
            raise self.error(f"window file '{p.source}' has no foreground windows (overlap >= "
                             f"fg_threshold {p.fg_threshold:g}), and fg_fraction "
                             f"{p.fg_fraction:g} asks for {self.num_fg} per batch")
        if self.batch_size - self.num_fg and not self.bg_windows:
            raise self.error(f"window file '{p.source}' has no background windows (overlap < "
                             f"bg_threshold {p.bg_threshold:g}), and fg_fraction "
                             f"{p.fg_fraction:g} asks for {self.batch_size - self.num_fg} per "
                             "batch")

    def _setup_mean(self, t):
        """The mean to subtract: (C, crop, crop) from mean_file, (C, 1, 1) from mean_value, or
        None."""
        if t.mean_file and len(t.mean_value):
            raise self.error("transform_param gives both mean_file and mean_value; use one")
        c, crop = self.channels, self.crop_size
        if t.mean_file:
            mean = self._load_mean_file(t.mean_file)
            # Caffe takes the mean at the output pixel, offset by (mean width - crop) / 2 on
            # both axes
            off = (mean.shape[2] - crop) // 2
            window = mean[:, off:off + crop, off:off + crop]
            if off < 0 or mean.shape[0] != c or window.shape != (c, crop, crop):
                raise self.error(f"mean_file '{t.mean_file}' has shape {mean.shape}; WindowData "
                                 f"needs {c} channels and a centre crop of {crop} x {crop}")
            return np.ascontiguousarray(window)
        if len(t.mean_value):
            if len(t.mean_value) not in (1, c):
                raise self.error(f"transform_param gives {len(t.mean_value)} mean_value; give 1 "
                                 f"or one per channel ({c})")
            values = np.asarray(t.mean_value, dtype=np.float32)
            return np.broadcast_to(values, (c,)).reshape(c, 1, 1).copy()
        return None

    # -- reading ------------------------------------------------------------------------------
    def _load(self, image):
        """(C, H, W) float32 pixels of an image: BGR colour or gray, as its header says."""
        p = self.param.window_data_param
        try:
            raw = image.encoded
            if raw is None:
                with open(image.path, "rb") as f:
                    raw = f.read()
            pixels = decode_image(raw, force_color=image.shape[0] == 3,
                                  force_gray=image.shape[0] == 1)
        except OSError as e:
            raise self.error(f"{p.source}:{image.line}: cannot read image '{image.path}': "
                             f"{e.strerror or e}") from None
        except Exception as e:
            raise self.error(f"{p.source}:{image.line}: cannot decode image '{image.path}': "
                             f"{e}") from None
        if pixels.shape != image.shape:
            raise self.error(f"{p.source}:{image.line}: image '{image.path}' is "
                             f"{pixels.shape[1]} x {pixels.shape[2]}, the window file says "
                             f"{image.shape[1]} x {image.shape[2]}")
        return pixels.astype(np.float32)

    def window_geometry(self, window, image_shape, mirror):
        """Caffe's crop arithmetic for one window: ((y1, y2, x1, x2) inclusive source box in the
        image, (height, width) it is warped to, (pad_h, pad_w) where it goes in the crop)."""
        p = self.param.window_data_param
        crop = self.crop_size
        x1, y1, x2, y2 = window[3:]
        if not p.context_pad and p.crop_mode != "square":
            return (y1, y2, x1, x2), (crop, crop), (0, 0)
        rows, cols = image_shape[1:]
        f32 = np.float32
        context_scale = f32(crop) / f32(crop - 2 * p.context_pad)
        half_h, half_w = f32(y2 - y1 + 1) / f32(2), f32(x2 - x1 + 1) / f32(2)
        centre_x, centre_y = f32(x1) + half_w, f32(y1) + half_h
        if p.crop_mode == "square":
            half_h = half_w = max(half_h, half_w)
        x1, x2 = (c_round(centre_x + s * half_w * context_scale) for s in (-1, 1))
        y1, y2 = (c_round(centre_y + s * half_h * context_scale) for s in (-1, 1))
        unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
        pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
        pad_x2 = max(0, x2 - cols + 1)
        x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - max(0, y2 - rows + 1)
        scale_x, scale_y = f32(crop) / f32(unclipped_w), f32(crop) / f32(unclipped_h)
        height = c_round(f32(y2 - y1 + 1) * scale_y)
        width = c_round(f32(x2 - x1 + 1) * scale_x)
        pad_h = c_round(f32(pad_y1) * scale_y)
        pad_w = c_round(f32(pad_x2 if mirror else pad_x1) * scale_x)  # mirrored padding
        return (y1, y2, x1, x2), (min(height, crop - pad_h), min(width, crop - pad_w)), \
            (pad_h, pad_w)

    def reshape(self, bottom, top):
        self.kernel = "numpy"  # shapes are fixed in setup, as in Caffe

    def forward(self, bottom, top):
        gen = rng.generator()
        scale = np.float32(self.param.window_data_param.scale)
        mirror = self.param.transform_param.mirror
        data = top[0].data
        data[...] = 0
        labels = []
        counts = ((self.bg_windows, self.batch_size - self.num_fg), (self.fg_windows, self.num_fg))
        for windows, count in counts:
            for _ in range(count):
                window = windows[int(gen.integers(len(windows)))]
                flip = bool(mirror and gen.integers(2))
                item = len(labels)
                image = self._images[window[0]]
                pixels = self._load(image)
                (y1, y2, x1, x2), (height, width), (pad_h, pad_w) = \
                    self.window_geometry(window, image.shape, flip)
                labels.append(window[1])
                if height <= 0 or width <= 0:  # the window rounds to nothing: all padding
                    continue
                warped = resize_image(pixels[:, y1:y2 + 1, x1:x2 + 1].transpose(1, 2, 0),
                                      (height, width)).transpose(2, 0, 1)
                if flip:
                    warped = warped[:, :, ::-1]
                rows, cols = slice(pad_h, pad_h + height), slice(pad_w, pad_w + width)
                if self._mean is not None:
                    mean = self._mean if self._mean.shape[1] == 1 else self._mean[:, rows, cols]
                    warped = warped - mean
                data[item, :, rows, cols] = warped * scale
        top[1].data[...] = labels
