"""Data layers that need no database: Input, DummyData, MemoryData, HDF5Data, HDF5Output.

All of them have no bottoms (except HDF5Output, which has no tops) and no gradient: backward keeps
the Layer default, which does nothing. Tops take the dtype the net gave them (float32 in nets).
"""
import os
import warnings

import numpy as np

from ..blob import Blob
from ..fileio import atomic_write
from ..layer import Layer
from ..registry import register_layer
from .. import crema_pb2, fillers, rng
from ..data.sharding import ShardedReader


def _shape_of(blob_shape):
    return tuple(int(d) for d in blob_shape.dim)


@register_layer("Input")
class InputLayer(Layer):
    """Net inputs that the user fills (net.blobs['data'].data[...] = ...).

    Reads input_param.shape: one BlobShape per top, one shared by all tops, or none (tops keep the
    shape the net gave them). Shapes are set once in setup; like Caffe's InputLayer, reshape does
    nothing, so a user's top.reshape(...) followed by net.reshape() is kept. No bottoms; 1+ tops.
    """
    exact_num_bottom = 0
    min_top = 1

    def setup(self, bottom, top):
        shapes = self.param.input_param.shape
        n = len(shapes)
        if n not in (0, 1, len(top)):
            raise self.error(f"input_param must give 'shape' once, once per top ({len(top)} tops), "
                             f"or not at all; it gives {n} shapes")
        for i, t in enumerate(top):
            if n:
                shape = _shape_of(shapes[0 if n == 1 else i])
                if any(d < 0 for d in shape):
                    raise self.error(f"input_param shape {shape} of top '{self._top_name(i)}' "
                                     "has a negative dimension")
                t.reshape(shape)

    def _top_name(self, i):
        return self.param.top[i] if i < len(self.param.top) else str(i)

    def reshape(self, bottom, top):
        self.kernel = "numpy"

    def forward(self, bottom, top):
        pass  # the user writes the data


@register_layer("DummyData")
class DummyDataLayer(Layer):
    """Tops filled by fillers, for tests and benchmarks.

    Reads dummy_data_param: shape (one BlobShape per top, or one for all) or the legacy
    num/channels/height/width (each given once or once per top; all four needed, not mixed with
    shape); data_filler (none: constant 0; one for all tops; or one per top). As in Caffe, tops with
    a constant filler are filled once in setup; the others are refilled on every forward (drawing
    from engine.rng). No bottoms; 1+ tops.
    """
    exact_num_bottom = 0
    min_top = 1

    def setup(self, bottom, top):
        p = self.param.dummy_data_param
        num_top = len(top)
        n_fill = len(p.data_filler)
        if n_fill not in (0, 1, num_top):
            raise self.error(f"dummy_data_param needs 0, 1 or one data_filler per top ({num_top} "
                             f"tops); it gives {n_fill}")
        legacy = {"num": p.num, "channels": p.channels, "height": p.height, "width": p.width}
        if any(len(v) for v in legacy.values()):
            if len(p.shape):
                raise self.error("dummy_data_param gives both 'shape' and the legacy "
                                 "num/channels/height/width fields; use one form")
            for field, values in legacy.items():
                if len(values) not in (1, num_top):
                    raise self.error(f"dummy_data_param must give '{field}' once or once per top "
                                     f"({num_top} tops); it gives {len(values)}")
            shapes = [tuple(int(legacy[f][0 if len(legacy[f]) == 1 else i])
                            for f in ("num", "channels", "height", "width"))
                      for i in range(num_top)]
        else:
            if len(p.shape) not in (1, num_top):
                raise self.error(f"dummy_data_param must give 'shape' once or once per top "
                                 f"({num_top} tops); it gives {len(p.shape)}")
            shapes = [_shape_of(p.shape[0 if len(p.shape) == 1 else i]) for i in range(num_top)]
        for i, shape in enumerate(shapes):
            if any(d < 0 for d in shape):
                raise self.error(f"dummy_data_param shape {shape} for top {i} has a negative "
                                 "dimension")
        if n_fill == 0:
            default = crema_pb2.FillerParameter(type="constant", value=0.0)
            self._fillers = [default] * num_top
        elif n_fill == 1:
            self._fillers = [p.data_filler[0]] * num_top
        else:
            self._fillers = list(p.data_filler)
        for i, (t, shape) in enumerate(zip(top, shapes)):
            t.reshape(shape)
        # Constant tops are filled here once; the others on every forward (Caffe's refill_ rule).
        self._refill = [f.type != "constant" for f in self._fillers]
        for t, f, refill in zip(top, self._fillers, self._refill):
            if not refill:
                self._fill(f, t)
            else:
                # Caffe builds its fillers here, so a bad filler fails at setup: try it on a
                # scratch array and put the random stream back as it was.
                g = rng.generator()
                state = g.bit_generator.state
                self._fill(f, Blob(t.shape, dtype=t.dtype))
                g.bit_generator.state = state

    def _fill(self, filler_param, blob):
        try:
            fillers.fill(filler_param, blob.data)
        except Exception as e:  # the filler's own message (unknown type, bad shape)
            raise self.error(f"data_filler: {e}") from e

    def reshape(self, bottom, top):
        self.kernel = "numpy"  # shapes are fixed in setup, as in Caffe

    def forward(self, bottom, top):
        for t, f, refill in zip(top, self._fillers, self._refill):
            if refill:
                self._fill(f, t)


