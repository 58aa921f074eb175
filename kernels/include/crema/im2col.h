// im2col / col2im for 2-D convolution, Caffe's layout.
// data_im: one image, C x H x W (contiguous). data_col: (C * kh * kw) x (out_h * out_w), row r =
// (c * kh + i) * kw + j, column = y * out_w + x, value im[c][y*sh - ph + i*dh][x*sw - pw + j*dw]
// (0 outside the image). col2im adds the columns back into data_im (which it zeroes first).
#pragma once
#include <cstdint>

namespace crema {

struct Conv2dGeom {
  int64_t channels, height, width;
  int64_t kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w;
  int64_t out_h() const { return (height + 2 * pad_h - (dilation_h * (kernel_h - 1) + 1)) / stride_h + 1; }
  int64_t out_w() const { return (width + 2 * pad_w - (dilation_w * (kernel_w - 1) + 1)) / stride_w + 1; }
};

void im2col(const float* data_im, const Conv2dGeom& g, float* data_col);
void col2im(const float* data_col, const Conv2dGeom& g, float* data_im);

}  // namespace crema
