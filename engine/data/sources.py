"""Sources and the one batching layer's reader.

A Source is a record store: `len(source)` records, `fields` (name -> row shape) and
`read(indices)` -> {field: array (len(indices),) + row shape} for any sorted indices. Sources
know nothing of batches, ranks or epochs. Kinds (SourceData's "kind:argument" strings):

  hdf5:LIST     the .h5 files a list file names (as HDF5Data's source); rows are read on demand,
                only the ones asked for, with read-only handles that many processes can share
  npz:FILE      the arrays of a .npz file (all of the same length)
  <registered>  register_source("name", factory) adds a kind: factory(argument) -> Source; data
                generators that can make record i on demand (deterministically from i) plug in
                here

BatchReader is what every SourceData layer reads through. It owns the stream order: pass k of
the stream visits the records in permutation k (the identity without shuffle; with shuffle a
permutation drawn from a seed that engine.rng's data stream gives once, so every rank has the
same one), rank sharding (in TRAIN, stream position p goes to rank p mod world - Caffe's rule -
and TEST reads everything), prefetching (the next batches are read by a background thread while
the net computes), and the resume position. Batch t of a rank is a pure function of (t, rank,
world, seed), so resuming needs only t and the seed, and prefetching cannot go out of step.
"""
import abc
import os
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import CremaError

_KINDS = {}


class SourceError(CremaError):
    """A source that cannot be opened or read (names the source)."""


def register_source(kind, factory):
    """Make "kind:argument" build factory(argument) (a Source)."""
    if kind in _KINDS:
        raise ValueError(f"source kind {kind!r} registered twice")
    _KINDS[kind] = factory


def open_source(spec, base_dir=None):
    """The Source a "kind:argument" string names; relative paths are looked up in the current
    directory, then in `base_dir` (where the net file is)."""
    kind, sep, argument = spec.partition(":")
    if not sep:
        raise SourceError(f"source '{spec}' needs the form kind:argument (kinds: "
                          f"{', '.join(sorted(_KINDS))})")
    factory = _KINDS.get(kind)
    if factory is None:
        raise SourceError(f"unknown source kind '{kind}' in '{spec}' (kinds: "
                          f"{', '.join(sorted(_KINDS))})")
    return factory(argument, base_dir) if kind in ("hdf5", "npz") else factory(argument)


def _find(path, base_dir):
    if os.path.exists(path) or os.path.isabs(path) or not base_dir:
        return path
    beside = os.path.join(base_dir, path)
    return beside if os.path.exists(beside) else path


class Source(abc.ABC):
    """fields: {name: row shape}; len(source) records; read(sorted indices) -> {name: rows}."""
    fields = {}

    @abc.abstractmethod
    def __len__(self):
        """The number of records."""

    @abc.abstractmethod
    def read(self, indices):
        """{field: array (len(indices),) + row shape} for the given record indices."""