@register_layer("MemoryData")
class MemoryDataLayer(ShardedReader, Layer):
    """Serves batches from numpy arrays the user hands over (pycaffe's Net.set_input_arrays).

    Reads memory_data_param batch_size, channels, height, width (all > 0).
    Tops: data (batch_size, channels, height, width) and label (batch_size,).
    `set_input_arrays(data, labels)`: data float32 C-contiguous (N', C, H, W), labels N' values
    ((N',) or (N', 1, 1, 1)), N' a multiple of batch_size. The arrays are kept by reference (no
    copy), as Caffe keeps the pointers. `reset(data, labels, n)`: Caffe's Reset, serving the first
    n rows. Forward copies consecutive batches and wraps around after n rows. No transformation is
    applied to the arrays (Caffe's Reset does not transform either).

    Sharding (engine.data.sharding): `offset` counts the rows of the wrapping stream passed since
    the last reset (stream row i is array row i % n). After `set_shard(rank, world)` a TRAIN
    layer serves only the stream rows i with i % world == rank; TEST serves every row.
    """
    exact_num_bottom = 0
    exact_num_top = 2

    def __init__(self, param, phase=0):
        super().__init__(param, phase)
        self._data = self._labels = None
        self._n = 0
        self.offset = 0
        p = self.param.memory_data_param
        self.batch_size, self.channels = int(p.batch_size), int(p.channels)
        self.height, self.width = int(p.height), int(p.width)

    def setup(self, bottom, top):
        if min(self.batch_size, self.channels, self.height, self.width) <= 0:
            raise self.error("memory_data_param batch_size, channels, height and width must all be "
                             f"given and positive; got batch_size {self.batch_size}, channels "
                             f"{self.channels}, height {self.height}, width {self.width}")
        top[0].reshape((self.batch_size, self.channels, self.height, self.width))
        top[1].reshape((self.batch_size,))

    def reshape(self, bottom, top):
        self.kernel = "numpy"

    def state_dict(self):
        """The position in the stream of rows and the shard it was read for (the arrays
        themselves belong to the caller). "pos" is the array row, kept for older readers."""
        return {"pos": self.offset % self._n if self._n else 0, "offset": self.offset,
                **self._shard_state()}

    def load_state_dict(self, state):
        self._check_shard_state(state)
        # states saved before "offset" existed hold only "pos", which is the offset for world 1
        self.offset = int(state.get("offset", state["pos"]))

    def set_input_arrays(self, data, labels):
        """Check the arrays as pycaffe does, then serve them from the first row."""
        if not isinstance(data, np.ndarray) or not isinstance(labels, np.ndarray):
            raise self.error("set_input_arrays needs numpy arrays for data and labels")
        want = ("N", self.channels, self.height, self.width)
        if data.ndim != 4 or data.shape[1:] != want[1:]:
            raise self.error(f"data array has shape {data.shape}; this layer needs "
                             f"(N, {self.channels}, {self.height}, {self.width})")
        if data.dtype != np.float32 or not data.flags.c_contiguous:
            raise self.error(f"data array must be float32 and C-contiguous (got {data.dtype}, "
                             f"{'' if data.flags.c_contiguous else 'not '}C-contiguous)")
        if labels.ndim == 0 or labels.size != labels.shape[0]:
            raise self.error(f"labels array has shape {labels.shape}; it needs one value per "
                             "row: (N,) or (N, 1, 1, 1)")
        if labels.shape[0] != data.shape[0]:
            raise self.error(f"data array has {data.shape[0]} rows (shape {data.shape}) but labels "
                             f"array has {labels.shape[0]} (shape {labels.shape}); they must match")
        self.reset(data, labels, data.shape[0])

    def reset(self, data, labels, n):
        """Caffe's MemoryDataLayer::Reset: serve rows [0, n) of data/labels from the start."""
        if data is None or labels is None:
            raise self.error("reset needs both a data and a labels array")
        if self.batch_size <= 0:
            raise self.error("memory_data_param batch_size must be positive, got "
                             f"{self.batch_size}")
        n = int(n)
        if n <= 0 or n % self.batch_size:
            raise self.error(f"the number of rows n={n} must be a positive multiple of batch_size "
                             f"{self.batch_size}")
        data = np.asarray(data)
        labels = np.asarray(labels).reshape(-1)
        if data.ndim == 0 or data.shape[0] < n or labels.shape[0] < n:
            raise self.error(f"n={n} rows requested but data has shape {data.shape} and labels "
                             f"hold {labels.shape[0]} values")
        row = self.channels * self.height * self.width
        if data[:1].size and data[:1].size != row:
            raise self.error(f"data rows hold {data[:1].size} values (shape {data.shape}); this "
                             f"layer needs {row} = {self.channels}x{self.height}x{self.width}")
        if self.param.HasField("transform_param"):
            warnings.warn(f"MemoryData layer '{self.name}' does not transform array data on reset",
                          stacklevel=2)
        self._data, self._labels, self._n, self.offset = data, labels, n, 0

    def forward(self, bottom, top):
        if self._data is None:
            raise self.error("no input arrays: call set_input_arrays(data, labels) (or reset) "
                             "before forward")
        rank, world, stride = self._reading_shard()
        b = self.batch_size
        top[0].reshape((b, self.channels, self.height, self.width))
        top[1].reshape((b,))
        if stride:
            # this rank's next b stream rows: the first offset >= self.offset that is rank mod
            # world, then every world-th
            stream = self.offset + (rank - self.offset) % world + world * np.arange(b)
        else:
            stream = self.offset + np.arange(b)
        self.offset = int(stream[-1]) + 1
        pos = int(stream[0]) % self._n
        if not stride and pos + b <= self._n:
            # consecutive rows (always, unless a shard change or a loaded state moved the
            # position off a batch boundary): a slice, no gather
            top[0].data[...] = self._data[pos:pos + b].reshape(top[0].shape)
            top[1].data[...] = self._labels[pos:pos + b]
        else:
            rows = stream % self._n  # may wrap inside the batch
            top[0].data[...] = self._data[rows].reshape(top[0].shape)
            top[1].data[...] = self._labels[rows]


