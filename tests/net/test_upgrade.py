"""Caffe's on-load upgrades: V0 -> V1 -> current nets, data transforms, inputs, BatchNorm and
solver type."""
import pytest
from google.protobuf import text_format

import engine
from engine import crema_pb2
from engine.errors import NetError, SolverError
from engine.upgrade import (V1_LAYER_TYPE, needs_upgrade, upgrade_net_param,
                            upgrade_solver_param)

V1 = crema_pb2.V1LayerParameter

LENET_V1 = """
name: "LeNet"
layers {
  name: "mnist" type: DATA top: "data" top: "label"
  data_param { source: "mnist_train_lmdb" backend: LMDB batch_size: 64 scale: 0.00390625 }
  include { phase: TRAIN }
}
layers {
  name: "mnist" type: DATA top: "data" top: "label"
  data_param { source: "mnist_test_lmdb" backend: LMDB batch_size: 100 scale: 0.00390625
               mean_file: "mean.binaryproto" crop_size: 24 mirror: true }
  include { phase: TEST }
}
layers {
  name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  convolution_param { num_output: 20 kernel_size: 5 stride: 1
                      weight_filler { type: "xavier" } bias_filler { type: "constant" } }
}
layers {
  name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 }
}
layers {
  name: "ip1" type: INNER_PRODUCT bottom: "pool1" top: "ip1"
  blobs_lr: 1 blobs_lr: 2
  param: "ip1_w" param: "ip1_b" blob_share_mode: PERMISSIVE
  inner_product_param { num_output: 500 weight_filler { type: "xavier" } }
}
layers { name: "relu1" type: RELU bottom: "ip1" top: "ip1" }
layers { name: "norm1" type: LRN bottom: "ip1" top: "norm1" lrn_param { local_size: 3 alpha: 0.5 } }
layers {
  name: "accuracy" type: ACCURACY bottom: "norm1" bottom: "label" top: "accuracy"
  include { phase: TEST }
}
layers {
  name: "loss" type: SOFTMAX_LOSS bottom: "norm1" bottom: "label" top: "loss"
  loss_weight: 2 loss_param { ignore_label: 3 }
}
"""


def net_text(text):
    return text_format.Parse(text, crema_pb2.NetParameter())


def by_name(param, name, nth=0):
    return [l for l in param.layer if l.name == name][nth]


# -- V1 -> current -------------------------------------------------------------------------------
def test_v1_lenet_upgrades_to_current_form():
    v1 = net_text(LENET_V1)
    before = v1.SerializeToString()
    assert needs_upgrade(v1)
    up = upgrade_net_param(v1, "lenet.prototxt")
    assert v1.SerializeToString() == before  # the argument is not modified
    assert len(up.layers) == 0 and not needs_upgrade(up)
    assert up.name == "LeNet"
    assert [l.type for l in up.layer] == ["Data", "Data", "Convolution", "Pooling", "InnerProduct",
                                          "ReLU", "LRN", "Accuracy", "SoftmaxWithLoss"]
    conv = by_name(up, "conv1")
    assert list(conv.bottom) == ["data"] and list(conv.top) == ["conv1"]
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    assert not conv.param[0].HasField("name")
    assert conv.convolution_param.num_output == 20
    assert list(conv.convolution_param.kernel_size) == [5]
    assert conv.convolution_param.weight_filler.type == "xavier"
    assert by_name(up, "pool1").pooling_param.pool == crema_pb2.PoolingParameter.MAX
    assert by_name(up, "pool1").pooling_param.kernel_size == 2
    ip = by_name(up, "ip1")
    assert [p.name for p in ip.param] == ["ip1_w", "ip1_b"]
    assert ip.param[0].share_mode == crema_pb2.ParamSpec.PERMISSIVE
    assert not ip.param[1].HasField("share_mode")
    assert [p.lr_mult for p in ip.param] == [1, 2]
    assert not ip.param[1].HasField("decay_mult") and ip.param[1].decay_mult == 1
    assert ip.inner_product_param.num_output == 500
    assert list(by_name(up, "relu1").top) == ["ip1"]
    assert by_name(up, "norm1").lrn_param.local_size == 3
    assert by_name(up, "norm1").lrn_param.alpha == 0.5
    acc = by_name(up, "accuracy")
    assert acc.include[0].phase == crema_pb2.TEST and list(acc.bottom) == ["norm1", "label"]
    loss = by_name(up, "loss")
    assert list(loss.loss_weight) == [2] and loss.loss_param.ignore_label == 3


