"""The 2-D convolution in numpy: crema's one reference for it, and the fallback of every native
convolution (engine.kernels.conv_*, the Convolution and Deconvolution layers for float64,
CREMA_KERNELS=reference and builds without the native module).

Caffe's cross-correlation convention (no kernel flip), zero padding, groups, stride, dilation:
    y[n, m, oy, ox] = b[m] + sum_{c in group(m)} sum_{i, j}
                      w[m, c - c0, i, j] * x[n, c, oy*sh - ph + i*dh, ox*sw - pw + j*dw]
where taps that fall outside the image read 0. Layouts are Caffe's: x (N, C, H, W), w (M, C/group,
kh, kw), b (M,), y (N, M, oh, ow) with oh = (H + 2ph - (dh(kh-1)+1)) / sh + 1 (conv_out_size).

Two forms of the same operator:
- forward / backward_data / backward_weights: the three passes Caffe's layers need, computed as
  Caffe does -- im2col (engine/reference/im2col.py) and one matrix product per image and group,
  then col2im for the data gradient -- over a batch of images at a time. They compute in the
  arrays' dtype (np.result_type of the operands): float64 stays float64 for the gradient checks,
  float32 fallbacks stay float32.
- conv2d_forward: the definition written out loop by loop, one output element at a time, in
  float64; the independent expectation the three passes and the layers are tested against.
"""
import numpy as np

from .im2col import col2im, im2col, out_size as conv_out_size

# At most this many column entries (C*kh*kw * oh*ow per image) are built at once: a large batch
# goes through in slices of images, so the columns stay within a few tens of MB.
COLUMN_BUDGET = 1 << 22


# -- the three passes -----------------------------------------------------------------------------

def _columns_geometry(x_shape, kernel_hw, pad, stride, dilation):
    """im2col's geometry for images of shape x_shape (N, C, H, W), and the output size."""
    c, h, w = x_shape[1:]
    geometry = (c, h, w) + tuple(kernel_hw) + tuple(pad) + tuple(stride) + tuple(dilation)
    out_hw = (conv_out_size(h, kernel_hw[0], pad[0], stride[0], dilation[0]),
              conv_out_size(w, kernel_hw[1], pad[1], stride[1], dilation[1]))
    return geometry, out_hw


def _image_slices(n, geometry, out_hw):
    """Slices of a batch of n images whose columns fit COLUMN_BUDGET (one image at least)."""
    c, _, _, kh, kw = geometry[:5]
    step = max(1, COLUMN_BUDGET // max(1, c * kh * kw * out_hw[0] * out_hw[1]))
    return [slice(start, min(start + step, n)) for start in range(0, n, step)]


def _weight_rows(w, group):
    """w (M, C/group, kh, kw) -> (group, M/group, C/group*kh*kw): each output channel's weights
    as one row, in the order of its group's im2col rows."""
    m = w.shape[0]
    return w.reshape(group, m // group, -1)


def forward(x, w, bias=None, pad=(0, 0), stride=(1, 1), dilation=(1, 1), group=1):
    """y = conv(x, w) + bias (bias None: no bias term). x (N, C, H, W), w (M, C/group, kh, kw),
    bias (M,); returns a new y (N, M, oh, ow) in np.result_type(x, w)."""
    dtype = np.result_type(x, w)
    n, m = x.shape[0], w.shape[0]
    geometry, (oh, ow) = _columns_geometry(x.shape, w.shape[2:], pad, stride, dilation)
    rows = _weight_rows(w.astype(dtype, copy=False), group)
    y = np.empty((n, m, oh, ow), dtype=dtype)
    for images in _image_slices(n, geometry, (oh, ow)):
        cols = im2col(x[images].astype(dtype, copy=False), geometry)
        cols = cols.reshape(cols.shape[0], group, -1, oh * ow)
        # (group, M/group, K) @ (images, group, K, oh*ow): one product per image and group.
        y[images] = np.matmul(rows, cols).reshape(-1, m, oh, ow)
    if bias is not None:
        y += np.asarray(bias, dtype=dtype).reshape(1, m, 1, 1)
    return y


def backward_data(dy, w, in_hw, pad=(0, 0), stride=(1, 1), dilation=(1, 1), group=1):
    """dx, the gradient of forward with respect to x for the top gradient dy (N, M, oh, ow): the
    transposed convolution. in_hw = (H, W) of x (several sizes give the same output size when
    the stride is above 1). Returns a new dx (N, C, H, W) in np.result_type(dy, w)."""
    dtype = np.result_type(dy, w)
    n, m = dy.shape[:2]
    c = w.shape[1] * group
    geometry, (oh, ow) = _columns_geometry((n, c) + tuple(in_hw), w.shape[2:], pad, stride,
                                           dilation)
    rows_t = _weight_rows(w.astype(dtype, copy=False), group).transpose(0, 2, 1)
    dx = np.empty((n, c) + tuple(in_hw), dtype=dtype)
    for images in _image_slices(n, geometry, (oh, ow)):
        dy_g = dy[images].astype(dtype, copy=False).reshape(-1, group, m // group, oh * ow)
        # (group, K, M/group) @ (images, group, M/group, oh*ow): the columns' gradient.
        col_grad = np.matmul(rows_t, dy_g)
        dx[images] = col2im(col_grad.reshape(col_grad.shape[0], -1, oh * ow), geometry)
    return dx


def backward_weights(x, dy, kernel_hw, pad=(0, 0), stride=(1, 1), dilation=(1, 1), group=1):
    """(dw, db): the gradients of forward with respect to w (M, C/group, kh, kw) and the bias
    (M,) for x (N, C, H, W) and the top gradient dy (N, M, oh, ow), summed over the batch. New
    arrays in np.result_type(x, dy); Caffe's layers add them to their parameter diffs."""
    dtype = np.result_type(x, dy)
    n, c = x.shape[:2]
    m = dy.shape[1]
    geometry, (oh, ow) = _columns_geometry(x.shape, kernel_hw, pad, stride, dilation)
    dw = np.zeros((group, m // group, c // group * kernel_hw[0] * kernel_hw[1]), dtype=dtype)
    for images in _image_slices(n, geometry, (oh, ow)):
        cols = im2col(x[images].astype(dtype, copy=False), geometry)
        cols = cols.reshape(cols.shape[0], group, -1, oh * ow)
        dy_g = dy[images].astype(dtype, copy=False).reshape(-1, group, m // group, oh * ow)
        # (images, group, M/group, oh*ow) @ (images, group, oh*ow, K), summed over the images.
        dw += np.matmul(dy_g, cols.transpose(0, 1, 3, 2)).sum(axis=0)
    db = dy.sum(axis=(0, 2, 3), dtype=dtype)
    return dw.reshape((m, c // group) + tuple(kernel_hw)), db


# -- the definition, loop by loop -----------------------------------------------------------------

def conv2d_forward(x, weight, bias=None, pad=(0, 0), stride=(1, 1), dilation=(1, 1), group=1):
    """x: (N, C, H, W); weight: (M, C/group, kh, kw); bias: (M,) or None. Returns (N, M, oh, ow)
    in float64 (exact accumulation for comparisons). Deliberately naive and readable: one output
    element at a time, no im2col, no vectorization."""
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