def _read_source_list(layer, source):
    try:
        with open(source) as f:
            names = [line.strip() for line in f]
    except OSError as e:
        raise layer.error(f"cannot open hdf5_data_param source '{source}' (looked in the current "
                          f"directory {os.getcwd()}): {e.strerror}") from None
    names = [n for n in names if n]
    if not names:
        raise layer.error(f"hdf5_data_param source '{source}' lists no HDF5 files")
    folder = os.path.dirname(os.path.abspath(source))
    paths = []
    for name in names:
        if os.path.isabs(name):
            if not os.path.isfile(name):
                raise layer.error(f"HDF5 file '{name}' listed in '{source}' does not exist")
            paths.append(name)
            continue
        # Caffe opens listed paths relative to the working directory; crema also tries the
        # folder of the source file, so that a list and its files can move together.
        here = os.path.join(os.getcwd(), name)
        beside = os.path.join(folder, name)
        if os.path.isfile(here):
            paths.append(here)
        elif os.path.isfile(beside):
            paths.append(beside)
        else:
            raise layer.error(f"HDF5 file '{name}' listed in '{source}' not found: tried "
                              f"'{here}' (current directory) and '{beside}' (folder of the "
                              "source file)")
    return paths


# One read brings in at most this many bytes of a dataset, so reading a file's rows in windows
# bounds the memory a read needs beyond the rows kept (see _read_sorted_rows).
_READ_WINDOW_BYTES = 32 << 20
# A window whose wanted rows fill at least 1/_DENSE of their span is read as one slice and picked
# in memory: h5py resolves a point selection element by element (about 1 us a row, measured with
# h5py 3.16), so a sequential read of up to _DENSE times the wanted bytes is the cheaper one.
_DENSE = 8


