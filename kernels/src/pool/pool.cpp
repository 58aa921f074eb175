// Portable pooling kernels (the truth the vector ones must match) and the dispatch tables.
#include "crema/pool.h"

#include <algorithm>
#include <cfloat>
#include <cstring>

#include "crema/threads.h"

namespace crema {

const char* pool_geom_error(const PoolGeom& g) {
  if (g.num <= 0 || g.channels <= 0 || g.height <= 0 || g.width <= 0)
    return "image dimensions (N, C, H, W) must be positive";
  if (g.kernel_h <= 0 || g.kernel_w <= 0 || g.stride_h <= 0 || g.stride_w <= 0)
    return "kernel and stride must be positive";
  if (g.pad_h < 0 || g.pad_w < 0 || g.pad_h >= g.kernel_h || g.pad_w >= g.kernel_w)
    return "pad must be non-negative and smaller than the kernel";
  if (g.pooled_h <= 0 || g.pooled_w <= 0) return "pooled sizes must be positive";
  const int64_t lim = int64_t{1} << 31;
  if (g.height >= lim || g.width >= lim || g.height * g.width >= lim)
    return "an image plane must have fewer than 2^31 elements (the argmax mask is int32)";
  // Window starts py*stride stay far from int64 overflow.
  const int64_t big = int64_t{1} << 40;
  if (g.pooled_h >= big || g.pooled_w >= big || g.stride_h >= big || g.stride_w >= big ||
      g.kernel_h >= big || g.kernel_w >= big)
    return "pooling sizes are too large";
  return nullptr;
}

bool pool_fits_int32(const PoolGeom& g) {
  const int64_t lim = int64_t{1} << 31;
  return (g.pooled_w + 16) * g.stride_w + g.kernel_w < lim &&
         (g.pooled_h + 16) * g.stride_h + g.kernel_h < lim && g.kernel_h * g.kernel_w < lim;
}

PoolColumnWindows::PoolColumnWindows(const PoolGeom& g)
    : first_(new int32_t[static_cast<size_t>(g.width + 16)]()),
      count_(new int32_t[static_cast<size_t>(g.width + 16)]()),
      most_(0) {
  for (int64_t w = 0; w < g.width; ++w) {
    // windows px with px * sw - pw <= w < px * sw - pw + kw (a window's end clip at W + pw
    // never cuts a column below W)
    const int64_t num = w + g.pad_w - g.kernel_w + 1;
    const int64_t lo = num <= 0 ? 0 : (num + g.stride_w - 1) / g.stride_w;
    const int64_t hi = std::min((w + g.pad_w) / g.stride_w, g.pooled_w - 1);
    first_[w] = static_cast<int32_t>(std::min(lo, g.pooled_w));
    count_[w] = static_cast<int32_t>(std::max<int64_t>(hi - lo + 1, 0));
    most_ = std::max<int64_t>(most_, count_[w]);
  }
}

PoolColumnWindows::~PoolColumnWindows() {
  delete[] first_;
  delete[] count_;
}

namespace scalar_impl {

void max_pool_fwd(const float* x, const PoolGeom& g, float* y, int32_t* mask) {
  const int64_t H = g.height, W = g.width, OH = g.pooled_h, OW = g.pooled_w;
  parallel_for(g.planes(), g.out_plane() * g.kernel_h * g.kernel_w, [&](int64_t p) {
    const float* xp = x + p * g.in_plane();
    float* yp = y + p * g.out_plane();
    int32_t* mp = mask ? mask + p * g.out_plane() : nullptr;
    for (int64_t py = 0; py < OH; ++py) {
      int64_t hs = py * g.stride_h - g.pad_h;
      const int64_t he = std::min(hs + g.kernel_h, H);
      hs = std::max<int64_t>(hs, 0);
      for (int64_t px = 0; px < OW; ++px) {
        int64_t ws = px * g.stride_w - g.pad_w;
        const int64_t we = std::min(ws + g.kernel_w, W);
        ws = std::max<int64_t>(ws, 0);
        float best = -FLT_MAX;
        int64_t arg = -1;
        for (int64_t h = hs; h < he; ++h)
          for (int64_t w = ws; w < we; ++w)
            if (xp[h * W + w] > best) {
              best = xp[h * W + w];
              arg = h * W + w;
            }
        yp[py * OW + px] = best;
        if (mp) mp[py * OW + px] = static_cast<int32_t>(arg);
      }
    }
  });
}

void max_pool_bwd(const float* dy, const int32_t* mask, const PoolGeom& g, float* dx,
                  const float* relu_y, float relu_slope) {
  const int64_t in = g.in_plane(), out = g.out_plane();
  parallel_for(g.planes(), in + out, [&](int64_t p) {
    float* dxp = dx + p * in;
    const float* dyp = dy + p * out;
    const float* yp = relu_y != nullptr ? relu_y + p * out : nullptr;
    const int32_t* mp = mask + p * out;
    std::memset(dxp, 0, sizeof(float) * static_cast<size_t>(in));
    for (int64_t i = 0; i < out; ++i) {
      const int64_t k = mp[i];
      if (k < 0 || k >= in) continue;
      dxp[k] += (yp == nullptr || yp[i] > 0.f) ? dyp[i] : relu_slope * dyp[i];
    }
  });
}

void ave_pool_fwd(const float* x, const PoolGeom& g, float* y) {
  const int64_t H = g.height, W = g.width, OH = g.pooled_h, OW = g.pooled_w;
  parallel_for(g.planes(), g.out_plane() * g.kernel_h * g.kernel_w, [&](int64_t p) {
    const float* xp = x + p * g.in_plane();
    float* yp = y + p * g.out_plane();
    for (int64_t py = 0; py < OH; ++py) {
      int64_t hs = py * g.stride_h - g.pad_h;
      int64_t he = std::min(hs + g.kernel_h, H + g.pad_h);
      const int64_t hsize = he - hs;
      hs = std::max<int64_t>(hs, 0);
      he = std::min(he, H);
      for (int64_t px = 0; px < OW; ++px) {
        int64_t ws = px * g.stride_w - g.pad_w;
        int64_t we = std::min(ws + g.kernel_w, W + g.pad_w);
        const int64_t size = hsize * (we - ws);
        ws = std::max<int64_t>(ws, 0);
        we = std::min(we, W);
        float sum = 0.f;
        for (int64_t h = hs; h < he; ++h)
          for (int64_t w = ws; w < we; ++w) sum += xp[h * W + w];
        yp[py * OW + px] = size > 0 ? sum / static_cast<float>(size) : 0.f;
      }
    }
  });
}

void ave_pool_bwd(const float* dy, const PoolGeom& g, float* dx) {
  const int64_t H = g.height, W = g.width, OH = g.pooled_h, OW = g.pooled_w;
  parallel_for(g.planes(), g.in_plane() + g.out_plane() * g.kernel_h * g.kernel_w,
               [&](int64_t p) {
    float* dxp = dx + p * g.in_plane();
    const float* dyp = dy + p * g.out_plane();
    std::memset(dxp, 0, sizeof(float) * static_cast<size_t>(g.in_plane()));
    for (int64_t py = 0; py < OH; ++py) {
      int64_t hs = py * g.stride_h - g.pad_h;
      int64_t he = std::min(hs + g.kernel_h, H + g.pad_h);
      const int64_t hsize = he - hs;
      hs = std::max<int64_t>(hs, 0);
      he = std::min(he, H);
      for (int64_t px = 0; px < OW; ++px) {
        int64_t ws = px * g.stride_w - g.pad_w;
        int64_t we = std::min(ws + g.kernel_w, W + g.pad_w);
        const int64_t size = hsize * (we - ws);
        ws = std::max<int64_t>(ws, 0);
        we = std::min(we, W);
        if (size <= 0) continue;
        const float gv = dyp[py * OW + px] / static_cast<float>(size);
        for (int64_t h = hs; h < he; ++h)
          for (int64_t w = ws; w < we; ++w) dxp[h * W + w] += gv;
      }
    }
  });
}

}  // namespace scalar_impl

namespace {

constexpr auto any = any_geometry<PoolGeom>;
[[maybe_unused]] bool vector_geometry(const PoolGeom& g) { return pool_fits_int32(g); }
// Windows that do not overlap: every image element has at most one output, so the argmax
// scatter has no two lanes writing the same element.
[[maybe_unused]] bool non_overlapping(const PoolGeom& g) {
  return g.stride_h >= g.kernel_h && g.stride_w >= g.kernel_w;
}

template <class Fn, size_t N>
const PoolKernel<Fn>& pick(const PoolKernel<Fn> (&rows)[N], const PoolGeom& g) {
  return KernelTable<PoolGeom, Fn>(rows).choose(g);
}

}  // namespace

const PoolKernel<MaxPoolFwdFn>& max_pool_fwd_kernel(const PoolGeom& g) {
  static const PoolKernel<MaxPoolFwdFn> table[] = {
#ifdef CREMA_BUILD_AVX512
      {"max_pool_fwd_avx512", Isa::avx512, vector_geometry, avx512_impl::max_pool_fwd},
#endif
#ifdef CREMA_BUILD_AVX2
      {"max_pool_fwd_avx2", Isa::avx2, vector_geometry, avx2_impl::max_pool_fwd},
#endif
      {"max_pool_fwd_scalar", Isa::scalar, any, scalar_impl::max_pool_fwd},
  };
  return pick(table, g);
}

const PoolKernel<MaxPoolBwdFn>& max_pool_bwd_kernel(const PoolGeom& g) {
  // The scattered adds of overlapping windows stay scalar on every ISA (lanes would collide).
  static const PoolKernel<MaxPoolBwdFn> table[] = {
#ifdef CREMA_BUILD_AVX512
      {"max_pool_bwd_avx512_disjoint", Isa::avx512, non_overlapping,
       avx512_impl::max_pool_bwd_disjoint},
#endif

      {"max_pool_bwd_scalar", Isa::scalar, any, scalar_impl::max_pool_bwd},
  };
  return pick(table, g);
}

const PoolKernel<AvePoolFwdFn>& ave_pool_fwd_kernel(const PoolGeom& g) {
  static const PoolKernel<AvePoolFwdFn> table[] = {
#ifdef CREMA_BUILD_AVX512
      {"ave_pool_fwd_avx512", Isa::avx512, vector_geometry, avx512_impl::ave_pool_fwd},
#endif
#ifdef CREMA_BUILD_AVX2
      {"ave_pool_fwd_avx2", Isa::avx2, vector_geometry, avx2_impl::ave_pool_fwd},
#endif
      {"ave_pool_fwd_scalar", Isa::scalar, any, scalar_impl::ave_pool_fwd},
  };
  return pick(table, g);
}

const PoolKernel<AvePoolBwdFn>& ave_pool_bwd_kernel(const PoolGeom& g) {
  static const PoolKernel<AvePoolBwdFn> table[] = {
#ifdef CREMA_BUILD_AVX512
      {"ave_pool_bwd_avx512", Isa::avx512, vector_geometry, avx512_impl::ave_pool_bwd},
#endif
#ifdef CREMA_BUILD_AVX2
      {"ave_pool_bwd_avx2", Isa::avx2, vector_geometry, avx2_impl::ave_pool_bwd},
#endif
      {"ave_pool_bwd_scalar", Isa::scalar, any, scalar_impl::ave_pool_bwd},
  };
  return pick(table, g);
}

}  // namespace crema