def test_v1_legacy_data_transform_fields_move_to_transform_param():
    up = upgrade_net_param(net_text(LENET_V1))
    train, test = by_name(up, "mnist", 0), by_name(up, "mnist", 1)
    assert train.include[0].phase == crema_pb2.TRAIN
    assert train.transform_param.scale == pytest.approx(0.00390625)
    assert not train.data_param.HasField("scale")
    assert train.data_param.source == "mnist_train_lmdb" and train.data_param.batch_size == 64
    assert train.data_param.backend == crema_pb2.DataParameter.LMDB
    t = test.transform_param
    assert (t.mean_file, t.crop_size, t.mirror) == ("mean.binaryproto", 24, True)
    for f in ("scale", "mean_file", "crop_size", "mirror"):
        assert not test.data_param.HasField(f)
    img = upgrade_net_param(net_text(
        'layers { name: "img" type: IMAGE_DATA top: "d" top: "l" '
        'image_data_param { source: "list.txt" crop_size: 7 mirror: true } }'
        'layers { name: "win" type: WINDOW_DATA top: "d2" top: "l2" '
        'window_data_param { source: "w.txt" scale: 2 mean_file: "m" } }'))
    assert img.layer[0].type == "ImageData" and img.layer[0].transform_param.crop_size == 7
    assert img.layer[0].transform_param.mirror
    assert not img.layer[0].image_data_param.HasField("mirror")
    assert img.layer[1].type == "WindowData" and img.layer[1].transform_param.scale == 2
    assert img.layer[1].transform_param.mean_file == "m"
    assert not img.layer[1].window_data_param.HasField("scale")


def test_every_v1_layer_type_has_caffes_name():
    assert set(V1_LAYER_TYPE) == set(V1.LayerType.values())
    expected = {"CONVOLUTION": "Convolution", "INNER_PRODUCT": "InnerProduct",
                "SOFTMAX_LOSS": "SoftmaxWithLoss", "POOLING": "Pooling", "RELU": "ReLU",
                "DATA": "Data", "LRN": "LRN", "ABSVAL": "AbsVal", "BNLL": "BNLL",
                "DECONVOLUTION": "Deconvolution", "HDF5_DATA": "HDF5Data", "TANH": "TanH",
                "IM2COL": "Im2col", "MVN": "MVN", "SIGMOID_CROSS_ENTROPY_LOSS":
                "SigmoidCrossEntropyLoss", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
                "DUMMY_DATA": "DummyData", "ELTWISE": "Eltwise", "NONE": ""}
    for enum_name, type_name in expected.items():
        assert V1_LAYER_TYPE[V1.LayerType.Value(enum_name)] == type_name
    # ...and the upgrade writes exactly that name for every enum value.
    for enum_value, type_name in V1_LAYER_TYPE.items():
        v1 = crema_pb2.NetParameter()
        v1.layers.add(name="l", type=enum_value)
        assert upgrade_net_param(v1).layer[0].type == type_name


def test_every_v1_param_message_is_copied():
    v1 = crema_pb2.NetParameter()
    layer = v1.layers.add(name="all", type=V1.CONVOLUTION)
    layer.blobs.add().data.extend([1.5, 2.5])
    names = [f.name for f in V1.DESCRIPTOR.fields if f.name.endswith("_param")]
    assert len(names) == 30
    for name in names:
        getattr(layer, name).SetInParent()
    layer.convolution_param.num_output = 7
    layer.dropout_param.dropout_ratio = 0.25
    up = upgrade_net_param(v1).layer[0]
    for name in names:
        assert up.HasField(name), name
    assert up.convolution_param.num_output == 7 and up.dropout_param.dropout_ratio == 0.25
    assert list(up.blobs[0].data) == [1.5, 2.5]


