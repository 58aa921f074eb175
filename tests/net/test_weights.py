"""Weights files: .caffemodel (binary NetParameter, current and V1) and Caffe's HDF5 layout."""
import os

import h5py
import numpy as np
import pytest

import engine
from engine import crema_pb2
from engine import weights as W
from engine.errors import WeightsError
from engine.weights import load_weights, save_weights

NET = """
name: "tiny"
input: "data" input_shape { dim: 2 dim: 1 dim: 6 dim: 6 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" }
                            bias_filler { type: "gaussian" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" }
                              bias_filler { type: "gaussian" } } }
"""

SHARED_NET = """
name: "shared"
input: "data" input_shape { dim: 2 dim: 5 }
layer { name: "a" type: "InnerProduct" bottom: "data" top: "a"
        param { name: "w" } param { name: "b" }
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" }
                              bias_filler { type: "gaussian" } } }
layer { name: "b" type: "InnerProduct" bottom: "a" top: "b" param { name: "w" } param { name: "b" }
        inner_product_param { num_output: 5 } }
"""


def make_net(text=NET, seed=0):
    engine.set_random_seed(seed)
    net = engine.Net(text, engine.TEST)
    rng = np.random.default_rng(seed + 100)
    for layer in net.layers:
        for blob in layer.blobs:
            blob.data[...] = rng.standard_normal(blob.shape)
            blob.diff[...] = rng.standard_normal(blob.shape)
    return net


def params(net):
    return {(l.name, j): b.data.copy() for l in net.layers for j, b in enumerate(l.blobs)}


def assert_bit_identical(a, b):
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys() and pa
    for key in pa:
        assert pa[key].dtype == pb[key].dtype == np.float32
        assert np.array_equal(pa[key].view(np.uint32), pb[key].view(np.uint32)), key


# -- round trips --------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".caffemodel", ".h5", ".caffemodel.h5"])
def test_save_load_round_trip_is_bit_identical(tmp_path, suffix):
    src = make_net(seed=1)
    # Values that a lossy conversion would change: denormals, -0, huge, NaN payload bits.
    src.layer_dict["conv1"].blobs[1].data[...] = np.array([1e-45, -0.0, 3.4e38], np.float32)
    path = tmp_path / ("w" + suffix)
    save_weights(src, path)
    dst = make_net(seed=2)
    assert not np.array_equal(params(src)[("ip1", 0)], params(dst)[("ip1", 0)])
    before = {k: id(l.blobs[0].data) for k, l in dst.layer_dict.items() if l.blobs}
    load_weights(dst, str(path))
    assert_bit_identical(src, dst)
    # copied in place: the net's arrays are the same objects
    assert before == {k: id(l.blobs[0].data) for k, l in dst.layer_dict.items() if l.blobs}
    assert not list(tmp_path.glob(".*tmp"))


def test_net_constructor_and_methods_use_weights(tmp_path):
    src = make_net(seed=3)
    path = str(tmp_path / "w.caffemodel")
    src.save(path)
    assert_bit_identical(src, engine.Net(NET, engine.TEST, weights=path))


def test_caffemodel_parses_as_plain_netparameter(tmp_path):
    src = make_net(seed=4)
    path = tmp_path / "w.caffemodel"
    save_weights(src, path)
    param = crema_pb2.NetParameter()
    param.ParseFromString(path.read_bytes())
    assert param.name == "tiny"
    assert [l.name for l in param.layer] == [l.name for l in src.layers]
    conv = [l for l in param.layer if l.name == "conv1"][0]
    assert conv.type == "Convolution" and list(conv.bottom) == ["data"]
    assert list(conv.top) == ["conv1"] and conv.convolution_param.num_output == 3
    assert [list(b.shape.dim) for b in conv.blobs] == [[3, 1, 3, 3], [3]]
    np.testing.assert_array_equal(np.array(conv.blobs[0].data, np.float32).reshape(3, 1, 3, 3),
                                  src.layer_dict["conv1"].blobs[0].data)
    assert len(conv.blobs[0].diff) == 0
    relu = [l for l in param.layer if l.name == "relu1"][0]
    assert relu.type == "ReLU" and len(relu.blobs) == 0
    # Our streaming writer produces exactly what protobuf would serialize (field order aside):
    # re-serializing and re-parsing gives the same message.
    again = crema_pb2.NetParameter()
    again.ParseFromString(param.SerializeToString())
    assert again == param


