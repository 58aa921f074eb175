"""The "Data" layer (Caffe's DataLayer): batches of Datum records read from an LMDB database,
transformed as Caffe's DataTransformer does.

Proto params
- data_param.source: the database directory, relative to the current directory as in Caffe.
- data_param.batch_size (> 0).
- data_param.backend: LMDB. LEVELDB (explicit) is refused. LEVELDB is also Caffe's default: when
  `backend` is not given and the source is an LMDB directory (it holds data.mdb) it is read as
  LMDB; otherwise the layer reports that LevelDB is not supported.
- data_param.rand_skip: at setup, skip a random number of records in [0, rand_skip) (engine.rng).
- data_param.prefetch: ignored; batches are read synchronously in forward.
- transform_param (Caffe's DataTransformer, for raw uint8 `data` or `float_data` datums):
    value = (pixel - mean) * scale, mean from mean_file (a binaryproto BlobProto of the datum's
    (C, H, W), read relative to the current directory) or mean_value (one value for all channels
    or one per channel; not both with mean_file);
    crop_size: a crop_size x crop_size window, at a random offset in TRAIN and centred
    ((H - crop) // 2, (W - crop) // 2) in TEST; the mean file is taken at the same window;
    mirror: each image is flipped horizontally with probability 1/2 (engine.rng). As in Caffe this
    happens in both phases whenever mirror is true.
    force_color / force_gray apply only to encoded (compressed) datums, which crema does not
    decode: an encoded datum is an error naming the layer and the record.
- The legacy transform fields of data_param (scale, mean_file, crop_size, mirror) are ignored
  with a warning, as Caffe ignores them once a net is in the current format (the net upgrader
  moves them of old-format nets into transform_param).

Tops: data (batch_size, C, H, W) (H, W = crop_size when cropping) and, when a second top is
given, label (batch_size,). The top shape follows the first datum of each batch, as in Caffe;
every datum of a batch must have that shape. No bottoms, no backward.

Records are read in key order and the reading wraps around to the first record after the last.
`offset` counts every record passed since the first one (rand_skip included); the current record
is `offset % number of records`.

Rank-aware reading (Caffe's multi-solver Skip): attributes `rank` and `world_size` (default 0 and
1; set them before forward). In the TRAIN phase rank r keeps only the records whose offset is
r mod world_size, i.e. records r, r + world_size, r + 2*world_size, ... of the wrapping stream,
so the ranks together read each record once per pass. In TEST every rank reads every record, as in
Caffe.

Exact resume: `state_dict()` -> {"offset": int, "num_records": int}; `load_state_dict(d)` moves
the cursor back to that record, so the next batch is the one the saved run would have read (the
random draws of mirror and crop come from engine.rng, whose state the solver saves).
"""
import logging
import os
import warnings

import numpy as np

from .. import crema_pb2, rng
from ..errors import CremaError
from ..layer import Layer, TEST
from ..registry import register_layer

_log = logging.getLogger("crema")


