"""HDF5 files of the HEP benchmark: layout, the two-pass writer, channel normalisation, reading.

Layout of one split file (NERSC/hep_cnn_benchmark names for the first five; science-facts 1.1):

=============  ===================  ==========================================================
dataset        shape / dtype        meaning
=============  ===================  ==========================================================
data           {N,3,H,W} float32    channels: total calorimeter energy, EM energy, track count;
                                    y = eta in [-2.5, 2.5], x = phi in [-pi, pi); each channel
                                    divided by its training-split maximum (attribute
                                    ``channel_max``) unless the attribute ``normalized`` is 0
label          {N} int32            1 signal, 0 background
weight         {N} float32          cross-section weight in pb: sigma(process) / events
                                    generated for that process (before preselection), so that
                                    sum(weight) over any selection is its cross section
normweight     {N} float32          weight rescaled per class so that, inside this file, the
                                    signal events and the background events each sum to N/2
                                    (mean 1): a balanced, physically-shaped training weight
psr            {N} int32            passes the ATLAS RPV signal region (SR4J or SR5J)
baseline,      {N} int32            the baseline selection and the two signal regions
sr4j, sr5j
njet           {N} int32            number of selected large-R jets
lead_pt        {N} float32          leading-jet pT (GeV), 0 without jets
deta12         {N} float32          |eta_1 - eta_2| of the two leading jets, NaN if < 2 jets
msum           {N} float32          summed mass of the up-to-4 leading jets (GeV)
ht             {N} float32          scalar sum of selected jet pT (GeV)
jets           {N,8,4} float32      (pT, eta, phi, m) of the 8 leading selected jets, zero-padded
n_tracks       {N} int32            tracks in the image window
calo_e         {N} float32          calorimeter energy in the image window (GeV, unnormalised)
pthat          {N} float32          p^T_hat of the hard scattering (GeV)
process        {N} int32            0 signal, 1 + i the i-th QCD p^T_hat slice
event_id       {N} int64            index of the event in the generation plan (provenance)
=============  ===================  ==========================================================

File attributes: ``generator``, ``size``, ``split``, ``channels``, ``channel_max`` (the training
maxima, float64 [3]), ``normalized``, ``jet_fields``, ``config`` (JSON).

Writing (nothing is ever half-written, see ARCHITECTURE "Rules of the house"): images are first
streamed into temporary "raw" files beside the targets, as events arrive in any order, each at its
final row; once every event is in, the training maxima are known and each final file is written
to a temporary name (data normalised, the per-event columns in row order), flushed, fsynced and
renamed over the target. A failure at any point removes the temporaries and leaves existing targets
untouched. Finished files are plain HDF5 with no open writer, so any number of processes may open
them read-only at once.
"""
import json
import os
import uuid

import numpy as np

from ...errors import CremaError

GENERATOR_TAG = "crema engine.data.hep (Pythia 8 + FastJet + ATLAS-like fast detector)"
CHANNELS = ("calo_energy", "em_energy", "track_count")
JET_FIELDS = ("pt", "eta", "phi", "m")
MAX_JETS = 8

#: Per-event columns (name -> dtype), besides `data`.
COLUMNS = {
    "label": np.int32, "weight": np.float32, "normweight": np.float32, "psr": np.int32,
    "baseline": np.int32, "sr4j": np.int32, "sr5j": np.int32, "njet": np.int32,
    "lead_pt": np.float32, "deta12": np.float32, "msum": np.float32, "ht": np.float32,
    "n_tracks": np.int32, "calo_e": np.float32, "pthat": np.float32, "process": np.int32,
    "event_id": np.int64,
}

# gzip (deflate) is readable by every HDF5 build; shuffle groups the float bytes so the mostly
# empty images compress well. The raw temporaries use LZF, faster and private to this writer.
_FINAL_COMPRESSION = dict(compression="gzip", compression_opts=4, shuffle=True)
_RAW_COMPRESSION = dict(compression="lzf")
_COPY_ROWS = 256


def _h5py():
    import h5py
    return h5py


def normalize_channels(data, channel_max):
    """Divide each channel of `data` ({N,3,H,W} or {3,H,W}) by `channel_max` (3 values, e.g. the
    training-split maxima of the NERSC benchmark); a channel whose maximum is 0 is left as is.
    Returns a new float32 array."""
    m = np.asarray(channel_max, dtype=np.float64).copy()
    m[~(m > 0)] = 1.0
    shape = (-1, 1, 1) if np.ndim(data) == 3 else (1, -1, 1, 1)
    return (np.asarray(data, dtype=np.float64) / m.reshape(shape)).astype(np.float32)


