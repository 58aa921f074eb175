"""engine.coord_map on FCN-like NetSpec nets: the crop offsets equal exact coordinate
arithmetic, and the Crop layers they make align the feature maps (checked by pushing coordinate
ramps through averaging convolutions, average pooling and bilinear upsampling, which carry a
linear function to the pixel-centre coordinate each output pixel stands for)."""
from fractions import Fraction

import numpy as np
import pytest

import engine
from engine import layers as L, params as P
from engine.coord_map import (AxisMismatchException, CoordMapError, UndefinedMapException,
                              compose, coord_map, coord_map_from_to, crop, inverse)

H, W = 64, 72
PAD1 = 10


def average_conv(bottom, kernel, pad=0, dilation=1):
    """A per-channel mean over a kernel x kernel window: keeps a linear ramp linear."""
    return L.Convolution(bottom, num_output=2, group=2, kernel_size=kernel, pad=pad,
                         dilation=dilation, bias_term=False,
                         weight_filler=dict(type="constant", value=1.0 / kernel ** 2))


def upsample(bottom, factor):
    return L.Deconvolution(bottom, convolution_param=dict(
        num_output=2, group=2, kernel_size=2 * factor, stride=factor, bias_term=False,
        weight_filler=dict(type="bilinear")))


def trunk():
    n = engine.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2, H, W]))
    n.conv1 = average_conv(n.data, 3, pad=PAD1)
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.relu1, pool=P.Pooling.AVE, kernel_size=2, stride=2)
    n.conv2 = average_conv(n.pool1, 3, pad=2, dilation=2)
    n.pool2 = L.Pooling(n.conv2, pooling_param=dict(pool="AVE", kernel_size=2, stride=2))
    n.fc = average_conv(n.pool2, 3)
    return n


# Each step as (kind, kernel extent, stride, pad), from the data onwards.
TRUNK_STEPS = [("conv", 3, 1, PAD1), ("pool", 2, 2, 0), ("conv", 5, 1, 2), ("pool", 2, 2, 0),
               ("conv", 3, 1, 0)]


def data_coordinate(steps, out_coordinate=0):
    """Exact coordinate, in the input of `steps`, of the centre of output pixel
    `out_coordinate` after them, walked back one layer at a time: a conv/pool output pixel o is
    centred on input o * stride - pad + (extent - 1) / 2; a deconv output pixel o sits on
    input (o + pad - (extent - 1) / 2) / stride."""
    x = Fraction(out_coordinate)
    for kind, extent, stride, pad in reversed(steps):
        if kind == "deconv":
            x = (x + pad - Fraction(extent - 1, 2)) / stride
        else:
            x = x * stride - pad + Fraction(extent - 1, 2)
    return x


def ramp_forward(n):
    """Forward a ramp input (channel 0: row coordinate, channel 1: column) through the net."""
    net = engine.Net(n.to_proto(), engine.TEST)
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float32)
    net.blobs["data"].data[0] = np.stack([rows, cols])
    net.forward()
    return net


def assert_aligned(score):
    """score (1, 2, H, W) carries the ramp at the data's own coordinates away from the borders
    (where zero padding and clipped pooling windows bend it)."""
    assert score.shape == (1, 2, H, W)
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float32)
    inner = (slice(20, H - 20), slice(20, W - 20))
    np.testing.assert_allclose(score[0, 0][inner], rows[inner], atol=1e-3)
    np.testing.assert_allclose(score[0, 1][inner], cols[inner], atol=1e-3)


def test_fcn32_crop_offset_and_alignment():
    n = trunk()
    n.upscore = upsample(n.fc, 4)
    n.score = crop(n.upscore, n.data)
    # upscore pixel 0 lies left of data pixel 0; the crop starts at the one on data pixel 0
    expected = -data_coordinate(TRUNK_STEPS + [("deconv", 8, 4, 0)])
    assert expected == PAD1 - 3  # the hand derivation: x_upscore = x_data + PAD1 - 3
    crop_layer = n.to_proto().layer[-1]
    assert crop_layer.type == "Crop" and list(crop_layer.bottom) == ["upscore", "data"]
    assert crop_layer.crop_param.axis == 2
    assert list(crop_layer.crop_param.offset) == [int(expected)]
    ax, a, b = coord_map_from_to(n.upscore, n.data)
    assert ax == 1 and np.all(a == 1) and np.all(b == -expected)
    net = ramp_forward(n)
    assert net.blobs["upscore"].data.shape[2] > H  # the crop really cuts
    assert_aligned(net.blobs["score"].data)


