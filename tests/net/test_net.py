"""Net construction and execution semantics, against hand-derived expectations."""
import numpy as np
import pytest

import engine
from engine import crema_pb2

INPUT = 'layer {{ name: "{0}" type: "Input" top: "{0}" input_param {{ shape {{ {1} }} }} }}\n'


def dims(*d):
    return " ".join(f"dim: {x}" for x in d)


def net_text(*layers, inputs=(("data", (2, 3)),), extra=""):
    return extra + "".join(INPUT.format(n, dims(*s)) for n, s in inputs) + "".join(layers)


IP = ('layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{top}" {rest} '
      'inner_product_param {{ num_output: {n} weight_filler {{ type: "gaussian" std: 0.5 }} '
      'bias_filler {{ type: "constant" value: 0.1 }} }} }}\n')


def ip(name, bottom, n=4, top=None, rest=""):
    return IP.format(name=name, bottom=bottom, top=top or name, n=n, rest=rest)


def test_phase_level_stage_filtering():
    text = net_text(
        ip("a", "data", rest="include { phase: TRAIN }"),
        ip("b", "data", rest="include { phase: TEST }"),
        ip("c", "data", rest="include { min_level: 2 }"),
        ip("d", "data", rest='include { stage: "x" stage: "y" }'),
        ip("e", "data", rest='include { not_stage: "x" }'),
        ip("f", "data", rest="exclude { phase: TEST }"),
        ip("g", "data", rest="include { max_level: 0 } include { stage: \"y\" }"),
    )
    names = lambda net: [l.name for l in net.layers if l.type == "InnerProduct"]
    assert names(engine.Net(text, engine.TRAIN)) == ["a", "e", "f", "g"]
    assert names(engine.Net(text, engine.TEST)) == ["b", "e", "g"]
    assert names(engine.Net(text, engine.TEST, level=2)) == ["b", "c", "e"]
    assert names(engine.Net(text, engine.TEST, stages=["x", "y"])) == ["b", "d", "g"]
    assert names(engine.Net(text, engine.TRAIN, stages=["y"], level=1)) == ["a", "e", "f", "g"]
    with pytest.raises(engine.NetError, match="both include and exclude"):
        engine.Net(net_text(ip("a", "data", rest="include { phase: TRAIN } exclude { phase: TEST }")))


def test_layer_phase_defaults_to_net_phase():
    net = engine.Net(net_text(ip("a", "data")), engine.TRAIN)
    assert net.layer_dict["a"].phase == engine.TRAIN
    assert net.layer_params[1].phase == engine.TRAIN


def test_fan_out_gets_split_and_diffs_are_summed():
    text = net_text(ip("a", "data"), ip("b", "a", 3), ip("c", "a", 3),
                    'layer { name: "s" type: "Eltwise" bottom: "b" bottom: "c" top: "s" }\n',
                    extra="force_backward: true\n")
    net = engine.Net(text, engine.TEST)
    assert [l.name for l in net.layers] == ["data", "a", "a_a_0_split", "b", "c", "s"]
    assert net.bottom_names["b"] == ["a_a_0_split_0"] and net.bottom_names["c"] == ["a_a_0_split_1"]
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    net.forward(data=x)
    g = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    net.clear_param_diffs()
    diffs = net.backward(s=g)
    wb, wc = net.params["b"][0].data, net.params["c"][0].data
    np.testing.assert_allclose(net.blobs["a"].diff, g @ wb + g @ wc, rtol=1e-5)
    wa = net.params["a"][0].data
    np.testing.assert_allclose(diffs["data"], (g @ wb + g @ wc) @ wa, rtol=1e-4)


def test_in_place_layers_share_the_blob():
    net = engine.Net(net_text(ip("a", "data"),
                              'layer { name: "r" type: "ReLU" bottom: "a" top: "a" }\n'))
    assert net.layers[2].name == "r" and list(net.blobs) == ["data", "a"]
    out = net.forward(data=-np.ones((2, 3), np.float32))
    assert np.all(out["a"] >= 0)


def test_duplicate_top_is_refused():
    with pytest.raises(engine.NetError, match="top blob 'a' is produced by more than one layer"):
        engine.Net(net_text(ip("a", "data"), ip("b", "data", top="a")))