def test_v1_net_builds_in_engine():
    net = engine.Net("""
        name: "v1" input: "data" input_dim: 2 input_dim: 1 input_dim: 6 input_dim: 6
        layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" blobs_lr: 1 blobs_lr: 0
                 convolution_param { num_output: 2 kernel_size: 3 } }
        layers { name: "relu" type: RELU bottom: "conv" top: "conv" }""", engine.TRAIN)
    assert [(l.name, l.type) for l in net.layers] == [("input", "Input"), ("conv", "Convolution"),
                                                      ("relu", "ReLU")]
    assert net.layer_dict["conv"].blobs[0].shape == (2, 1, 3, 3)


def test_both_layer_and_layers_is_refused():
    param = net_text('layer { name: "a" type: "ReLU" } layers { name: "b" type: RELU }')
    with pytest.raises(NetError, match=r"both 'layer' and 'layers'") as exc:
        upgrade_net_param(param, "mixed.prototxt")
    assert "mixed.prototxt" in str(exc.value)


def test_current_net_needs_no_upgrade():
    param = net_text('name: "n" layer { name: "a" type: "ReLU" bottom: "x" top: "x" }')
    assert not needs_upgrade(param)
    up = upgrade_net_param(param)
    assert up == param and up is not param


# -- inputs --------------------------------------------------------------------------------------
def test_input_dim_becomes_first_input_layer():
    param = net_text('name: "n" input: "data" input: "label" '
                     'input_dim: 10 input_dim: 3 input_dim: 227 input_dim: 227 '
                     'input_dim: 10 input_dim: 1 input_dim: 1 input_dim: 1 '
                     'layer { name: "relu" type: "ReLU" bottom: "data" top: "r" }')
    assert needs_upgrade(param)
    up = upgrade_net_param(param)
    first = up.layer[0]
    assert (first.name, first.type) == ("input", "Input")
    assert list(first.top) == ["data", "label"]
    assert [list(s.dim) for s in first.input_param.shape] == [[10, 3, 227, 227], [10, 1, 1, 1]]
    assert up.layer[1].name == "relu"
    assert not up.input and not up.input_dim and not up.input_shape


def test_input_shape_becomes_input_layer_and_bare_input_is_dropped():
    up = upgrade_net_param(net_text('input: "x" input_shape { dim: 4 dim: 5 } '
                                    'layer { name: "a" type: "ReLU" bottom: "x" top: "y" } '
                                    'layer { name: "b" type: "ReLU" bottom: "y" top: "z" }'))
    assert [l.name for l in up.layer] == ["input", "a", "b"]
    assert list(up.layer[0].input_param.shape[0].dim) == [4, 5]
    # A legacy .caffemodel keeps `input` without shapes: Caffe just strips it.
    bare = upgrade_net_param(net_text('input: "x" layer { name: "a" type: "ReLU" }'))
    assert [l.name for l in bare.layer] == ["a"] and not bare.input


@pytest.mark.parametrize("text, match", [
    ('input: "x" input_dim: 1 input_dim: 2 input_dim: 3', "need 4 input_dim"),
    ('input: "x" input: "y" input_shape { dim: 1 }', "one input_shape per input"),
    ('input: "x" input_shape { dim: 1 } input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1',
     "both input_shape and input_dim"),
])
def test_bad_input_dims_raise(text, match):
    with pytest.raises(NetError, match=match) as exc:
        upgrade_net_param(net_text(text), "in.prototxt")
    assert str(exc.value).startswith("in.prototxt")


