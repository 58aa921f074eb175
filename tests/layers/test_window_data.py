"""WindowData layer: R-CNN window files, foreground/background sampling, and the warp geometry
(plain, with context padding, square, mirrored) checked against direct numpy crops."""
import os

import numpy as np
import pytest
from PIL import Image

import engine
from engine.io import array_to_blobproto
from engine.transformer import resize_image

CROP = 8


def write_image(path, seed, height, width):
    """A random RGB PNG; returns its pixels as the layer sees them: (3, H, W) float BGR."""
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return rgb[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)


@pytest.fixture
def images(tmp_path):
    return {"a.png": write_image(tmp_path / "a.png", 1, 30, 40),
            "b.png": write_image(tmp_path / "b.png", 2, 25, 20)}


def window_file(tmp_path, entries, name="windows.txt"):
    """entries: [(image name, [(label, overlap, x1, y1, x2, y2), ...]), ...] with the header
    dimensions of the fixture's images."""
    dims = {"a.png": (30, 40), "b.png": (25, 20)}
    lines = []
    for index, (image, windows) in enumerate(entries):
        h, w = dims[image]
        lines += [f"# {index}", image, "3", str(h), str(w), str(len(windows))]
        lines += [" ".join(str(v) for v in window) for window in windows]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def make_net(tmp_path, source, batch=4, fg_fraction=0.25, context_pad=0, crop_mode="warp",
             transform="", extra="", crop=CROP):
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(f"""
layer {{ name: "windows" type: "WindowData" top: "data" top: "label"
  window_data_param {{ source: "{source}" root_folder: "{tmp_path}/" batch_size: {batch}
                       fg_threshold: 0.5 bg_threshold: 0.3 fg_fraction: {fg_fraction}
                       context_pad: {context_pad} crop_mode: "{crop_mode}" {extra} }}
  transform_param {{ crop_size: {crop} {transform} }} }}
""")
    return engine.Net(str(prototxt), engine.TRAIN)


def warp(pixels, y1, y2, x1, x2, height=CROP, width=CROP):
    """The inclusive box of (C, H, W) pixels resized to height x width."""
    box = pixels[:, y1:y2 + 1, x1:x2 + 1].transpose(1, 2, 0)
    return resize_image(box, (height, width)).transpose(2, 0, 1)


def test_labels_and_foreground_fraction(tmp_path, images):
    source = window_file(tmp_path, [
        ("a.png", [(3, 0.9, 1, 2, 10, 12), (0, 0.1, 5, 5, 20, 20), (2, 0.4, 0, 0, 5, 5)]),
        ("b.png", [(7, 0.6, 2, 2, 15, 20), (1, 0.2, 0, 0, 19, 24)]),
    ])
    net = make_net(tmp_path, source, batch=10, fg_fraction=0.3)
    layer = net.layers[0]
    # overlap 0.4 is between the thresholds: unused; background windows get label 0
    assert [w[1] for w in layer.fg_windows] == [3, 7]
    assert [(w[0], w[1], w[2]) for w in layer.bg_windows] == [(0, 0, 0.0), (1, 0, 0.0)]
    assert net.blobs["data"].data.shape == (10, 3, CROP, CROP)
    seen = set()
    for _ in range(20):
        net.forward()
        labels = net.blobs["label"].data
        assert np.all(labels[:7] == 0)  # 10 - int(10 * 0.3) background first
        assert set(labels[7:]) <= {3, 7}
        seen |= set(labels[7:].tolist())
    assert seen == {3, 7}


def test_plain_warp_with_mean_values_and_scale(tmp_path, images):
    source = window_file(tmp_path, [("a.png", [(4, 0.8, 3, 2, 12, 20)]),
                                    ("b.png", [(0, 0.0, 1, 4, 18, 9)])])
    net = make_net(tmp_path, source, transform="mean_value: 10 mean_value: 20 mean_value: 30",
                   extra="scale: 0.5")
    net.forward()
    mean = np.array([10, 20, 30], np.float32)[:, None, None]
    expected_bg = (warp(images["b.png"], 4, 9, 1, 18) - mean) * 0.5
    expected_fg = (warp(images["a.png"], 2, 20, 3, 12) - mean) * 0.5
    data = net.blobs["data"].data
    for item in range(3):
        np.testing.assert_allclose(data[item], expected_bg, atol=1e-4)
    np.testing.assert_allclose(data[3], expected_fg, atol=1e-4)
    assert net.blobs["label"].data.tolist() == [0, 0, 0, 4]


