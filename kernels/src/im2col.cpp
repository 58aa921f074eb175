#include "crema/im2col.h"

#include <cstring>

namespace crema {

void im2col(const float* im, const Conv2dGeom& g, float* col) {
  const int64_t oh = g.out_h(), ow = g.out_w();
  for (int64_t c = 0; c < g.channels; ++c) {
    const float* plane = im + c * g.height * g.width;
    for (int64_t i = 0; i < g.kernel_h; ++i) {
      for (int64_t j = 0; j < g.kernel_w; ++j) {
        float* row = col + ((c * g.kernel_h + i) * g.kernel_w + j) * oh * ow;
        for (int64_t y = 0; y < oh; ++y) {
          const int64_t iy = y * g.stride_h - g.pad_h + i * g.dilation_h;
          float* out = row + y * ow;
          if (iy < 0 || iy >= g.height) {
            std::memset(out, 0, sizeof(float) * ow);
            continue;
          }
          const float* src = plane + iy * g.width;
          int64_t ix = -g.pad_w + j * g.dilation_w;
          if (g.stride_w == 1) {
            // Contiguous run: zero the left/right borders and copy the middle in one go.
            int64_t x = 0;
            for (; x < ow && ix + x < 0; ++x) out[x] = 0.f;
            int64_t end = ow;
            while (end > x && ix + end - 1 >= g.width) out[--end] = 0.f;
            if (end > x) std::memcpy(out + x, src + ix + x, sizeof(float) * (end - x));
          } else {
            for (int64_t x = 0; x < ow; ++x, ix += g.stride_w)
              out[x] = (ix >= 0 && ix < g.width) ? src[ix] : 0.f;
          }
        }
      }
    }
  }
}

void col2im(const float* col, const Conv2dGeom& g, float* im) {
  const int64_t oh = g.out_h(), ow = g.out_w();
  std::memset(im, 0, sizeof(float) * g.channels * g.height * g.width);
  for (int64_t c = 0; c < g.channels; ++c) {
    float* plane = im + c * g.height * g.width;
    for (int64_t i = 0; i < g.kernel_h; ++i) {
      for (int64_t j = 0; j < g.kernel_w; ++j) {
        const float* row = col + ((c * g.kernel_h + i) * g.kernel_w + j) * oh * ow;
        for (int64_t y = 0; y < oh; ++y) {
          const int64_t iy = y * g.stride_h - g.pad_h + i * g.dilation_h;
          if (iy < 0 || iy >= g.height) continue;
          float* dst = plane + iy * g.width;
          const float* in = row + y * ow;
          int64_t ix = -g.pad_w + j * g.dilation_w;
          for (int64_t x = 0; x < ow; ++x, ix += g.stride_w)
            if (ix >= 0 && ix < g.width) dst[ix] += in[x];
        }
      }
    }
  }
}

}  // namespace crema
