"""Caffe-format LMDB databases: a directory (data.mdb, lock.mdb) whose values are serialized
crema_pb2.Datum records (Caffe's Datum: channels, height, width, raw uint8 `data` or `float_data`,
label, encoded; encoded datums hold JPEG/PNG bytes, decoded with Pillow by `decode_image`)
under keys that sort in record order. Caffe's converters use the record index zero-padded to
8 digits ("%08d", e.g. b"00000042"); `write_datums` does the same.

Writing is atomic: the database is built in a temporary directory beside the destination and
renamed into place when complete, so a reader never sees half a database and an interrupted
conversion leaves nothing behind. An existing database is refused unless `overwrite=True`.

Reading walks a cursor in key order and wraps around to the first record after the last one, as
Caffe's DataLayer does. The database is opened read-only and without the lock file, so databases
on read-only storage can be read; it must not be written while it is being read.
"""
import io
import os
import shutil
import threading
import uuid

import numpy as np

from .. import crema_pb2
from ..errors import CremaError

KEY_FORMAT = "%08d"
_INITIAL_MAP_SIZE = 1 << 26  # 64 MiB; doubled whenever the database fills it


def _lmdb():
    try:
        import lmdb
    except ImportError:
        raise CremaError("reading or writing LMDB databases needs the 'lmdb' package "
                         "(pip install lmdb)") from None
    return lmdb


# -- Datum <-> numpy (pycaffe's caffe.io.array_to_datum / datum_to_array) -------------------------
def array_to_datum(arr, label=None):
    """A (C, H, W) array -> Datum. uint8 arrays go to the raw `data` bytes, any other dtype to
    `float_data` (float32), as pycaffe does."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise CremaError(f"a Datum holds a (channels, height, width) array; got shape {arr.shape}")
    datum = crema_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in arr.shape)
    if arr.dtype == np.uint8:
        datum.data = np.ascontiguousarray(arr).tobytes()
    else:
        datum.float_data.extend(np.asarray(arr, dtype=np.float32).ravel().tolist())
    if label is not None:
        datum.label = int(label)
    return datum


def decode_image(raw, force_color=False, force_gray=False):
    """JPEG/PNG bytes -> (C, H, W) uint8 with Pillow: BGR channel order for colour, as Caffe's
    OpenCV decoding; force_color gives 3 channels, force_gray 1, else the image's own."""
    from PIL import Image
    with Image.open(io.BytesIO(raw)) as im:
        if force_gray:
            im = im.convert("L")
        elif force_color or im.mode not in ("L", "1", "I;16", "I", "F"):
            im = im.convert("RGB")
        else:
            im = im.convert("L")
        a = np.asarray(im, dtype=np.uint8)
    if a.ndim == 2:
        return a[None].copy()
    return np.ascontiguousarray(a[:, :, ::-1].transpose(2, 0, 1))


def datum_to_array(datum, *, force_color=False, force_gray=False):
    """Datum -> (C, H, W) array: uint8 for raw `data` or an encoded image (decoded with Pillow,
    see decode_image), float32 for `float_data`."""
    if datum.encoded:
        try:
            return decode_image(datum.data, force_color=force_color, force_gray=force_gray)
        except Exception as e:
            raise CremaError(f"cannot decode the encoded image of this Datum: {e}") from None
    shape = (datum.channels, datum.height, datum.width)
    count = shape[0] * shape[1] * shape[2]
    if len(datum.data):
        values = np.frombuffer(datum.data, dtype=np.uint8)
    else:
        values = np.asarray(datum.float_data, dtype=np.float32)
    if values.size != count:
        raise CremaError(f"Datum of shape {shape} needs {count} values but holds {values.size}")
    return values.reshape(shape)


