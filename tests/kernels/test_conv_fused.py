"""Fused convolution + bias + ReLU (negative_slope) forward: the kernels' epilogue flag (direct
fewc / blocked / scalar and the Winograd output transform) against conv_forward followed by
Caffe's ReLU, bitwise, for every usable ISA; and engine.net's Convolution + in-place ReLU fusion:
net outputs and every gradient equal with fusion on and off (CREMA_FUSE=0), per ISA, the fused
layers marked, partial forwards and CREMA_KERNELS=reference still exact. And the in-place
ReLU + MAX pooling fusion of the backward pass: diffs equal with fusion on and off, on every ISA
and the numpy path, only where it is exact (slope 0 or disjoint windows), only within the range.
"""
import numpy as np
import pytest

import engine
from engine import kernels

ISAS = kernels.runnable_isas()

# (N, C, H, W, K, R, S, pad_h, pad_w, stride_h, stride_w, dil_h, dil_w, group)
GEOMS = [
    (3, 1, 17, 19, 20, 5, 5, 0, 0, 1, 1, 1, 1, 1),      # few input channels (fewc)
    (1, 3, 23, 21, 11, 11, 11, 2, 2, 3, 3, 1, 1, 1),    # 11x11 stride 3
    (3, 20, 13, 11, 37, 3, 3, 1, 1, 2, 2, 1, 1, 1),     # blocked, stride 2, channel tails
    (1, 24, 9, 10, 18, 3, 3, 2, 1, 1, 1, 2, 2, 2),      # dilation 2, groups 2
    (3, 17, 7, 9, 17, 1, 1, 0, 0, 1, 1, 1, 1, 1),       # 1x1
    (1, 16, 8, 9, 16, 3, 3, 1, 1, 1, 1, 1, 1, 16),      # depthwise
]


def relu_ref(y, slope):
    return np.maximum(y, 0) + np.float32(slope) * np.minimum(y, 0)


