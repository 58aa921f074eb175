"""Direct (loop-based) 2-D convolution: the independent expectation the Convolution layer is
tested against. Deliberately naive and readable: one output element at a time, no im2col.

Caffe's cross-correlation convention (no kernel flip):
    y[n, m, oy, ox] = b[m] + sum_{c in group(m)} sum_{i, j}
                      w[m, c - c0, i, j] * x[n, c, oy*sh - ph + i*dh, ox*sw - pw + j*dw]
where taps that fall outside the image read 0 (zero padding).
"""
import numpy as np


def conv_out_size(size, kernel, pad, stride, dilation):
    """Caffe's ConvolutionLayer output size: (H + 2p - (d(k-1)+1)) / s + 1."""
    extent = dilation * (kernel - 1) + 1
    return (size + 2 * pad - extent) // stride + 1


def conv2d_forward(x, weight, bias=None, pad=(0, 0), stride=(1, 1), dilation=(1, 1), group=1):
    """x: (N, C, H, W); weight: (M, C/group, kh, kw); bias: (M,) or None. Returns (N, M, oh, ow)
    in float64 (exact accumulation for comparisons)."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    n_img, channels, height, width = x.shape
    m_out, c_per_group, kh, kw = weight.shape
    ph, pw = pad
    sh, sw = stride
    dh, dw = dilation
    assert channels == c_per_group * group and m_out % group == 0
    m_per_group = m_out // group
    oh = conv_out_size(height, kh, ph, sh, dh)
    ow = conv_out_size(width, kw, pw, sw, dw)
    y = np.zeros((n_img, m_out, oh, ow))
    for n in range(n_img):
        for m in range(m_out):
            g = m // m_per_group
            for oy in range(oh):
                for ox in range(ow):
                    acc = 0.0 if bias is None else float(bias[m])
                    for c in range(c_per_group):
                        for i in range(kh):
                            for j in range(kw):
                                yy = oy * sh - ph + i * dh
                                xx = ox * sw - pw + j * dw
                                if 0 <= yy < height and 0 <= xx < width:
                                    acc += weight[m, c, i, j] * x[n, g * c_per_group + c, yy, xx]
                    y[n, m, oy, ox] = acc
    return y