# -- BatchNorm -----------------------------------------------------------------------------------
def test_batchnorm_old_param_specs_are_cleared():
    param = net_text('layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" '
                     'param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 } } '
                     'layer { name: "ip" type: "InnerProduct" bottom: "y" top: "z" '
                     'param { lr_mult: 1 } param { lr_mult: 2 } param { lr_mult: 3 } }')
    assert needs_upgrade(param)
    up = upgrade_net_param(param)
    assert len(up.layer[0].param) == 0
    assert [p.lr_mult for p in up.layer[1].param] == [1, 2, 3]  # only BatchNorm is touched


# -- V0 -> current -------------------------------------------------------------------------------
V0_NET = """
name: "v0net"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 9 input_dim: 9
layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
layers {
  layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 2 group: 1
          biasterm: false weight_filler { type: "gaussian" std: 0.01 }
          blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 }
  bottom: "pad1" top: "conv1"
}
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pad2" type: "padding" pad: 1 } bottom: "conv1" top: "pad2" }
layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 }
         bottom: "pad2" top: "pool1" }
layers { layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.1 beta: 0.5 k: 2 }
         bottom: "pool1" top: "norm1" }
layers { layer { name: "fc" type: "innerproduct" num_output: 5
                 bias_filler { type: "constant" value: 0.1 } }
         bottom: "norm1" top: "fc" }
layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.3 } bottom: "fc" top: "fc" }
layers { layer { name: "prob" type: "softmax" } bottom: "fc" top: "prob" }
"""


def test_v0_net_with_padding_layers_upgrades():
    up = upgrade_net_param(net_text(V0_NET), "v0.prototxt")
    assert up.name == "v0net"
    assert [(l.name, l.type) for l in up.layer] == [
        ("input", "Input"), ("conv1", "Convolution"), ("relu1", "ReLU"), ("pool1", "Pooling"),
        ("norm1", "LRN"), ("fc", "InnerProduct"), ("drop", "Dropout"), ("prob", "Softmax")]
    assert list(up.layer[0].input_param.shape[0].dim) == [1, 3, 9, 9]
    conv = by_name(up, "conv1")
    assert list(conv.bottom) == ["data"]  # rewired past the padding layer
    c = conv.convolution_param
    assert (c.num_output, list(c.kernel_size), list(c.stride), list(c.pad)) == (4, [3], [2], [2])
    assert c.group == 1 and c.bias_term is False
    assert c.weight_filler.type == "gaussian" and c.weight_filler.std == pytest.approx(0.01)
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    pool = by_name(up, "pool1")
    assert list(pool.bottom) == ["conv1"]
    p = pool.pooling_param
    assert (p.pool, p.kernel_size, p.stride, p.pad) == (crema_pb2.PoolingParameter.AVE, 3, 2, 1)
    n = by_name(up, "norm1").lrn_param
    assert (n.local_size, n.alpha, n.beta, n.k) == (3, pytest.approx(0.1), 0.5, 2)
    fc = by_name(up, "fc").inner_product_param
    assert fc.num_output == 5 and fc.bias_filler.value == pytest.approx(0.1)
    assert by_name(up, "drop").dropout_param.dropout_ratio == pytest.approx(0.3)
    assert not needs_upgrade(up)


