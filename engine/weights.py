"""Reading and writing trained weights in Caffe's two formats.

- Binary NetParameter (.caffemodel): one LayerParameter per layer with its `blobs`. Old files
  may use V1 `layers`, legacy 4-D num/channels/height/width blobs or double_data; they are
  upgraded first.
- HDF5 (.caffemodel.h5): group "data" with one subgroup per layer, datasets "0", "1", ... for the
  layer's blobs (shared parameters only under their owner); optional group "diff" likewise.

Loading matches layers BY NAME (Caffe's CopyTrainedLayersFrom): layers of the file that the net
lacks are ignored; blob counts and shapes must agree. Everything is checked before the first value
is copied, so a file that does not fit leaves the net unchanged. Every failure (missing, truncated
or corrupt file, mismatch) is a WeightsError naming the file.

Saving is atomic: the file is written under a temporary name in the same directory, flushed to
disk and renamed over the target, so a crash never leaves a partial weights file.

Speed: the binary writer streams each blob's float32 bytes straight into the file as BlobProto's
packed `data` field (no per-value protobuf calls); the reader parses with protobuf (upb) and turns
each repeated field into numpy in one call.
"""
import os

import numpy as np
from google.protobuf.message import DecodeError

from . import crema_pb2
from .errors import CremaError, WeightsError
from .fileio import atomic_write
from .protowire import blobproto_parts, header

_HDF5_SUFFIXES = (".h5", ".hdf5")


# -- helpers shared by both formats ---------------------------------------------------------------
def _layers_by_name(net):
    """name -> layer; the first layer of a name wins, as Caffe's linear search does."""
    out = {}
    for layer in net.layers:
        out.setdefault(layer.name, layer)
    return out


def _shared_blobs(net):
    """(id(layer), blob index) of parameter blobs that are not their storage's owner: a later
    layer's blob whose data starts where an earlier blob's does (the net shares parameters by
    handing out the owner's very Blob or a reshaped view of its storage). Caffe writes such blobs
    to HDF5 only under the owner."""
    seen, shared = set(), set()
    for layer in net.layers:
        for j, blob in enumerate(layer.blobs):
            data = blob.data
            if data.size == 0:
                continue
            ptr = data.__array_interface__["data"][0]
            if ptr in seen:
                shared.add((id(layer), j))
            seen.add(ptr)
    return shared


def _layer_type(layer):
    return getattr(layer, "type", None) or getattr(getattr(layer, "param", None), "type", "?")


def _describe(path, layer):
    return f"{path}: layer '{layer.name}' (type {_layer_type(layer)})"


def _check_file(path):
    if not os.path.exists(path):
        raise WeightsError(f"{path}: weights file not found")
    if os.path.isdir(path):
        raise WeightsError(f"{path}: is a directory, not a weights file")
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read weights file: {exc.strerror or exc}") from None
    if size == 0:
        raise WeightsError(f"{path}: weights file is empty")


def _is_hdf5(path):
    import h5py
    try:
        return bool(h5py.is_hdf5(path))
    except (OSError, ValueError, RuntimeError):
        return False


# -- loading ---------------------------------------------------------------------------------------
def load_weights(net, path):
    """Copy trained parameters from `path` (binary NetParameter or Caffe HDF5) into `net`'s layers
    of the same name, in place. Raises WeightsError when the file cannot be read or does not fit."""
    path = os.fspath(path)
    _check_file(path)
    if _is_hdf5(path):
        _load_hdf5(net, path)
    elif path.lower().endswith(_HDF5_SUFFIXES):
        raise WeightsError(f"{path}: not an HDF5 file (the suffix says HDF5 but the content does "
                           f"not; truncated or corrupt?)")
    else:
        try:
            _load_binary(net, path)
        except UnicodeDecodeError as exc:
            # protobuf accepts invalid UTF-8 in proto2 strings and fails only when one is read
            raise WeightsError(f"{path}: a layer or blob name is not valid UTF-8 ({exc}); the "
                               "file is corrupt") from None