def test_loss_weights_and_outputs():
    text = net_text(ip("a", "data", 3),
                    'layer { name: "l1" type: "EuclideanLoss" bottom: "a" bottom: "t" top: "l1" }\n'
                    'layer { name: "l2" type: "EuclideanLoss" bottom: "a" bottom: "t" top: "l2" '
                    'loss_weight: 0.5 }\n',
                    inputs=(("data", (2, 3)), ("t", (2, 3))))
    net = engine.Net(text, engine.TRAIN)
    assert net.blob_loss_weights["l1"] == 1.0 and net.blob_loss_weights["l2"] == 0.5
    assert net.blob_loss_weights["a"] == 0.0
    assert net.outputs == ["l1", "l2"] and net.inputs == ["data", "t"]
    rng = np.random.default_rng(2)
    out = net.forward(data=rng.standard_normal((2, 3)), t=rng.standard_normal((2, 3)))
    assert net.loss == pytest.approx(float(out["l1"]) + 0.5 * float(out["l2"]), rel=1e-6)
    net.clear_param_diffs()
    net.backward()
    a, t = net.blobs["a"].data, net.blobs["t"].data
    # d/da of 1.5 * sum((a-t)^2)/(2N), N = 2
    np.testing.assert_allclose(net.blobs["a"].diff, 1.5 * (a - t) / 2, rtol=1e-5)


def test_need_backward_analysis_and_propagate_down():
    text = net_text(ip("a", "data", 3),
                    ip("frozen", "data", 3, rest="param { lr_mult: 0 } param { lr_mult: 0 }"),
                    'layer { name: "l" type: "EuclideanLoss" bottom: "a" bottom: "frozen" top: "l" '
                    'propagate_down: true propagate_down: false }\n', ip("side", "data", 2))
    net = engine.Net(text, engine.TRAIN)
    need = dict(zip([l.name for l in net.layers], net.layer_need_backward))
    assert need == {"data": False, "data_data_0_split": False, "a": True, "frozen": False,
                    "l": True, "side": False}
    assert net.bottom_need_backward[4] == [True, False]
    net.forward(data=np.ones((2, 3)))
    net.clear_param_diffs()
    net.backward()
    assert np.any(net.params["a"][0].diff != 0)
    assert not np.any(net.params["frozen"][0].diff) and not np.any(net.params["side"][0].diff)


def test_force_backward_reaches_inputs_but_not_labels():
    text = net_text(ip("a", "data", 3),
                    'layer { name: "l" type: "SoftmaxWithLoss" bottom: "a" bottom: "label" top: "l" }\n',
                    inputs=(("data", (2, 3)), ("label", (2,))))
    assert net_need(engine.Net(text, engine.TRAIN)) == [False, False, True, True]
    forced = engine.Net("force_backward: true\n" + text, engine.TRAIN)
    assert forced.bottom_need_backward[3] == [True, False]
    forced.forward(data=np.ones((2, 3)), label=np.array([0, 2]))
    assert np.any(forced.backward()["data"] != 0)


def net_need(net):
    return net.layer_need_backward


def test_parameter_sharing_by_name():
    shared = 'param { name: "w" } param { name: "bias" }'
    text = net_text(ip("a", "data", 3, rest=shared), ip("b", "data", 3, rest=shared),
                    'layer { name: "s" type: "Eltwise" bottom: "a" bottom: "b" top: "s" }\n',
                    'layer { name: "l" type: "Reduction" bottom: "s" top: "l" loss_weight: 1 }\n')
    net = engine.Net(text, engine.TRAIN)
    assert net.params["a"][0] is net.params["b"][0]
    assert len(net.learnable_params) == 2
    x = np.random.default_rng(3).standard_normal((2, 3)).astype(np.float32)
    net.forward(data=x)
    np.testing.assert_array_equal(net.blobs["a"].data, net.blobs["b"].data)
    net.clear_param_diffs()
    net.backward()
    # d sum(2 * (x W^T + b)) / dW = 2 * sum_n x_n for each output row: both sharers accumulate.
    np.testing.assert_allclose(net.params["a"][0].diff, 2 * np.tile(x.sum(0), (3, 1)), rtol=1e-5)
    bad = net_text(ip("a", "data", 3, rest='param { name: "w" }'),
                   ip("b", "data", 4, rest='param { name: "w" }'))
    with pytest.raises(engine.ShapeError, match=r"share param 'w'.*\(4, 3\).*\(3, 3\)"):
        engine.Net(bad)


