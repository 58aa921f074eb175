"""Data layers that need no database: Input, DummyData, MemoryData, HDF5Data, HDF5Output.

All of them have no bottoms (except HDF5Output, which has no tops) and no gradient: backward keeps
the Layer default, which does nothing. Tops take the dtype the net gave them (float32 in nets).
"""
import os
import warnings

import numpy as np

from ..blob import Blob
from ..fileio import atomic_write
from ..layer import Layer, TEST
from ..registry import register_layer
from .. import crema_pb2, fillers, rng


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
class MemoryDataLayer(Layer):
    """Serves batches from numpy arrays the user hands over (pycaffe's Net.set_input_arrays).

    Reads memory_data_param batch_size, channels, height, width (all > 0).
    Tops: data (batch_size, channels, height, width) and label (batch_size,).
    `set_input_arrays(data, labels)`: data float32 C-contiguous (N', C, H, W), labels N' values
    ((N',) or (N', 1, 1, 1)), N' a multiple of batch_size. The arrays are kept by reference (no
    copy), as Caffe keeps the pointers. `reset(data, labels, n)`: Caffe's Reset, serving the first
    n rows. Forward copies consecutive batches and wraps around after n rows. No transformation is
    applied to the arrays (Caffe's Reset does not transform either).
    """
    exact_num_bottom = 0
    exact_num_top = 2

    def __init__(self, param, phase=0):
        super().__init__(param, phase)
        self._data = self._labels = None
        self._n = 0
        self._pos = 0
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
        """The position in the arrays (the arrays themselves belong to the caller)."""
        return {"pos": self._pos}

    def load_state_dict(self, state):
        self._pos = int(state["pos"])

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
        self._data, self._labels, self._n, self._pos = data, labels, n, 0

    def forward(self, bottom, top):
        if self._data is None:
            raise self.error("no input arrays: call set_input_arrays(data, labels) (or reset) "
                             "before forward")
        b, pos = self.batch_size, self._pos
        top[0].reshape((b, self.channels, self.height, self.width))
        top[1].reshape((b,))
        top[0].data[...] = self._data[pos:pos + b].reshape(top[0].shape)
        top[1].data[...] = self._labels[pos:pos + b]
        self._pos = (pos + b) % self._n


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


