"""Solver snapshot files: Caffe's names and layouts, written atomically, plus crema's extras.

Names (Caffe's Solver::SnapshotFilename): `<snapshot_prefix>_iter_<N>` + `.caffemodel` and
`.solverstate` (snapshot_format BINARYPROTO, the default) or `.caffemodel.h5` and
`.solverstate.h5` (HDF5).

Solver state layouts, as Caffe writes them:
- binary: a SolverState message: iter (1), learned_net (2: the model file's path as written),
  history (3: one BlobProto per history blob, with `shape` and float `data`), current_step (4);
- HDF5: datasets "iter" and "current_step" (int32, shape (1,)), "learned_net" (a fixed-length
  NUL-terminated string) and group "history" with float32 datasets "0", "1", ... shaped like the
  parameters.

crema's extras make a resumed run repeat an uninterrupted one bit for bit: the state of the one
random stream (engine.rng), each train-net layer's `state_dict()` and the smoothed-loss window.
They are a JSON manifest plus numbered arrays, stored
- for HDF5: in the group "crema" of the .solverstate.h5 file ("manifest", a fixed-length
  string, and "a0", "a1", ...);
- for binary: in a sidecar numpy archive `<state file>.crema` (keys "manifest", "a0", ...),
  because the SolverState message has no field for them. It is written before the state file, so a
  state file always has its extras beside it; Caffe ignores the sidecar and the extra group.
A state file without extras (e.g. written by Caffe) restores Caffe's fields only.

Every file is written under a temporary name in its directory, flushed and renamed over the target
(os.replace), so an interrupted snapshot leaves the previous files intact and no partial file.
"""
import json
import os

import numpy as np
from google.protobuf.message import DecodeError

from .. import crema_pb2
from ..errors import SolverError
from ..fileio import atomic_write as _atomic_write
from .. import protowire as wire

EXTRAS_FORMAT = 1


def snapshot_filename(prefix, iteration, extension):
    return f"{prefix}_iter_{int(iteration)}{extension}"


def extras_path(state_path):
    """The sidecar holding crema's extras for a binary .solverstate."""
    return os.fspath(state_path) + ".crema"


def is_hdf5_state(path):
    """Caffe's Solver::Restore: a name ending in '.h5' is an HDF5 state, anything else binary."""
    return os.fspath(path).endswith(".h5")


def atomic_write(path, writer):
    """engine.fileio.atomic_write, failures reported as SolverError."""
    _atomic_write(path, writer, SolverError, "write")


# -- binary SolverState, written field by field (fast for big nets, same bytes as protobuf) ------
def _length_delimited(field, payload):
    return wire.header(field, len(payload)) + payload


def write_state_binary(path, iteration, learned_net, history, current_step):
    def writer(tmp):
        with open(tmp, "wb") as fh:
            fh.write(wire.key(1, 0) + wire.varint(int(iteration)))
            fh.write(_length_delimited(2, os.fsencode(learned_net)))
            for array in history:
                fh.write(_length_delimited(3, b"".join(wire.blobproto_parts(array))))
            fh.write(wire.key(4, 0) + wire.varint(int(current_step)))
    atomic_write(path, writer)


# -- HDF5 SolverState ------------------------------------------------------------------------
def _write_c_string(group, name, text):
    """H5LTmake_dataset_string's layout: a scalar fixed-length NUL-terminated C string."""
    import h5py
    raw = os.fsencode(text) + b"\x00"
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(len(raw))
    tid.set_strpad(h5py.h5t.STR_NULLTERM)
    space = h5py.h5s.create(h5py.h5s.SCALAR)
    dset = h5py.h5d.create(group.id, name.encode(), tid, space)
    dset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(raw, dtype=f"S{len(raw)}"), mtype=tid)


