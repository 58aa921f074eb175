"""Caffe's own network files (../shared/nets) build and run forward and backward, with the layer
names, blob shapes and parameter shapes that Caffe prints for them. The expectations below are
written from the nets' definitions and Caffe's size formulas, not from crema's output."""
import numpy as np
import pytest
from google.protobuf import text_format

import engine
from engine import crema_pb2
from engine.schema import read_net_param


def all_net_files(nets_dir):
    return sorted(p for p in nets_dir.rglob("*.prototxt"))


def test_every_shared_file_parses(nets_dir):
    files = all_net_files(nets_dir)
    assert len(files) == 7
    for path in files:
        if path.name.endswith("_solver.prototxt"):
            msg, _ = engine.schema.read_solver_param(str(path))
            assert msg.base_lr > 0 and msg.max_iter > 0
        else:
            msg, src = read_net_param(str(path))
            assert len(msg.layer) >= 9
            assert all(layer.name in src.layer_lines for layer in msg.layer)


def with_dummy_data(path, image_shape, n_classes=10):
    """The file's LMDB Data layers replaced by DummyData of the same shapes (batch from data_param)."""
    param, _ = read_net_param(str(path))
    for layer in param.layer:
        if layer.type != "Data":
            continue
        batch = layer.data_param.batch_size
        layer.type = "DummyData"
        layer.ClearField("data_param")
        layer.ClearField("transform_param")
        for top in layer.top:
            shape = layer.dummy_data_param.shape.add()
            shape.dim.extend([batch, *image_shape] if top == "data" else [batch])
            filler = layer.dummy_data_param.data_filler.add()
            if top == "data":
                filler.type = "uniform"  # pixels scaled to [0, 1] as the files' transform does
            else:
                filler.type, filler.min, filler.max = "uniform", 0, n_classes - 0.01
    return param


def check_shapes(net, blobs, params):
    assert {k: v.data.shape for k, v in net.blobs.items()} == blobs
    assert {k: [b.data.shape for b in v] for k, v in net.params.items()} == params


def run_fwd_bwd(net):
    engine.set_random_seed(3)
    out = net.forward()
    assert all(np.all(np.isfinite(v)) for v in out.values())
    net.clear_param_diffs()
    net.backward()
    for name, blobs in net.params.items():
        for i, b in enumerate(blobs):
            assert np.all(np.isfinite(b.diff)), (name, i)
            assert np.any(b.diff != 0), f"{name}[{i}] got no gradient"
    return out


LENET_PARAMS = {"conv1": [(20, 1, 5, 5), (20,)], "conv2": [(50, 20, 5, 5), (50,)],
                "ip1": [(500, 800), (500,)], "ip2": [(10, 500), (10,)]}


def lenet_blobs(n):
    return {"data": (n, 1, 28, 28), "label": (n,), "conv1": (n, 20, 24, 24),
            "pool1": (n, 20, 12, 12), "conv2": (n, 50, 8, 8), "pool2": (n, 50, 4, 4),
            "ip1": (n, 500), "ip2": (n, 10), "loss": ()}


def test_lenet_train(nets_dir):
    net = engine.Net(with_dummy_data(nets_dir / "lenet/lenet_train_test.prototxt", (1, 28, 28)),
                     engine.TRAIN)
    assert [l.name for l in net.layers] == ["mnist", "conv1", "pool1", "conv2", "pool2", "ip1",
                                            "relu1", "ip2", "loss"]
    check_shapes(net, lenet_blobs(64), LENET_PARAMS)
    assert net.outputs == ["loss"] and net.blob_loss_weights["loss"] == 1.0
    out = run_fwd_bwd(net)
    # Freshly initialised LeNet predicts near-uniformly: the loss is about log(10).
    assert 1.5 < float(out["loss"]) < 3.5


def test_lenet_test_phase_inserts_caffes_splits(nets_dir):
    net = engine.Net(with_dummy_data(nets_dir / "lenet/lenet_train_test.prototxt", (1, 28, 28)),
                     engine.TEST)
    names = [l.name for l in net.layers]
    assert names == ["mnist", "label_mnist_1_split", "conv1", "pool1", "conv2", "pool2", "ip1",
                     "relu1", "ip2", "ip2_ip2_0_split", "accuracy", "loss"]
    blobs = lenet_blobs(100)
    blobs.update({"label_mnist_1_split_0": (100,), "label_mnist_1_split_1": (100,),
                  "ip2_ip2_0_split_0": (100, 10), "ip2_ip2_0_split_1": (100, 10),
                  "accuracy": ()})
    check_shapes(net, blobs, LENET_PARAMS)
    assert net.outputs == ["accuracy", "loss"]
    out = run_fwd_bwd(net)
    assert 0.0 <= float(out["accuracy"]) <= 1.0


def test_lenet_deploy_file(nets_dir):
    net = engine.Net(str(nets_dir / "lenet/lenet.prototxt"), engine.TEST)
    assert net.inputs == ["data"] and net.outputs == ["prob"]
    blobs = lenet_blobs(64)
    del blobs["label"], blobs["loss"]
    blobs["prob"] = (64, 10)
    check_shapes(net, blobs, LENET_PARAMS)
    x = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    prob = net.forward(data=x)["prob"]
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-5)


