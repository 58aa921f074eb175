"""pycaffe's caffe.coord_map: how the spatial coordinates of NetSpec tops relate, and a Crop
layer that aligns one top with another (as FCNs do: `n.score = crop(n.upscore, n.data)`).

A coordinate map is a triple (axis, scale, shift): output coordinate = scale * input
coordinate + shift, on the axes after `axis` (None for layers that do not move coordinates:
pointwise layers). scale and shift are numpy arrays of one value or one per spatial axis.
Coordinates are those of pixel centres: a convolution output pixel i sees the input window
centred on i * stride - pad + (kernel_extent - 1) / 2.

    from engine import layers as L
    from engine.coord_map import crop
    n.upscore = L.Deconvolution(n.score_fr, convolution_param=dict(kernel_size=64, stride=32))
    n.score = crop(n.upscore, n.data)   # Crop(axis=2, offset=...): the offset that aligns them

Layer parameters are read as NetSpec writes them into the LayerParameter (flat keywords,
<type>_param dicts or messages alike), so every form NetSpec accepts is understood. Beyond
pycaffe: the legacy kernel_h/kernel_w, stride_h/stride_w and pad_h/pad_w fields are mapped (per
axis) rather than refused; errors are crema errors (CoordMapError, a CremaError) with messages
naming the layer, where pycaffe raises AssertionError or RuntimeError; AxisMismatchException and
UndefinedMapException are pycaffe's names.
"""
from collections import Counter

import numpy as np

from .errors import CremaError
from .netspec import layers as L

__all__ = ["PASS_THROUGH_LAYERS", "AxisMismatchException", "UndefinedMapException",
           "CoordMapError", "CropError", "UnconnectedTopsError", "conv_params", "crop_params", "coord_map", "compose", "inverse",
           "coord_map_from_to", "crop"]

# Layers whose output pixel i is computed from input pixel i alone (or from whole blobs of the
# same size): they leave coordinates unchanged.
PASS_THROUGH_LAYERS = ["AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU", "Log",
                       "LRN", "Exp", "MVN", "Power", "ReLU", "PReLU", "Scale", "Sigmoid", "Split",
                       "TanH", "Threshold", "Clip", "Swish"]


class CoordMapError(CremaError, ValueError):
    """Two tops whose coordinates cannot be related, or a crop that cannot be made."""


class UndefinedMapException(CoordMapError):
    """A layer type without a coordinate mapping (e.g. InnerProduct, global pooling)."""


class AxisMismatchException(CoordMapError):
    """Two mappings that act on different axes."""


class CropError(CoordMapError, AssertionError):
    """A crop that cannot be made (scales differ, negative or fractional offset); also an
    AssertionError, which is what pycaffe raises there, so `except AssertionError` still works."""


class UnconnectedTopsError(CoordMapError, RuntimeError):
    """Two tops with no common input; also a RuntimeError, as pycaffe's."""


def _layer_param(fn):
    """The LayerParameter NetSpec makes of `fn` (its inputs' layers are built alongside)."""
    built = {}
    fn._to_proto(built, {}, Counter())
    return built[fn]


def _per_axis(values, h, w, has_hw, default):
    """One value per spatial axis from a repeated field, or from the legacy _h/_w pair."""
    if has_hw:
        return np.array([h, w])
    return np.array(list(values) or [default], ndmin=1)


def conv_params(fn):
    """(axis, stride, kernel extent, pad) of a Convolution, Deconvolution, Im2col or Pooling
    function, as arrays (kernel extent = (kernel - 1) * dilation + 1)."""
    lp = _layer_param(fn)
    if fn.type_name == "Pooling":
        p = lp.pooling_param
        if p.global_pooling:
            raise UndefinedMapException(f"layer '{lp.name}' (Pooling): global pooling has no "
                                        "coordinate mapping (its window is the whole input)")
        kernel = _per_axis([p.kernel_size] if p.HasField("kernel_size") else [],
                           p.kernel_h, p.kernel_w, p.HasField("kernel_h"), 1)
        stride = _per_axis([p.stride] if p.HasField("stride") else [],
                           p.stride_h, p.stride_w, p.HasField("stride_h"), 1)
        pad = _per_axis([p.pad] if p.HasField("pad") else [], p.pad_h, p.pad_w,
                        p.HasField("pad_h"), 0)
        return 1, stride, kernel, pad
    p = lp.convolution_param
    kernel = _per_axis(p.kernel_size, p.kernel_h, p.kernel_w, p.HasField("kernel_h"), 1)
    stride = _per_axis(p.stride, p.stride_h, p.stride_w, p.HasField("stride_h"), 1)
    pad = _per_axis(p.pad, p.pad_h, p.pad_w, p.HasField("pad_h"), 0)
    dilation = np.array(list(p.dilation) or [1], ndmin=1)
    return p.axis, stride, (kernel - 1) * dilation + 1, pad