def _read_param(path):
    """Parse a binary weights file into a NetParameter (WeightsError on any failure)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read weights file: {exc.strerror or exc}") from None
    param = crema_pb2.NetParameter()
    try:
        param.ParseFromString(raw)
    except (DecodeError, ValueError, RuntimeError, RecursionError) as exc:
        raise WeightsError(f"{path}: not a valid weights file (binary NetParameter expected; "
                           f"truncated or corrupt?): {exc}") from None
    return param


def _take_blobs(container):
    """Detach a repeated BlobProto field, returning its messages. Removing them from the field
    does not copy them (they stay alive in the parsed message's memory), so legacy files can be
    upgraded without copying hundreds of MB of weights."""
    blobs = list(container)
    del container[:]
    return blobs


def source_layers(param, path="<weights>"):
    """[(layer name, [BlobProto, ...])] of a parsed weights NetParameter, in the order and with
    the names Caffe's UpgradeNetAsNeeded gives them. Legacy files (V0/V1 `layers`, net inputs,
    old BatchNorm) are upgraded as a blob-free skeleton, so the weights are never copied; `param`
    loses its blobs in that case."""
    from .upgrade import needs_upgrade, upgrade_net_param
    if not needs_upgrade(param):
        return [(l.name, list(l.blobs)) for l in param.layer]
    blobs = [_take_blobs(l.blobs) for l in param.layer]
    for conn in param.layers:
        if conn.HasField("layer"):  # V0; its "padding" layers vanish in the upgrade
            taken = _take_blobs(conn.layer.blobs)
            if conn.layer.type != "padding":
                blobs.append(taken)
        else:
            blobs.append(_take_blobs(conn.blobs))
    try:
        upgraded = list(upgrade_net_param(param, path).layer)
    except CremaError as exc:
        raise WeightsError(f"cannot upgrade the legacy weights file: {exc}") from None
    if len(upgraded) == len(blobs) + 1 and upgraded[0].type == "Input":
        upgraded = upgraded[1:]  # the layer made from net inputs has no blobs
    if len(upgraded) != len(blobs):
        raise WeightsError(f"{path}: the legacy weights file upgrades to {len(upgraded)} layers "
                           f"but holds {len(blobs)}; cannot match its blobs to layers")
    return [(l.name, b) for l, b in zip(upgraded, blobs)]


def _proto_shape(bp):
    """(shape, is_legacy) of a BlobProto, as Caffe's FromProto reads it."""
    if bp.HasField("num") or bp.HasField("channels") or bp.HasField("height") \
            or bp.HasField("width"):
        return (bp.num, bp.channels, bp.height, bp.width), True
    return tuple(int(d) for d in bp.shape.dim), False


def _proto_shape_fits(bp, target_shape):
    """Caffe's Blob::ShapeEquals(BlobProto). Legacy 4-D blobs were indexed from the END: a target
    of at most 4 axes matches when, padded in front with 1s to 4 axes, it equals
    (num, channels, height, width) - e.g. an InnerProduct bias (N,) matches 1x1x1xN."""
    shape, legacy = _proto_shape(bp)
    if legacy:
        return len(target_shape) <= 4 and (1,) * (4 - len(target_shape)) + tuple(target_shape) \
            == shape
    return shape == tuple(target_shape)


def _values(bp, diff=False):
    """The float values of a BlobProto as a flat float32 array (double_* take precedence, as in
    Caffe's FromProto); None when the field is empty."""
    doubles, floats = (bp.double_diff, bp.diff) if diff else (bp.double_data, bp.data)
    if len(doubles):
        return np.array(doubles, dtype=np.float64).astype(np.float32)
    if len(floats):
        return np.array(floats, dtype=np.float32)
    return None


