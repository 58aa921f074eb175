// 2-D max / average pooling, Caffe's window rules, NCHW float32.
//
// x: N x C x H x W (contiguous), y (and mask, dy): N x C x pooled_h x pooled_w. The caller
// computes pooled_h/pooled_w (Caffe's ceil/floor formula and clip rule live in the layer);
// the kernels only need every window to be clipped to the image, which they do themselves.
// Windows for output (py, px), rows shown (columns likewise):
//   MAX: hstart = py*sh - ph; hend = min(hstart + kh, H); hstart = max(hstart, 0).
//        The first maximum in row-major window order wins (strict >, starting from -FLT_MAX);
//        mask = h*W + w within the plane, -1 for an empty window (y = -FLT_MAX there).
//   AVE: hend = min(hstart + kh, H + ph); divisor = (hend - hstart) * (wend - wstart) (padding
//        counts); the sum runs over the window clipped to the image; y = sum / divisor in
//        float32, summed in row-major window order; an empty window gives 0.
// Backward: dx is overwritten. MAX adds dy to dx[mask] (a mask outside [0, H*W) is skipped; the
// vector entries, taken for disjoint windows only, expect each argmax at most once per plane,
// as forward produces it: a repeated one may keep only one of its gradients);
// AVE adds dy / divisor to every image element of the window, windows in row-major output
// order (the reference's order, so results match it bit for bit).
// MAX backward may also apply the backward of an in-place ReLU that produced x (relu_y: the
// forward's output y, else nullptr): each dy[i] is taken as y[i] > 0 ? dy[i] : relu_slope * dy[i],
// the ReLU's rule (eltwise.h) at the argmax, whose ReLU output is y[i]. With disjoint windows, or
// slope 0, dx then equals ReLU backward after plain MAX backward (up to the sign of zeros), and
// the ReLU's own pass over x's size is saved.
// Every entry point parallelizes over the N*C planes (threads.h).
#pragma once
#include <cstdint>

#include "crema/dispatch.h"
#include "crema/isa.h"

namespace crema {

struct PoolGeom {
  int64_t num, channels, height, width;
  int64_t kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w;
  int64_t pooled_h, pooled_w;
  int64_t planes() const { return num * channels; }
  int64_t in_plane() const { return height * width; }
  int64_t out_plane() const { return pooled_h * pooled_w; }
};

// nullptr when g is usable by every kernel below, else what is wrong with it. Requires positive
// sizes, kernel and stride, 0 <= pad < kernel, and H*W < 2^31 (the mask is int32).
const char* pool_geom_error(const PoolGeom& g);

using MaxPoolFwdFn = void (*)(const float* x, const PoolGeom& g, float* y, int32_t* mask);
using MaxPoolBwdFn = void (*)(const float* dy, const int32_t* mask, const PoolGeom& g, float* dx,
                              const float* relu_y, float relu_slope);
using AvePoolFwdFn = void (*)(const float* x, const PoolGeom& g, float* y);
using AvePoolBwdFn = void (*)(const float* dy, const PoolGeom& g, float* dx);

template <class Fn>
using PoolKernel = KernelRow<PoolGeom, Fn>;

// Each op has an ordered table (best first, scalar last, which supports every geometry); these
// return the first entry that is usable (isa_usable) and supports g. mask may be nullptr in
// max_pool forward (no argmax written).
const PoolKernel<MaxPoolFwdFn>& max_pool_fwd_kernel(const PoolGeom& g);
const PoolKernel<MaxPoolBwdFn>& max_pool_bwd_kernel(const PoolGeom& g);
const PoolKernel<AvePoolFwdFn>& ave_pool_fwd_kernel(const PoolGeom& g);
const PoolKernel<AvePoolBwdFn>& ave_pool_bwd_kernel(const PoolGeom& g);

// Whether the column / row arithmetic of the vector kernels (int32 lanes) fits g.
bool pool_fits_int32(const PoolGeom& g);

// AVE backward helper: for input column w, the windows holding it are output columns
// first()[w] .. first()[w] + count()[w] - 1 (count 0: none). The tables have W + 16 entries
// (count 0 past W) so that vector loads need no mask; most() is the largest count.
// Built in portable code (the ISA files take only its pointers).
class PoolColumnWindows {
 public:
  explicit PoolColumnWindows(const PoolGeom& g);
  ~PoolColumnWindows();
  PoolColumnWindows(const PoolColumnWindows&) = delete;
  PoolColumnWindows& operator=(const PoolColumnWindows&) = delete;
  const int32_t* first() const { return first_; }
  const int32_t* count() const { return count_; }
  int64_t most() const { return most_; }

 private:
  int32_t* first_;
  int32_t* count_;
  int64_t most_;
};

namespace scalar_impl {
void max_pool_fwd(const float* x, const PoolGeom& g, float* y, int32_t* mask);
void max_pool_bwd(const float* dy, const int32_t* mask, const PoolGeom& g, float* dx,
                  const float* relu_y, float relu_slope);
void ave_pool_fwd(const float* x, const PoolGeom& g, float* y);
void ave_pool_bwd(const float* dy, const PoolGeom& g, float* dx);
}  // namespace scalar_impl
// The vector kernels (kernels/src/pool/pool_vec.isa.cpp, one source compiled per ISA).
#define CREMA_POOL_ISA_DECLS                                                                 \
  void max_pool_fwd(const float* x, const PoolGeom& g, float* y, int32_t* mask);             \
  void ave_pool_fwd(const float* x, const PoolGeom& g, float* y);                            \
  void ave_pool_bwd(const float* dy, const PoolGeom& g, float* dx);
namespace avx2_impl {
CREMA_POOL_ISA_DECLS
}  // namespace avx2_impl
namespace avx512_impl {
CREMA_POOL_ISA_DECLS
// Windows that do not overlap only (each argmax at most once per plane): needs a scatter.
void max_pool_bwd_disjoint(const float* dy, const int32_t* mask, const PoolGeom& g, float* dx,
                           const float* relu_y, float relu_slope);
}  // namespace avx512_impl
#undef CREMA_POOL_ISA_DECLS

}  // namespace crema