def temp_name(path):
    """A unique temporary name beside `path` (same file system, so rename is atomic)."""
    d, base = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{base}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def commit(tmp, path):
    """fsync `tmp` and rename it over `path`."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_text_atomic(path, text):
    tmp = temp_name(path)
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
        commit(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


class SplitWriter:
    """One output file (one image size, one split) being built: `put(row, image)` streams images
    into a raw temporary; `finish(columns, channel_max, normalize, attrs)` writes the final file
    atomically. `abort()` removes whatever exists of the temporaries."""

    def __init__(self, path, n_rows, size):
        self.path = os.path.abspath(path)
        self.n_rows = int(n_rows)
        self.size = int(size)
        self.raw_path = temp_name(self.path) + ".raw"
        self.final_tmp = None
        h5py = _h5py()
        shape = (self.n_rows, 3, self.size, self.size)
        self._raw = h5py.File(self.raw_path, "w")
        self._data = self._raw.create_dataset("data", shape=shape, dtype=np.float32,
                                              chunks=(1, 3, self.size, self.size),
                                              **_RAW_COMPRESSION)
        self._filled = np.zeros(self.n_rows, dtype=bool)
        self.max = np.zeros(3)

    def put(self, row, image):
        self._data[row] = image
        self._filled[row] = True
        self.max = np.maximum(self.max, image.reshape(3, -1).max(axis=1))

    def finish(self, columns, channel_max, normalize, attrs, jets):
        """Write the final file: `columns` maps names of COLUMNS to arrays in row order, `jets`
        is {N,8,4}; the images are divided by `channel_max` if `normalize`."""
        if not self._filled.all():
            raise CremaError(f"{self.path}: internal error, {int((~self._filled).sum())} rows "
                             "were never written")
        h5py = _h5py()
        self.final_tmp = temp_name(self.path)
        scale = np.asarray(channel_max, dtype=np.float64).copy()
        scale[~(scale > 0)] = 1.0
        with h5py.File(self.final_tmp, "w") as out:
            data = out.create_dataset("data", shape=self._data.shape, dtype=np.float32,
                                      chunks=(1, 3, self.size, self.size), **_FINAL_COMPRESSION)
            for start in range(0, self.n_rows, _COPY_ROWS):
                block = self._data[start:start + _COPY_ROWS]
                if normalize:
                    block = (block / scale.reshape(1, 3, 1, 1)).astype(np.float32)
                data[start:start + len(block)] = block
            for name, dtype in COLUMNS.items():
                out.create_dataset(name, data=np.asarray(columns[name], dtype=dtype))
            out.create_dataset("jets", data=np.asarray(jets, dtype=np.float32),
                               **_FINAL_COMPRESSION)
            out.attrs["generator"] = GENERATOR_TAG
            out.attrs["size"] = self.size
            out.attrs["channels"] = ",".join(CHANNELS)
            out.attrs["jet_fields"] = ",".join(JET_FIELDS)
            out.attrs["channel_max"] = np.asarray(channel_max, dtype=np.float64)
            out.attrs["normalized"] = int(bool(normalize))
            for k, v in attrs.items():
                out.attrs[k] = v
        self._raw.close()
        _unlink(self.raw_path)
        commit(self.final_tmp, self.path)
        self.final_tmp = None
        return self.path

    def abort(self):
        try:
            self._raw.close()
        except Exception:
            pass
        _unlink(self.raw_path)
        if self.final_tmp:
            _unlink(self.final_tmp)


def read(path, names=None):
    """Read a split file into a dict of arrays (all datasets, or those in `names`) plus its
    attributes under "attrs". Opens read-only, so many processes may read at once."""
    h5py = _h5py()
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise CremaError(f"{path}: cannot open HEP data file: {exc}") from None
    with fh:
        keys = list(fh.keys()) if names is None else list(names)
        missing = [k for k in keys if k not in fh]
        if missing:
            raise CremaError(f"{path}: no dataset {', '.join(missing)} (has: "
                             f"{', '.join(sorted(fh.keys()))})")
        out = {k: fh[k][...] for k in keys}
        out["attrs"] = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in fh.attrs.items()}
    if "config" in out["attrs"]:
        out["attrs"]["config"] = json.loads(out["attrs"]["config"])
    return out