def arrays(geo, seed):
    n, c, h, w, k, r, s, ph, pw, sh, sw, dh, dw, g = geo
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    wt = rng.standard_normal((k, c // g, r, s), dtype=np.float32)
    b = rng.standard_normal(k, dtype=np.float32)
    p, q = kernels.conv_output_hw(geo)
    return x, wt, b, np.empty((n, k, p, q), np.float32)


def first_difference(a, b):
    bad = np.argwhere(a != b)
    return f"first difference at {tuple(bad[0])}: {a[tuple(bad[0])]} vs {b[tuple(bad[0])]}"


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("slope", [0.0, 0.25])
@pytest.mark.parametrize("geo", GEOMS)
def test_direct_relu_epilogue_matches_conv_then_relu(monkeypatch, isa, slope, geo):
    kernels.set_max_isa(isa)
    x, wt, b, y = arrays(geo, 1)
    ws = np.empty(max(1, kernels.conv_workspace_size(geo)), np.float32)
    for bias in (b, None):
        kernels.conv_forward(x, wt, bias, y, geo, ws)
        want = relu_ref(y, slope)
        got = np.full_like(y, np.nan)
        kernels.conv_forward(x, wt, bias, got, geo, ws, relu=True, negative_slope=slope)
        name = kernels.conv_kernel_name("fwd", geo, x)
        assert np.array_equal(got, want), f"{name} bias={bias is not None}: " + \
            first_difference(got, want)
        assert (got < 0).any() == (slope > 0)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("slope", [0.0, 0.1])
@pytest.mark.parametrize("geo", [(3, 5, 9, 11, 19, 3, 3, 1, 1, 1, 1, 1, 1, 1),
                                 (1, 18, 14, 13, 33, 3, 3, 0, 2, 1, 1, 1, 1, 1)])
@pytest.mark.parametrize("tile", [2, 4])
def test_winograd_relu_epilogue_matches_conv_then_relu(monkeypatch, isa, slope, geo, tile):
    kernels.set_max_isa(isa)
    x, wt, b, y = arrays(geo, 2)
    kernels.winograd_conv2d_forward(x, wt, b, y, geo, tile=tile)
    got = np.full_like(y, np.nan)
    kernels.winograd_conv2d_forward(x, wt, b, got, geo, tile=tile, relu=True,
                                    negative_slope=slope)
    want = relu_ref(y, slope)
    assert np.array_equal(got, want), kernels.winograd_kernel_name(geo) + ": " + \
        first_difference(got, want)


def test_numpy_fallback_applies_the_epilogue(monkeypatch):
    monkeypatch.setenv("CREMA_KERNELS", "reference")
    geo = GEOMS[2]
    x, wt, b, y = arrays(geo, 3)
    kernels.conv_forward(x, wt, b, y, geo)
    got = np.empty_like(y)
    kernels.conv_forward(x, wt, b, got, geo, relu=True, negative_slope=0.5)
    np.testing.assert_array_equal(got, relu_ref(y, 0.5))


CONV = ('layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
        'convolution_param {{ num_output: {k} kernel_size: {r} pad: {pad} stride: {stride} '
        'group: {group} weight_filler {{ type: "gaussian" std: 0.3 }} '
        'bias_filler {{ type: "gaussian" std: 0.3 }} }} }}\n')
RELU = ('layer {{ name: "{name}" type: "ReLU" bottom: "{blob}" top: "{top}" '
        'relu_param {{ negative_slope: {slope} }} }}\n')


def fused_net_text():
    return (
        'force_backward: true\n'
        'layer { name: "data" type: "Input" top: "data" '
        'input_param { shape { dim: 3 dim: 3 dim: 15 dim: 13 } } }\n'
        + CONV.format(name="conv1", bottom="data", k=20, r=5, pad=2, stride=1, group=1)
        + RELU.format(name="relu1", blob="conv1", top="conv1", slope=0)
        + CONV.format(name="conv2", bottom="conv1", k=18, r=3, pad=1, stride=1, group=2)
        + RELU.format(name="relu2", blob="conv2", top="conv2", slope=0.1)
        + CONV.format(name="conv3", bottom="conv2", k=7, r=3, pad=0, stride=2, group=1)
        # not in place: no fusion (conv3's pre-ReLU value stays readable)
        + RELU.format(name="relu3", blob="conv3", top="relu3", slope=0)
        + CONV.format(name="conv4", bottom="relu3", k=5, r=1, pad=0, stride=1, group=1))


def run_net(monkeypatch, isa, fuse, kernels_mode=None):
    kernels.set_max_isa(isa)
    monkeypatch.setenv("CREMA_FUSE", "1" if fuse else "0")
    if kernels_mode:
        monkeypatch.setenv("CREMA_KERNELS", kernels_mode)
    net = engine.Net(fused_net_text(), engine.TRAIN)
    rng = np.random.default_rng(7)
    for name, blobs in net.params.items():  # the same weights in every run
        for blob in blobs:
            blob.data[...] = rng.standard_normal(blob.shape).astype(blob.data.dtype)
    x = rng.standard_normal(net.blobs["data"].shape).astype(np.float32)
    out = {k: v.copy() for k, v in net.forward(data=x).items()}
    dtop = rng.standard_normal(net.blobs["conv4"].shape).astype(np.float32)
    diffs = {k: v.copy() for k, v in net.backward(conv4=dtop).items()}
    grads = {f"{n}[{i}]": b.diff.copy() for n, bl in net.params.items() for i, b in enumerate(bl)}
    blobs = {n: b.data.copy() for n, b in net.blobs.items()}
    return net, out, diffs, grads, blobs


@pytest.mark.parametrize("isa", ISAS)
def test_net_fusion_on_and_off_agree(monkeypatch, isa):
    fused, *res_on = run_net(monkeypatch, isa, True)
    plain, *res_off = run_net(monkeypatch, isa, False)
    assert [f[:2] for f in fused.fused_layers()] == [("conv1", "relu1"), ("conv2", "relu2")]
    assert plain.fused_layers() == []
    assert fused.layer_dict["conv1"].fused_relu and fused.layer_dict["conv1"].relu_applied
    assert fused.layer_dict["relu2"].fused_into == "conv2"
    assert not fused.layer_dict["conv3"].fused_relu
    assert not plain.layer_dict["conv1"].relu_applied
    for what, on, off in zip(("outputs", "input diffs", "param diffs", "blobs"), res_on, res_off):
        assert on.keys() == off.keys()
        for k in on:
            np.testing.assert_array_equal(on[k], off[k], err_msg=f"{isa}: {what} {k}")
    assert (res_on[3]["conv2"] < 0).any()  # the slope 0.1 ReLU ran (fused)


def test_net_partial_forward_keeps_pre_relu_value(monkeypatch):
    net = engine.Net(fused_net_text(), engine.TRAIN)
    x = np.random.default_rng(3).standard_normal(net.blobs["data"].shape).astype(np.float32)
    pre = net.forward(end="conv1", data=x)["conv1"].copy()
    assert not net.layer_dict["conv1"].relu_applied
    assert (pre < 0).any()
    net.forward(start="relu1", end="relu1")
    np.testing.assert_array_equal(net.blobs["conv1"].data, np.maximum(pre, 0))
    full = net.forward(data=x, end="relu1")["conv1"]
    assert net.layer_dict["conv1"].relu_applied
    np.testing.assert_array_equal(full, np.maximum(pre, 0))


def test_net_reference_kernels_do_not_fuse_and_agree(monkeypatch):
    isa = ISAS[0]
    ref, *res_ref = run_net(monkeypatch, isa, True, kernels_mode="reference")
    assert not ref.layer_dict["conv1"].relu_applied  # numpy path: the ReLU layer ran
    monkeypatch.delenv("CREMA_KERNELS")
    _, *res_nat = run_net(monkeypatch, isa, True)
    # float32 rounding scales with the blob's magnitude (conv4 sums terms of a few hundred, so a
    # cancelling element near 1 can be 3e-4 off): the tolerance follows the blob's largest value
    for k, v in res_ref[0].items():
        np.testing.assert_allclose(res_nat[0][k], v, rtol=1e-4,
                                   atol=1e-5 * (np.abs(v).max() + 1), err_msg=k)
    for k, v in res_ref[2].items():
        np.testing.assert_allclose(res_nat[2][k], v, rtol=1e-3,
                                   atol=1e-4 * (np.abs(v).max() + 1), err_msg=k)


# ---- forward weight cache ---------------------------------------------------------------------

@pytest.mark.parametrize("geo", [GEOMS[2], GEOMS[3], GEOMS[4], GEOMS[0]])
def test_weight_cache_repacks_exactly_when_weights_change(monkeypatch, geo):
    x, wt, b, y = arrays(geo, 4)
    ws = np.empty(max(1, kernels.conv_workspace_size(geo)), np.float32)
    cache = np.zeros(max(1, kernels.conv_weight_cache_size(geo)), np.float32)
    got = np.empty_like(y)
    # every ISA in turn on ONE cache (a cache packed for 16 lanes must not serve 8), and back
    for isa in ISAS + ISAS[::-1]:
        kernels.set_max_isa(isa)
        name = kernels.conv_kernel_name("fwd", geo, x)
        for step in range(3):
            if step == 2:  # an in-place update, as a solver makes: the last weight only
                wt.reshape(-1)[-1] += np.float32(0.5)
            kernels.conv_forward(x, wt, b, y, geo, ws)
            kernels.conv_forward(x, wt, b, got, geo, ws, weight_cache=cache)
            assert np.array_equal(got, y), f"{isa} {name} step {step}: " + \
                first_difference(got, y)


def test_weight_cache_binding_checks():
    geo = GEOMS[2]
    x, wt, b, y = arrays(geo, 5)
    ws = np.empty(max(1, kernels.conv_workspace_size(geo)), np.float32)
    need = kernels.conv_weight_cache_size(geo)
    assert need > wt.size  # the copy plus the packed form
    with pytest.raises(ValueError, match="float32"):
        kernels.conv_forward(x, wt, b, y, geo, ws, weight_cache=np.zeros(need, np.float64))
    if "blocked" in kernels.conv_kernel_name("fwd", geo, x):  # only blocked kernels pack weights
        with pytest.raises(ValueError, match="weight_cache has"):
            kernels.conv_forward(x, wt, b, y, geo, ws,
                                 weight_cache=np.zeros(need - 1, np.float32))
        with pytest.raises(ValueError, match="overlap"):
            kernels.conv_forward(x, wt, b, y, geo, ws, weight_cache=ws[:need])


def test_layer_forward_sees_in_place_weight_updates(monkeypatch):
    net = engine.Net(fused_net_text(), engine.TEST)
    x = np.random.default_rng(6).standard_normal(net.blobs["data"].shape).astype(np.float32)
    first = net.forward(data=x)["conv4"].copy()
    np.testing.assert_array_equal(net.forward(data=x)["conv4"], first)  # cached pack
    for blobs in net.params.values():
        blobs[0].data[...] *= np.float32(0.5)  # in place, as the solver updates
    after = net.forward(data=x)["conv4"].copy()
    monkeypatch.setenv("CREMA_FUSE", "0")
    fresh = engine.Net(fused_net_text(), engine.TEST)
    for name, blobs in net.params.items():
        for i, blob in enumerate(blobs):
            fresh.params[name][i].data[...] = blob.data
    np.testing.assert_array_equal(fresh.forward(data=x)["conv4"], after)
    assert not np.array_equal(after, first)


# -- in-place ReLU + MAX pooling: the ReLU's backward inside the pooling's -------------------------

POOL = ('layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}" '
        'pooling_param {{ pool: {pool} kernel_size: {k} stride: {s} }} }}\n')


def pool_net_text():
    return ('name: "pool_relu"\n'
            'force_backward: true\n'
            'layer { name: "data" type: "Input" top: "data" '
            'input_param { shape { dim: 2 dim: 3 dim: 19 dim: 18 } } }\n'
            + CONV.format(name="conv1", bottom="data", k=8, r=3, pad=1, stride=1, group=1)
            + RELU.format(name="relu1", blob="conv1", top="conv1", slope=0)
            + POOL.format(name="pool1", bottom="conv1", pool="MAX", k=2, s=2)    # fuses
            + CONV.format(name="conv2", bottom="pool1", k=8, r=3, pad=1, stride=1, group=1)
            + RELU.format(name="relu2", blob="conv2", top="conv2", slope=0.1)
            + POOL.format(name="pool2", bottom="conv2", pool="MAX", k=3, s=2)    # overlaps: no
            + CONV.format(name="conv3", bottom="pool2", k=6, r=1, pad=0, stride=1, group=1)
            + RELU.format(name="relu3", blob="conv3", top="conv3", slope=0)
            + POOL.format(name="pool3", bottom="conv3", pool="MAX", k=3, s=1)    # slope 0: fuses
            + CONV.format(name="conv4", bottom="pool3", k=4, r=1, pad=0, stride=1, group=1)
            + RELU.format(name="relu4", blob="conv4", top="conv4", slope=0.2)
            + POOL.format(name="pool4", bottom="conv4", pool="MAX", k=1, s=1)    # disjoint: fuses
            + RELU.format(name="relu5", blob="pool4", top="pool4", slope=0)
            + POOL.format(name="pool5", bottom="pool4", pool="AVE", k=2, s=1))   # AVE: no


def pool_net(monkeypatch, isa, fuse, kernels_mode=None):
    """The net with the same weights every time, run forward on the same input."""
    kernels.set_max_isa(isa)
    monkeypatch.setenv("CREMA_FUSE", "1" if fuse else "0")
    if kernels_mode:
        monkeypatch.setenv("CREMA_KERNELS", kernels_mode)
    net = engine.Net(pool_net_text(), engine.TRAIN)
    rng = np.random.default_rng(11)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.standard_normal(blob.shape).astype(blob.data.dtype)
    net.forward(data=rng.standard_normal(net.blobs["data"].shape).astype(np.float32))
    return net, rng


def run_pool_net(monkeypatch, isa, fuse, kernels_mode=None):
    net, rng = pool_net(monkeypatch, isa, fuse, kernels_mode)
    dtop = rng.standard_normal(net.blobs["pool5"].shape).astype(np.float32)
    diffs = {k: v.copy() for k, v in net.backward(pool5=dtop).items()}
    grads = {f"{n}[{i}]": b.diff.copy() for n, bl in net.params.items() for i, b in enumerate(bl)}
    blob_diffs = {n: b.diff.copy() for n, b in net.blobs.items()}
    return net, diffs, grads, blob_diffs


@pytest.mark.parametrize("kernels_mode", [None, "reference"])
def test_pool_applies_the_relu_backward_exactly(monkeypatch, kernels_mode):
    """Fused and unfused backward give the same diffs bit for bit (zeros compare equal whatever
    their sign), on every ISA and on the numpy path; the fused ReLUs' backward is skipped."""
    for isa in ISAS if kernels_mode is None else ISAS[:1]:
        fused, *on = run_pool_net(monkeypatch, isa, True, kernels_mode)
        plain, *off = run_pool_net(monkeypatch, isa, False, kernels_mode)
        layers = fused.layer_dict
        assert [n for n in ("pool1", "pool2", "pool3", "pool4", "pool5")
                if layers[n].fused_relu_backward] == ["pool1", "pool3", "pool4"]
        assert layers["relu4"].backward_fused_into == "pool4"
        assert layers["pool1"].relu_backward_applied and layers["pool3"].relu_backward_applied
        assert not plain.layer_dict["pool1"].fused_relu_backward
        for what, a, b in zip(("input diffs", "param diffs", "blob diffs"), on, off):
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{isa}: {what} {k}")
        assert (on[2]["conv1"] == 0).any() and (on[2]["conv1"] != 0).any()


def test_pool_relu_fusion_only_when_the_relu_runs_in_the_range(monkeypatch):
    """A backward range that ends at the pooling leaves the ReLU's input diff unmasked, as the
    unfused net does (the ReLU has not run yet)."""
    isa = ISAS[0]
    results = []
    for fuse in (True, False):
        net, rng = pool_net(monkeypatch, isa, fuse)
        net.blobs["pool1"].diff[...] = rng.standard_normal(net.blobs["pool1"].shape)
        net.backward(start="pool1", end="pool1")
        assert not net.layer_dict["pool1"].relu_backward_applied
        results.append(net.blobs["conv1"].diff.copy())
    np.testing.assert_array_equal(results[0], results[1])
    assert (results[0][net.blobs["conv1"].data <= 0] != 0).any()  # not masked: ReLU not run