# -- writing --------------------------------------------------------------------------------------
class LMDBWriter:
    """Builds an LMDB database at `path` atomically.

        with LMDBWriter("out/train_lmdb") as w:
            w.put(b"00000000", datum.SerializeToString())

    Puts are committed in transactions of `commit_every` records. When the memory map fills,
    the pending transaction is replayed with the map doubled, so no map size needs guessing.
    `close()` (or leaving the `with` block normally) commits and renames the directory into place;
    an exception inside the block (or `abort()`) removes the temporary directory.
    """

    def __init__(self, path, *, overwrite=False, commit_every=1000, map_size=_INITIAL_MAP_SIZE):
        self.path = os.path.abspath(os.fspath(path))
        self.overwrite = bool(overwrite)
        if os.path.lexists(self.path) and not self.overwrite:
            raise CremaError(f"database '{path}' already exists; remove it or pass overwrite=True")
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise CremaError(f"cannot create database '{path}': folder '{parent}' does not exist")
        self.commit_every = max(1, int(commit_every))
        self.count = 0
        self._tmp = os.path.join(parent, f".{os.path.basename(self.path)}.tmp-{uuid.uuid4().hex}")
        self._map_size = int(map_size)
        self._env = _lmdb().open(self._tmp, map_size=self._map_size, subdir=True,
                                 meminit=False, map_async=True)
        self._pending = []
        self._txn = self._env.begin(write=True)
        self._closed = False

    def put(self, key, value):
        if self._closed:
            raise CremaError(f"database '{self.path}' is already closed")
        if isinstance(key, str):
            key = key.encode("ascii")
        self._pending.append((key, value))
        self._put_with_growth(key, value)
        self.count += 1
        if len(self._pending) >= self.commit_every:
            self._commit()

    def _grow(self):
        lmdb = _lmdb()
        self._txn.abort()
        self._map_size *= 2
        self._env.set_mapsize(self._map_size)
        self._txn = self._env.begin(write=True)
        for k, v in self._pending:
            try:
                self._txn.put(k, v)
            except lmdb.MapFullError:
                return False
        return True

    def _put_with_growth(self, key, value):
        lmdb = _lmdb()
        try:
            self._txn.put(key, value)
        except lmdb.MapFullError:
            while not self._grow():
                pass

    def _commit(self):
        lmdb = _lmdb()
        while True:
            try:
                self._txn.commit()
                break
            except lmdb.MapFullError:
                while not self._grow():
                    pass
        self._pending = []
        self._txn = self._env.begin(write=True)

    def close(self):
        """Commit what is pending and move the finished database to `path`."""
        if self._closed:
            return
        self._commit()
        self._txn.abort()
        self._env.sync(True)
        self._env.close()
        self._closed = True
        old = None
        if os.path.lexists(self.path):
            if not self.overwrite:
                shutil.rmtree(self._tmp, ignore_errors=True)
                raise CremaError(f"database '{self.path}' appeared while it was being written; "
                                 "the new one was discarded")
            old = self.path + f".old-{uuid.uuid4().hex}"
            os.replace(self.path, old)
        os.replace(self._tmp, self.path)
        if old is not None:
            if os.path.isdir(old) and not os.path.islink(old):
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.remove(old)

    def abort(self):
        """Drop everything written; the destination is left untouched."""
        if self._closed:
            return
        self._txn.abort()
        self._env.close()
        self._closed = True
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def write_datums(path, datums, *, overwrite=False, commit_every=1000):
    """Write Datum messages (an iterable) under keys "%08d" % index; returns the count."""
    with LMDBWriter(path, overwrite=overwrite, commit_every=commit_every) as w:
        for i, datum in enumerate(datums):
            w.put(KEY_FORMAT % i, datum.SerializeToString())
    return w.count


