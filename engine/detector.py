"""pycaffe's caffe.Detector: a Net that classifies windows of images, each window cropped
(optionally with R-CNN's context padding) and warped to the net's input size.

    det = engine.Detector("deploy.prototxt", "weights.caffemodel", mean=..., raw_scale=255,
                          channel_swap=(2, 1, 0), context_pad=16)
    found = det.detect_windows([("img.jpg", [(ymin, xmin, ymax, xmax), ...])])
    # [{"window": ..., "prediction": (classes,) array, "filename": "img.jpg"}, ...]

Windows are (ymin, xmin, ymax, xmax) in pixels. Without context padding a window is the slice
im[ymin:ymax, xmin:xmax], as in pycaffe. With context_pad = p, the window is enlarged about its
centre so that, once warped to the input size, p pixels of context surround it; the part of the
enlarged box outside the image is filled with the mean (in image space, so that it is zero
after preprocessing). This follows pycaffe's arithmetic (rounding half to even, as pycaffe
under Python 3), which also handles non-square inputs axis by axis.

Selective search proposals are not available (pycaffe calls an external MATLAB package):
detect_selective_search raises a CremaError; compute windows elsewhere and use detect_windows.
"""
import numpy as np

from .classifier import _needs_image_input, input_transformer
from .errors import CremaError
from .io import load_image
from .layer import TEST
from .net import Net
from .transformer import resize_image

__all__ = ["Detector"]


class Detector(Net):
    """A Net for windowed detection (pycaffe's caffe.Detector); see the module docstring."""

    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None, context_pad=None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        _needs_image_input(self, "Detector")
        self.transformer = input_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """Classify every window of every image: images_windows is an iterable of (image file,
        windows). Returns one {"window", "prediction", "filename"} dict per window, in order."""
        images_windows = [(fname, list(windows)) for fname, windows in images_windows]
        crops = []
        for fname, windows in images_windows:
            image = load_image(fname).astype(np.float32)
            for window in windows:
                try:
                    crops.append(self.crop(image, window))
                except CremaError as e:
                    raise CremaError(f"{fname}: {e}") from None
        if not crops:
            return []
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, crop) for crop in crops])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        detections = []
        for fname, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[len(detections)],
                                   "filename": fname})
        return detections

    def detect_selective_search(self, image_fnames):
        raise CremaError("selective search is not available in crema (pycaffe runs an external "
                         "MATLAB package for it): compute the proposals with another tool and "
                         "pass them to Detector.detect_windows")

    def crop(self, im, window):
        """The window of `im` (H x W x K) to classify: the plain slice, or with context_pad the
        enlarged box warped to the input size with mean-filled borders."""
        ymin, xmin, ymax, xmax = (int(round(float(v))) for v in window)
        if not self.context_pad:
            crop = im[max(ymin, 0):ymax, max(xmin, 0):xmax]
            if crop.size == 0:
                raise CremaError(f"window {tuple(window)} (ymin, xmin, ymax, xmax) holds no "
                                 f"pixels of the {im.shape[0]} x {im.shape[1]} image")
            return crop
        out_h, out_w = (int(d) for d in self.crop_dims[:2])
        # enlarge the box so that after warping context_pad pixels of context surround it
        scale = np.array([out_h, out_w], dtype=np.float64) / \
            (np.array([out_h, out_w]) - 2.0 * self.context_pad)
        half = np.array([ymax - ymin + 1, xmax - xmin + 1], dtype=np.float64) / 2.0
        centre = np.array([ymin, xmin], dtype=np.float64) + half
        lo = np.round(centre - scale * half)
        hi = np.round(centre + scale * half)
        warp = np.array([out_h, out_w]) / (hi - lo + 1)   # input pixels per box pixel
        pad = np.round(np.maximum(0, -lo) * warp).astype(int)  # rows/cols outside the image
        im_size = np.array(im.shape[:2], dtype=np.float64)
        lo, hi = np.clip(lo, 0, im_size), np.clip(hi, 0, im_size)
        size = np.round((hi - lo + 1) * warp).astype(int)
        size = np.minimum(size, np.array([out_h, out_w]) - pad)
        lo, hi = lo.astype(int), hi.astype(int)
        context = im[lo[0]:hi[0], lo[1]:hi[1]]
        if context.size == 0 or np.any(size <= 0):
            raise CremaError(f"window {tuple(window)} (ymin, xmin, ymax, xmax) with context "
                             f"pad {self.context_pad} holds no pixels of the {im.shape[0]} x "
                             f"{im.shape[1]} image")
        crop = np.empty(tuple(self.crop_dims), dtype=np.float32)
        crop[...] = self.crop_mean
        crop[pad[0]:pad[0] + size[0], pad[1]:pad[1] + size[1]] = \
            resize_image(context, (size[0], size[1]))
        return crop

    def configure_crop(self, context_pad):
        """Set the crop size (the input's H x W x C) and the context padding; with padding,
        also the mean in image space that fills the context beyond the image."""
        in_ = self.inputs[0]
        channels, height, width = self.blobs[in_].data.shape[1:]
        self.crop_dims = np.array([height, width, channels])
        self.context_pad = context_pad
        if not context_pad:
            return
        if 2 * context_pad >= min(height, width):
            raise CremaError(f"context_pad {context_pad} leaves no room for the window in the "
                             f"net's {height} x {width} input")
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        # undo the preprocessing of a mean image: C x H x W -> H x W x C, channels back in
        # image order, divided by the raw scale (the mean is taken before the input scale)
        crop_mean = np.array(mean, dtype=np.float32).transpose(1, 2, 0)
        swap = self.transformer.channel_swap.get(in_)
        if swap is not None:
            crop_mean = crop_mean[:, :, np.argsort(swap)]
        raw_scale = self.transformer.raw_scale.get(in_)
        if raw_scale is not None:
            crop_mean = crop_mean / raw_scale
        self.crop_mean = np.broadcast_to(crop_mean, self.crop_dims).astype(np.float32)