def write_state_hdf5(path, iteration, learned_net, history, current_step, extras=None):
    import h5py

    def writer(tmp):
        with h5py.File(tmp, "w") as fh:
            fh.create_dataset("iter", data=np.array([int(iteration)], dtype=np.int32))
            _write_c_string(fh, "learned_net", learned_net)
            fh.create_dataset("current_step", data=np.array([int(current_step)], dtype=np.int32))
            group = fh.create_group("history")
            for i, array in enumerate(history):
                group.create_dataset(str(i), data=np.asarray(array, dtype=np.float32))
            if extras is not None:
                crema = fh.create_group("crema")
                for key, value in _flatten_extras(extras).items():
                    # the manifest as a fixed-length byte string stored in the dataset itself: a
                    # variable-length string lives in HDF5's global heap, and libhdf5 loops
                    # forever reading some damaged heaps (older crema files still read fine)
                    if key == "manifest":
                        value = np.array(str(value).encode("utf-8"))
                    crema.create_dataset(key, data=value)
    atomic_write(path, writer)


# -- extras ------------------------------------------------------------------------------------
def _flatten_extras(extras):
    manifest, arrays = extras
    flat = {"manifest": np.array(json.dumps(manifest, sort_keys=True))}
    for key, value in arrays.items():
        flat[key] = np.asarray(value)
    return flat


def write_extras_npz(path, extras):
    def writer(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, **_flatten_extras(extras))
    atomic_write(path, writer)


def _unflatten_extras(flat, where):
    try:
        raw = flat["manifest"]
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8")
        manifest = json.loads(str(raw))
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise SolverError(f"{where}: crema extras have no readable manifest ({exc})") from None
    problem = _manifest_problem(manifest)
    if problem:
        raise SolverError(f"{where}: crema extras are damaged: {problem}")
    arrays = {k: v for k, v in flat.items() if k != "manifest"}
    return manifest, arrays


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _layer_entries_problem(entries, what):
    if not isinstance(entries, list):
        return f"{what} is not a list"
    for entry in entries:
        if not (isinstance(entry, dict) and _is_int(entry.get("index")) and entry["index"] >= 0
                and isinstance(entry.get("name"), str) and isinstance(entry.get("items"), dict)):
            return f"{what} holds an entry without index, name and items: {entry!r:.200}"
        for key, item in entry["items"].items():
            if not (isinstance(item, dict) and (isinstance(item.get("array"), str)
                                                or "value" in item)):
                return f"layer '{entry['name']}' item '{key}' has neither array nor value"
    return None


def _manifest_problem(manifest):
    """What makes a manifest unusable (the layout Solver._extras writes), or None: a damaged
    file that still parses as JSON must not reach the solver as a half-valid manifest."""
    if not isinstance(manifest, dict):
        return f"the manifest is a {type(manifest).__name__}, not an object"
    if not isinstance(manifest.get("rng"), dict):
        return "the manifest has no random generator state"
    problem = _layer_entries_problem(manifest.get("layers", []), "'layers'")
    if problem:
        return problem
    ranks = manifest.get("ranks")
    if ranks is not None:
        if not isinstance(ranks, list):
            return "'ranks' is not a list"
        for i, entries in enumerate(ranks):
            problem = _layer_entries_problem(entries, f"'ranks'[{i}]")
            if problem:
                return problem
    window = manifest.get("loss_window")
    if window is not None and not (
            isinstance(window, dict) and isinstance(window.get("losses"), list)
            and all(_is_number(x) for x in window["losses"])
            and _is_number(window.get("smoothed")) and _is_int(window.get("origin"))
            and _is_int(window.get("average_loss"))):
        return f"'loss_window' is not a window of losses: {window!r:.200}"
    return None


def read_extras_npz(path):
    try:
        with np.load(path, allow_pickle=False) as data:
            flat = {k: (data[k].item() if k == "manifest" else data[k]) for k in data.files}
    except Exception as exc:  # noqa: BLE001
        # numpy's loader lets through whatever a damaged archive makes its parts raise: zipfile,
        # the .npy header's tokenizer and literal_eval (TokenError, SyntaxError), allocation
        raise SolverError(f"{path}: cannot read crema extras (truncated or corrupt?): "
                          f"{type(exc).__name__}: {exc}") from None
    return _unflatten_extras(flat, path)