def test_write_diff_binary_and_hdf5(tmp_path):
    src = make_net(seed=5)
    save_weights(src, tmp_path / "d.caffemodel", write_diff=True)
    param = crema_pb2.NetParameter()
    param.ParseFromString((tmp_path / "d.caffemodel").read_bytes())
    ip = [l for l in param.layer if l.name == "ip1"][0]
    np.testing.assert_array_equal(np.array(ip.blobs[0].diff, np.float32).reshape(4, 48),
                                  src.layer_dict["ip1"].blobs[0].diff)
    dst = make_net(seed=6)
    load_weights(dst, tmp_path / "d.caffemodel")  # Caffe's FromProto restores a stored diff
    np.testing.assert_array_equal(dst.layer_dict["ip1"].blobs[0].diff,
                                  src.layer_dict["ip1"].blobs[0].diff)
    save_weights(src, tmp_path / "d.h5", write_diff=True)
    with h5py.File(tmp_path / "d.h5", "r") as fh:
        assert set(fh) == {"data", "diff"}
        assert set(fh["data"]) == {l.name for l in src.layers}
        assert fh["data/conv1/0"].dtype == np.float32 and fh["data/conv1/0"].shape == (3, 1, 3, 3)
        np.testing.assert_array_equal(fh["diff/ip1/1"][()], src.layer_dict["ip1"].blobs[1].diff)
        assert len(fh["data/relu1"]) == 0
    with h5py.File(tmp_path / "w.h5", "w"):
        pass
    save_weights(src, tmp_path / "w.h5")
    with h5py.File(tmp_path / "w.h5", "r") as fh:
        assert set(fh) == {"data"}


def test_shared_params_hdf5_written_once_and_loaded(tmp_path):
    src = make_net(SHARED_NET, seed=7)
    assert src.layer_dict["b"].blobs[0].data is src.layer_dict["a"].blobs[0].data
    save_weights(src, tmp_path / "s.h5", write_diff=True)
    with h5py.File(tmp_path / "s.h5", "r") as fh:
        assert set(fh["data/a"]) == {"0", "1"} and len(fh["data/b"]) == 0  # as Caffe's ToHDF5
        assert set(fh["diff/b"]) == {"0", "1"}
    dst = make_net(SHARED_NET, seed=8)
    load_weights(dst, tmp_path / "s.h5")
    assert_bit_identical(src, dst)
    save_weights(src, tmp_path / "s.caffemodel")
    dst = make_net(SHARED_NET, seed=9)
    load_weights(dst, tmp_path / "s.caffemodel")
    assert_bit_identical(src, dst)


def test_layers_missing_from_net_are_ignored(tmp_path):
    src = make_net(seed=10)
    save_weights(src, tmp_path / "w.caffemodel")
    save_weights(src, tmp_path / "w.h5")
    only_conv = NET.split('layer { name: "ip1"')[0]
    for name in ("w.caffemodel", "w.h5"):
        dst = make_net(only_conv, seed=11)
        load_weights(dst, tmp_path / name)
        np.testing.assert_array_equal(dst.layer_dict["conv1"].blobs[0].data,
                                      src.layer_dict["conv1"].blobs[0].data)


# -- legacy files ----------------------------------------------------------------------------------
def legacy_blob(arr, shape4):
    bp = crema_pb2.BlobProto(num=shape4[0], channels=shape4[1], height=shape4[2], width=shape4[3])
    bp.data.extend(np.asarray(arr, np.float32).ravel().tolist())
    return bp


def test_v1_weights_file_with_legacy_blobs_loads(tmp_path):
    rng = np.random.default_rng(12)
    cw, cb = rng.standard_normal((3, 1, 3, 3)), rng.standard_normal(3)
    iw, ib = rng.standard_normal((4, 48)), rng.standard_normal(4)
    param = crema_pb2.NetParameter(name="old")
    param.input.append("data")
    param.input_dim.extend([2, 1, 6, 6])
    V1 = crema_pb2.V1LayerParameter
    conv = param.layers.add(name="conv1", type=V1.CONVOLUTION, bottom=["data"], top=["conv1"])
    conv.blobs.extend([legacy_blob(cw, (3, 1, 3, 3)), legacy_blob(cb, (1, 1, 1, 3))])
    conv.convolution_param.num_output = 3
    ip = param.layers.add(name="ip1", type=V1.INNER_PRODUCT, bottom=["conv1"], top=["ip1"])
    ip.blobs.extend([legacy_blob(iw, (1, 1, 4, 48))])
    bias = ip.blobs.add()
    bias.num, bias.channels, bias.height, bias.width = 1, 1, 1, 4
    bias.double_data.extend(ib.tolist())  # float64 payload, as a double Caffe build writes
    param.layers.add(name="fc_not_in_net", type=V1.INNER_PRODUCT).blobs.add().data.append(1.0)
    path = tmp_path / "old.caffemodel"
    path.write_bytes(param.SerializeToString())
    net = make_net(seed=13)
    load_weights(net, path)
    np.testing.assert_array_equal(net.layer_dict["conv1"].blobs[0].data, cw.astype(np.float32))
    np.testing.assert_array_equal(net.layer_dict["conv1"].blobs[1].data, cb.astype(np.float32))
    np.testing.assert_array_equal(net.layer_dict["ip1"].blobs[0].data, iw.astype(np.float32))
    np.testing.assert_array_equal(net.layer_dict["ip1"].blobs[1].data, ib.astype(np.float32))