def test_context_pad_at_the_border_and_mirror(tmp_path, images):
    # crop 8, context_pad 2: windows grow by 8 / (8 - 4) = 2 about their centre. The 8 x 8
    # window x 0..7, y 2..9 (centre x 4, y 6) becomes x -4..12, y -2..14: 17 x 17 pixels at
    # 8/17 output pixels each. Inside the image: x 0..12 (13 -> round(6.12) = 6 columns),
    # y 0..14 (15 -> round(7.06) = 7 rows); outside: 4 columns -> round(1.88) = 2 of padding
    # on the left, 2 rows -> round(0.94) = 1 on top.
    source = window_file(tmp_path, [("a.png", [(1, 0.9, 0, 2, 7, 9)]),
                                    ("b.png", [(0, 0.0, 0, 0, 19, 24)])])
    net = make_net(tmp_path, source, batch=2, fg_fraction=0.5, context_pad=2)
    layer = net.layers[0]
    assert layer.window_geometry(layer.fg_windows[0], (3, 30, 40), False) == \
        ((0, 14, 0, 12), (7, 6), (1, 2))
    net.forward()
    expected = np.zeros((3, CROP, CROP), np.float32)
    expected[:, 1:8, 2:8] = warp(images["a.png"], 0, 14, 0, 12, 7, 6)
    np.testing.assert_allclose(net.blobs["data"].data[1], expected, atol=1e-4)

    # mirrored, the padding moves to the right side (here there is none there: pad 0)
    mirrored = make_net(tmp_path, source, batch=2, fg_fraction=0.5, context_pad=2,
                        transform="mirror: true")
    flipped = np.zeros((3, CROP, CROP), np.float32)
    flipped[:, 1:8, 0:6] = warp(images["a.png"], 0, 14, 0, 12, 7, 6)[:, :, ::-1]
    outcomes = set()
    for _ in range(12):
        mirrored.forward()
        item = mirrored.blobs["data"].data[1]
        if np.allclose(item, flipped, atol=1e-4):
            outcomes.add("flipped")
        else:
            np.testing.assert_allclose(item, expected, atol=1e-4)
            outcomes.add("plain")
    assert outcomes == {"plain", "flipped"}


def test_square_mode_and_mean_file(tmp_path, images):
    # square: the 4-wide, 8-tall window x 20..23, y 10..17 (centre x 22, y 14) becomes 8 x 8
    # (half 4), x 18..26, y 10..18 with no context: 9 x 9 pixels warped to 8 x 8, no padding.
    source = window_file(tmp_path, [("a.png", [(2, 0.7, 20, 10, 23, 17)]),
                                    ("b.png", [(0, 0.1, 0, 0, 3, 3)])])
    mean = np.random.default_rng(3).random((1, 3, 10, 10)).astype(np.float32) * 50
    with open(tmp_path / "mean.binaryproto", "wb") as f:
        f.write(array_to_blobproto(mean).SerializeToString())
    net = make_net(tmp_path, source, batch=2, fg_fraction=0.5, crop_mode="square",
                   transform=f'mean_file: "{tmp_path}/mean.binaryproto"')
    layer = net.layers[0]
    assert layer.window_geometry(layer.fg_windows[0], (3, 30, 40), False) == \
        ((10, 18, 18, 26), (8, 8), (0, 0))
    net.forward()
    centre = mean[0][:, 1:9, 1:9]  # (10 - 8) / 2 = 1 on both axes
    np.testing.assert_allclose(net.blobs["data"].data[1],
                               warp(images["a.png"], 10, 18, 18, 26) - centre, atol=1e-4)


def test_cached_images_and_repeatable_draws(tmp_path, images):
    source = window_file(tmp_path, [("a.png", [(1, 0.9, 0, 0, 9, 9), (2, 0.95, 10, 5, 30, 25),
                                               (0, 0.0, 5, 5, 35, 25)]),
                                    ("b.png", [(0, 0.1, 2, 2, 10, 10)])])
    engine.set_random_seed(11)
    first = make_net(tmp_path, source, batch=6, fg_fraction=0.5, transform="mirror: true")
    first.forward()
    engine.set_random_seed(11)
    cached = make_net(tmp_path, source, batch=6, fg_fraction=0.5, transform="mirror: true",
                      extra="cache_images: true")
    for name in images:
        os.remove(tmp_path / name)  # the cache has them
    cached.forward()
    np.testing.assert_array_equal(cached.blobs["data"].data, first.blobs["data"].data)
    np.testing.assert_array_equal(cached.blobs["label"].data, first.blobs["label"].data)
    with pytest.raises(engine.LayerError,
                       match=r"windows\.txt:(2|11): cannot read image '.*[ab]\.png'"):
        first.forward()  # the uncached layer reads the files again


