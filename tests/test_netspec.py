"""NetSpec (pycaffe's caffe.net_spec): rebuild Caffe's published nets and compare the protos."""
from pathlib import Path

import pytest
from google.protobuf import text_format

from engine import crema_pb2
from engine.errors import CremaError
from engine.layer import TEST, TRAIN
from engine.netspec import NetSpec, NetSpecError, layers as L, params as P, to_proto

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NETS = SHARED / "nets"


def _parse(path):
    net = crema_pb2.NetParameter()
    text_format.Merge(path.read_text(), net)
    return net


def _assert_same(built, path):
    expected = _parse(path)
    # compare through text too, so that a mismatch shows a readable diff
    assert text_format.MessageToString(built) == text_format.MessageToString(expected)
    assert built == expected
    # and the generated prototxt parses back to the same net
    again = crema_pb2.NetParameter()
    text_format.Merge(str(built), again)
    assert again == expected


LR = [dict(lr_mult=1), dict(lr_mult=2)]
CONST = dict(type="constant")


def _lenet_body(n, data):
    n.conv1 = L.Convolution(data, param=LR, num_output=20, kernel_size=5, stride=1,
                            weight_filler=dict(type="xavier"), bias_filler=CONST)
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.conv2 = L.Convolution(n.pool1, param=LR, num_output=50, kernel_size=5, stride=1,
                            weight_filler=dict(type="xavier"), bias_filler=CONST)
    n.pool2 = L.Pooling(n.conv2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.ip1 = L.InnerProduct(n.pool2, param=LR, num_output=500,
                           weight_filler=dict(type="xavier"), bias_filler=CONST)
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.ip1, param=LR, num_output=10,
                           weight_filler=dict(type="xavier"), bias_filler=CONST)
    return n.ip2


def test_lenet_train_test_round_trip():
    n = NetSpec()
    # two data layers write the same tops in different phases: name the tops with top=
    n.train_data, n.train_label = L.Data(
        name="mnist", top=["data", "label"], ntop=2, include=dict(phase=TRAIN),
        transform_param=dict(scale=0.00390625),
        source="examples/mnist/mnist_train_lmdb", batch_size=64, backend=P.Data.LMDB)
    n.data, n.label = L.Data(
        name="mnist", ntop=2, include=dict(phase=TEST), transform_param=dict(scale=0.00390625),
        data_param=dict(source="examples/mnist/mnist_test_lmdb", batch_size=100,
                        backend="LMDB"))
    ip2 = _lenet_body(n, n.data)
    n.accuracy = L.Accuracy(ip2, n.label, include=dict(phase=TEST))
    n.loss = L.SoftmaxWithLoss(ip2, n.label)
    _assert_same(n.to_proto(name="LeNet"), NETS / "lenet" / "lenet_train_test.prototxt")


def test_lenet_deploy_round_trip():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[64, 1, 28, 28]))
    n.prob = L.Softmax(_lenet_body(n, n.data))
    net = n.to_proto()
    net.name = "LeNet"
    _assert_same(net, NETS / "lenet" / "lenet.prototxt")