# -- reading ---------------------------------------------------------------------------------
class StateFile:
    """What a solver state file holds. `history` is a list of (shape, legacy, values): shape a
    tuple, legacy True when it came from the old num/channels/height/width fields, values a flat
    float32 array or None when the blob carried no values (Caffe then keeps the current ones)."""

    def __init__(self, path, iteration, learned_net, current_step, history, extras):
        self.path, self.iter, self.learned_net = path, iteration, learned_net
        self.current_step, self.history, self.extras = current_step, history, extras


def _history_from_proto(bp):
    if bp.HasField("num") or bp.HasField("channels") or bp.HasField("height") \
            or bp.HasField("width"):
        shape, legacy = (bp.num, bp.channels, bp.height, bp.width), True
    else:
        shape, legacy = tuple(int(d) for d in bp.shape.dim), False
    if len(bp.double_data):
        values = np.array(bp.double_data, dtype=np.float64).astype(np.float32)
    elif len(bp.data):
        values = np.array(bp.data, dtype=np.float32)
    else:
        values = None
    return shape, legacy, values


def read_state_binary(path):
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise SolverError(f"{path}: cannot read solver state: {exc.strerror or exc}") from None
    state = crema_pb2.SolverState()
    try:
        state.ParseFromString(raw)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise SolverError(f"{path}: not a binary SolverState (truncated or corrupt?): "
                          f"{exc}") from None
    history = [_history_from_proto(bp) for bp in state.history]
    learned = state.learned_net if state.HasField("learned_net") else None
    if isinstance(learned, bytes):
        # protobuf hands out a string that is not UTF-8 as bytes; Caffe opens such a path as
        # it is, and os.fsdecode keeps those bytes (surrogate escapes) as the HDF5 reader does
        learned = os.fsdecode(learned)
    sidecar = extras_path(path)
    extras = read_extras_npz(sidecar) if os.path.exists(sidecar) else None
    return StateFile(path, state.iter, learned, state.current_step, history, extras)


def _read_h5_string(dataset):
    value = dataset[()]
    if isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else b""
    if isinstance(value, bytes):
        value = value.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
    return str(value)


def _read_h5_int(fh, name, path):
    if name not in fh:
        raise SolverError(f"{path}: HDF5 solver state has no dataset '{name}'")
    values = np.asarray(fh[name][()]).ravel()
    if values.size != 1:
        raise SolverError(f"{path}: dataset '{name}' should hold one integer, it holds "
                          f"{values.size} values")
    return int(values[0])


def read_state_hdf5(path):
    import h5py
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise SolverError(f"{path}: cannot open HDF5 solver state: {exc}") from None
    try:
        with fh:
            return _read_state_hdf5_file(fh, path)
    except SolverError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        # h5py reports damaged files as any of these (a bare RuntimeError among them)
        raise SolverError(f"{path}: damaged HDF5 solver state (truncated or corrupt?): "
                          f"{type(exc).__name__}: {exc}") from None


def _read_state_hdf5_file(fh, path):
    iteration = _read_h5_int(fh, "iter", path)
    learned = _read_h5_string(fh["learned_net"]) if "learned_net" in fh else None
    current_step = _read_h5_int(fh, "current_step", path)
    if "history" not in fh:
        raise SolverError(f"{path}: HDF5 solver state has no group 'history'")
    group = fh["history"]
    history = []
    for i in range(len(group)):
        if str(i) not in group:
            raise SolverError(f"{path}: history group has {len(group)} entries but no "
                              f"dataset '{i}'")
        values = np.asarray(group[str(i)][()], dtype=np.float32)
        history.append((tuple(values.shape), False, values.ravel()))
    extras = None
    if "crema" in fh:
        flat = {k: (fh["crema"][k][()] if k == "manifest" else np.asarray(fh["crema"][k][()]))
                for k in fh["crema"]}
        extras = _unflatten_extras(flat, path)
    return StateFile(path, iteration, learned, current_step, history, extras)


def read_state(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise SolverError(f"{path}: solver state file not found")
    return read_state_hdf5(path) if is_hdf5_state(path) else read_state_binary(path)