def _load_binary(net, path):
    param = _read_param(path)
    sources = source_layers(param, path)
    if not sources:
        raise WeightsError(f"{path}: holds no layers: not a weights file (truncated or corrupt?)")
    targets = _layers_by_name(net)
    plan = []  # (target blob, BlobProto): all checked before anything is copied
    for src_name, src_blobs in sources:
        layer = targets.get(src_name)
        if layer is None:
            continue  # Caffe: "Ignoring source layer"
        if len(src_blobs) != len(layer.blobs):
            raise WeightsError(f"{_describe(path, layer)}: the file has {len(src_blobs)} "
                               f"parameter blob(s) for this layer, the net has {len(layer.blobs)}")
        for j, (bp, blob) in enumerate(zip(src_blobs, layer.blobs)):
            if not _proto_shape_fits(bp, blob.shape):
                shape, legacy = _proto_shape(bp)
                raise WeightsError(
                    f"{_describe(path, layer)}: cannot copy param blob {j}: shape mismatch: the "
                    f"file has {shape}{' (legacy num/channels/height/width)' if legacy else ''}, "
                    f"the net has {tuple(blob.shape)}. To learn this layer's parameters from "
                    f"scratch rather than copy them, rename the layer")
            count = blob.data.size
            n_data = len(bp.double_data) or len(bp.data)
            if n_data != count:
                raise WeightsError(f"{_describe(path, layer)}: param blob {j} has {n_data} values "
                                   f"in the file but shape {tuple(blob.shape)} needs {count}")
            n_diff = len(bp.double_diff) or len(bp.diff)
            if n_diff not in (0, count):
                raise WeightsError(f"{_describe(path, layer)}: param blob {j} has {n_diff} diff "
                                   f"values in the file but shape {tuple(blob.shape)} "
                                   f"needs {count}")
            plan.append((blob, bp))
    for blob, bp in plan:
        data = _values(bp)
        if data is not None:
            blob.data[...] = data.reshape(blob.data.shape)
        diff = _values(bp, diff=True)
        if diff is not None:  # Caffe's FromProto restores a stored diff too
            blob.diff[...] = diff.reshape(blob.diff.shape)


def _load_hdf5(net, path):
    """Caffe's CopyTrainedLayersFromHDF5: datasets must match the target shapes exactly; a missing
    dataset is fine only for a parameter the net shares from an earlier layer."""
    import h5py
    targets = _layers_by_name(net)
    shared = _shared_blobs(net)
    try:
        with h5py.File(path, "r") as fh:
            data = fh.get("data")
            if not isinstance(data, h5py.Group):
                raise WeightsError(f"{path}: HDF5 file has no 'data' group: not a Caffe HDF5 "
                                   f"weights file")
            plan = []
            for name in data:  # HDF5 name order, as Caffe's hdf5_get_name_by_idx
                layer = targets.get(name)
                if layer is None:
                    continue
                group = data[name]
                if not isinstance(group, h5py.Group):
                    raise WeightsError(f"{_describe(path, layer)}: data/{name} is not a group")
                if len(group) > len(layer.blobs):
                    raise WeightsError(f"{_describe(path, layer)}: the file has {len(group)} "
                                       f"parameter blob(s) for this layer, the net has "
                                       f"{len(layer.blobs)}")
                for j, blob in enumerate(layer.blobs):
                    key = str(j)
                    if key not in group:
                        if (id(layer), j) in shared:
                            continue
                        raise WeightsError(f"{_describe(path, layer)}: the file has no param "
                                           f"blob {j} for this layer ({len(group)} in the file, "
                                           f"{len(layer.blobs)} in the net)")
                    ds = group[key]
                    if not isinstance(ds, h5py.Dataset):
                        raise WeightsError(f"{_describe(path, layer)}: data/{name}/{key} is not a "
                                           f"dataset")
                    if ds.dtype.kind != "f":
                        raise WeightsError(f"{_describe(path, layer)}: param blob {j} has dtype "
                                           f"{ds.dtype}; weights must be floating point")
                    if tuple(ds.shape) != tuple(blob.shape):
                        raise WeightsError(
                            f"{_describe(path, layer)}: cannot copy param blob {j}: shape "
                            f"mismatch: the file has {tuple(ds.shape)}, the net has "
                            f"{tuple(blob.shape)}. To learn this layer's parameters from scratch "
                            f"rather than copy them, rename the layer")
                    plan.append((blob, ds))
            for blob, ds in plan:
                dest = blob.data
                if dest.size == 0:
                    continue
                if dest.flags.c_contiguous and dest.dtype.isnative:
                    ds.read_direct(dest)  # HDF5 converts float64 files to the blob dtype
                else:
                    dest[...] = ds[()]
    except CremaError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise WeightsError(f"{path}: cannot read HDF5 weights (truncated or corrupt?): "
                           f"{exc}") from None