def test_fcn16_skip_crops_between_inner_tops():
    n = trunk()
    n.upscore2 = upsample(n.fc, 2)
    n.score_pool1 = average_conv(n.pool1, 1)
    n.score_pool1c = crop(n.score_pool1, n.upscore2)
    n.fuse = L.Eltwise(n.upscore2, n.score_pool1c, operation=P.Eltwise.SUM, coeff=[0.5, 0.5])
    n.upscore = upsample(n.fuse, 2)
    n.score = crop(n.upscore, n.data)
    layers = {lp.name: lp for lp in n.to_proto().layer}
    # score_pool1 has pool1's coordinates; upscore2 pixel 0 sits on pool1 pixel 1, where the
    # crop of score_pool1 starts
    pool1_to_upscore2 = TRUNK_STEPS[2:] + [("deconv", 4, 2, 0)]
    assert list(layers["score_pool1c"].crop_param.offset) == \
        [data_coordinate(pool1_to_upscore2)] == [1]
    final = TRUNK_STEPS + [("deconv", 4, 2, 0), ("deconv", 4, 2, 0)]
    assert list(layers["score"].crop_param.offset) == [-data_coordinate(final)] == [PAD1 - 2]
    # both fused inputs carry the ramp at the same coordinates, so their mean does too
    assert_aligned(ramp_forward(n).blobs["score"].data)


def test_maps_per_layer_type():
    n = trunk()
    ax, a, b = coord_map(n.conv2.fn)  # extent (3 - 1) * 2 + 1 = 5, pad 2: no shift
    assert ax == 1 and a == 1 and b == 0
    conv = L.Convolution(n.data, num_output=1, kernel_size=5, stride=2, pad=1, dilation=2)
    ax, a, b = coord_map(conv.fn)
    assert ax == 1 and a == 0.5 and b == (1 - 4) / 2
    # flat keywords and a pooling_param dict mean the same layer
    flat = coord_map(n.pool1.fn)
    nested = coord_map(L.Pooling(n.data, pooling_param=dict(kernel_size=2, stride=2)).fn)
    assert flat == nested == (1, 0.5, -0.25)
    legacy = L.Pooling(n.data, kernel_h=3, kernel_w=2, stride_h=1, stride_w=2, pad_h=1, pad_w=0)
    ax, a, b = coord_map(legacy.fn)
    assert np.all(a == [1, 0.5]) and np.all(b == [0, -0.25])
    ax, a, b = coord_map(upsample(n.fc, 4).fn)
    assert ax == 1 and a == 4 and b == 3.5
    assert coord_map(n.relu1.fn) == (None, 1, 0)
    ax, a, b = coord_map(L.Crop(n.conv1, n.data, crop_param=dict(axis=2, offset=[3, 4])).fn)
    assert ax == 1 and a == 1 and np.all(b == [-3, -4])
    with pytest.raises(UndefinedMapException, match="InnerProduct"):
        coord_map(L.InnerProduct(n.fc, num_output=3).fn)
    with pytest.raises(UndefinedMapException, match="global pooling"):
        coord_map(L.Pooling(n.fc, global_pooling=True).fn)


def test_compose_and_inverse():
    m = (1, np.array([0.5]), np.array([-1.5]))
    ax, a, b = compose(m, inverse(m))
    assert ax == 1 and np.all(a == 1) and np.all(b == 0)
    assert compose((None, 1, 0), m)[0] == 1 and compose(m, (None, 1, 0))[0] == 1
    ax, a, b = compose((1, 2, 1), (1, 3, 4))  # x -> 2 * (3 x + 4) + 1
    assert (ax, a, b) == (1, 6, 9)
    with pytest.raises(AxisMismatchException, match="axis 1 and axis 2"):
        compose((1, 1, 0), (2, 1, 0))
    assert issubclass(AxisMismatchException, engine.CremaError)


def test_refused_crops():
    n = trunk()
    # the crema error is also the exception pycaffe raises there (AssertionError/RuntimeError)
    with pytest.raises(AssertionError, match="scales differ") as refused:
        crop(n.pool1, n.data)
    assert isinstance(refused.value, CoordMapError)
    n.upscore = upsample(n.fc, 4)
    with pytest.raises(AssertionError, match="negative offset"):
        crop(n.data, n.upscore)
    n.other = L.Input(shape=dict(dim=[1, 2, H, W]))
    with pytest.raises(RuntimeError, match="no common input") as refused:
        coord_map_from_to(n.upscore, n.other)
    assert isinstance(refused.value, CoordMapError)
    n.half = L.Convolution(n.data, num_output=2, kernel_size=2, pad=1)  # half a pixel off
    with pytest.raises(CoordMapError, match="not a whole number"):
        crop(n.half, n.data)
    # only pointwise layers between the tops: a crop that leaves them as they are
    n.relu = L.ReLU(n.data)
    same = crop(n.relu, n.data).fn
    assert same.params["crop_param"] == dict(axis=2, offset=[0])
