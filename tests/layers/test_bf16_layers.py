"""Layers in bf16 mode (Net.set_precision("bf16")) against the same layers in float32.

Tolerance (stated): bf16 keeps 8 significant bits (operands off by at most 2^-9 relatively).
Through a whole net a few ReLU signs and MAX-pooling winners flip, and that moves gradients by
up to ~10 % in norm -- as much as float32 itself moves when only its input and weights are
rounded to bf16. So each blob and gradient of the bf16 net must satisfy
    ||bf16 - fp32|| <= 2 ||fp32(bf16-rounded input, weights) - fp32|| + 0.01 ||fp32||
(relative Frobenius norms; the measured values are printed on failure).
A tiny LeNet-like net trained 30 SGD iterations in bf16 tracks float32: its loss stays within
10 % of the float32 run's and falls by the same order."""
import numpy as np
import pytest

import engine
from engine import bf16
from engine.errors import CremaError
from engine.reference import bf16 as ref

NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 8 dim: 3 dim: 12 dim: 12 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 6 kernel_size: 3 stride: 2 group: 2 weight_filler { type: "msra" } } }
layer { name: "deconv" type: "Deconvolution" bottom: "conv2" top: "deconv"
  convolution_param { num_output: 4 kernel_size: 2 stride: 2 weight_filler { type: "msra" } } }
layer { name: "pool" type: "Pooling" bottom: "deconv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool" top: "ip1"
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 transpose: true weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

pytestmark = pytest.mark.skipif(not bf16.available(np.zeros(1, np.float32)),
                                reason="the native kernels are not built or are turned off")


def _net(tmp_path, seed=3):
    path = tmp_path / "tiny.prototxt"
    path.write_text(NET)
    engine.set_random_seed(seed)
    net = engine.Net(str(path), engine.TRAIN)
    rng = np.random.default_rng(seed)
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].shape)
    net.blobs["label"].data[...] = rng.integers(0, 3, 8)
    for layer in net.layers:
        for b in layer.blobs[1:]:  # non-zero biases, so their path is exercised
            b.data[...] = rng.standard_normal(b.shape) * 0.1
    return net


def _run(net):
    net.arena.diff[...] = 0
    net.forward()
    net.backward()
    blobs = {n: b.data.copy() for n, b in net.blobs.items()}
    grads = {f"{l.layer_param.name if hasattr(l, 'layer_param') else i}/{j}": b.diff.copy()
             for i, l in enumerate(net.layers) for j, b in enumerate(l.blobs)}
    grads["data"] = net.blobs["data"].diff.copy()
    return blobs, grads


def _rel(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def test_forward_and_backward_track_fp32(isa, tmp_path):
    net = _net(tmp_path)
    want_blobs, want_grads = _run(net)
    saved = [b.data.copy() for b in (net.blobs["data"], *net.learnable_params)]
    for b in (net.blobs["data"], *net.learnable_params):  # float32's own sensitivity
        b.data[...] = ref.round_bf16(b.data)
    pert_blobs, pert_grads = _run(net)
    for b, v in zip((net.blobs["data"], *net.learnable_params), saved):
        b.data[...] = v
    net.set_precision("bf16")
    assert [l.precision for l in net.layers if hasattr(l, "precision")] == ["bf16"] * 5
    got_blobs, got_grads = _run(net)
    for kind, want, pert, got in (("blob", want_blobs, pert_blobs, got_blobs),
                                  ("gradient", want_grads, pert_grads, got_grads)):
        for name in want:
            if not np.any(want[name]):
                continue
            err, sens = _rel(got[name], want[name]), _rel(pert[name], want[name])
            assert err <= 2 * sens + 0.01, f"{kind} {name}: {err:.3g} (float32 moves {sens:.3g})"
    # bf16 really ran: the outputs are not the float32 ones bit for bit
    assert not np.array_equal(got_blobs["ip1"], want_blobs["ip1"])
    net.set_precision("fp32")
    again, _ = _run(net)
    np.testing.assert_array_equal(again["ip2"], want_blobs["ip2"])


def test_bf16_training_tracks_fp32(tmp_path):
    losses = {}
    for precision in ("fp32", "bf16"):
        net = _net(tmp_path, seed=5)
        net.set_precision(precision)
        run = []
        for _ in range(30):
            net.arena.diff[...] = 0
            run.append(float(net.forward_backward()))
            # lr 0.02: at 0.05 the loss jumps to 5x its start on the way, a chaotic path that
            # no two roundings (not even two float32 kernels) follow within 10 %
            net.arena.data[...] -= 0.02 * net.arena.diff
        losses[precision] = np.array(run)
    fp32, bf = losses["fp32"], losses["bf16"]
    assert fp32[-1] < 0.7 * fp32[0] and bf[-1] < 0.7 * bf[0], losses
    assert np.all(np.abs(bf - fp32) <= 0.1 * fp32), losses


def test_precision_refuses_unknown_values(tmp_path):
    net = _net(tmp_path)
    with pytest.raises(CremaError, match="Net 'tiny': precision must be one of fp32, bf16, "
                                         "got 'fp16'"):
        net.set_precision("fp16")