class ArraySource(Source):
    """In-memory arrays of one length."""

    def __init__(self, arrays, label="arrays"):
        lengths = {name: len(a) for name, a in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise SourceError(f"{label}: arrays of different lengths {lengths}")
        self.arrays = {name: np.asarray(a) for name, a in arrays.items()}
        self.fields = {name: a.shape[1:] for name, a in self.arrays.items()}
        self.label = label
        self._n = next(iter(lengths.values()))

    def __len__(self):
        return self._n

    def read(self, indices):
        return {name: a[indices] for name, a in self.arrays.items()}


def _npz_source(argument, base_dir=None):
    path = _find(argument, base_dir)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read npz source '{path}': {exc}") from None
    return ArraySource(arrays, label=path)


class HDF5Source(Source):
    """Rows of the .h5 files a list file names, one global index over all files in list order."""

    def __init__(self, list_path, base_dir=None):
        import h5py
        list_path = _find(list_path, base_dir)
        try:
            with open(list_path) as f:
                names = [line.strip() for line in f if line.strip()]
        except OSError as exc:
            raise SourceError(f"cannot open the HDF5 list '{list_path}': {exc.strerror}") \
                from None
        if not names:
            raise SourceError(f"HDF5 list '{list_path}' names no files")
        self.label = list_path
        self.files, self.handles, self.starts = [], [], [0]
        self.fields = None
        for name in names:
            path = _find(name, os.path.dirname(os.path.abspath(list_path)))
            try:
                fh = h5py.File(path, "r", locking=False)
            except (OSError, TypeError) as exc:
                raise SourceError(f"{list_path}: cannot open HDF5 file '{path}': {exc}") \
                    from None
            datasets = {k: v for k, v in fh.items() if isinstance(v, h5py.Dataset)
                        and v.ndim >= 1 and v.dtype.kind in "fiub"}
            rows = {k: v.shape[0] for k, v in datasets.items()}
            fields = {k: v.shape[1:] for k, v in datasets.items()}
            if self.fields is None:
                self.fields = fields
            shared = {k for k in self.fields if k in fields and fields[k] == self.fields[k]}
            self.fields = {k: self.fields[k] for k in shared}
            counts = {rows[k] for k in shared}
            if len(counts) > 1:
                raise SourceError(f"{path}: datasets {sorted(shared)} have different numbers of "
                                  f"rows {dict((k, rows[k]) for k in shared)}")
            self.files.append(path)
            self.handles.append(fh)
            self.starts.append(self.starts[-1] + (counts.pop() if counts else 0))
        if not self.fields:
            raise SourceError(f"{list_path}: the files share no numeric dataset")

    def __len__(self):
        return self.starts[-1]

    def read(self, indices, names=None):
        names = list(names or self.fields)
        indices = np.asarray(indices, dtype=np.int64)
        out = {n: np.empty((len(indices),) + tuple(self.fields[n]), np.float32) for n in names}
        file_of = np.searchsorted(self.starts, indices, side="right") - 1
        for f in np.unique(file_of):
            pick = np.nonzero(file_of == f)[0]
            rows = indices[pick] - self.starts[f]
            order = np.argsort(rows, kind="stable")
            unique, inverse = np.unique(rows[order], return_inverse=True)
            for n in names:
                block = self.handles[f][n][unique.tolist()]  # h5py: increasing indices
                out[n][pick[order]] = block[inverse]
        return out

    def close(self):
        for fh in self.handles:
            fh.close()


register_source("hdf5", HDF5Source)
register_source("npz", _npz_source)


class BatchReader:
    """Batches of a Source for one rank (see the module docstring)."""

    def __init__(self, source, batch_size, fields, shuffle=False, seed=0, train=True,
                 prefetch=2):
        if len(source) == 0:
            raise SourceError(f"{getattr(source, 'label', 'source')}: no records")
        self.source, self.batch_size, self.fields = source, int(batch_size), list(fields)
        self.shuffle, self.seed, self.train = bool(shuffle), int(seed), bool(train)
        self.batches = 0  # batches this rank has consumed
        self.prefetch = int(prefetch)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="crema-source") \
            if self.prefetch else None
        if self._pool is not None:
            weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)
        self._pending = {}
        self._perms = {}

    def _order(self, k):
        """The record order of pass k."""
        if not self.shuffle:
            return None
        if k not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            self._perms[k] = np.random.default_rng([self.seed, k]).permutation(len(self.source))
        return self._perms[k]

    def positions(self, t, rank, world):
        """The stream positions of batch t for this rank."""
        j = np.arange(self.batch_size, dtype=np.int64)
        if self.train and world > 1:
            return rank + world * (t * self.batch_size + j)
        return t * self.batch_size + j

    def _read(self, key):
        t, rank, world = key
        pos = self.positions(t, rank, world)
        n = len(self.source)
        passes, within = pos // n, pos % n
        records = within.copy()
        for k in np.unique(passes):
            order = self._order(int(k))
            if order is not None:
                sel = passes == k
                records[sel] = order[within[sel]]
        if isinstance(self.source, HDF5Source):
            return self.source.read(records, self.fields)
        data = self.source.read(records)
        return {name: data[name] for name in self.fields}

    def next(self, rank=0, world=1):
        key = (self.batches, int(rank), int(world))
        future = self._pending.pop(key, None)
        batch = future.result() if future is not None else self._read(key)
        self.batches += 1
        if self._pool is not None:
            for stale in [k for k in self._pending if k[1:] != key[1:] or k[0] < self.batches]:
                self._pending.pop(stale).cancel()
            for ahead in range(self.batches, self.batches + self.prefetch):
                k = (ahead, key[1], key[2])
                if k not in self._pending:
                    self._pending[k] = self._pool.submit(self._read, k)
        return batch

    def state_dict(self):
        return {"batches": self.batches, "seed": self.seed, "records": len(self.source)}

    def load_state_dict(self, state, error=SourceError):
        if int(state["records"]) != len(self.source):
            raise error(f"saved reading position is for {int(state['records'])} records, the "
                        f"source now has {len(self.source)}")
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self.batches, self.seed = int(state["batches"]), int(state["seed"])
        self._perms.clear()


class ClimateSource(Source):
    """ExtremeWeather-layout images made on demand by the climate generator
    (engine.data.climate.generator.generate_image): record i is a pure function of (seed,
    split, i), so it needs no file and every rank makes the same record i.

    Argument: "n=2000,seed=1,split=0,height=96,width=144,noise=1,normalize=1". Fields: images
    (16, H, W) - with normalize, each variable standardised by the mean and deviation of the first
    min(n, 32) records - and boxes (15, 5) (ymin, xmin, ymax, xmax, class; -1 rows pad)."""

    def __init__(self, argument):
        from .climate.generator import Config
        settings = {"n": 1000, "seed": 0, "split": 0, "height": 96, "width": 144, "noise": 1.0,
                    "normalize": 1}
        for item in filter(None, argument.split(",")):
            key, sep, value = item.partition("=")
            if not sep or key.strip() not in settings:
                raise SourceError(f"climate source: unknown setting '{item}' (settings: "
                                  f"{', '.join(settings)})")
            try:
                settings[key.strip()] = type(settings[key.strip()])(float(value))
            except ValueError:
                raise SourceError(f"climate source: '{item}' needs a number") from None
        if settings["n"] < 1:
            raise SourceError("climate source: n must be at least 1")
        self.settings = settings
        self.label = f"climate:{argument}"
        self.config = Config(height=settings["height"], width=settings["width"],
                             noise=settings["noise"])
        self.fields = {"images": (16, self.config.height, self.config.width), "boxes": (15, 5)}
        self.mean = self.std = None
        if settings["normalize"]:
            sample = self._make(np.arange(min(settings["n"], 32)))["images"]
            self.mean = sample.mean(axis=(0, 2, 3))[:, None, None]
            self.std = sample.std(axis=(0, 2, 3))[:, None, None] + 1e-6

    def __len__(self):
        return int(self.settings["n"])

    def _make(self, indices):
        from .climate.generator import generate_image
        s = self.settings
        images, boxes = zip(*[generate_image(s["seed"], s["split"], int(i), self.config)[:2]
                              for i in indices])
        return {"images": np.stack(images), "boxes": np.stack(boxes)}

    def read(self, indices):
        data = self._make(indices)
        if self.mean is not None:
            data["images"] = ((data["images"] - self.mean) / self.std).astype(np.float32)
        return data


register_source("climate", ClimateSource)
