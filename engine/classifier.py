"""pycaffe's caffe.Classifier: a Net that classifies images, resized to image_dims and then
oversampled (4 corner and 1 centre crops of the net's input size, and their mirror images;
the predictions averaged) or centre-cropped.

    clf = engine.Classifier("deploy.prototxt", "weights.caffemodel", image_dims=(256, 256),
                            mean=np.array([104, 117, 123]), raw_scale=255, channel_swap=(2, 1, 0))
    probs = clf.predict([engine.io.load_image("cat.jpg")])      # (1, classes)

Images are H x W x K arrays (as engine.io.load_image gives: RGB in [0, 1]); preprocessing is
engine.transformer.Transformer's, set up from mean, input_scale, raw_scale and channel_swap
with the (2, 0, 1) transpose. Predictions are the net's first output.
"""
import numpy as np

from .errors import CremaError
from .io import oversample as ten_crops
from .layer import TEST
from .net import Net
from .transformer import Transformer, resize_image

__all__ = ["Classifier", "input_transformer"]


def input_transformer(net, mean=None, input_scale=None, raw_scale=None, channel_swap=None):
    """A Transformer for `net`'s first input: H x W x K images -> K x H x W, then the given
    channel swap, raw scale, mean and input scale."""
    in_ = net.inputs[0]
    transformer = Transformer({in_: net.blobs[in_].data.shape})
    transformer.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(in_, mean)
    if input_scale is not None:
        transformer.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(in_, channel_swap)
    return transformer


def _needs_image_input(net, what):
    if not net.inputs:
        raise CremaError(f"{net.source.label}: {what} needs a net with an input blob (an Input "
                         "layer or input: fields); this net has none")
    shape = net.blobs[net.inputs[0]].data.shape
    if len(shape) != 4:
        raise CremaError(f"{net.source.label}: {what} needs a 4-D (N, C, H, W) first input; "
                         f"'{net.inputs[0]}' has shape {shape}")


class Classifier(Net):
    """A Net for image classification (pycaffe's caffe.Classifier); see the module docstring.

    image_dims: the size images are resized to before cropping (default: the net's input
    size, i.e. the whole image is the crop). mean, input_scale, raw_scale, channel_swap: the
    preprocessing (see input_transformer)."""

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None,
                 input_scale=None, raw_scale=None, channel_swap=None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        _needs_image_input(self, "Classifier")
        self.transformer = input_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = np.array(self.blobs[self.inputs[0]].data.shape[2:])
        self.image_dims = self.crop_dims if image_dims is None or not len(image_dims) \
            else np.array([int(d) for d in image_dims])
        if self.image_dims.shape != (2,) or np.any(self.image_dims < self.crop_dims):
            raise CremaError(f"{self.source.label}: image_dims {self.image_dims.tolist()} must "
                             f"be (height, width), at least the net's input size "
                             f"{self.crop_dims.tolist()}, which crops are taken at")

    def predict(self, inputs, oversample=True):
        """(N, classes) predictions for N images (H x W x K arrays): averaged over 10 crops
        when `oversample`, else of the centre crop."""
        inputs = [np.asarray(im, dtype=np.float32) for im in inputs]
        if not inputs:
            raise CremaError("Classifier.predict needs at least one image")
        for index, im in enumerate(inputs):
            if im.ndim != 3:
                raise CremaError(f"Classifier.predict: image {index} has shape {im.shape}; "
                                 "images are H x W x K arrays")
        images = np.stack([resize_image(im, self.image_dims) for im in inputs])
        if oversample:
            crops = ten_crops(images, self.crop_dims)
        else:
            # pycaffe's centre crop: the crop centred on the image centre, edges truncated
            top, left = (self.image_dims / 2.0 - self.crop_dims / 2.0).astype(int)
            crops = images[:, top:top + self.crop_dims[0], left:left + self.crop_dims[1], :]
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, crop) for crop in crops])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(inputs), 10, -1)).mean(axis=1)
        return predictions