# -- saving ----------------------------------------------------------------------------------------
def save_weights(net, path, write_diff=False, hdf5=None):
    """Write `net`'s parameters to `path`: Caffe's HDF5 layout for .h5/.hdf5 suffixes (or
    hdf5=True), otherwise a binary NetParameter (.caffemodel) holding every layer's
    LayerParameter with its blobs. `write_diff` stores the gradients too. Atomic: the old file
    survives any failure."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise WeightsError(f"{path}: is a directory; cannot write weights there")
    if hdf5 is None:
        hdf5 = path.lower().endswith(_HDF5_SUFFIXES)
    if hdf5:
        _atomic_write(path, lambda tmp: _write_hdf5(net, tmp, write_diff))
    else:
        _atomic_write(path, lambda tmp: _write_binary(net, tmp, write_diff))


def _atomic_write(path, writer):
    atomic_write(path, writer, WeightsError, "write weights")


def _write_hdf5(net, tmp, write_diff):
    """Caffe's Net::ToHDF5: every layer gets a group; a parameter blob is written under its owner
    only (datasets of shared blobs are omitted), diffs are written for every blob."""
    import h5py
    shared = _shared_blobs(net)
    seen = set()
    with h5py.File(tmp, "w") as fh:
        data = fh.create_group("data")
        diff = fh.create_group("diff") if write_diff else None
        for layer in net.layers:
            name = layer.name
            if name in seen:
                raise WeightsError(f"layer name '{name}' appears twice in the net; the HDF5 "
                                   f"weights format needs unique layer names")
            if "/" in name or name in ("", ".", ".."):
                raise WeightsError(f"layer name '{name}' cannot be an HDF5 group name")
            seen.add(name)
            group = data.create_group(name)
            dgroup = diff.create_group(name) if write_diff else None
            for j, blob in enumerate(layer.blobs):
                if (id(layer), j) not in shared:
                    group.create_dataset(str(j), data=np.asarray(blob.data, dtype=np.float32))
                if write_diff:
                    dgroup.create_dataset(str(j), data=np.asarray(blob.diff, dtype=np.float32))


# Binary writer. A NetParameter on the wire is the concatenation of its fields, so the file is
# written field by field: name (1), then each layer as field 100 whose body is the layer's
# LayerParameter without blobs followed by its blobs (field 7), each a BlobProto of packed float
# data (5), diff (6) and shape (7) (engine/protowire.py). protobuf accepts fields in any order.
def _blob_chunks(blob, write_diff):
    """The bytes of one LayerParameter.blobs entry (tag, length, BlobProto body)."""
    parts = blobproto_parts(blob.data, blob.diff if write_diff else None)
    body = sum(len(p) for p in parts)  # memoryviews cast to bytes: len is the byte count
    return [header(7, body)] + parts


def _param_without_blobs(param):
    """A copy of a LayerParameter minus its blobs (without copying big preloaded blobs first)."""
    out = crema_pb2.LayerParameter()
    if param is None:
        return out
    if len(param.blobs) == 0:
        out.CopyFrom(param)
        return out
    for fd, value in param.ListFields():
        if fd.name == "blobs":
            continue
        if fd.is_repeated:
            getattr(out, fd.name).extend(value)
        elif fd.message_type is not None:
            getattr(out, fd.name).CopyFrom(value)
        else:
            setattr(out, fd.name, value)
    return out


def _layer_param(layer):
    """Caffe's Layer::ToProto minus blobs: the layer's own LayerParameter (name and type filled in
    from the layer when the parameter lacks them)."""
    lp = _param_without_blobs(getattr(layer, "param", None))
    if not lp.HasField("name"):
        lp.name = layer.name
    if not lp.HasField("type") and getattr(layer, "type", None):
        lp.type = layer.type
    return lp


def _write_binary(net, tmp, write_diff):
    with open(tmp, "wb") as fh:
        name = (getattr(net, "name", "") or "").encode("utf-8")
        fh.write(header(1, len(name)) + name)
        for layer in net.layers:
            head = _layer_param(layer).SerializeToString()
            chunks = [head]
            for blob in layer.blobs:
                chunks += _blob_chunks(blob, write_diff)
            fh.write(header(100, sum(len(c) for c in chunks)))
            for chunk in chunks:
                fh.write(chunk)
        fh.flush()