def refusal(tmp_path, text, match, **kwargs):
    (tmp_path / "bad.txt").write_text(text)
    with pytest.raises(engine.LayerError, match=match):
        make_net(tmp_path, tmp_path / "bad.txt", **kwargs)


GOOD = "# 0\na.png\n3\n30\n40\n2\n1 0.9 0 0 9 9\n0 0.1 1 1 5 5\n"


def test_refusals_name_file_and_line(tmp_path, images):
    refusal(tmp_path, GOOD.replace("# 0", "0 #"), r"bad\.txt:1: expected '#'")
    refusal(tmp_path, GOOD.replace("# 0", "# 1"), r"bad\.txt:1: image index 1 is out of order")
    refusal(tmp_path, GOOD.replace("a.png", "missing.png"),
            r"bad\.txt:2: image '.*missing\.png' not found")
    refusal(tmp_path, GOOD.replace("\n30\n", "\nthirty\n"), r"bad\.txt:4: expected the image's "
            "height")
    refusal(tmp_path, GOOD.replace("1 0.9", "0 0.9"), r"bad\.txt:7: .*needs a class index > 0")
    refusal(tmp_path, GOOD.replace("1 1 5 5", "1 1 5 30"),
            r"bad\.txt:8: window \(1, 1, 5, 30\) is not inside image .* 30 x 40")
    refusal(tmp_path, GOOD.rsplit("\n", 2)[0] + "\n", r"bad\.txt:7: the file ends where a "
            "window's class index was expected")
    refusal(tmp_path, "\n\n", r"window file '.*bad\.txt' lists no images")
    refusal(tmp_path, GOOD.replace("1 0.9", "1 0.2"), "has no foreground windows")
    refusal(tmp_path, GOOD.replace("0 0.1", "2 0.9"), "has no background windows")
    refusal(tmp_path, GOOD + "# 1\nb.png\n1\n25\n20\n0\n", r"bad\.txt:10: .*1 channels, the "
            "first image 3")
    refusal(tmp_path, GOOD, "crop_mode must be 'warp' or 'square'", crop_mode="wrap")
    refusal(tmp_path, GOOD, "context_pad 4 leaves no room", context_pad=4)
    (tmp_path / "bad.txt").write_text(GOOD)
    with pytest.raises(engine.LayerError, match="crop_size must be positive"):
        make_net(tmp_path, tmp_path / "bad.txt", crop=0)
    with pytest.raises(engine.LayerError, match="both mean_file and mean_value"):
        make_net(tmp_path, tmp_path / "bad.txt", transform='mean_file: "m" mean_value: 1')
    with pytest.raises(engine.LayerError, match="gives 2 mean_value; give 1 or one per channel"):
        make_net(tmp_path, tmp_path / "bad.txt", transform="mean_value: 1 mean_value: 2")
    with pytest.raises(engine.LayerError, match=r"cannot open window_data_param source "
                       r"'.*nowhere\.txt'"):
        make_net(tmp_path, tmp_path / "nowhere.txt")
    # a header that does not match the image is found when the image is read
    (tmp_path / "bad.txt").write_text(GOOD.replace("\n40\n", "\n41\n"))
    net = make_net(tmp_path, tmp_path / "bad.txt")
    with pytest.raises(engine.LayerError, match=r"bad\.txt:2: image .* is 30 x 40, the window "
                       "file says 30 x 41"):
        net.forward()


def test_fields_caffe_does_not_use_are_reported(tmp_path, images):
    (tmp_path / "w.txt").write_text(GOOD)
    with pytest.warns(UserWarning, match="window_data_param.mirror is a legacy field"):
        make_net(tmp_path, tmp_path / "w.txt", extra="mirror: true")
    with pytest.warns(UserWarning, match="transform_param.scale is not used by WindowData"):
        make_net(tmp_path, tmp_path / "w.txt", transform="scale: 0.5")