@register_layer("HDF5Data")
class HDF5DataLayer(Layer):
    """Rows of HDF5 datasets, one dataset per top, read along axis 0.

    Reads hdf5_data_param: source (a text file listing .h5 files, one per line; relative paths are
    looked up in the working directory as Caffe does, then beside the source file), batch_size,
    shuffle. Top i is the dataset named like the layer's top i (self.param.top[i]); all of a file's
    datasets must have the same number of rows. Tops: (batch_size,) + dataset.shape[1:], float
    values converted to the top dtype (float32 in nets).

    Like Caffe, one file is in memory at a time: rows are taken continuously across file ends
    (after the last file back to the first). With shuffle, the file order is shuffled at setup and
    at each wrap to the first file, and the rows of a file are shuffled each time it is loaded or
    wrapped (engine.rng).

    Rank-aware reading (Caffe's multi-solver Skip): attributes `rank` and `world_size` (default
    0 and 1; set them before the first forward). Every row read advances a global row counter
    `offset`; in the TRAIN phase rank r keeps only the rows with offset % world_size == r, so the
    ranks together read each stream row once. In TEST every rank reads every row, as in Caffe.
    """
    exact_num_bottom = 0
    min_top = 1

    def __init__(self, param, phase=0):
        super().__init__(param, phase)
        self.rank, self.world_size = 0, 1
        self.offset = 0

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
        self._file_order = np.arange(len(self._files))
        if self._shuffle:
            self._file_order = rng.generator().permutation(len(self._files))
        self._current_file = 0
        self._row_shapes = None
        self._load(self._files[self._file_order[0]])
        for t, name in zip(top, self._names):
            t.reshape((self.batch_size,) + self._row_shapes[name])

    def _load(self, path):
        """Load every top's dataset of one file (float32) and draw its row permutation."""
        import h5py
        arrays = {}
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise self.error(f"cannot open HDF5 file '{path}': {e}") from None
        with f:
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
                arrays[name] = np.asarray(ds[...], dtype=np.float32)
        rows = {name: a.shape[0] for name, a in arrays.items()}
        n = rows[self._names[0]]
        if any(r != n for r in rows.values()):
            raise self.error(f"datasets in '{path}' have different numbers of rows: {rows}")
        if n == 0:
            raise self.error(f"datasets in '{path}' have no rows")
        shapes = {name: a.shape[1:] for name, a in arrays.items()}
        if self._row_shapes is None:
            self._row_shapes = shapes
        elif shapes != self._row_shapes:
            for name in self._names:
                if shapes[name] != self._row_shapes[name]:
                    raise self.error(f"dataset '{name}' in '{path}' has rows of shape "
                                     f"{shapes[name]} but the first file loaded had "
                                     f"{self._row_shapes[name]}")
        self._arrays, self._rows, self._row = arrays, n, 0
        self._perm = rng.generator().permutation(n) if self._shuffle else np.arange(n)

    def _end_of_file(self):
        """Caffe's Next() at the end of a file: next file (reshuffle at wrap), reshuffle rows."""
        if len(self._files) > 1:
            self._current_file += 1
            if self._current_file == len(self._files):
                self._current_file = 0
                if self._shuffle:
                    self._file_order = rng.generator().permutation(len(self._files))
            self._load(self._files[self._file_order[self._current_file]])
        else:
            self._row = 0
            if self._shuffle:
                self._perm = rng.generator().permutation(self._rows)

    def state_dict(self):
        """Where reading stands (file order, file, row, row permutation, global offset), so a
        solver snapshot resumes on exactly the next row."""
        return {"file_order": self._file_order.copy(), "current_file": self._current_file,
                "row": self._row, "perm": self._perm.copy(), "offset": self.offset,
                "num_files": len(self._files)}

    def load_state_dict(self, state):
        if int(state["num_files"]) != len(self._files):
            raise self.error(f"saved reading position is for {int(state['num_files'])} files, "
                             f"the source now lists {len(self._files)}")
        self._file_order = np.asarray(state["file_order"], dtype=np.int64)
        self._current_file = int(state["current_file"])
        self._load(self._files[self._file_order[self._current_file]])
        perm = np.asarray(state["perm"], dtype=np.int64)
        if perm.shape != (self._rows,):
            raise self.error(f"saved row permutation has {perm.size} rows, the file has "
                             f"{self._rows}")
        self._perm, self._row, self.offset = perm, int(state["row"]), int(state["offset"])

    def reshape(self, bottom, top):
        self.kernel = "numpy"  # shapes are fixed in setup, as in Caffe

    def forward(self, bottom, top):
        ws, rank = int(self.world_size), int(self.rank)
        if ws < 1 or not 0 <= rank < ws:
            raise self.error(f"rank {rank} is not in [0, world_size {ws})")
        stride = ws > 1 and self.phase != TEST
        filled = 0
        while filled < self.batch_size:
            avail = np.arange(self._rows - self._row)
            keep = avail[(self.offset + avail) % ws == rank] if stride else avail
            take = keep[:self.batch_size - filled]
            if len(take):
                rows = self._perm[self._row + take]
                for t, name in zip(top, self._names):
                    t.data[filled:filled + len(take)] = self._arrays[name][rows]
                filled += len(take)
            # advance past the last row used (or past the whole file when it ran short)
            step = int(take[-1]) + 1 if filled == self.batch_size and len(take) else len(avail)
            self._row += step
            self.offset += step
            if self._row == self._rows:
                self._end_of_file()


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
