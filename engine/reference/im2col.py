"""im2col / col2im in numpy, Caffe's layout (see kernels/include/crema/im2col.h), in the arrays'
dtype. geometry = (C, H, W, kh, kw, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w).

An image (C, H, W) becomes columns (C*kh*kw, oh*ow): row (c*kh + i)*kw + j holds, for every
output position, the input pixel that kernel tap (i, j) of channel c reads (0 in the padding).
Both functions also take a batch of them: any leading axes before C (images) are kept.
"""
import numpy as np


def out_size(size, kernel, pad, stride, dilation):
    """Caffe's convolution output size: (H + 2p - (d(k-1)+1)) / s + 1."""
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def _tap_windows(geometry):
    """For each tap (i, j): the (rows, columns) slices of the padded image it reads for the
    whole output map (rows i*dh, i*dh + sh, ..., oh of them; columns likewise)."""
    c, h, w, kh, kw, ph, pw, sh, sw, dh, dw = geometry
    oh, ow = out_size(h, kh, ph, sh, dh), out_size(w, kw, pw, sw, dw)
    return [(i, j, slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
             slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))
            for i in range(kh) for j in range(kw)], (oh, ow)


def im2col(im, geometry, col=None):
    """im: (..., C, H, W). Returns (..., C*kh*kw, oh*ow), written into `col` if given."""
    c, h, w, kh, kw, ph, pw = geometry[:7]
    batch = im.shape[:-3]
    taps, (oh, ow) = _tap_windows(geometry)
    padded = np.zeros(batch + (c, h + 2 * ph, w + 2 * pw), dtype=im.dtype)
    padded[..., ph:ph + h, pw:pw + w] = im.reshape(batch + (c, h, w))
    out = np.empty(batch + (c, kh, kw, oh, ow), dtype=im.dtype)
    for i, j, rows, cols in taps:
        out[..., i, j, :, :] = padded[..., rows, cols]
    out = out.reshape(batch + (c * kh * kw, oh * ow))
    if col is not None:
        col.reshape(out.shape)[...] = out
        return col
    return out


def col2im(col, geometry, im=None):
    """The adjoint of im2col: col (..., C*kh*kw, oh*ow) -> (..., C, H, W), each pixel the sum of
    the column entries that read it. Written into `im` (overwritten) if given."""
    c, h, w, kh, kw, ph, pw = geometry[:7]
    batch = col.shape[:-2]
    taps, (oh, ow) = _tap_windows(geometry)
    cols = col.reshape(batch + (c, kh, kw, oh, ow))
    padded = np.zeros(batch + (c, h + 2 * ph, w + 2 * pw), dtype=col.dtype)
    for i, j, rows, columns in taps:
        padded[..., rows, columns] += cols[..., i, j, :, :]
    out = padded[..., ph:ph + h, pw:pw + w]
    if im is not None:
        im.reshape(out.shape)[...] = out
        return im
    return np.ascontiguousarray(out)
