"""Bad input never crashes, hangs or leaks a non-crema exception: malformed prototxt, unknown
fields and layers, missing bottoms, wrong shapes, corrupt weights. Messages name file:line:column
for syntax and layer name/type/blob for graph errors."""
import random

import numpy as np
import pytest
from google.protobuf import text_format
from hypothesis import HealthCheck, given, settings, strategies as st

import engine
from engine import CremaError

TINY = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def test_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  type "ReLU"\n}\n')
    with pytest.raises(engine.PrototxtError) as err:
        engine.Net(str(path), engine.TEST)
    assert f"{path}:4:" in str(err.value)
    assert err.value.line == 4


def test_unknown_field_names_the_field_and_line():
    with pytest.raises(engine.PrototxtError, match=r"<string>:5:.*kernal_size"):
        engine.Net(TINY.replace("num_output: 4 kernel_size", "num_output: 4\n kernal_size"),
                   engine.TEST)


def test_unknown_layer_type_lists_the_known_ones(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(TINY.replace('type: "ReLU"', 'type: "ReLUX"'))
    with pytest.raises(engine.UnknownLayerError) as err:
        engine.Net(str(path), engine.TEST)
    msg = str(err.value)
    assert f"{path}:5:" in msg and "'relu'" in msg and "ReLUX" in msg
    assert "Convolution" in msg and "SoftmaxWithLoss" in msg


def test_missing_bottom_names_layer_and_blob():
    with pytest.raises(engine.NetError, match=r"<string>:7: layer 'ip' \(type InnerProduct\): "
                                              r"unknown bottom blob 'poool'"):
        engine.Net(TINY.replace('bottom: "pool" top: "ip"', 'bottom: "poool" top: "ip"'), engine.TEST)


def test_layer_shape_error_names_layer_and_shapes():
    bad = TINY.replace("kernel_size: 3", "kernel_size: 9")
    with pytest.raises(engine.LayerError, match=r"layer 'conv' \(type Convolution\)"):
        engine.Net(bad, engine.TEST)


def test_forward_input_of_wrong_shape_names_both_shapes():
    net = engine.Net(TINY, engine.TEST)
    with pytest.raises(engine.ShapeError, match=r"\(2, 3, 6, 6\).*\(2, 3, 5, 5\)"):
        net.forward(data=np.zeros((2, 3, 5, 5), np.float32))


def test_missing_model_file_and_binary_model_file(tmp_path):
    with pytest.raises(engine.PrototxtError, match="file not found"):
        engine.Net(str(tmp_path / "nope.prototxt"), engine.TEST)
    binary = tmp_path / "model.prototxt"
    binary.write_bytes(b"\x0a\x04name\xff\xfe\x00")
    with pytest.raises(engine.PrototxtError, match="UTF-8"):
        engine.Net(str(binary), engine.TEST)


def test_weights_of_wrong_shape_name_layer_blob_and_shapes(tmp_path):
    net = engine.Net(TINY, engine.TEST)
    path = tmp_path / "w.caffemodel"
    net.save(str(path))
    other = engine.Net(TINY.replace("num_output: 3", "num_output: 5"), engine.TEST)
    with pytest.raises(engine.WeightsError) as err:
        other.copy_from(str(path))
    msg = str(err.value)
    # 4 channels x 2 x 2 after the pool: the file holds (3, 16), the net wants (5, 16)
    assert "'ip' (type InnerProduct)" in msg and "blob 0" in msg
    assert "(3, 16)" in msg and "(5, 16)" in msg and str(path) in msg


def mutate(text, rnd):
    """One random edit that keeps sizes small: delete, duplicate or swap a span, or insert
    punctuation or a word. Digits are never inserted, so no mutant asks for a huge blob."""
    pieces = ["{", "}", ":", '"', " ", "\n", "layer", "top", "bottom", "type", "name", "phase",
              "TRAIN", "kernel_size", "pad", "stride", "#", "-", "."]
    i = rnd.randrange(len(text))
    j = min(len(text), i + rnd.randrange(1, 12))
    op = rnd.randrange(4)
    if op == 0:
        return text[:i] + text[j:]
    if op == 1:
        return text[:j] + text[i:j] + text[j:]
    if op == 2:
        k = rnd.randrange(len(text))
        return text[:i] + text[k:k + (j - i)] + text[j:]
    return text[:i] + rnd.choice(pieces) + text[i:]


def base_texts(nets_dir):
    from tests.net.test_shared_nets import with_dummy_data  # noqa: E402 (shared helper)
    texts = [TINY, (nets_dir / "lenet/lenet.prototxt").read_text()]
    for rel, shape in [("lenet/lenet_train_test.prototxt", (1, 28, 28)),
                       ("cifar10_quick/cifar10_quick_train_test.prototxt", (3, 32, 32))]:
        param = with_dummy_data(nets_dir / rel, shape)
        for layer in param.layer:  # small batches keep each mutant quick
            for s in layer.dummy_data_param.shape:
                s.dim[0] = 2
        texts.append(text_format.MessageToString(param))
    return texts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n_edits=st.integers(1, 4), which=st.integers(0, 3))
def test_mutated_nets_raise_only_crema_errors(nets_dir, seed, n_edits, which):
    rnd = random.Random(seed)
    text = base_texts(nets_dir)[which]
    for _ in range(n_edits):
        text = mutate(text, rnd)
    for phase in (engine.TRAIN, engine.TEST):
        try:
            net = engine.Net(text, phase)
            net.forward()
            net.backward()
        except CremaError:
            pass


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_caffemodel_raises_only_weights_errors(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("w")
    net = engine.Net(TINY, engine.TEST)
    path = tmp / "w.caffemodel"
    net.save(str(path))
    raw = bytearray(path.read_bytes())
    kind = data.draw(st.sampled_from(["truncate", "flip", "insert", "garbage"]))
    if kind == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    elif kind == "insert":
        pos = data.draw(st.integers(0, len(raw)))
        raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
    else:
        raw = bytearray(data.draw(st.binary(max_size=256)))
    path.write_bytes(bytes(raw))
    fresh = engine.Net(TINY, engine.TEST)
    try:
        fresh.copy_from(str(path))
    except engine.WeightsError:
        return
    # A mutant that still parses and fits must have loaded real numbers into every blob.
    for blobs in fresh.params.values():
        assert all(b.data.dtype == np.float32 for b in blobs)
