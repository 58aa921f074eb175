"""engine.draw: pycaffe's caffe.draw API over crema's one drawing implementation."""
import shutil

import pytest

import engine
import engine.draw as draw
from engine import layers as L, params as P
from engine.proto import caffe_pb2

needs_graphviz = pytest.mark.skipif(shutil.which("dot") is None,
                                    reason="Graphviz 'dot' is not installed")


def small_net():
    n = engine.NetSpec()
    n.data, n.label = L.Data(batch_size=8, source="db", backend=P.Data.LMDB, ntop=2,
                             include=dict(phase=caffe_pb2.TRAIN))
    n.conv = L.Convolution(n.data, kernel_size=3, num_output=4, pad=1, stride=2,
                           param=[dict(lr_mult=1), dict(lr_mult=2)])
    n.relu = L.ReLU(n.conv, in_place=True)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.AVE, kernel_size=2, stride=2)
    n.ip = L.InnerProduct(n.pool, num_output=3)
    n.acc = L.Accuracy(n.ip, n.label, include=dict(phase=caffe_pb2.TEST))
    n.loss = L.SoftmaxWithLoss(n.ip, n.label)
    return n.to_proto(name="small")


def layer(net, name):
    return next(lp for lp in net.layer if lp.name == name)


def test_labels_colours_and_edge_labels():
    net = small_net()
    conv, pool, ip = layer(net, "conv"), layer(net, "pool"), layer(net, "ip")
    assert draw.get_layer_label(conv, "LR") == \
        '"conv\\n(Convolution)\\nkernel size: 3\\nstride: 2\\npad: 1"'
    assert draw.get_layer_label(pool, "TB") == \
        '"pool (Pooling AVE) kernel size: 2 stride: 2 pad: 0"'
    assert draw.get_layer_label(conv, "BT", display_lrm=True).endswith('lr mult: 1.0, 2.0"')
    assert draw.get_layer_label(ip, "TB", display_lrm=True) == \
        '"ip (InnerProduct) lr mult: 1.0, 1.0"'
    assert draw.get_layer_lr_mult(conv) == (1.0, 2.0)
    assert draw.get_layer_lr_mult(ip) == (1.0, 1.0)
    with pytest.raises(ValueError, match="Pooling layers do not have a learning rate"):
        draw.get_layer_lr_mult(pool)
    assert draw.get_pooling_types_dict() == {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}
    assert draw.get_edge_label(layer(net, "data")) == "Batch 8"
    assert draw.get_edge_label(conv) == "4" and draw.get_edge_label(ip) == "3"
    assert draw.get_edge_label(pool) == '""'
    assert [draw.choose_color_by_layertype(t) for t in
            ("Convolution", "Deconvolution", "Pooling", "InnerProduct", "ReLU")] == \
        ["#FF5050", "#FF5050", "#FF9900", "#CC33FF", "#6495ED"]


def labels_of(graph):
    return {n.get_label().strip('"') for n in graph.get_nodes() if n.get_label()}


def test_pydot_graph_structure_and_phases():
    net = small_net()
    graph = draw.get_pydot_graph(net, "LR")
    assert graph.get_name().strip('"') == "small" and graph.get_rankdir() == "LR"
    labels = labels_of(graph)
    assert "acc\\n(Accuracy)" in labels and "data\\n(Data)" in labels
    assert {"data", "label", "conv", "pool", "ip", "loss", "acc"} <= labels
    edges = {(e.get_source().strip('"'), e.get_destination().strip('"')): e.get_label()
             for e in graph.get_edges()}
    assert edges[("layer1_conv_Convolution", "blob_conv")] == '"4"'
    assert edges[("layer0_data_Data", "blob_label")] == '"Batch 8"'
    assert edges[("blob_conv", "layer3_pool_Pooling")] is None
    # the in-place ReLU reads and writes the same blob, and is green as in Caffe
    assert ("blob_conv", "layer2_relu_ReLU") in edges and ("layer2_relu_ReLU", "blob_conv") in edges
    relu = graph.get_node('"layer2_relu_ReLU"')[0]
    assert relu.get_fillcolor() == '"#90EE90"'

    unlabelled = draw.get_pydot_graph(net, "LR", label_edges=False)
    assert all(e.get_label() is None for e in unlabelled.get_edges())
    train = labels_of(draw.get_pydot_graph(net, "TB", phase=caffe_pb2.TRAIN))
    test = labels_of(draw.get_pydot_graph(net, "TB", phase=engine.TEST))
    assert "data (Data)" in train and "acc (Accuracy)" not in train
    assert "acc (Accuracy)" in test and "data (Data)" not in test


def test_names_with_dot_syntax_survive():
    net = small_net()
    layer(net, "conv").name = 'con"v {1}|<x>'
    graph = draw.get_pydot_graph(net, "LR")
    assert any('con\\"v \\{1\\}\\|\\<x\\>' in label for label in labels_of(graph))


def test_raw_output_needs_no_graphviz(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` anywhere
    net = small_net()
    raw = draw.draw_net(net, "LR", ext="raw")
    assert raw.startswith(b'digraph "small" {') and b"rankdir=LR;" in raw
    draw.draw_net_to_file(net, str(tmp_path / "net.raw"), phase=caffe_pb2.TEST)
    text = (tmp_path / "net.raw").read_text()
    assert "(Accuracy)" in text and "(Data)" not in text
    with pytest.raises(draw.MissingProgramError, match="Graphviz program 'dot'"):
        draw.draw_net(net, "LR", ext="png")
    with pytest.raises(engine.CremaError, match="'dot'"):
        draw.draw_net_to_file(net, str(tmp_path / "net.svg"))
    assert not (tmp_path / "net.svg").exists()


@needs_graphviz
def test_rendering_with_graphviz(tmp_path):
    net = small_net()
    layer(net, "conv").name = 'con"v {1}'  # escaped names must still render
    png = draw.draw_net(net, "TB", ext="png", display_lrm=True)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    draw.draw_net_to_file(net, str(tmp_path / "net.svg"), "BT", phase=caffe_pb2.TRAIN)
    svg = (tmp_path / "net.svg").read_text()
    assert "<svg" in svg and "Accuracy" not in svg and "Pooling AVE" in svg
    # the pydot graph is the same drawing, and Graphviz reads what pydot writes of it
    assert draw.get_pydot_graph(net, "LR").create(format="png").startswith(b"\x89PNG")


def test_bad_arguments():
    net = small_net()
    with pytest.raises(engine.CremaError, match="rankdir must be one of"):
        draw.draw_net(net, "XY", ext="raw")
    with pytest.raises(engine.CremaError, match="phase must be"):
        draw.get_pydot_graph(net, "LR", phase=7)
    with pytest.raises(engine.CremaError, match="give the output file an extension"):
        draw.draw_net_to_file(net, "net")
