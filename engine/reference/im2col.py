"""im2col / col2im in numpy, Caffe's layout (see kernels/include/crema/im2col.h)."""
import numpy as np


def out_size(size, kernel, pad, stride, dilation):
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def im2col(im, geometry, col=None):
    """im: (C, H, W). Returns (C*kh*kw, oh*ow)."""
    c, h, w, kh, kw, ph, pw, sh, sw, dh, dw = geometry
    oh, ow = out_size(h, kh, ph, sh, dh), out_size(w, kw, pw, sw, dw)
    padded = np.zeros((c, h + 2 * ph, w + 2 * pw), dtype=im.dtype)
    padded[:, ph:ph + h, pw:pw + w] = im.reshape(c, h, w)
    out = np.empty((c, kh, kw, oh, ow), dtype=im.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, i, j] = padded[:, i * dh: i * dh + sh * (oh - 1) + 1: sh,
                                  j * dw: j * dw + sw * (ow - 1) + 1: sw]
    out = out.reshape(c * kh * kw, oh * ow)
    if col is not None:
        col.reshape(out.shape)[...] = out
        return col
    return out


def col2im(col, geometry, im=None):
    """Adds columns back into a zeroed (C, H, W) image: the adjoint of im2col."""
    c, h, w, kh, kw, ph, pw, sh, sw, dh, dw = geometry
    oh, ow = out_size(h, kh, ph, sh, dh), out_size(w, kw, pw, sw, dw)
    cols = col.reshape(c, kh, kw, oh, ow)
    padded = np.zeros((c, h + 2 * ph, w + 2 * pw), dtype=col.dtype)
    for i in range(kh):
        for j in range(kw):
            padded[:, i * dh: i * dh + sh * (oh - 1) + 1: sh,
                   j * dw: j * dw + sw * (ow - 1) + 1: sw] += cols[:, i, j]
    out = padded[:, ph:ph + h, pw:pw + w]
    if im is not None:
        im.reshape(out.shape)[...] = out
        return im
    return np.ascontiguousarray(out)
