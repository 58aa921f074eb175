"""The "Data" layer (Caffe's DataLayer): batches of Datum records read from an LMDB database,
transformed as Caffe's DataTransformer does.

Proto params
- data_param.source: the database directory, relative to the current directory as in Caffe.
- data_param.batch_size (> 0).
- data_param.backend: LMDB. LEVELDB (explicit) is refused. LEVELDB is also Caffe's default: when
  `backend` is not given and the source is an LMDB directory (it holds data.mdb) it is read as
  LMDB; otherwise the layer reports that LevelDB is not supported.
- data_param.rand_skip: at setup, skip a random number of records in [0, rand_skip), drawn from
  engine.rng's data stream (the same on every rank, so the ranks' shards still partition the
  records).
- data_param.prefetch (default 4): batches read and decoded ahead by a background daemon thread
  (Caffe's prefetch). The thread does no random draws: crop offsets and mirror flags are drawn
  from engine.rng in forward, in the same order as without prefetch, so runs with and without
  prefetch see the same batches. prefetch: 0 reads synchronously in forward. A reader error in
  the thread is raised by the forward that would have consumed that batch, as a LayerError.
- transform_param (Caffe's DataTransformer, for raw uint8 `data`, `float_data` or encoded datums;
  applied by the nogil Cython loops of engine.data._transform, or by numpy when that compiled
  module is missing):
    value = (pixel - mean) * scale, mean from mean_file (a binaryproto BlobProto of the datum's
    (C, H, W), read relative to the current directory) or mean_value (one value for all channels
    or one per channel; not both with mean_file);
    crop_size: a crop_size x crop_size window, at a random offset in TRAIN and centred
    ((H - crop) // 2, (W - crop) // 2) in TEST; the mean file is taken at the same window;
    mirror: each image is flipped horizontally with probability 1/2 (engine.rng). As in Caffe this
    happens in both phases whenever mirror is true.
    force_color / force_gray apply to encoded (JPEG/PNG) datums, decoded with Pillow: 3 channels
    (BGR, as Caffe's OpenCV decoding) with force_color, 1 with force_gray, else the image's own
    (grayscale stays 1 channel, colour becomes BGR).
- The legacy transform fields of data_param (scale, mean_file, crop_size, mirror) are ignored
  with a warning, as Caffe ignores them once a net is in the current format (the net upgrader
  moves them of old-format nets into transform_param).

Tops: data (batch_size, C, H, W) (H, W = crop_size when cropping) and, when a second top is
given, label (batch_size,). The top shape follows the first datum of each batch, as in Caffe;
every datum of a batch must have that shape. No bottoms, no backward.

Records are read in key order and the reading wraps around to the first record after the last.
`offset` counts every record passed since the first one (rand_skip included); the current record
is `offset % number of records`.

Sharding (engine.data.sharding, Caffe's multi-solver Skip): `set_shard(rank, world)` (or the
attributes `rank` and `world_size`, default 0 and 1). In the TRAIN phase rank r keeps only the
records whose offset is r mod world, i.e. records r, r + world, r + 2*world, ... of the wrapping
stream, so the ranks together read each record once per pass. In TEST every rank reads every
record, as in Caffe. Changing the shard drops prefetched batches.

Exact resume: `state_dict()` -> {"offset": int, "num_records": int, "shard_rank": int,
"shard_world": int}, the offset of the first record of the next batch forward will return (not
the prefetching reader's position) and the shard it was read for; `load_state_dict(d)` refuses a
state of another world size, drops prefetched batches and moves the cursor back to that record,
so the next batch is the one the saved run would have read (the random draws of mirror and crop
come from engine.rng's main stream, whose state the solver saves).
"""
import logging
import os
import queue
import threading
import warnings
import weakref

import numpy as np

from .. import crema_pb2, rng
from ..data.lmdb_io import decode_image
from ..data.sharding import ShardedReader, check_shard
from ..errors import CremaError, LayerError
from ..layer import Layer, TEST
from ..registry import register_layer

_log = logging.getLogger("crema")

try:
    from ..data._transform import transform as _native_transform
except ImportError:  # the compiled module is missing (a source tree that was not built)
    _native_transform = None