def test_forward_start_end_and_backward_returns_input_diffs():
    text = net_text(ip("a", "data"), ip("b", "a", 2), extra="force_backward: true\n")
    net = engine.Net(text, engine.TEST)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    full = net.forward(data=x)["b"].copy()
    partial = net.forward(end="a")
    assert list(partial) == ["a"]
    net.blobs["a"].data[...] *= 0
    again = net.forward(start="b")["b"]
    np.testing.assert_allclose(again, np.tile(net.params["b"][1].data, (2, 1)))
    net.forward(data=x)
    np.testing.assert_array_equal(net.blobs["b"].data, full)
    diffs = net.backward(b=np.ones((2, 2), np.float32))
    expected = np.ones((2, 2)) @ net.params["b"][0].data @ net.params["a"][0].data
    np.testing.assert_allclose(diffs["data"], expected, rtol=1e-5)
    with pytest.raises(engine.NetError, match="no layer named 'zz'"):
        net.forward(end="zz")


def test_forward_all_batches_and_trims():
    net = engine.Net(net_text(ip("a", "data", 2)), engine.TEST)
    x = np.random.default_rng(4).standard_normal((5, 3)).astype(np.float32)
    out = net.forward_all(data=x)["a"]
    w, b = net.params["a"][0].data, net.params["a"][1].data
    assert out.shape == (5, 2)
    np.testing.assert_allclose(out, x @ w.T + b, rtol=1e-5)


def test_reshape_propagates_new_input_shape():
    net = engine.Net(net_text(ip("a", "data", 2)), engine.TEST)
    net.blobs["data"].reshape(7, 3)
    net.reshape()
    assert net.blobs["a"].shape == (7, 2)
    assert net.forward(data=np.zeros((7, 3)))["a"].shape == (7, 2)


def test_constructor_forms(tmp_path):
    text = net_text(ip("a", "data", 2))
    path = tmp_path / "n.prototxt"
    path.write_text(text)
    msg = crema_pb2.NetParameter()
    from google.protobuf import text_format
    text_format.Merge(text, msg)
    a = engine.Net(str(path), engine.TEST)
    weights = tmp_path / "w.caffemodel"
    a.save(str(weights))
    for net in (engine.Net(str(path), str(weights), engine.TEST),
                engine.Net(str(path), engine.TEST, weights=str(weights)),
                engine.Net(msg, phase=engine.TEST, weights=str(weights))):
        np.testing.assert_array_equal(net.params["a"][0].data, a.params["a"][0].data)
    assert engine.Net(text, engine.TRAIN).phase == engine.TRAIN


def test_pycaffe_attributes():
    net = engine.Net(net_text(ip("a", "data", 2)), engine.TEST)
    assert list(net.blobs) == ["data", "a"] and list(net.params) == ["a"]
    assert [l.type for l in net.layers] == ["Input", "InnerProduct"]
    assert net.layer_dict["a"] is net.layers[1] and net.layers[1].blobs is net.params["a"]
    assert net.top_names["a"] == ["a"] and net.bottom_names["a"] == ["data"]
    b = net.blobs["data"]
    assert (b.num, b.channels, b.height, b.width, b.count) == (2, 3, 1, 1, 6)
    assert net.blobs["a"].data.dtype == np.float32


def test_mode_and_type_list():
    engine.set_mode_cpu()
    with pytest.raises(engine.CremaError, match="no GPU backend"):
        engine.set_mode_gpu()
    types = engine.layer_type_list()
    for t in ["Convolution", "Deconvolution", "Pooling", "LSTM", "RNN", "Python", "HDF5Data",
              "SoftmaxWithLoss", "BatchNorm", "Split", "Input"]:
        assert t in types