def test_cifar10_quick_round_trip():
    def conv(bottom, num_output, std):
        return L.Convolution(bottom, param=LR, num_output=num_output, pad=2, kernel_size=5,
                             stride=1, weight_filler=dict(type="gaussian", std=std),
                             bias_filler=CONST)

    n = NetSpec()
    mean = dict(mean_file="examples/cifar10/mean.binaryproto")
    n.tr_data, n.tr_label = L.Data(name="cifar", top=("data", "label"), ntop=2,
                                   include=dict(phase=TRAIN),
                                   transform_param=mean,
                                   source="examples/cifar10/cifar10_train_lmdb", batch_size=100,
                                   backend=P.Data.LMDB)
    n.data, n.label = L.Data(name="cifar", ntop=2, include=dict(phase=TEST),
                             transform_param=mean, source="examples/cifar10/cifar10_test_lmdb",
                             batch_size=100, backend=P.Data.LMDB)
    n.conv1 = conv(n.data, 32, 0.0001)
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.relu1 = L.ReLU(n.pool1, in_place=True)
    n.conv2 = conv(n.pool1, 32, 0.01)
    n.relu2 = L.ReLU(n.conv2, in_place=True)
    n.pool2 = L.Pooling(n.conv2, pool=P.Pooling.AVE, kernel_size=3, stride=2)
    n.conv3 = conv(n.pool2, 64, 0.01)
    n.relu3 = L.ReLU(n.conv3, in_place=True)
    n.pool3 = L.Pooling(n.conv3, pool=P.Pooling.AVE, kernel_size=3, stride=2)
    n.ip1 = L.InnerProduct(n.pool3, param=LR, num_output=64,
                           weight_filler=dict(type="gaussian", std=0.1), bias_filler=CONST)
    n.ip2 = L.InnerProduct(n.ip1, param=LR, num_output=10,
                           weight_filler=dict(type="gaussian", std=0.1), bias_filler=CONST)
    n.accuracy = L.Accuracy(n.ip2, n.label, include=dict(phase=TEST))
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
    _assert_same(n.to_proto(name="CIFAR10_quick"),
                 NETS / "cifar10_quick" / "cifar10_quick_train_test.prototxt")


def test_mnist_autoencoder_round_trip():
    n = NetSpec()
    scale = dict(scale=0.0039215684)

    def data(source, **include):
        return L.Data(name="data", top="data", transform_param=scale, include=include,
                      source=f"examples/mnist/{source}", batch_size=100, backend=P.Data.LMDB)

    n.train = data("mnist_train_lmdb", phase=TRAIN)
    n.test_on_train = data("mnist_train_lmdb", phase=TEST, stage="test-on-train")
    n.data = data("mnist_test_lmdb", phase=TEST, stage=["test-on-test"])
    n.flatdata = L.Flatten(n.data)

    def ip(bottom, num_output):
        return L.InnerProduct(bottom, num_output=num_output,
                              param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=1, decay_mult=0)],
                              weight_filler=dict(type="gaussian", std=1, sparse=15),
                              bias_filler=dict(type="constant", value=0))

    bottom = n.data
    for i, width in enumerate([1000, 500, 250], start=1):
        n[f"encode{i}"] = ip(bottom, width)
        n[f"encode{i}neuron"] = L.Sigmoid(n[f"encode{i}"])
        bottom = n[f"encode{i}neuron"]
    n.encode4 = ip(bottom, 30)
    bottom = n.encode4
    for i, width in [(4, 250), (3, 500), (2, 1000)]:
        n[f"decode{i}"] = ip(bottom, width)
        n[f"decode{i}neuron"] = L.Sigmoid(n[f"decode{i}"])
        bottom = n[f"decode{i}neuron"]
    n.decode1 = ip(bottom, 784)
    n.cross_entropy_loss = L.SigmoidCrossEntropyLoss(n.decode1, n.flatdata, name="loss",
                                                     loss_weight=1)
    n.decode1neuron = L.Sigmoid(n.decode1)
    n.l2_error = L.EuclideanLoss(n.decode1neuron, n.flatdata, name="loss", loss_weight=0)
    _assert_same(n.to_proto(name="MNISTAutoencoder"),
                 NETS / "mnist_autoencoder" / "mnist_autoencoder.prototxt")