def numpy_transform(x, out, h_off, w_off, flip, mean_image=None, mean_values=None, scale=1.0):
    """The numpy version of engine.data._transform.transform (same arguments and result)."""
    n, c, h, w = x.shape
    ch, cw = out.shape[2], out.shape[3]
    y = x.astype(np.float32)
    if mean_image is not None:
        y -= mean_image
    elif mean_values is not None:
        mv = np.asarray(mean_values, dtype=np.float32).ravel()
        y -= (np.repeat(mv, c) if mv.size == 1 else mv)[:, None, None]
    y *= np.float32(scale)
    rows = np.asarray(h_off)[:, None] + np.arange(ch)
    cols = np.asarray(w_off)[:, None] + np.arange(cw)
    cols = np.where(np.asarray(flip, dtype=bool)[:, None], cols[:, ::-1], cols)
    out[...] = y[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]


class DatumTransformer:
    """Caffe's DataTransformer for a batch. `draw(n, h, w)` takes the per-image random draws
    (mirror flags, then crop offsets) from engine.rng; `apply(x, out, draws)` writes the result.

    The draws come from the main stream, which differs per rank, not from the data stream: they
    do not decide which records a rank reads, and each rank reads other records anyway, so tying
    them across ranks would only make rank r's k-th image share rank 0's crop and flip. Rank 0
    keeps the single-process sequence.

    `mean` is None, a (C, H, W) float32 image or a (C,) / (1,) float32 vector."""

    def __init__(self, phase, scale=1.0, mirror=False, crop_size=0, mean=None, native=True):
        self.phase = phase
        self.scale = np.float32(scale)
        self.mirror = bool(mirror)
        self.crop_size = int(crop_size)
        self.mean = mean
        self.native = bool(native) and _native_transform is not None

    def output_shape(self, c, h, w):
        cs = self.crop_size
        return (c, cs, cs) if cs else (c, h, w)

    def draw(self, n, h, w):
        gen = rng.generator()
        flip = gen.integers(2, size=n).astype(np.uint8) if self.mirror else np.zeros(n, np.uint8)
        cs = self.crop_size
        if not cs:
            return np.zeros(n, np.int64), np.zeros(n, np.int64), flip
        if self.phase == TEST:
            return np.full(n, (h - cs) // 2, np.int64), np.full(n, (w - cs) // 2, np.int64), flip
        h_off = gen.integers(h - cs + 1, size=n).astype(np.int64)
        w_off = gen.integers(w - cs + 1, size=n).astype(np.int64)
        return h_off, w_off, flip

    def apply(self, x, out, draws):
        h_off, w_off, flip = draws
        image = self.mean if self.mean is not None and self.mean.ndim == 3 else None
        values = self.mean if self.mean is not None and self.mean.ndim == 1 else None
        fn = _native_transform if self.native else numpy_transform
        fn(x, out, h_off, w_off, flip, image, values, float(self.scale))

    def __call__(self, x, out):
        """x: (N, C, H, W) uint8 or float32 -> out (N, C, H', W') float32, written in place."""
        n, _, h, w = x.shape
        self.apply(x, out, self.draw(n, h, w))


def _prefetch_loop(layer_ref, out_q, stop):
    """The background reader: decoded batches (or the error that stopped it) into out_q. Holds
    the layer only weakly between batches, so deleting the layer ends the thread."""
    while not stop.is_set():
        layer = layer_ref()
        if layer is None:
            return
        try:
            item = ("ok", layer._read_batch())
        except BaseException as e:  # handed to forward, which raises it there
            item = ("error", e)
        del layer
        while not stop.is_set():
            try:
                out_q.put(item, timeout=0.05)
                break
            except queue.Full:
                continue
        if item[0] == "error":
            return


def _stop_thread(stop, thread):
    stop.set()
    if thread is not None and thread.is_alive() and thread is not threading.current_thread():
        thread.join(timeout=5)


@register_layer("Data")
class DataLayer(ShardedReader, Layer):
    """Caffe's DataLayer: LMDB Datum records -> data (N, C, H, W) [+ label (N,)]. The proto
    params, transformation, rank striding and resume are described in the module docstring."""
    exact_num_bottom = 0
    min_top = 1
    max_top = 2

    def __init__(self, param, phase=0):
        super().__init__(param, phase)
        self.offset = 0
        self.consumer_offset = 0  # offset of the first record of the next batch forward returns
        self._reader = None
        self._datum = crema_pb2.Datum()
        self._thread = None
        self._stop = None
        self._queue = None
        self._finalizer = None

    # -- setup ----------------------------------------------------------------------------
    def setup(self, bottom, top):
        p = self.param.data_param
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise self.error("data_param batch_size must be given and positive")
        if not p.source:
            raise self.error("data_param source is empty: give the path of an LMDB database")
        self._open(p)
        for field in ("scale", "mean_file", "crop_size", "mirror"):
            if p.HasField(field):
                warnings.warn(f"Data layer '{self.name}': data_param.{field} is a legacy field and "
                              "is ignored; use transform_param", stacklevel=2)
        self._setup_transform()
        if p.rand_skip:
            skip = int(rng.data_generator().integers(int(p.rand_skip)))
            _log.info("Data layer '%s': skipping the first %d records", self.name, skip)
            for _ in range(skip):
                self._next()
        self.consumer_offset = self.offset
        self.prefetch = int(p.prefetch)
        shape = self._batch_shape(self._datum_shape(self._reader.value(), self._reader.position))
        top[0].reshape((self.batch_size,) + shape)
        if len(top) > 1:
            top[1].reshape((self.batch_size,))

    def _open(self, p):
        source = p.source
        if not os.path.exists(source):
            raise self.error(f"data_param source '{source}' does not exist (looked from the "
                             f"current directory {os.getcwd()})")
        is_lmdb = os.path.isfile(os.path.join(source, "data.mdb"))
        if p.backend == crema_pb2.DataParameter.LEVELDB and (p.HasField("backend") or not is_lmdb):
            given = "backend LEVELDB" if p.HasField("backend") else \
                "no backend (Caffe's default is LEVELDB) and a source that is not an LMDB database"
            raise self.error(f"LevelDB databases are not supported; this layer has {given} "
                             f"(source '{source}'). Convert the data to LMDB and set "
                             "'backend: LMDB'")
        from ..data.lmdb_io import LMDBReader
        try:
            self._reader = LMDBReader(source)
        except CremaError as e:
            raise self.error(f"cannot read data_param source '{source}': {e}") from None

    def _setup_transform(self):
        t = self.param.transform_param
        if t.mean_file and len(t.mean_value):
            raise self.error("transform_param gives both mean_file and mean_value; use one")
        mean = None
        if t.mean_file:
            mean = self._load_mean_file(t.mean_file)
        elif len(t.mean_value):
            mean = np.asarray(t.mean_value, dtype=np.float32)
        if t.force_color and t.force_gray:
            raise self.error("transform_param gives both force_color and force_gray; use one")
        self.transformer = DatumTransformer(self.phase, scale=t.scale, mirror=t.mirror,
                                            crop_size=t.crop_size, mean=mean)

    def _load_mean_file(self, path):
        from ..io import blobproto_to_array
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise self.error(f"cannot read transform_param mean_file '{path}' (looked from the "
                             f"current directory {os.getcwd()}): {e.strerror}") from None
        blob = crema_pb2.BlobProto()
        try:
            blob.ParseFromString(raw)
            mean = blobproto_to_array(blob)
        except Exception as e:
            raise self.error(f"mean_file '{path}' is not a BlobProto: {e}") from None
        while mean.ndim > 3 and mean.shape[0] == 1:
            mean = mean[0]
        if mean.ndim != 3:
            raise self.error(f"mean_file '{path}' holds a blob of shape {mean.shape}; expected "
                             "(1, C, H, W) or (C, H, W)")
        self._mean_file = path
        return np.ascontiguousarray(mean, dtype=np.float32)

    # -- reading --------------------------------------------------------------------------
    def _next(self):
        if self._reader.next():
            _log.info("Data layer '%s': restarting from the first record of '%s'", self.name,
                      self.param.data_param.source)
        self.offset += 1

    def _parse(self, value, index, datum=None):
        d = datum if datum is not None else self._datum
        d.ParseFromString(value)
        return d

    def _decode_encoded(self, d, index):
        t = self.param.transform_param
        try:
            return decode_image(d.data, force_color=t.force_color, force_gray=t.force_gray)
        except Exception as e:
            raise self.error(f"record {index} of '{self.param.data_param.source}' is an encoded "
                             f"image that cannot be decoded: {e}") from None

    def _datum_shape(self, value, index):
        d = self._parse(value, index, crema_pb2.Datum())
        if d.encoded:
            return self._decode_encoded(d, index).shape
        return (d.channels, d.height, d.width)

    def _batch_shape(self, datum_shape):
        """Checks of Caffe's InferBlobShape on a batch's datum shape; returns the output shape."""
        c, h, w = datum_shape
        if min(c, h, w) <= 0:
            raise self.error(f"datum in '{self.param.data_param.source}' has shape "
                             f"({c}, {h}, {w}); channels, height and width must be positive")
        self._check_transform_fits(datum_shape, "the datum", "the datums are")
        return self.transformer.output_shape(c, h, w)

    def _check_transform_fits(self, shape, one, all_are):
        """Caffe's DataTransformer checks of crop_size and the mean against inputs of `shape`
        (C, H, W); `one` names one input and `all_are` all of them in the messages."""
        c, h, w = shape
        t = self.transformer
        if t.crop_size and (t.crop_size > h or t.crop_size > w):
            raise self.error(f"crop_size {t.crop_size} is larger than {one} ({h}x{w})")
        if t.mean is not None:
            if t.mean.ndim == 3 and t.mean.shape != (c, h, w):
                raise self.error(f"mean_file '{self._mean_file}' has shape {t.mean.shape} but "
                                 f"{all_are} ({c}, {h}, {w})")
            if t.mean.ndim == 1 and t.mean.shape[0] not in (1, c):
                raise self.error(f"transform_param gives {t.mean.shape[0]} mean_value values; "
                                 f"give 1 or one per channel ({c})")

    def _read_values(self):
        reader, n = self._reader, self.batch_size
        rank, ws, stride = self._reading_shard()
        values, indices = [], []
        for _ in range(n):
            if stride:
                while self.offset % ws != rank:
                    self._next()
            values.append(reader.value())
            indices.append(reader.position)
            self._next()
        return values, indices

    def _decode(self, values, indices):
        """Datum bytes -> (N, C, H, W) uint8 (all raw) or float32 array, and the labels."""
        d = crema_pb2.Datum()  # own message: this runs in the prefetch thread
        labels = np.empty(len(values), dtype=np.float32)
        raws = []
        shape = None
        for i, (value, index) in enumerate(zip(values, indices)):
            self._parse(value, index, d)
            if d.encoded:
                img = self._decode_encoded(d, index)
                s = img.shape
                raw = img.tobytes()
            else:
                s = (d.channels, d.height, d.width)
                raw = d.data if len(d.data) else np.asarray(d.float_data, dtype=np.float32)
            if shape is None:
                shape = s
            elif s != shape:
                raise self.error(f"record {index} of '{self.param.data_param.source}' has shape "
                                 f"{s} but the first record of its batch has {shape}")
            labels[i] = d.label
            raws.append(raw)
        count = shape[0] * shape[1] * shape[2]
        if all(isinstance(r, bytes) for r in raws):
            if any(len(r) != count for r in raws):
                bad = next(i for i, r in enumerate(raws) if len(r) != count)
                raise self.error(self._size_message(indices[bad], shape, len(raws[bad])))
            x = np.frombuffer(b"".join(raws), dtype=np.uint8)
        else:
            parts = []
            for r, index in zip(raws, indices):
                a = np.frombuffer(r, dtype=np.uint8) if isinstance(r, bytes) else r
                if a.size != count:
                    raise self.error(self._size_message(index, shape, a.size))
                parts.append(a.astype(np.float32))
            x = np.concatenate(parts)
        return x.reshape((len(values),) + shape), labels, shape

    def _size_message(self, index, shape, size):
        return (f"record {index} of '{self.param.data_param.source}' holds {size} values but its "
                f"shape {shape} needs {shape[0] * shape[1] * shape[2]}")

    # -- the layer contract ---------------------------------------------------------------
    def reshape(self, bottom, top):
        self.kernel = "numpy"

    def _read_batch(self):
        """Read and decode the next batch (no random draws): (x, labels, shape, end offset)."""
        values, indices = self._read_values()
        x, labels, shape = self._decode(values, indices)
        return x, labels, shape, self.offset

    def _start_prefetch(self):
        self._queue = queue.Queue(maxsize=self.prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=_prefetch_loop, name=f"crema-data-{self.name}",
                                        args=(weakref.ref(self), self._queue, self._stop),
                                        daemon=True)
        self._finalizer = weakref.finalize(self, _stop_thread, self._stop, self._thread)
        self._thread.start()

    def stop_prefetch(self):
        """Stop the reader thread and drop its batches; the cursor goes back to the consumer's
        position so that the next forward reads synchronously from there or restarts it."""
        if self._thread is None:
            return
        self._finalizer()
        self._thread = self._stop = self._queue = self._finalizer = None
        if self._reader is not None:
            self._reader.seek(self.consumer_offset % len(self._reader))
        self.offset = self.consumer_offset

    def _next_batch(self):
        if self.prefetch <= 0:
            return self._read_batch()
        rank, ws, _ = self._reading_shard()
        if self._thread is not None and self._striding != (rank, ws):
            self.stop_prefetch()  # rank or world_size changed: read again from the consumer
        if self._thread is None:
            self._striding = (rank, ws)
            self._start_prefetch()
        kind, item = self._queue.get()
        if kind == "error":
            self._thread.join(timeout=5)
            self._finalizer()
            self._thread = self._stop = self._queue = self._finalizer = None
            self.offset = self.consumer_offset
            if self._reader is not None:
                self._reader.seek(self.consumer_offset % len(self._reader))
            if isinstance(item, LayerError):
                raise item
            raise self.error(f"reading '{self.param.data_param.source}' failed: "
                             f"{type(item).__name__}: {item}") from item
        return item

    def forward(self, bottom, top):
        x, labels, shape, end = self._next_batch()
        self.consumer_offset = end
        out_shape = self._batch_shape(shape)
        top[0].reshape((self.batch_size,) + out_shape)
        self.transformer(x, top[0].data)
        if len(top) > 1:
            top[1].reshape((self.batch_size,))
            top[1].data[...] = labels

    @property
    def draws_from_data_stream(self):
        return self.param.data_param.rand_skip > 0

    def set_shard(self, rank, world):
        """Read rank `rank`'s share of the records in a world of `world` ranks (TRAIN only).
        Batches the reader thread prefetched for another shard are dropped: the next forward
        reads again from the first record not yet returned."""
        rank, world = check_shard(rank, world, self.error)
        self.stop_prefetch()  # first, so that the reader thread never sees the new shard
        self.rank, self.world_size = rank, world

    # -- exact resume ---------------------------------------------------------------------
    def state_dict(self):
        return {"offset": int(self.consumer_offset), "num_records": len(self._reader),
                **self._shard_state()}

    def load_state_dict(self, state):
        self._check_shard_state(state)
        offset = int(state["offset"])
        n = len(self._reader)
        saved = state.get("num_records")
        if saved is not None and int(saved) != n:
            raise self.error(f"cannot resume: the state was saved with {int(saved)} records in "
                             f"'{self.param.data_param.source}', the database now holds {n}")
        if offset < 0:
            raise self.error(f"cannot resume from a negative offset {offset}")
        self.stop_prefetch()
        self._reader.seek(offset % n)
        self.offset = self.consumer_offset = offset

    def close(self):
        self.stop_prefetch()
        if self._reader is not None:
            self._reader.close()
            self._reader = None


@register_layer("ImageData")
class ImageDataLayer(ShardedReader, Layer):
    """Caffe's ImageDataLayer: images listed in a text file -> data (N, C, H, W) + label (N,).

    image_data_param: source (lines "path label"; the label follows the LAST space, so paths may
    contain spaces), root_folder (prefixed to every path), batch_size, shuffle (the list is
    shuffled at setup and at every pass, from engine.rng's data stream so that ranks agree),
    new_height/new_width (resize to both, or neither), is_color (3 channels in Caffe's BGR order,
    else 1 gray channel), rand_skip (skip a random number of lines in [0, rand_skip) at the
    start; as in Caffe, a draw past the end of the list is refused).
    transform_param: scale, mirror, crop_size, mean_file or mean_value, as the Data layer.
    The shape comes from the first image; every image must resize to it. Images are decoded with
    Pillow (Caffe uses OpenCV: JPEG decoders and bilinear resampling differ by a pixel level).
    Sharding and resume: as the Data layer (line i of the stream goes to rank i mod world).
    """
    exact_num_bottom = 0
    exact_num_top = 2
    _setup_transform = DataLayer._setup_transform
    _load_mean_file = DataLayer._load_mean_file
    _check_transform_fits = DataLayer._check_transform_fits

    @property
    def draws_from_data_stream(self):
        return bool(self.param.image_data_param.shuffle or self.param.image_data_param.rand_skip)

    def setup(self, bottom, top):
        p = self.param.image_data_param
        if (p.new_height == 0) != (p.new_width == 0):
            raise self.error(f"image_data_param new_height ({p.new_height}) and new_width "
                             f"({p.new_width}) must both be set or both be 0")
        if p.batch_size <= 0:
            raise self.error("image_data_param batch_size must be positive")
        if not p.source:
            raise self.error("image_data_param source is empty: give a list file of "
                             "'path label' lines")
        self.batch_size = int(p.batch_size)
        self._lines = self._read_list(p.source)
        self._order = np.arange(len(self._lines))
        if p.shuffle:
            self._order = rng.data_generator().permutation(len(self._lines))
        self._pos = 0
        self.offset = 0
        if p.rand_skip:
            # Caffe draws the skip in [0, rand_skip) and refuses one that passes the list's end
            skip = int(rng.data_generator().integers(int(p.rand_skip)))
            if skip >= len(self._lines):
                raise self.error(f"rand_skip {p.rand_skip} drew a skip of {skip} lines, but "
                                 f"'{p.source}' lists only {len(self._lines)} images (not enough "
                                 "points to skip); keep rand_skip at most the number of images")
            self._pos = skip
        self._setup_transform()
        first_path = self._lines[self._order[self._pos]][0]
        first = self._load(first_path)
        self._image_shape = first.shape
        self._check_transform_fits(first.shape, f"the first image '{first_path}'",
                                   f"the first image '{first_path}' is")
        top[0].reshape((self.batch_size,) + self.transformer.output_shape(*first.shape))
        top[1].reshape((self.batch_size,))

    def _read_list(self, source):
        try:
            with open(source) as f:
                raw = f.read().splitlines()
        except OSError as e:
            raise self.error(f"cannot open image_data_param source '{source}': "
                             f"{e.strerror}") from None
        except UnicodeDecodeError:
            raise self.error(f"image list '{source}' is not text (invalid UTF-8)") from None
        lines = []
        for number, line in enumerate(raw, 1):
            line = line.strip()
            if not line:
                continue
            path, _, label = line.rpartition(" ")
            try:
                value = int(label)
            except ValueError:
                raise self.error(f"{source}:{number}: expected 'path label' with an integer "
                                 f"label, got '{line}'") from None
            if not path:
                raise self.error(f"{source}:{number}: no image path before the label")
            lines.append((os.path.join(self.param.image_data_param.root_folder, path)
                          if self.param.image_data_param.root_folder else path, value))
        if not lines:
            raise self.error(f"image list '{source}' lists no images")
        return lines

    def _load(self, path):
        """One image as float32 (C, H, W): BGR (Caffe's OpenCV order) or gray, resized."""
        from PIL import Image, UnidentifiedImageError
        p = self.param.image_data_param
        try:
            with Image.open(path) as im:
                im = im.convert("RGB" if p.is_color else "L")
                if p.new_height:
                    im = im.resize((p.new_width, p.new_height), Image.BILINEAR)
                a = np.asarray(im, dtype=np.float32)
        except FileNotFoundError:
            raise self.error(f"image '{path}' not found (listed in "
                             f"'{p.source}')") from None
        except (UnidentifiedImageError, OSError) as e:
            raise self.error(f"cannot decode image '{path}': {e}") from None
        if a.ndim == 2:
            return a[None]
        return np.ascontiguousarray(a[:, :, ::-1].transpose(2, 0, 1))  # RGB -> BGR, HWC -> CHW

    def reshape(self, bottom, top):
        self.kernel = "numpy"  # shapes are fixed in setup, as in Caffe

    def _advance(self):
        self._pos += 1
        self.offset += 1
        if self._pos == len(self._lines):
            self._pos = 0
            if self.param.image_data_param.shuffle:
                self._order = rng.data_generator().permutation(len(self._lines))

    def forward(self, bottom, top):
        rank, world, stride = self._reading_shard()
        images, labels = [], []
        while len(images) < self.batch_size:
            if not stride or self.offset % world == rank:
                path, label = self._lines[self._order[self._pos]]
                image = self._load(path)
                if image.shape != self._image_shape:
                    raise self.error(f"image '{path}' has shape {image.shape} (C, H, W); the "
                                     f"first image had {self._image_shape}: set new_height and "
                                     "new_width to resize them all")
                images.append(image)
                labels.append(label)
            self._advance()
        x = np.stack(images)
        c, h, w = self._image_shape
        draws = self.transformer.draw(len(images), h, w)
        self.transformer.apply(x, top[0].data, draws)
        top[1].data[...] = labels

    def state_dict(self):
        return {"order": self._order.copy(), "pos": self._pos, "offset": self.offset,
                "num_lines": len(self._lines), **self._shard_state()}

    def load_state_dict(self, state):
        self._check_shard_state(state)
        if int(state["num_lines"]) != len(self._lines):
            raise self.error(f"saved reading position is for {int(state['num_lines'])} images, "
                             f"the list now has {len(self._lines)}")
        self._order = np.asarray(state["order"], dtype=np.int64)
        self._pos, self.offset = int(state["pos"]), int(state["offset"])