def write_arrays(path, images, labels=None, *, overwrite=False, commit_every=1000):
    """Write N images ((N, C, H, W), or (N, H, W) for one channel) with optional N labels as
    Datum records "%08d" % index. uint8 images are stored as raw bytes, others as float_data."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise CremaError(f"images must be (N, C, H, W) or (N, H, W); got shape {images.shape}")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != images.shape[0]:
            raise CremaError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    n, c, h, w = images.shape
    datum = crema_pb2.Datum()
    datum.channels, datum.height, datum.width = c, h, w
    raw = images.dtype == np.uint8
    images = np.ascontiguousarray(images if raw else images.astype(np.float32))
    with LMDBWriter(path, overwrite=overwrite, commit_every=commit_every) as wr:
        for i in range(n):
            if raw:
                datum.data = images[i].tobytes()
            else:
                del datum.float_data[:]
                datum.float_data.extend(images[i].ravel().tolist())
            if labels is not None:
                datum.label = int(labels[i])
            wr.put(KEY_FORMAT % i, datum.SerializeToString())
    return n


# -- reading --------------------------------------------------------------------------------------
# The lmdb package allows one open environment per database file and process, while a process may
# hold several readers of one database (a train and a test net, two solvers): readers share the
# environment, counted, each with its own read transaction and cursor.
_ENVS = {}  # (st_dev, st_ino) of data.mdb -> [Environment, number of readers]
_ENVS_LOCK = threading.Lock()


def _acquire_env(path):
    st = os.stat(os.path.join(path, "data.mdb"))
    key = (st.st_dev, st.st_ino)
    lmdb = _lmdb()
    with _ENVS_LOCK:
        entry = _ENVS.get(key)
        if entry is None:
            try:
                env = lmdb.open(path, readonly=True, lock=False, subdir=True, readahead=False)
            except lmdb.Error as e:
                raise CremaError(f"cannot open LMDB database '{path}': {e}") from None
            entry = _ENVS[key] = [env, 0]
        entry[1] += 1
        return key, entry[0]


def _release_env(key):
    with _ENVS_LOCK:
        entry = _ENVS.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            entry[0].close()
            del _ENVS[key]


class LMDBReader:
    """A read-only cursor over an LMDB database, in key order, wrapping around at the end.

    `position` is the index of the current record (0 = the first key). `value()` / `key()` read
    the current record; `next()` moves to the following one (back to the first after the last)
    and returns True when it wrapped; `seek(index)` moves to record `index % len(reader)`.
    `items()` iterates (key, value) pairs once, from the first record, without wrapping.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            what = "is not a directory" if os.path.exists(self.path) else "does not exist"
            raise CremaError(f"LMDB database '{self.path}' {what} (looked from the current "
                             f"directory {os.getcwd()})")
        if not os.path.isfile(os.path.join(self.path, "data.mdb")):
            raise CremaError(f"'{self.path}' is not an LMDB database (no data.mdb inside)")
        self._env = None
        self._key, env = _acquire_env(self.path)
        self._env = env
        self._txn = env.begin(buffers=False)
        self._cursor = self._txn.cursor()
        self._n = int(self._txn.stat()["entries"])
        self.position = 0
        if self._n == 0:
            self.close()
            raise CremaError(f"LMDB database '{self.path}' holds no records")
        self._cursor.first()

    def __len__(self):
        return self._n

    def key(self):
        return self._cursor.key()

    def value(self):
        return self._cursor.value()

    def next(self):
        self.position += 1
        if self._cursor.next():
            return False
        self._cursor.first()
        self.position = 0
        return True

    def seek(self, index):
        index = int(index) % self._n
        self._cursor.first()
        self.position = 0
        for _ in range(index):
            self._cursor.next()
        self.position = index

    def items(self):
        for key, value in self._txn.cursor():
            yield key, value

    def close(self):
        if self._env is not None:
            self._txn.abort()
            self._env = None
            _release_env(self._key)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the module globals may be gone
            pass


def read_datums(path):
    """All records of a database as a list of (key, Datum), in key order."""
    out = []
    with LMDBReader(path) as reader:
        for key, value in reader.items():
            datum = crema_pb2.Datum()
            datum.ParseFromString(value)
            out.append((key, datum))
    return out