def crop_params(fn):
    """(axis, offset) of a Crop function (axis 2 and offset 0 by default)."""
    p = _layer_param(fn).crop_param
    return p.axis, np.array(list(p.offset) or [0], ndmin=1)


def coord_map(fn):
    """The (axis, scale, shift) map of a layer function from its input's coordinates to its
    output's. UndefinedMapException for layers without one."""
    kind = fn.type_name
    if kind in ("Convolution", "Pooling", "Im2col"):
        axis, stride, extent, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (extent - 1) / 2) / stride
    if kind == "Deconvolution":
        axis, stride, extent, pad = conv_params(fn)
        return axis, stride, (extent - 1) / 2 - pad
    if kind in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if kind == "Crop":
        axis, offset = crop_params(fn)
        return axis - 1, 1, -offset  # the map's axis is the last one left untouched
    raise UndefinedMapException(f"{kind} layers have no coordinate mapping")


def compose(base_map, next_map):
    """base_map after next_map: x -> a1 * (a2 * x + b2) + b1. The scales multiply and
    next_map's shift is scaled by base_map's scale."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is None:
        ax = ax2
    elif ax2 is None or ax1 == ax2:
        ax = ax1
    else:
        raise AxisMismatchException(f"cannot compose coordinate maps on axis {ax1} and "
                                    f"axis {ax2}")
    return ax, a1 * a2, a1 * b2 + b1


def inverse(coord_map):
    """The map back from output to input coordinates."""
    ax, a, b = coord_map
    return ax, 1 / a, -b / a


def _mapped_bottoms(top):
    """The inputs whose coordinates a top's coordinates follow: all of them, except for Crop,
    whose second input only gives the size."""
    inputs = top.fn.inputs
    return inputs[:1] if top.fn.type_name == "Crop" else inputs


def _ancestor_maps(top):
    """{ancestor top: map from that ancestor's coordinates to `top`'s} over the ancestors
    reachable through layers with a coordinate map (all paths are taken to agree)."""
    maps = {top: (None, 1, 0)}
    frontier = [top]
    while frontier:
        current = frontier.pop()
        try:
            step = coord_map(current.fn)
        except UndefinedMapException:
            continue
        for bottom in _mapped_bottoms(current):
            if bottom not in maps:
                maps[bottom] = compose(maps[current], step)
                frontier.append(bottom)
    return maps


def coord_map_from_to(top_from, top_to):
    """The map from top_from's coordinates to top_to's, through their nearest common ancestor
    (a top both are computed from through layers with coordinate maps)."""
    from_maps = _ancestor_maps(top_from)
    to_maps = {top_to: (None, 1, 0)}
    frontier = [top_to]
    while frontier:
        current = frontier.pop(0)  # breadth first: the nearest common ancestor
        if current in from_maps:
            return compose(to_maps[current], inverse(from_maps[current]))
        try:
            step = coord_map(current.fn)
        except UndefinedMapException:
            continue
        for bottom in _mapped_bottoms(current):
            if bottom not in to_maps:
                to_maps[bottom] = compose(to_maps[current], step)
                frontier.append(bottom)
    raise UnconnectedTopsError(f"cannot relate the coordinates of {top_from} and {top_to}: they "
                               "have no common input reached through layers with coordinate maps")


def crop(top_from, top_to):
    """A Crop layer (NetSpec Top) that crops top_from to the size and position of top_to."""
    ax, a, b = coord_map_from_to(top_from, top_to)
    if ax is None:  # only pointwise layers between them: same size and place already
        return L.Crop(top_from, top_to, crop_param=dict(axis=2, offset=[0]))
    a, b = np.array(a, ndmin=1), np.array(b, ndmin=1)
    if not np.all(a == 1):
        raise CropError(f"cannot crop {top_from} to {top_to}: their scales differ "
                            f"(scale {a.tolist()}); upsample or downsample one of them first")
    if not np.all(b <= 0):
        raise CropError(f"cannot crop {top_from} to {top_to}: it would need a negative "
                            f"offset ({(-b).tolist()}); {top_from} starts inside {top_to}")
    if not np.all(np.round(b) == b):
        raise CropError(f"cannot crop {top_from} to {top_to}: the offset {(-b).tolist()} "
                            "is not a whole number of pixels")
    return L.Crop(top_from, top_to,
                  crop_param=dict(axis=ax + 1, offset=[int(v) for v in -np.round(b)]))
