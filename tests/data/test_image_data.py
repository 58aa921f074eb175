"""ImageData: images listed in a text file, with Caffe's list format, transforms, shuffle,
resizing, sharding and resume."""
import numpy as np
import pytest
from PIL import Image

import engine
from engine.errors import LayerError


def _images(folder, n=6, size=(5, 4), name="img"):
    g = np.random.default_rng(0)
    lines = []
    arrays = []
    for i in range(n):
        a = g.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        path = folder / f"{name} {i}.png"  # a space in the name: the label follows the last space
        Image.fromarray(a).save(path)
        lines.append(f"{path.name} {i % 3}")
        arrays.append(a)
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    return arrays


def _net(folder, extra="", batch=2, transform=""):
    return engine.Net(f'''name: "img"
        layer {{ name: "d" type: "ImageData" top: "data" top: "label"
                {transform}
                image_data_param {{ source: "{folder}/list.txt" root_folder: "{folder}/"
                                   batch_size: {batch} {extra} }} }}''', engine.TRAIN)


def test_reads_bgr_images_and_labels_in_list_order(tmp_path):
    arrays = _images(tmp_path)
    net = _net(tmp_path)
    net.forward()
    assert net.blobs["data"].shape == (2, 3, 4, 5)
    for k in range(2):
        np.testing.assert_array_equal(net.blobs["data"].data[k],
                                      arrays[k][:, :, ::-1].transpose(2, 0, 1))
    np.testing.assert_array_equal(net.blobs["label"].data, [0, 1])
    net.forward()
    net.forward()
    net.forward()  # wraps after 6 images
    np.testing.assert_array_equal(net.blobs["label"].data, [0, 1])


def test_resize_gray_crop_and_scale(tmp_path):
    _images(tmp_path)
    net = _net(tmp_path, "new_height: 8 new_width: 6 is_color: false",
               transform="transform_param { crop_size: 4 scale: 0.5 }")
    net.forward()
    assert net.blobs["data"].shape == (2, 1, 4, 4)
    assert net.blobs["data"].data.max() <= 127.5


def test_shuffle_and_sharding_partition_one_pass(tmp_path):
    _images(tmp_path, n=8)
    engine.rng.set_random_seed(5)
    seen = []
    for rank in range(2):
        engine.rng.set_random_seed(5, rank=rank)
        net = _net(tmp_path, "shuffle: true", batch=2)
        net.set_data_shard(rank, 2)
        for _ in range(2):
            net.forward()
            seen.append(net.blobs["data"].data.copy())
    flat = np.concatenate(seen).reshape(8, -1)
    assert len({row.tobytes() for row in flat}) == 8  # every image once across the two ranks


def test_resume_continues_exactly(tmp_path):
    _images(tmp_path)
    a = _net(tmp_path, "shuffle: true")
    a.forward()
    state = a.layers[0].state_dict()
    a.forward()
    expected = a.blobs["data"].data.copy()
    b = _net(tmp_path, "shuffle: true")
    b.layers[0].load_state_dict(state)
    b.forward()
    np.testing.assert_array_equal(b.blobs["data"].data, expected)


def test_bad_lists_and_images_are_refused(tmp_path):
    _images(tmp_path)
    (tmp_path / "list.txt").write_text("img 0.png zero\n")
    with pytest.raises(LayerError, match=r"list.txt:1: expected 'path label'"):
        _net(tmp_path)
    (tmp_path / "list.txt").write_text("missing.png 1\n")
    with pytest.raises(LayerError, match="missing.png' not found"):
        _net(tmp_path)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    (tmp_path / "list.txt").write_text("junk.png 1\n")
    with pytest.raises(LayerError, match="cannot decode image"):
        _net(tmp_path)
    with pytest.raises(LayerError, match="both be set or both be 0"):
        _net(tmp_path, "new_height: 4")