def _read_sorted_rows(ds, rows, out):
    """out[k] = ds[rows[k]] (converted to out's dtype) for increasing, distinct row indices.

    h5py only reads increasing selections, and a list selection costs per element, so the rows
    are read in windows of at most _READ_WINDOW_BYTES of the dataset: evenly spaced rows
    (consecutive ones without shuffle on one rank, every world-th one without shuffle on several)
    as one strided hyperslab; dense ones as the window's slice, picked in memory; sparse ones as
    a point selection."""
    row_bytes = max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64)))
    window = max(1, _READ_WINDOW_BYTES // row_bytes)
    start = 0
    while start < len(rows):
        first = int(rows[start])
        stop = int(np.searchsorted(rows, first + window, side="left"))
        part = rows[start:stop]
        last = int(part[-1])
        gaps = np.diff(part)
        if len(part) == 1 or np.all(gaps == gaps[0]):
            step = int(gaps[0]) if len(part) > 1 else 1
            out[start:stop] = ds[first:last + 1:step]
        elif len(part) * _DENSE >= last + 1 - first:
            out[start:stop] = ds[first:last + 1][part - first]
        else:
            out[start:stop] = ds[part]
        start = stop


def _open_hdf5_readonly(path):
    import h5py
    try:
        # Every rank opens the same files. HDF5's file locks fail on many parallel file systems
        # (Lustre, NFS without flock) and are not needed to read, so they are turned off.
        return h5py.File(path, "r", locking=False)
    except (TypeError, ValueError):  # h5py < 3.5 or an HDF5 library without the option
        return h5py.File(path, "r")


class _OpenFile:
    """One open HDF5 file of the source list: its datasets (one per top) and row count."""

    def __init__(self, path, handle, datasets, rows):
        self.path, self.handle, self.datasets, self.rows = path, handle, datasets, rows

    def close(self):
        self.handle.close()


@register_layer("HDF5Data")
class HDF5DataLayer(ShardedReader, Layer):
    """Rows of HDF5 datasets, one dataset per top, read along axis 0.

    Reads hdf5_data_param: source (a text file listing .h5 files, one per line; relative paths are
    looked up in the working directory as Caffe does, then beside the source file), batch_size,
    shuffle. Top i is the dataset named like the layer's top i (self.param.top[i]); all of a file's
    datasets must have the same number of rows. Tops: (batch_size,) + dataset.shape[1:], float
    values converted to the top dtype (float32 in nets).

    Like Caffe, files are visited one at a time: rows are taken continuously across file ends
    (after the last file back to the first). With shuffle, the file order is shuffled at setup and
    at each wrap to the first file, and the rows of a file are shuffled at each visit. The
    shuffles draw from a generator the layer takes from engine.rng's data stream at setup
    (rng.spawn_data_generator), the same on every rank when the seed is.

    Sharding (engine.data.sharding, Caffe's multi-solver Skip): every row passed advances a
    global row counter `offset`; after `set_shard(rank, world)` (or setting the attributes `rank`
    and `world_size`) a TRAIN layer keeps only the rows with offset % world == rank, so the ranks
    together read each stream row once. In TEST every rank reads every row, as in Caffe.

    Only the rows this rank keeps are read: at a file visit the layer reads (from the file it
    keeps open, read-only) the rows it will take during that visit, sorted, and picks each batch
    from them, so a rank holds about 1/world of a file instead of the whole file.
    """
    exact_num_bottom = 0
    min_top = 1

    def __init__(self, param, phase=0):
        super().__init__(param, phase)
        self.offset = 0
        self._file = None  # the _OpenFile being visited
        self._cache = None  # this visit's rows for this rank (see _visit_rows)

    @property
    def draws_from_data_stream(self):
        return bool(self.param.hdf5_data_param.shuffle)

    def setup(self, bottom, top):
        p = self.param.hdf5_data_param
        if self.param.HasField("transform_param"):
            raise self.error("HDF5Data does not transform data: remove transform_param")
        if len(self.param.top) != len(top):
            raise self.error(f"HDF5Data reads the datasets named like its tops, but its "
                             f"LayerParameter names {len(self.param.top)} tops for {len(top)} "
                             "top blobs")
        self._names = list(self.param.top)
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise self.error("hdf5_data_param batch_size must be given and positive")
        if not p.source:
            raise self.error("hdf5_data_param source is empty: give a text file listing .h5 files")
        self._files = _read_source_list(self, p.source)
        self._shuffle = bool(p.shuffle)
        self._rng = rng.spawn_data_generator()
        self._file_order = np.arange(len(self._files))
        if self._shuffle:
            self._file_order = self._rng.permutation(len(self._files))
        self._current_file = 0
        self._row_shapes = None
        self._visit(self._files[self._file_order[0]])
        for t, name in zip(top, self._names):
            t.reshape((self.batch_size,) + self._row_shapes[name])

    def _open(self, path):
        """Open one file and check its datasets (reads no rows); the first file opened fixes the
        row shapes. The current file stays open until the new one is checked."""
        import h5py
        if self._file is not None and self._file.path == path:
            return self._file
        try:
            f = _open_hdf5_readonly(path)
        except OSError as e:
            raise self.error(f"cannot open HDF5 file '{path}': {e}") from None
        try:
            datasets = {}
            for name in self._names:
                if name not in f or not isinstance(f[name], h5py.Dataset):
                    raise self.error(f"HDF5 file '{path}' has no dataset '{name}' (top '{name}' "
                                     f"reads the dataset of the same name; the file has: "
                                     f"{', '.join(sorted(f.keys())) or 'nothing'})")
                ds = f[name]
                if ds.ndim < 1:
                    raise self.error(f"dataset '{name}' in '{path}' is a scalar; it needs at least "
                                     "one axis (rows)")
                if ds.dtype.kind not in "fiub":
                    raise self.error(f"dataset '{name}' in '{path}' holds {ds.dtype}, not numbers")
                datasets[name] = ds
            rows = {name: ds.shape[0] for name, ds in datasets.items()}
            n = rows[self._names[0]]
            if any(r != n for r in rows.values()):
                raise self.error(f"datasets in '{path}' have different numbers of rows: {rows}")
            if n == 0:
                raise self.error(f"datasets in '{path}' have no rows")
            shapes = {name: tuple(ds.shape[1:]) for name, ds in datasets.items()}
            if self._row_shapes is None:
                self._row_shapes = shapes
            for name in self._names:
                if shapes[name] != self._row_shapes[name]:
                    raise self.error(f"dataset '{name}' in '{path}' has rows of shape "
                                     f"{shapes[name]} but the first file loaded had "
                                     f"{self._row_shapes[name]}")
        except BaseException:
            f.close()
            raise
        return _OpenFile(path, f, datasets, n)

    def _switch_to(self, opened):
        if self._file is not None and self._file is not opened:
            self._file.close()
        self._file, self._cache = opened, None

    def _visit(self, path):
        """Start a pass over one file: open it and draw its row order."""
        self._switch_to(self._open(path))
        self._row = 0
        n = self._file.rows
        self._perm = self._rng.permutation(n) if self._shuffle else np.arange(n)

    def _end_of_file(self):
        """Caffe's Next() at the end of a file: next file (reshuffle at wrap), reshuffle rows."""
        if len(self._files) > 1:
            self._current_file += 1
            if self._current_file == len(self._files):
                self._current_file = 0
                if self._shuffle:
                    self._file_order = self._rng.permutation(len(self._files))
        self._visit(self._files[self._file_order[self._current_file]])

    def _visit_rows(self, rank, world, stride):
        """The rows this rank takes from the rest of the current visit, read on first use.

        Returns (positions, rows, arrays): the visit positions it takes (increasing), the file
        rows behind them sorted, and per top those rows' values (float32) in sorted order.
        Position j of the visit is global row offset - row + j; it is taken when that is rank
        mod world (or always, without striding). Rebuilt after a new visit or a shard change."""
        key = (rank, world, stride)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1:]
        n = self._file.rows
        if stride:
            positions = np.arange(self._row + (rank - self.offset) % world, n, world)
        else:
            positions = np.arange(self._row, n)
        rows = np.sort(self._perm[positions])
        arrays = {}
        for name in self._names:
            out = np.empty((len(rows),) + self._row_shapes[name], dtype=np.float32)
            if len(rows):
                _read_sorted_rows(self._file.datasets[name], rows, out)
            arrays[name] = out
        self._cache = (key, positions, rows, arrays)
        return positions, rows, arrays

    def state_dict(self):
        """Where reading stands (file order, file, row, row permutation, global offset, the
        shuffling generator) and the shard it was read for, so a solver snapshot resumes on
        exactly the next row of this rank."""
        import json
        return {"file_order": self._file_order.copy(), "current_file": self._current_file,
                "row": self._row, "perm": self._perm.copy(), "offset": self.offset,
                "num_files": len(self._files),
                "rng": json.dumps(self._rng.bit_generator.state), **self._shard_state()}

    def load_state_dict(self, state):
        import json
        self._check_shard_state(state)
        if int(state["num_files"]) != len(self._files):
            raise self.error(f"saved reading position is for {int(state['num_files'])} files, "
                             f"the source now lists {len(self._files)}")
        file_order = np.asarray(state["file_order"], dtype=np.int64)
        current = int(state["current_file"])
        opened = self._open(self._files[file_order[current]])
        perm = np.asarray(state["perm"], dtype=np.int64)
        row = int(state["row"])
        if perm.shape != (opened.rows,) or not 0 <= row < opened.rows:
            if opened is not self._file:
                opened.close()
            raise self.error(f"saved row permutation has {perm.size} rows and position {row}, "
                             f"the file has {opened.rows} rows")
        gen = self._rng
        if "rng" in state:  # states saved before the layer had its own generator lack it
            try:
                saved = json.loads(state["rng"])
                bit_gen = getattr(np.random, saved["bit_generator"])()
                bit_gen.state = saved
            except (TypeError, ValueError, KeyError, AttributeError) as e:
                if opened is not self._file:
                    opened.close()
                raise self.error(f"saved shuffling generator state is unreadable: {e}") from None
            gen = np.random.Generator(bit_gen)
        self._switch_to(opened)
        self._rng = gen
        self._file_order, self._current_file = file_order, current
        self._perm, self._row, self.offset = perm, row, int(state["offset"])

    def reshape(self, bottom, top):
        self.kernel = "numpy"  # shapes are fixed in setup, as in Caffe

    def forward(self, bottom, top):
        rank, world, stride = self._reading_shard()
        if self._file is None:  # closed: reopen the file being visited, at the same row
            self._switch_to(self._open(self._files[self._file_order[self._current_file]]))
        filled = 0
        while filled < self.batch_size:
            positions, rows, arrays = self._visit_rows(rank, world, stride)
            first = int(np.searchsorted(positions, self._row))
            take = positions[first:first + self.batch_size - filled]
            if len(take):
                # each taken position's file row, found among the sorted rows that were read
                picks = np.searchsorted(rows, self._perm[take])
                for t, name in zip(top, self._names):
                    t.data[filled:filled + len(take)] = arrays[name][picks]
                filled += len(take)
            # advance past the last row used (or past the whole file when it ran short)
            end = int(take[-1]) + 1 if filled == self.batch_size and len(take) else \
                self._file.rows
            self.offset += end - self._row
            self._row = end
            if self._row == self._file.rows:
                self._end_of_file()

    def close(self):
        """Close the open HDF5 file (reading again reopens it at the next visit)."""
        if self._file is not None:
            self._file.close()
            self._file = self._cache = None