class DatumTransformer:
    """Caffe's DataTransformer for raw datums, applied to a whole batch at once (vectorized).

    `mean` is None, a (C, H, W) float32 image or a (C,) float32 vector; the per-image random draws
    (mirror, crop offsets) come from engine.rng."""

    def __init__(self, phase, scale=1.0, mirror=False, crop_size=0, mean=None):
        self.phase = phase
        self.scale = np.float32(scale)
        self.mirror = bool(mirror)
        self.crop_size = int(crop_size)
        self.mean = mean

    def output_shape(self, c, h, w):
        cs = self.crop_size
        return (c, cs, cs) if cs else (c, h, w)

    def __call__(self, x, out):
        """x: (N, C, H, W) uint8 or float32 -> out (N, C, H', W') float array written in place."""
        n, c, h, w = x.shape
        y = x.astype(np.float32)
        if self.mean is not None:
            y -= self.mean if self.mean.ndim == 3 else self.mean[:, None, None]
        if self.scale != 1:
            y *= self.scale
        gen = rng.generator()
        flip = gen.integers(2, size=n).astype(bool) if self.mirror else None
        cs = self.crop_size
        if not cs:
            if flip is not None and flip.any():
                y[flip] = y[flip][..., ::-1]
            out[...] = y
            return
        if self.phase == TEST:
            h_off = np.full(n, (h - cs) // 2)
            w_off = np.full(n, (w - cs) // 2)
        else:
            h_off = gen.integers(h - cs + 1, size=n)
            w_off = gen.integers(w - cs + 1, size=n)
        span = np.arange(cs)
        rows = h_off[:, None] + span                       # (N, cs)
        cols = w_off[:, None] + span                       # (N, cs)
        if flip is not None:
            cols = np.where(flip[:, None], cols[:, ::-1], cols)
        out[...] = y[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None],
                     rows[:, None, :, None], cols[:, None, None, :]]


@register_layer("Data")
class DataLayer(Layer):
    """Caffe's DataLayer: LMDB Datum records -> data (N, C, H, W) [+ label (N,)]. The proto
    params, transformation, rank striding and resume are described in the module docstring."""
    exact_num_bottom = 0
    min_top = 1
    max_top = 2

    def __init__(self, param, phase=0):
        super().__init__(param, phase)
        self.rank, self.world_size = 0, 1
        self.offset = 0
        self._reader = None
        self._datum = crema_pb2.Datum()

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
            skip = int(rng.generator().integers(int(p.rand_skip)))
            _log.info("Data layer '%s': skipping the first %d records", self.name, skip)
            for _ in range(skip):
                self._next()
        d = self._parse(self._reader.value(), self._reader.position)
        shape = self._batch_shape((d.channels, d.height, d.width))
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

    def _parse(self, value, index):
        d = self._datum
        d.ParseFromString(value)
        if d.encoded:
            raise self.error(f"record {index} of '{self.param.data_param.source}' is an encoded "
                             "(compressed) image; crema reads raw Datum values only (convert the "
                             "database with encoded=false)")
        return d

    def _batch_shape(self, datum_shape):
        """Checks of Caffe's InferBlobShape on a batch's datum shape; returns the output shape."""
        c, h, w = datum_shape
        if min(c, h, w) <= 0:
            raise self.error(f"datum in '{self.param.data_param.source}' has shape "
                             f"({c}, {h}, {w}); channels, height and width must be positive")
        t = self.transformer
        if t.crop_size and (t.crop_size > h or t.crop_size > w):
            raise self.error(f"crop_size {t.crop_size} is larger than the datum ({h}x{w})")
        if t.mean is not None:
            if t.mean.ndim == 3 and t.mean.shape != (c, h, w):
                raise self.error(f"mean_file '{self._mean_file}' has shape {t.mean.shape} but the "
                                 f"datums are ({c}, {h}, {w})")
            if t.mean.ndim == 1 and t.mean.shape[0] not in (1, c):
                raise self.error(f"transform_param gives {t.mean.shape[0]} mean_value values; "
                                 f"give 1 or one per channel ({c})")
        return t.output_shape(c, h, w)

    def _read_values(self):
        reader, n = self._reader, self.batch_size
        ws, rank = int(self.world_size), int(self.rank)
        if ws < 1 or not 0 <= rank < ws:
            raise self.error(f"rank {rank} is not in [0, world_size {ws})")
        stride = ws > 1 and self.phase != TEST
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
        d = self._datum
        labels = np.empty(len(values), dtype=np.float32)
        raws = []
        shape = None
        for i, (value, index) in enumerate(zip(values, indices)):
            self._parse(value, index)
            s = (d.channels, d.height, d.width)
            if shape is None:
                shape = s
            elif s != shape:
                raise self.error(f"record {index} of '{self.param.data_param.source}' has shape "
                                 f"{s} but the first record of its batch has {shape}")
            labels[i] = d.label
            raws.append(d.data if len(d.data) else np.asarray(d.float_data, dtype=np.float32))
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

    def forward(self, bottom, top):
        values, indices = self._read_values()
        x, labels, shape = self._decode(values, indices)
        out_shape = self._batch_shape(shape)
        top[0].reshape((self.batch_size,) + out_shape)
        self.transformer(x, top[0].data)
        if len(top) > 1:
            top[1].reshape((self.batch_size,))
            top[1].data[...] = labels

    # -- exact resume ---------------------------------------------------------------------
    def state_dict(self):
        return {"offset": int(self.offset), "num_records": len(self._reader)}

    def load_state_dict(self, state):
        offset = int(state["offset"])
        n = len(self._reader)
        saved = state.get("num_records")
        if saved is not None and int(saved) != n:
            raise self.error(f"cannot resume: the state was saved with {int(saved)} records in "
                             f"'{self.param.data_param.source}', the database now holds {n}")
        if offset < 0:
            raise self.error(f"cannot resume from a negative offset {offset}")
        self._reader.seek(offset % n)
        self.offset = offset

    def close(self):
        if self._reader is not None:
            self._reader.close()
            self._reader = None
