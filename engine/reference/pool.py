"""Readable loop-based MAX / AVE pooling with Caffe's exact window rules: the truth the Pooling
layer (and later native kernels) are tested against.

Windows, for output row ph (columns likewise):
  MAX: hstart = ph*s - p; hend = min(hstart + k, H); hstart = max(hstart, 0).
       First maximum in row-major window order wins (strict >); the mask holds h*W + w.
       An empty window (possible only for stride > kernel) gives -FLT_MAX and mask -1, as Caffe.
  AVE: hstart = ph*s - p; hend = min(hstart + k, H + p); divisor = (hend-hstart)*(wend-wstart)
       (padding counts); then hstart = max(hstart, 0), hend = min(hend, H) for the sum.
       An empty window gives 0 (Caffe would divide 0 by a non-positive size).
"""
import numpy as np


def pooled_size(size, kernel, pad, stride, ceil_mode=True, any_pad=None):
    """Caffe's PoolingLayer output size along one axis.

    pooled = ceil((size + 2p - k) / s) + 1 (floor in FLOOR mode); then, when the layer has any
    padding (pad_h or pad_w non-zero: `any_pad`, default pad > 0), drop the last window if it
    would start at or past size + p (entirely in the padding)."""
    span = size + 2 * pad - kernel
    # Integer ceil/floor division (exact; Caffe computes it in float).
    pooled = (-(-span // stride) if ceil_mode else span // stride) + 1
    if any_pad is None:
        any_pad = pad > 0
    if any_pad and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


def max_pool_forward(x, kernel, pad, stride, pooled):
    """x: (N, C, H, W). kernel/pad/stride/pooled: (h, w) pairs. Returns (top, mask)."""
    n_img, channels, height, width = x.shape
    kh, kw = kernel
    pad_h, pad_w = pad
    sh, sw = stride
    oh, ow = pooled
    lowest = -np.finfo(x.dtype).max if x.dtype.kind == "f" else -np.finfo(np.float64).max
    top = np.empty((n_img, channels, oh, ow), dtype=x.dtype)
    mask = np.empty((n_img, channels, oh, ow), dtype=np.int64)
    for n in range(n_img):
        for c in range(channels):
            for py in range(oh):
                for px in range(ow):
                    hstart = py * sh - pad_h
                    wstart = px * sw - pad_w
                    hend = min(hstart + kh, height)
                    wend = min(wstart + kw, width)
                    hstart = max(hstart, 0)
                    wstart = max(wstart, 0)
                    best, best_idx = lowest, -1
                    for h in range(hstart, hend):
                        for w in range(wstart, wend):
                            if x[n, c, h, w] > best:
                                best, best_idx = x[n, c, h, w], h * width + w
                    top[n, c, py, px] = best
                    mask[n, c, py, px] = best_idx
    return top, mask


def max_pool_backward(top_diff, mask, bottom_shape, relu_y=None, relu_slope=0.0):
    """Each top gradient goes to its argmax; windows sharing an argmax add up. relu_y (the
    forward's output): each top gradient first passes the backward of the in-place ReLU that
    produced the input, evaluated at the argmax, whose ReLU output is relu_y."""
    if relu_y is not None:
        top_diff = np.where(relu_y > 0, top_diff, top_diff.dtype.type(relu_slope) * top_diff)
    n_img, channels, height, width = bottom_shape
    dx = np.zeros(bottom_shape, dtype=top_diff.dtype)
    _, _, oh, ow = top_diff.shape
    for n in range(n_img):
        for c in range(channels):
            for py in range(oh):
                for px in range(ow):
                    idx = int(mask[n, c, py, px])
                    if idx >= 0:
                        dx[n, c, idx // width, idx % width] += top_diff[n, c, py, px]
    return dx


def _ave_window(py, px, kernel, pad, stride, height, width):
    kh, kw = kernel
    pad_h, pad_w = pad
    sh, sw = stride
    hstart = py * sh - pad_h
    wstart = px * sw - pad_w
    hend = min(hstart + kh, height + pad_h)
    wend = min(wstart + kw, width + pad_w)
    pool_size = (hend - hstart) * (wend - wstart)
    hstart, wstart = max(hstart, 0), max(wstart, 0)
    hend, wend = min(hend, height), min(wend, width)
    return hstart, hend, wstart, wend, pool_size


def ave_pool_forward(x, kernel, pad, stride, pooled):
    n_img, channels, height, width = x.shape
    oh, ow = pooled
    top = np.zeros((n_img, channels, oh, ow), dtype=x.dtype)
    for n in range(n_img):
        for c in range(channels):
            for py in range(oh):
                for px in range(ow):
                    hs, he, ws, we, size = _ave_window(py, px, kernel, pad, stride, height, width)
                    total = 0.0
                    for h in range(hs, he):
                        for w in range(ws, we):
                            total += x[n, c, h, w]
                    top[n, c, py, px] = total / size if size > 0 else 0.0
    return top


def ave_pool_backward(top_diff, bottom_shape, kernel, pad, stride):
    n_img, channels, height, width = bottom_shape
    _, _, oh, ow = top_diff.shape
    dx = np.zeros(bottom_shape, dtype=top_diff.dtype)
    for n in range(n_img):
        for c in range(channels):
            for py in range(oh):
                for px in range(ow):
                    hs, he, ws, we, size = _ave_window(py, px, kernel, pad, stride, height, width)
                    if size <= 0:
                        continue
                    for h in range(hs, he):
                        for w in range(ws, we):
                            dx[n, c, h, w] += top_diff[n, c, py, px] / size
    return dx