def test_cifar10_quick(nets_dir):
    path = nets_dir / "cifar10_quick/cifar10_quick_train_test.prototxt"
    net = engine.Net(with_dummy_data(path, (3, 32, 32)), engine.TRAIN)
    n = 100
    assert [l.name for l in net.layers] == ["cifar", "conv1", "pool1", "relu1", "conv2", "relu2",
                                            "pool2", "conv3", "relu3", "pool3", "ip1", "ip2",
                                            "loss"]
    # conv 5x5 pad 2 keeps the size; 3x3 stride-2 pools: ceil((32-3)/2)+1 = 16, then 8, then 4.
    check_shapes(net, {"data": (n, 3, 32, 32), "label": (n,), "conv1": (n, 32, 32, 32),
                       "pool1": (n, 32, 16, 16), "conv2": (n, 32, 16, 16),
                       "pool2": (n, 32, 8, 8), "conv3": (n, 64, 8, 8), "pool3": (n, 64, 4, 4),
                       "ip1": (n, 64), "ip2": (n, 10), "loss": ()},
                 {"conv1": [(32, 3, 5, 5), (32,)], "conv2": [(32, 32, 5, 5), (32,)],
                  "conv3": [(64, 32, 5, 5), (64,)], "ip1": [(64, 1024), (64,)],
                  "ip2": [(10, 64), (10,)]})
    run_fwd_bwd(net)


AE_SIZES = [("encode1", 784, 1000), ("encode2", 1000, 500), ("encode3", 500, 250),
            ("encode4", 250, 30), ("decode4", 30, 250), ("decode3", 250, 500),
            ("decode2", 500, 1000), ("decode1", 1000, 784)]


@pytest.mark.parametrize("phase,stages", [(engine.TRAIN, ()), (engine.TEST, ("test-on-test",))])
def test_mnist_autoencoder(nets_dir, phase, stages):
    param = with_dummy_data(nets_dir / "mnist_autoencoder/mnist_autoencoder.prototxt", (1, 28, 28))
    net = engine.Net(param, phase, stages=stages)
    n = 100
    blobs = {"data": (n, 1, 28, 28), "flatdata": (n, 784), "cross_entropy_loss": (),
             "l2_error": (), "decode1neuron": (n, 784)}
    for name, _, out in AE_SIZES:
        blobs[name] = (n, out)
        if name not in ("encode4", "decode1"):
            blobs[name + "neuron"] = (n, out)
    # Caffe's splits: data feeds flatdata and encode1; flatdata and decode1 feed two layers each.
    for blob, layer in [("data", "data"), ("flatdata", "flatdata"), ("decode1", "decode1")]:
        for k in range(2):
            blobs[f"{blob}_{layer}_0_split_{k}"] = blobs[blob]
    check_shapes(net, blobs, {name: [(o, i), (o,)] for name, i, o in AE_SIZES})
    assert net.blob_loss_weights["cross_entropy_loss"] == 1.0
    assert net.blob_loss_weights["l2_error"] == 0.0
    run_fwd_bwd(net)


def test_autoencoder_without_stage_has_no_data_in_test(nets_dir):
    param = with_dummy_data(nets_dir / "mnist_autoencoder/mnist_autoencoder.prototxt", (1, 28, 28))
    with pytest.raises(engine.NetError, match="unknown bottom blob 'data'"):
        engine.Net(param, engine.TEST)


def test_lenet_with_hdf5_data(nets_dir, tmp_path):
    import h5py  # a runtime dependency of crema
    rng = np.random.default_rng(1)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["data"] = rng.random((70, 1, 28, 28), dtype=np.float32)
        f["label"] = rng.integers(0, 10, 70).astype(np.float32)
    (tmp_path / "list.txt").write_text(str(tmp_path / "d.h5") + "\n")
    param, _ = read_net_param(str(nets_dir / "lenet/lenet_train_test.prototxt"))
    for layer in param.layer:
        if layer.type == "Data":
            batch = layer.data_param.batch_size
            layer.type = "HDF5Data"
            layer.ClearField("data_param")
            layer.ClearField("transform_param")
            layer.hdf5_data_param.source = str(tmp_path / "list.txt")
            layer.hdf5_data_param.batch_size = batch
    net = engine.Net(param, engine.TRAIN)
    check_shapes(net, lenet_blobs(64), LENET_PARAMS)
    run_fwd_bwd(net)


def test_lenet_loss_gradient_matches_finite_differences(nets_dir):
    """Whole-net backward against central differences of the float32 loss at a few weights."""
    param = with_dummy_data(nets_dir / "lenet/lenet_train_test.prototxt", (1, 28, 28))
    for layer in param.layer:
        if layer.type == "DummyData":
            for shape in layer.dummy_data_param.shape:
                shape.dim[0] = 4
    net = engine.Net(param, engine.TRAIN)
    engine.set_random_seed(5)
    net.forward()
    data = {k: net.blobs[k].data.copy() for k in ("data", "label")}
    # Freeze the inputs: replace the DummyData draws with the arrays just drawn.
    def loss():
        net.blobs["data"].data[...] = data["data"]
        net.blobs["label"].data[...] = data["label"]
        net.forward(start="conv1")
        return net.loss
    loss()
    net.clear_param_diffs()
    net.backward()
    rng = np.random.default_rng(0)
    for name in ("conv1", "conv2", "ip1", "ip2"):
        w = net.params[name][0]
        for idx in rng.choice(w.count, 3, replace=False):
            pos = np.unravel_index(idx, w.shape)
            saved = w.data[pos]
            h = 1e-2
            w.data[pos] = saved + h
            plus = loss()
            w.data[pos] = saved - h
            minus = loss()
            w.data[pos] = saved
            numeric = (plus - minus) / (2 * h)
            assert abs(numeric - w.diff[pos]) <= 2e-3 + 0.05 * abs(numeric), (name, pos)