def test_v0_weights_file_with_padding_layer_loads(tmp_path):
    rng = np.random.default_rng(21)
    cw, cb = rng.standard_normal((3, 1, 3, 3)), rng.standard_normal(3)
    param = crema_pb2.NetParameter(name="v0")
    param.input.append("data")
    param.input_dim.extend([2, 1, 6, 6])
    pad = param.layers.add(bottom=["data"], top=["pad1"])
    pad.layer.name, pad.layer.type, pad.layer.pad = "pad1", "padding", 0
    conv = param.layers.add(bottom=["pad1"], top=["conv1"])
    conv.layer.name, conv.layer.type, conv.layer.num_output = "conv1", "conv", 3
    conv.layer.blobs.extend([legacy_blob(cw, (3, 1, 3, 3)), legacy_blob(cb, (1, 1, 1, 3))])
    path = tmp_path / "v0.caffemodel"
    path.write_bytes(param.SerializeToString())
    net = make_net(seed=22)
    load_weights(net, path)
    np.testing.assert_array_equal(net.layer_dict["conv1"].blobs[0].data, cw.astype(np.float32))
    np.testing.assert_array_equal(net.layer_dict["conv1"].blobs[1].data, cb.astype(np.float32))
    # A file mixing `layer` and `layers` cannot be upgraded (Caffe refuses too).
    param.layer.add(name="new", type="ReLU")
    path.write_bytes(param.SerializeToString())
    with pytest.raises(WeightsError, match=r"v0.caffemodel.*both 'layer' and 'layers'"):
        load_weights(net, path)


def test_legacy_shape_rule_is_caffes_shape_equals(tmp_path):
    # (4, 48) matches 1x1x4x48 but not 1x4x1x48 nor 4x48x1x1 (legacy blobs index from the end).
    fits = W._proto_shape_fits
    assert fits(crema_pb2.BlobProto(num=1, channels=1, height=4, width=48), (4, 48))
    assert fits(crema_pb2.BlobProto(num=1, channels=1, height=1, width=4), (4,))
    assert not fits(crema_pb2.BlobProto(num=1, channels=4, height=1, width=48), (4, 48))
    assert not fits(crema_pb2.BlobProto(num=4, channels=48, height=1, width=1), (4, 48))
    assert not fits(crema_pb2.BlobProto(num=1, channels=1, height=1, width=4), (1, 1, 1, 1, 4))
    assert fits(crema_pb2.BlobProto(shape=crema_pb2.BlobShape(dim=[4, 48])), (4, 48))
    assert not fits(crema_pb2.BlobProto(shape=crema_pb2.BlobShape(dim=[1, 4, 48])), (4, 48))


# -- mismatches ------------------------------------------------------------------------------------
BIGGER_IP = NET.replace("num_output: 4", "num_output: 5")


@pytest.mark.parametrize("name", ["w.caffemodel", "w.h5"])
def test_shape_mismatch_names_layer_index_and_shapes(tmp_path, name):
    save_weights(make_net(seed=14), tmp_path / name)
    dst = make_net(BIGGER_IP, seed=15)
    before = params(dst)
    with pytest.raises(WeightsError) as exc:
        load_weights(dst, tmp_path / name)
    msg = str(exc.value)
    for part in (str(tmp_path / name), "'ip1'", "InnerProduct", "blob 0", "(4, 48)", "(5, 48)"):
        assert part in msg, (part, msg)
    # nothing was copied, not even the conv layer that fits
    after = params(dst)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_legacy_shape_mismatch_message(tmp_path):
    param = crema_pb2.NetParameter()
    layer = param.layer.add(name="ip1", type="InnerProduct")
    layer.blobs.extend([legacy_blob(np.zeros(4 * 49), (1, 1, 4, 49)), legacy_blob(np.zeros(4),
                                                                                (1, 1, 1, 4))])
    (tmp_path / "l.caffemodel").write_bytes(param.SerializeToString())
    with pytest.raises(WeightsError, match=r"'ip1'.*blob 0.*\(1, 1, 4, 49\).*\(4, 48\)"):
        load_weights(make_net(), tmp_path / "l.caffemodel")