def test_legacy_input_dim_net():
    text = ('name: "old" input: "data" input_dim: 2 input_dim: 3 input_dim: 1 input_dim: 1\n'
            + ip("a", "data", 2))
    net = engine.Net(text, engine.TEST)
    assert net.inputs == ["data"] and net.blobs["data"].shape == (2, 3, 1, 1)
    assert net.blobs["a"].shape == (2, 2)


def test_v1_layers_net():
    text = ('name: "v1" input: "data" input_dim: 1 input_dim: 1 input_dim: 5 input_dim: 5\n'
            'layers { name: "c" type: CONVOLUTION bottom: "data" top: "c" blobs_lr: 1 blobs_lr: 2 '
            'convolution_param { num_output: 2 kernel_size: 3 } }\n'
            'layers { name: "r" type: RELU bottom: "c" top: "c" }\n')
    net = engine.Net(text, engine.TEST)
    assert [l.type for l in net.layers] == ["Input", "Convolution", "ReLU"]
    assert net.blobs["c"].shape == (1, 2, 3, 3) and net.params_lr == [1.0, 2.0]


def test_forward_reshapes_implicitly_after_an_input_reshape():
    """pycaffe scripts reshape an input blob and call forward() without net.reshape(), relying
    on Caffe's Layer::Forward reshaping first."""
    import engine
    net = engine.Net('''name: "r"
        layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 dim: 5 dim: 5 } } }
        layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
                convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" } } }
        layer { name: "pool" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
        layer { name: "ip" type: "InnerProduct" bottom: "p" top: "y" inner_product_param { num_output: 4 } }''',
                     engine.TEST)
    net.blobs["x"].reshape(3, 2, 5, 5)  # a new batch size (InnerProduct fixes the rest)
    x = np.random.default_rng(0).standard_normal((3, 2, 5, 5)).astype(np.float32)
    net.blobs["x"].data[...] = x
    out = net.forward()
    assert net.blobs["c"].shape == (3, 3, 3, 3) and net.blobs["p"].shape == (3, 3, 2, 2)
    assert out["y"].shape == (3, 4)
    # same answer as an explicit reshape
    expected = out["y"].copy()
    net.reshape()
    np.testing.assert_allclose(net.forward(x=x)["y"], expected, rtol=1e-6)
    # a new image size flows through the convolution and pooling layers
    net.blobs["x"].reshape(1, 2, 9, 7)
    net.forward(end="pool")
    assert net.blobs["c"].shape == (1, 3, 7, 5) and net.blobs["p"].shape == (1, 3, 4, 3)


PYCAFFE_NET = '''name: "pc"
layer { name: "in" type: "Input" top: "x" top: "t"
        input_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
force_backward: true'''


def test_pycaffe_index_views_and_hdf5_io(tmp_path):
    import engine
    net = engine.Net(PYCAFFE_NET, engine.TRAIN)
    assert net._blob_names == ["x", "t", "y", "loss"]
    assert net._inputs == [0, 1] and net._outputs == [3]
    assert net._bottom_ids(1) == [0] and net._top_ids(1) == [2] and net._bottom_ids(2) == [2, 1]
    g = np.random.default_rng(1)
    net.blobs["x"].data[...] = g.standard_normal((2, 3))
    loss = net._forward(0, 2)
    assert loss == pytest.approx(float(net.blobs["loss"].data))
    net._backward(2, 0)
    assert np.any(net.blobs["x"].diff != 0)
    path = tmp_path / "w.caffemodel"  # not an .h5 suffix: save_hdf5 still writes HDF5
    net.save_hdf5(str(path))
    import h5py
    assert h5py.is_hdf5(path)
    other = engine.Net(PYCAFFE_NET, engine.TRAIN)
    other.load_hdf5(str(path))
    np.testing.assert_array_equal(other.params["ip"][0].data, net.params["ip"][0].data)


