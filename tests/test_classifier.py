"""engine.Classifier and engine.Detector (pycaffe's) on a tiny net with random weights written
by crema, checked against a manual preprocessing and forward of each crop."""
import numpy as np
import pytest
from PIL import Image

import engine
from engine.transformer import resize_image

DEPLOY = """
name: "tiny"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 4 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3
                            weight_filler { type: "gaussian" std: 0.005 }
                            bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 5
                              weight_filler { type: "gaussian" std: 0.05 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""
MEAN = np.array([100.0, 120.0, 110.0], dtype=np.float32)   # BGR, as the net sees channels
SWAP = (2, 1, 0)


@pytest.fixture
def model(tmp_path):
    engine.set_random_seed(5)
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(DEPLOY)
    weights = tmp_path / "random.caffemodel"
    engine.Net(str(deploy), engine.TEST).save(str(weights))
    return str(deploy), str(weights)


def manual_probs(model, crops):
    """Each H x W x 3 crop preprocessed by hand (RGB [0, 1] -> BGR x 255 - mean, C x H x W)
    and run one at a time through a plain Net."""
    net = engine.Net(model[0], engine.TEST, weights=model[1])
    out = []
    for crop in crops:
        x = resize_image(crop, (8, 8)).transpose(2, 0, 1)[list(SWAP)] * 255.0 - MEAN[:, None, None]
        net.blobs["data"].data[0] = x
        out.append(net.forward()["prob"][0].copy())
    return np.array(out)


def random_images(seed, shapes):
    gen = np.random.default_rng(seed)
    return [gen.random(shape).astype(np.float32) for shape in shapes]


def test_classifier_oversample_and_centre_crop(model):
    clf = engine.Classifier(*model, image_dims=(12, 11), mean=MEAN, raw_scale=255,
                            channel_swap=SWAP)
    assert isinstance(clf, engine.Net) and clf.crop_dims.tolist() == [8, 8]
    images = random_images(1, [(20, 15, 3), (9, 30, 3), (12, 11, 3)])
    got = clf.predict(images)  # 30 crops through a net of batch 4: forward_all pads the last
    assert got.shape == (3, 5)
    for image, probs in zip(images, got):
        im = resize_image(image, (12, 11))
        corners = [(0, 0), (0, 3), (4, 0), (4, 3), (2, 1)]  # (12 - 8) / 2 = 2, int(1.5) = 1
        crops = [im[y:y + 8, x:x + 8] for y, x in corners]
        crops += [c[:, ::-1] for c in crops]
        np.testing.assert_allclose(probs, manual_probs(model, crops).mean(axis=0), atol=1e-5)
    centre = clf.predict(images, oversample=False)
    expected = manual_probs(model, [resize_image(im, (12, 11))[2:10, 1:9] for im in images])
    np.testing.assert_allclose(centre, expected, atol=1e-5)


def test_classifier_default_dims_and_input_scale(model):
    clf = engine.Classifier(*model, input_scale=0.5)
    assert clf.image_dims.tolist() == [8, 8]
    image = random_images(2, [(8, 8, 3)])[0]
    net = engine.Net(model[0], engine.TEST, weights=model[1])
    net.blobs["data"].data[0] = image.transpose(2, 0, 1) * 0.5
    expected = net.forward()["prob"][0]
    np.testing.assert_allclose(clf.predict([image], oversample=False)[0], expected, atol=1e-6)


def test_classifier_refusals(model):
    with pytest.raises(engine.CremaError, match="at least the net's input size"):
        engine.Classifier(*model, image_dims=(6, 10))
    clf = engine.Classifier(*model)
    with pytest.raises(engine.CremaError, match="H x W x K"):
        clf.predict([np.zeros((8, 8))])
    with pytest.raises(engine.CremaError, match="at least one image"):
        clf.predict([])


def save_image(path, array01):
    Image.fromarray(np.round(array01 * 255).astype(np.uint8)).save(path)
    return engine.io.load_image(str(path))  # what the detector will read back


def test_detector_windows_against_manual_crops(model, tmp_path):
    det = engine.Detector(*model, mean=MEAN, raw_scale=255, channel_swap=SWAP)
    first = save_image(tmp_path / "a.png", random_images(3, [(30, 40, 3)])[0])
    second = save_image(tmp_path / "b.png", random_images(4, [(25, 20, 3)])[0])
    windows_a = [np.array([0, 0, 10, 12]), np.array([5, 20, 29, 39])]
    windows_b = [(3, 4, 20, 15)]
    found = det.detect_windows([(str(tmp_path / "a.png"), windows_a),
                                (str(tmp_path / "b.png"), windows_b)])
    assert [d["filename"] for d in found] == [str(tmp_path / "a.png")] * 2 + \
        [str(tmp_path / "b.png")]
    assert found[2]["window"] == (3, 4, 20, 15)
    crops = [first[0:10, 0:12], first[5:29, 20:39], second[3:20, 4:15]]  # pycaffe's slices
    expected = manual_probs(model, crops)
    for d, probs in zip(found, expected):
        np.testing.assert_allclose(d["prediction"], probs, atol=1e-5)
    assert det.detect_windows([]) == []


def test_detector_context_padding_geometry(model):
    det = engine.Detector(*model, mean=MEAN, raw_scale=255, channel_swap=SWAP, context_pad=2)
    # the mean in image space: RGB order, divided by the raw scale
    np.testing.assert_allclose(det.crop_mean[0, 0], MEAN[::-1] / 255)
    image = random_images(5, [(40, 40, 3)])[0]
    # Inside the image: a 16 x 16 box (10..25) centred at 18, enlarged by 8 / (8 - 2 * 2) = 2
    # to round(18 -+ 16) = 2..34, which is warped whole to 8 x 8 (pycaffe slices 2:34).
    np.testing.assert_allclose(det.crop(image, (10, 10, 25, 25)),
                               resize_image(image[2:34, 2:34], (8, 8)), atol=1e-6)
    # At the corner: box 0..7 -> -4..12 (17 pixels at 8/17 input pixels each); the 4 rows and
    # columns outside the image become round(4 * 8/17) = 2 of mean, and the 13 inside
    # (sliced 0:12) round(13 * 8/17) = 6 of image.
    crop = det.crop(image, (0, 0, 7, 7))
    np.testing.assert_allclose(crop[2:, 2:], resize_image(image[0:12, 0:12], (6, 6)), atol=1e-6)
    np.testing.assert_allclose(crop[:2], np.broadcast_to(det.crop_mean[:2], (2, 8, 3)))
    np.testing.assert_allclose(crop[:, :2], np.broadcast_to(det.crop_mean[:, :2], (8, 2, 3)))
    # the mean-filled context is exactly zero once preprocessed
    net_in = det.transformer.preprocess("data", crop)
    np.testing.assert_allclose(net_in[:, :2, :], 0, atol=1e-4)


def test_detector_refusals(model, tmp_path):
    det = engine.Detector(*model)
    with pytest.raises(engine.CremaError, match="selective search is not available"):
        det.detect_selective_search(["a.jpg"])
    save_image(tmp_path / "a.png", random_images(6, [(10, 10, 3)])[0])
    with pytest.raises(engine.CremaError, match=r"a\.png: window \(12, 0, 15, 5\).*no pixels"):
        det.detect_windows([(str(tmp_path / "a.png"), [(12, 0, 15, 5)])])
    with pytest.raises(engine.CremaError, match="leaves no room"):
        engine.Detector(*model, context_pad=4)