def test_v0_data_loss_accuracy_concat_layers():
    up = upgrade_net_param(net_text("""
        layers { layer { name: "d" type: "data" source: "db" batchsize: 16 meanfile: "m.bp"
                         cropsize: 5 mirror: true scale: 0.5 rand_skip: 3 }
                 top: "data" top: "label" }
        layers { layer { name: "cat" type: "concat" concat_dim: 1 }
                 bottom: "data" bottom: "data" top: "cat" }
        layers { layer { name: "loss" type: "softmax_loss" } bottom: "cat" bottom: "label"
                 top: "loss" }
        layers { layer { name: "acc" type: "accuracy" } bottom: "cat" bottom: "label"
                 top: "acc" }
        layers { layer { name: "w" type: "window_data" source: "w.txt" det_fg_threshold: 0.7
                         det_crop_mode: "square" det_context_pad: 16 } top: "wd" top: "wl" }
        layers { layer { name: "im" type: "images" source: "l.txt" shuffle_images: true
                         new_height: 32 new_width: 30 } top: "id" top: "il" }"""))
    d = by_name(up, "d")
    assert d.type == "Data"
    assert (d.data_param.source, d.data_param.batch_size, d.data_param.rand_skip) == ("db", 16, 3)
    t = d.transform_param
    assert (t.mean_file, t.crop_size, t.mirror, t.scale) == ("m.bp", 5, True, 0.5)
    assert by_name(up, "cat").type == "Concat" and by_name(up, "cat").concat_param.concat_dim == 1
    assert by_name(up, "loss").type == "SoftmaxWithLoss"
    assert by_name(up, "acc").type == "Accuracy"
    w = by_name(up, "w").window_data_param
    assert (w.source, w.crop_mode, w.context_pad) == ("w.txt", "square", 16)
    assert w.fg_threshold == pytest.approx(0.7)
    im = by_name(up, "im")
    assert im.type == "ImageData" and im.image_data_param.shuffle
    assert (im.image_data_param.new_height, im.image_data_param.new_width) == (32, 30)


@pytest.mark.parametrize("layers, match", [
    ('layers { layer { name: "weird" type: "frobnicate" } bottom: "data" top: "x" }',
     r"layer 'weird'.*unknown V0 layer type 'frobnicate'"),
    ('layers { layer { name: "r" type: "relu" num_output: 3 } bottom: "data" top: "x" }',
     r"layer 'r' \(type relu\).*'num_output' does not apply"),
    ('layers { layer { name: "p" type: "padding" pad: 1 } bottom: "data" top: "p" } '
     'layers { layer { name: "r" type: "relu" } bottom: "p" top: "x" }',
     r"layer 'r'.*padding layer 'p' feeds a layer that is neither conv nor pool"),
    ('layers { layer { name: "c" type: "conv" } bottom: "nowhere" top: "x" }',
     r"layer 'c'.*unknown bottom blob 'nowhere'"),
    ('layers { layer { name: "c" type: "conv" } bottom: "data" top: "x" } '
     'layers { name: "v1" type: RELU bottom: "x" top: "x" }',
     r"layer 'v1'.*mixes V0"),
])
def test_v0_upgrade_errors_name_file_and_layer(layers, match):
    param = net_text('input: "data" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4 ' + layers)
    with pytest.raises(NetError, match=match) as exc:
        upgrade_net_param(param, "old.prototxt")
    assert str(exc.value).startswith("old.prototxt")


# -- solver ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("legacy, name", [("SGD", "SGD"), ("NESTEROV", "Nesterov"),
                                          ("ADAGRAD", "AdaGrad"), ("RMSPROP", "RMSProp"),
                                          ("ADADELTA", "AdaDelta"), ("ADAM", "Adam")])
def test_solver_type_upgrade(legacy, name):
    solver = text_format.Parse(f"base_lr: 0.1 solver_type: {legacy}", crema_pb2.SolverParameter())
    up = upgrade_solver_param(solver)
    assert up.type == name and up.HasField("type")
    assert not up.HasField("solver_type") and up.base_lr == pytest.approx(0.1)
    assert solver.HasField("solver_type")  # the argument is untouched


def test_solver_without_legacy_type_is_unchanged():
    solver = text_format.Parse('type: "Adam" base_lr: 0.1', crema_pb2.SolverParameter())
    assert upgrade_solver_param(solver) == solver


def test_solver_type_conflict_raises():
    solver = text_format.Parse('type: "Adam" solver_type: NESTEROV', crema_pb2.SolverParameter())
    with pytest.raises(SolverError, match=r"solver.prototxt.*NESTEROV.*Adam"):
        upgrade_solver_param(solver, "solver.prototxt")
