"""engine.data.convert: MNIST / numpy / image folders -> LMDB or HDF5, and compute_mean."""
import gzip
import os
import struct

import h5py
import numpy as np
import pytest
from PIL import Image

import engine
from engine import crema_pb2
from engine.data import lmdb_io
from engine.data.convert import compute_mean, convert, load_source
from engine.errors import CremaError
from engine.io import blobproto_to_array


def records(path):
    return [(lmdb_io.datum_to_array(d), d.label, d.encoded) for _, d in lmdb_io.read_datums(path)]


def write_idx(path, arr, magic):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape))
        f.write(arr.astype(np.uint8).tobytes())


@pytest.fixture
def folder(tmp_path):
    """images/{cat,dog}/*.png, RGB 6x5, and the arrays they hold (BGR CHW) by label."""
    g = np.random.default_rng(2)
    root = tmp_path / "images"
    want = []
    for label, cls in enumerate(["cat", "dog"]):
        (root / cls).mkdir(parents=True)
        for k in range(3):
            rgb = g.integers(0, 256, (6, 5, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(root / cls / f"{k}.png")
            want.append((rgb[..., ::-1].transpose(2, 0, 1), label, rgb))
    (root / "notes.txt").write_text("not a class")
    return root, want


def test_image_folder_raw_encoded_and_listfile(folder, tmp_path):
    root, want = folder
    src = load_source(root)
    assert src.classes == ["cat", "dog"] and len(src) == 6
    assert convert(src, tmp_path / "raw") == 6
    got = records(tmp_path / "raw")
    for (x, label, enc), (w, wl, _) in zip(got, want):
        np.testing.assert_array_equal(x, w)
        assert label == wl and not enc
    convert(load_source(root), tmp_path / "enc", encoded=True)
    for (x, label, enc), (w, wl, _) in zip(records(tmp_path / "enc"), want):
        np.testing.assert_array_equal(x, w)
        assert enc and label == wl
    (tmp_path / "list.txt").write_text("dog/1.png 7\ncat/0.png 3\n")
    got = records_from(load_source(root, listfile=tmp_path / "list.txt"), tmp_path / "l")
    np.testing.assert_array_equal(got[0][0], want[4][0])
    assert [g[1] for g in got] == [7, 3]


def records_from(src, path, **kw):
    convert(src, path, **kw)
    return records(path)


def test_resize_gray_shuffle_and_hdf5(folder, tmp_path):
    root, want = folder
    got = records_from(load_source(root), tmp_path / "g", gray=True, resize_height=3,
                       resize_width=4)
    ref = np.asarray(Image.fromarray(want[0][2]).convert("L").resize((4, 3), Image.BILINEAR))
    assert got[0][0].shape == (1, 3, 4)
    np.testing.assert_array_equal(got[0][0][0], ref)
    engine.set_random_seed(4)
    order = engine.rng.generator().permutation(6)
    engine.set_random_seed(4)
    shuffled = records_from(load_source(root), tmp_path / "s", shuffle=True)
    assert [g[1] for g in shuffled] == [want[i][1] for i in order]
    np.testing.assert_array_equal(shuffled[0][0], want[order[0]][0])
    convert(load_source(root), tmp_path / "d.h5", backend="hdf5")
    with h5py.File(tmp_path / "d.h5") as f:
        assert f["data"].dtype == np.float32 and f["data"].shape == (6, 3, 6, 5)
        np.testing.assert_array_equal(f["data"][2], want[2][0])
        np.testing.assert_array_equal(f["label"][:], [0, 0, 0, 1, 1, 1])
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_numpy_and_mnist_sources(tmp_path):
    g = np.random.default_rng(0)
    nhwc = g.integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=nhwc, labels=np.array([3, 1, 4, 1]))
    got = records_from(load_source(tmp_path / "a.npz"), tmp_path / "a")
    np.testing.assert_array_equal(got[1][0], nhwc[1].transpose(2, 0, 1))
    assert [r[1] for r in got] == [3, 1, 4, 1]
    f32 = g.random((3, 7, 7), dtype=np.float32)
    np.save(tmp_path / "x.npy", f32)
    got = records_from(load_source(tmp_path / "x.npy"), tmp_path / "f")
    assert got[0][0].dtype == np.float32 and got[0][0].shape == (1, 7, 7)
    np.testing.assert_array_equal(got[2][0][0], f32[2])
    mn = tmp_path / "mnist"
    mn.mkdir()
    imgs = g.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    for split, n in (("train", 5), ("t10k", 2)):
        write_idx(mn / f"{split}-images-idx3-ubyte.gz", imgs[:n], 2051)
        write_idx(mn / f"{split}-labels-idx1-ubyte.gz", np.arange(n), 2049)
    got = records_from(load_source(mn, split="test"), tmp_path / "m")
    assert len(got) == 2 and got[1][1] == 1
    np.testing.assert_array_equal(got[1][0][0], imgs[1])
    got = records_from(load_source(mn / "train-images-idx3-ubyte.gz",
                                   labels=mn / "train-labels-idx1-ubyte.gz"), tmp_path / "i")
    assert [r[1] for r in got] == [0, 1, 2, 3, 4]


def test_compute_mean_and_errors(tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (6, 2, 3, 4), dtype=np.uint8)
    lmdb_io.write_arrays(tmp_path / "db", x, np.zeros(6))
    mean = compute_mean(tmp_path / "db", tmp_path / "mean.binaryproto")
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-6)
    blob = crema_pb2.BlobProto()
    blob.ParseFromString((tmp_path / "mean.binaryproto").read_bytes())
    assert blobproto_to_array(blob).shape == (1, 2, 3, 4)
    with pytest.raises(CremaError, match="already exists"):
        convert(None, tmp_path / "db")
    np.save(tmp_path / "bad.npy", np.zeros((2, 3)))
    with pytest.raises(CremaError, match="expected N x H x W"):
        load_source(tmp_path / "bad.npy")
    with pytest.raises(CremaError, match="both -resize_height and -resize_width"):
        convert(None, tmp_path / "o", resize_height=3)


@pytest.mark.parametrize("backend", ["lmdb", "hdf5"])
def test_failed_conversion_leaves_nothing(folder, tmp_path, backend):
    root, _ = folder
    (root / "dog" / "9.png").write_bytes(b"broken")
    with pytest.raises(CremaError, match="cannot read image .*9.png"):
        convert(load_source(root), tmp_path / "out", backend=backend)
    assert sorted(os.listdir(tmp_path)) == ["images"]


def test_mnist_pickle_source(tmp_path):
    import pickle
    g = np.random.default_rng(3)
    part = lambda n: (g.integers(0, 256, (n, 784)).astype(np.float32) / 256, np.arange(n) % 10)
    train, valid, test = part(3), part(2), part(2)
    with gzip.open(tmp_path / "mnist.pkl.gz", "wb") as f:
        pickle.dump((train, valid, test), f, protocol=2)
    got = records_from(load_source(tmp_path / "mnist.pkl.gz", split="train"), tmp_path / "db")
    assert len(got) == 5 and [r[1] for r in got] == [0, 1, 2, 0, 1]
    np.testing.assert_array_equal(got[3][0][0], (valid[0][0] * 256).astype(np.uint8).reshape(28, 28))