@register_layer("HDF5Output")
class HDF5OutputLayer(Layer):
    """Writes bottom 0 as dataset "data" and bottom 1 as dataset "label" of an HDF5 file.

    Reads hdf5_output_param.file_name. Bottoms: data and label with the same number of rows; as in
    Caffe the datasets are 4-D (num, channels, height, width; missing axes read as 1), float32.
    Each forward appends its rows and rewrites the whole file through a temporary file and an
    atomic os.replace, so file_name always holds a complete file. Setup creates the file (empty),
    as Caffe truncates it. `close()` (or `flush()`) writes what is pending; no tops, no backward.
    """
    exact_num_bottom = 2
    exact_num_top = 0

    def setup(self, bottom, top):
        self.file_name = self.param.hdf5_output_param.file_name
        if not self.file_name:
            raise self.error("hdf5_output_param file_name is empty")
        self._data, self._label = [], []
        self._dirty = True
        self._write()

    def reshape(self, bottom, top):
        self.kernel = "numpy"
        if bottom[0].num != bottom[1].num:
            raise self.error(f"data bottom has {bottom[0].num} rows (shape {bottom[0].shape}) "
                             f"but label bottom has {bottom[1].num} (shape {bottom[1].shape})")
        for i, b in enumerate(bottom):
            if b.num_axes > 4:
                raise self.error(f"bottom {i} has shape {b.shape}; HDF5Output writes 4-D "
                                 "(num, channels, height, width) datasets")

    @staticmethod
    def _legacy(blob):
        return (blob.num, blob.channels, blob.height, blob.width)

    def forward(self, bottom, top):
        self._data.append(np.array(bottom[0].data, np.float32).reshape(self._legacy(bottom[0])))
        self._label.append(np.array(bottom[1].data, np.float32).reshape(self._legacy(bottom[1])))
        self._dirty = True
        self._write()

    def _write(self):
        import h5py

        def write(tmp):
            with h5py.File(tmp, "w") as f:
                for name, parts in (("data", self._data), ("label", self._label)):
                    if parts:
                        f.create_dataset(name, data=np.concatenate(parts, axis=0))
        atomic_write(self.file_name, write, error_cls=self.error, what="write the HDF5 file")
        self._dirty = False

    def flush(self):
        if self._dirty:
            self._write()

    def close(self):
        """Write anything pending. The file is complete after every forward already."""
        self.flush()