def test_blob_count_and_value_count_mismatch(tmp_path):
    param = crema_pb2.NetParameter()
    layer = param.layer.add(name="ip1", type="InnerProduct")
    layer.blobs.add(shape=crema_pb2.BlobShape(dim=[4, 48])).data.extend([0.0] * 192)
    (tmp_path / "c.caffemodel").write_bytes(param.SerializeToString())
    with pytest.raises(WeightsError, match=r"c.caffemodel: layer 'ip1'.*1 parameter blob.*has 2"):
        load_weights(make_net(), tmp_path / "c.caffemodel")
    layer.blobs.add(shape=crema_pb2.BlobShape(dim=[4])).data.extend([0.0] * 3)
    (tmp_path / "c.caffemodel").write_bytes(param.SerializeToString())
    with pytest.raises(WeightsError, match=r"blob 1 has 3 values.*needs 4"):
        load_weights(make_net(), tmp_path / "c.caffemodel")
    with h5py.File(tmp_path / "c.h5", "w") as fh:
        fh.create_dataset("data/ip1/0", data=np.zeros((4, 48), np.float32))
    with pytest.raises(WeightsError, match=r"'ip1'.*no param blob 1"):
        load_weights(make_net(), tmp_path / "c.h5")
    with h5py.File(tmp_path / "c.h5", "w") as fh:
        for j in range(3):
            fh.create_dataset(f"data/ip1/{j}", data=np.zeros(2, np.float32))
    with pytest.raises(WeightsError, match=r"'ip1'.*3 parameter blob.*has 2"):
        load_weights(make_net(), tmp_path / "c.h5")


# -- bad files -------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".caffemodel", ".caffemodel.h5"])
def test_truncated_file_raises(tmp_path, suffix):
    path = tmp_path / ("w" + suffix)
    save_weights(make_net(seed=16), path)
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt") as exc:
        load_weights(make_net(), path)
    assert str(path) in str(exc.value)


def test_corrupt_empty_dir_missing_files_raise(tmp_path):
    net = make_net()
    rand = tmp_path / "random.caffemodel"
    rand.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    text = tmp_path / "net.prototxt"
    text.write_text(NET)
    fake_h5 = tmp_path / "fake.h5"
    fake_h5.write_bytes(b"not hdf5 at all")
    no_data = tmp_path / "nodata.h5"
    with h5py.File(no_data, "w") as fh:
        fh.create_group("weights")
    cases = [(rand, "not a valid weights file"), (empty, "empty"), (tmp_path, "directory"),
             (tmp_path / "missing.caffemodel", "not found"), (text, "not a valid weights file"),
             (fake_h5, "not an HDF5 file"), (no_data, "no 'data' group")]
    for path, match in cases:
        with pytest.raises(WeightsError, match=match) as exc:
            load_weights(net, path)
        assert str(path) in str(exc.value)


# -- atomic saving ---------------------------------------------------------------------------------
def test_binary_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "w.caffemodel"
    save_weights(make_net(seed=17), path)
    original = path.read_bytes()
    calls = []
    real = W._blob_chunks

    def failing(blob, write_diff):
        calls.append(1)
        if len(calls) == 3:  # after two blobs already went to the temp file
            raise RuntimeError("disk on fire")
        return real(blob, write_diff)

    monkeypatch.setattr(W, "_blob_chunks", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_weights(make_net(seed=18), path)
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.caffemodel"]


def test_hdf5_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "w.h5"
    save_weights(make_net(seed=19), path)
    original = path.read_bytes()

    def failing(net, tmp, write_diff):
        with open(tmp, "wb") as fh:
            fh.write(b"\x89HDF\r\n\x1a\n partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(W, "_write_hdf5", failing)
    with pytest.raises(KeyboardInterrupt):
        save_weights(make_net(seed=20), path)
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.h5"]


def test_save_errors_are_weights_errors(tmp_path):
    net = make_net()
    with pytest.raises(WeightsError, match="no_such_dir"):
        save_weights(net, tmp_path / "no_such_dir" / "w.caffemodel")
    with pytest.raises(WeightsError, match="directory"):
        save_weights(net, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_saved_file_gets_normal_permissions(tmp_path):
    path = tmp_path / "w.caffemodel"
    save_weights(make_net(), path)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_v1_weights_with_invalid_utf8_name_are_refused(tmp_path):
    """protobuf parses proto2 strings without checking UTF-8; the upgrader reads them later."""
    import engine
    from engine.errors import WeightsError

    def ld(field, payload):
        return bytes([(field << 3) | 2, len(payload)]) + payload
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(ld(1, b"n") + ld(2, ld(4, b"\xff\xfebad")))
    net = engine.Net('name: "x" layer { name: "in" type: "Input" top: "x" '
                     'input_param { shape { dim: 1 } } }', engine.TEST)
    with pytest.raises(WeightsError, match="not valid UTF-8"):
        net.copy_from(str(path))