def test_forward_backward_all_matches_per_item_passes():
    import engine
    net = engine.Net(PYCAFFE_NET, engine.TRAIN)
    g = np.random.default_rng(2)
    x = g.standard_normal((5, 3)).astype(np.float32)
    t = g.standard_normal((5, 4)).astype(np.float32)
    outs, diffs = net.forward_backward_all(blobs=["y"], x=x, t=t)
    assert outs["y"].shape == (5, 4) and diffs["x"].shape == (5, 3)
    W, b = net.params["ip"][0].data, net.params["ip"][1].data
    np.testing.assert_allclose(outs["y"], x @ W.T + b, rtol=1e-5, atol=1e-6)
    # EuclideanLoss over a batch of 2: d/dx = (y - t) W / batch
    np.testing.assert_allclose(diffs["x"], (outs["y"] - t) @ W / 2, rtol=1e-4, atol=1e-6)


def test_blob_over_int_max_is_refused_at_build_time():
    import engine
    from engine.errors import CremaError
    with pytest.raises(CremaError, match="more than Caffe's limit"):
        engine.Net('name: "big" layer { name: "in" type: "Input" top: "x" '
                   'input_param { shape { dim: 1 dim: 1 dim: 46341 dim: 46341 } } }', engine.TEST)


def test_forward_backward_times_the_training_passes_per_layer():
    """net.forward_backward(fwd, bwd) adds each layer's wall time of the passes a solver
    iteration runs: the forward of a ReLU fused into its convolution costs nothing of its own, and
    the input layer, which needs no backward, gets no backward time."""
    net = engine.Net("""name: "t"
        layer { name: "in" type: "Input" top: "x" top: "t"
          input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 dim: 4 dim: 6 dim: 6 } } }
        layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
          convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" } } }
        layer { name: "relu" type: "ReLU" bottom: "c" top: "c" }
        layer { name: "loss" type: "EuclideanLoss" bottom: "c" bottom: "t" top: "l" }
        """, engine.TRAIN)
    rng = np.random.default_rng(0)
    net.blobs["x"].data[...] = rng.standard_normal(net.blobs["x"].shape)
    untimed = net.forward_backward()
    fwd, bwd = [0.0] * 4, [0.0] * 4
    assert net.forward_backward(fwd, bwd) == untimed
    assert fwd[1] > 0 and fwd[3] > 0 and bwd[1] > 0 and bwd[3] > 0
    assert bwd[0] == 0.0  # the input layer is not run backward
    if net.fused_layers():  # native float32 kernels: the ReLU's forward ran in the convolution
        assert fwd[2] == 0.0 and bwd[2] > 0
    else:
        assert fwd[2] > 0


def test_pycaffe_layer_callbacks_see_every_layer_in_order():
    """net.before_forward/after_forward/before_backward/after_backward (pycaffe's Net callbacks):
    fn(i) around each layer's step, forward in layer order, backward in reverse order and also for
    layers that skip backward; a watched convolution does not fuse its ReLU, so the callback after
    it sees the convolution's own (negative-valued) output."""
    net = engine.Net("""name: "cb"
        layer { name: "in" type: "Input" top: "x" top: "t"
          input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } shape { dim: 2 dim: 4 dim: 4 dim: 4 } } }
        layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
          convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" } } }
        layer { name: "relu" type: "ReLU" bottom: "c" top: "c" }
        layer { name: "loss" type: "EuclideanLoss" bottom: "c" bottom: "t" top: "l" }
        """, engine.TRAIN)
    net.blobs["x"].data[...] = np.random.default_rng(1).standard_normal(net.blobs["x"].shape)
    calls, conv_min = [], []
    net.before_forward(lambda i: calls.append(("bf", i)))
    net.after_forward(lambda i: calls.append(("af", i)))
    net.after_forward(lambda i: conv_min.append(float(net.blobs["c"].data.min())) if i == 1 else None)
    net.before_backward(lambda i: calls.append(("bb", i)))
    net.after_backward(lambda i: calls.append(("ab", i)))
    net.forward()
    net.backward()
    assert calls == [(k, i) for i in range(4) for k in ("bf", "af")] + \
        [(k, i) for i in (3, 2, 1, 0) for k in ("bb", "ab")]
    assert conv_min[0] < 0  # the ReLU had not run yet: no fusion while callbacks watch
    assert net.blobs["c"].data.min() >= 0