def test_pycaffe_naming_rules():
    n = NetSpec()
    n.data = L.Input(shape=[dict(dim=[1, 3])])
    hidden = L.InnerProduct(n.data, num_output=4)  # never assigned: automatic names
    n.out, n.extra = L.Slice(hidden, ntop=2, slice_point=[2])
    n.silence = L.Silence(n.extra, ntop=0)
    net = n.to_proto()
    layers = {l.name: l for l in net.layer}
    assert [l.name for l in net.layer] == ["data", "InnerProduct1", "out", "silence"]
    assert list(layers["InnerProduct1"].top) == ["InnerProduct1"]
    assert list(layers["out"].bottom) == ["InnerProduct1"]
    assert list(layers["out"].top) == ["out", "extra"]
    assert list(layers["out"].slice_param.slice_point) == [2]
    assert list(layers["silence"].top) == [] and list(layers["silence"].bottom) == ["extra"]
    # module-level to_proto names everything automatically
    auto = to_proto(L.ReLU(L.Input(shape=dict(dim=[2]))))
    assert [(l.name, list(l.top)) for l in auto.layer] == [("Input1", ["Input1"]),
                                                          ("ReLU1", ["ReLU1"])]
    assert n.keys() == ["data", "out", "extra", "silence"]
    # top= names the top; the attribute still names the layer (as with in_place)
    m = NetSpec()
    m.train_x = L.DummyData(top="x", shape=dict(dim=[1]))
    m.y = L.ReLU(m.train_x)
    assert [(l.name, list(l.bottom), list(l.top)) for l in m.to_proto().layer] == [
        ("train_x", [], ["x"]), ("y", ["x"], ["y"])]
    del n["silence"]
    assert "silence" not in n.keys()


def test_param_routing_and_enums():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    n.deconv = L.Deconvolution(n.data, num_output=2, kernel_size=[2], stride=2,
                               weight_filler=crema_pb2.FillerParameter(type="bilinear"),
                               propagate_down=[False], loss_weight=[0.5])
    n.pool = L.Pooling(n.deconv, pool="AVE", pooling_param=dict(kernel_size=2))
    net = n.to_proto()
    deconv, pool = net.layer[1], net.layer[2]
    assert deconv.convolution_param.num_output == 2
    assert deconv.convolution_param.weight_filler.type == "bilinear"
    assert list(deconv.propagate_down) == [False] and list(deconv.loss_weight) == [0.5]
    assert pool.pooling_param.pool == crema_pb2.PoolingParameter.AVE
    assert pool.pooling_param.kernel_size == 2
    assert P.Pooling.MAX == crema_pb2.PoolingParameter.MAX
    assert P.Eltwise.SUM == crema_pb2.EltwiseParameter.SUM
    assert "pool: AVE" in str(net)


def test_netspec_errors():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2]))
    n.bad = L.InnerProduct(n.data, no_such_field=3)
    with pytest.raises(NetSpecError, match="no field 'no_such_field'"):
        n.to_proto()
    n.bad = L.Pooling(n.data, pool="BIGGEST")
    with pytest.raises(CremaError, match="BIGGEST.*MAX"):
        n.to_proto()
    n.bad = L.InnerProduct(n.data, num_output="ten")
    with pytest.raises(NetSpecError, match="num_output"):
        n.to_proto()
    with pytest.raises(TypeError, match="not a Top"):
        L.ReLU("data")
    with pytest.raises(NetSpecError, match="ntop=2"):
        L.Data(top="data", ntop=2)
    with pytest.raises(AttributeError, match="nope"):
        n.nope
    with pytest.raises(AttributeError):
        P.Pooling.BIGGEST


def test_pycaffe_proto_module_layout():
    """`from caffe.proto import caffe_pb2` ports as `from engine.proto import caffe_pb2`."""
    from engine import crema_pb2
    from engine.proto import caffe_pb2
    assert caffe_pb2.NetParameter is crema_pb2.NetParameter
    param = caffe_pb2.NetParameter(name="x")
    param.layer.add(name="d", type="Input")
    assert crema_pb2.NetParameter.FromString(param.SerializeToString()).layer[0].name == "d"


def test_non_top_input_is_refused_in_pycaffes_words():
    from engine import layers as L
    with pytest.raises(TypeError, match=r"^Convolution input 0 is not a Top \(type is <class 'str'>\)$"):
        L.Convolution("data", num_output=2, kernel_size=3)


def test_pycaffe_module_name_net_spec():
    """pycaffe's module is caffe.net_spec: both import forms give crema's NetSpec module."""
    import engine.net_spec
    from engine import net_spec
    assert engine.net_spec is net_spec is engine.netspec
    assert net_spec.NetSpec is engine.NetSpec
