// Compiled with -mavx2 -mfma; only called when cpuid reports AVX2+FMA.
//
// The AVX-512 scheme (pool_avx512.cpp) on 8 lanes: lane l holds output px0 + l of a row, its
// window column for offset j is c = (px0 + l) * stride_w - pad_w + j, and lanes whose column is
// outside [0, W) are masked (vmaskmov and masked gathers do not touch masked-off addresses).
// Stride 1: one load; stride 2: two loads and an even-lane shuffle; otherwise a gather (masked
// only at the row edges). Rows are streamed one at a time and AVE backward gathers per input
// element, as in pool_avx512.cpp (which explains why). No std:: containers here (see there).
#include <immintrin.h>

#include <algorithm>
#include <cfloat>
#include <cstring>

#include "crema/pool.h"
#include "crema/threads.h"

namespace crema {
namespace avx2_impl {
namespace {

struct Cols {
  __m256i lane;         // 0..7
  __m256i lane_stride;  // l * stride_w
  __m256i width;
  int64_t W, sw;
};

inline Cols make_cols(const PoolGeom& g) {
  Cols k;
  k.lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  k.lane_stride = _mm256_mullo_epi32(k.lane, _mm256_set1_epi32(static_cast<int>(g.stride_w)));
  k.width = _mm256_set1_epi32(static_cast<int>(g.width));
  k.W = g.width;
  k.sw = g.stride_w;
  return k;
}

// All-ones lanes l < n.
inline __m256i tail_mask(const Cols& k, int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<int64_t>(n, 8))), k.lane);
}

inline __m256i inside(const Cols& k, __m256i c) {
  return _mm256_and_si256(_mm256_cmpgt_epi32(c, _mm256_set1_epi32(-1)),
                          _mm256_cmpgt_epi32(k.width, c));
}

// vmaskmov only at the edges: a masked load that misses the cache is much slower than a plain
// one on some cores (AMD Zen 5 here).
inline bool all_lanes(__m256i m) { return _mm256_movemask_ps(_mm256_castsi256_ps(m)) == 0xFF; }
inline __m256 load8(const float* p, __m256i m) {
  return all_lanes(m) ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m);
}

inline __m256 load_cols(const Cols& k, const float* row, int64_t c0, __m256i c, __m256i valid) {
  if (k.sw == 1) return load8(row + c0, valid);
  if (k.sw == 2) {
    // Columns c0 .. c0 + 15 (in-image ones only), then the even ones, in order.
    const __m256i c_lo = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(c0)), k.lane);
    const __m256i c_hi = _mm256_add_epi32(c_lo, _mm256_set1_epi32(8));
    const __m256 lo = load8(row + c0, inside(k, c_lo));
    const __m256 hi = load8(row + c0 + 8, inside(k, c_hi));
    const __m256 ev = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));  // l0 l2 h0 h2 l4 l6 h4 h6
    const __m256 v = _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(ev), _MM_SHUFFLE(3, 1, 2, 0)));
    return _mm256_and_ps(v, _mm256_castsi256_ps(valid));
  }
  return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), row, c, _mm256_castsi256_ps(valid), 4);
}

// The same for a block whose loads all lie inside the row (block_inside).
inline __m256 load_cols_inside(const Cols& k, const float* row, int64_t c0, __m256i c) {
  if (k.sw == 1) return _mm256_loadu_ps(row + c0);
  if (k.sw == 2) {
    const __m256 ev = _mm256_shuffle_ps(_mm256_loadu_ps(row + c0), _mm256_loadu_ps(row + c0 + 8),
                                        _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), _MM_SHUFFLE(3, 1, 2, 0)));
  }
  return _mm256_i32gather_ps(row, c, 4);
}

inline bool block_inside(const Cols& k, const PoolGeom& g, int64_t c0) {
  const int64_t span = k.sw == 2 ? 16 : 7 * k.sw + 1;
  return c0 >= 0 && c0 + g.kernel_w - 1 + span <= k.W;
}

inline __m256 divisor(const PoolGeom& g, __m256i cbase, int64_t hsize) {
  const __m256i wend = _mm256_min_epi32(
      _mm256_add_epi32(cbase, _mm256_set1_epi32(static_cast<int>(g.kernel_w))),
      _mm256_set1_epi32(static_cast<int>(g.width + g.pad_w)));
  const __m256i wsize = _mm256_max_epi32(_mm256_sub_epi32(wend, cbase), _mm256_setzero_si256());
  return _mm256_cvtepi32_ps(_mm256_mullo_epi32(wsize, _mm256_set1_epi32(static_cast<int>(hsize))));
}

// Scratch memory with internal linkage (no std:: containers in this file).
struct Scratch {
  explicit Scratch(size_t n) : p(new float[n]) {}
  ~Scratch() { delete[] p; }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* p;
};

inline void store8(float* p, __m256i st, bool full, __m256 v) {
  if (full)
    _mm256_storeu_ps(p, v);
  else
    _mm256_maskstore_ps(p, st, v);
}

void max_plane(const Cols& k, const float* xp, const PoolGeom& g, float* yp, int32_t* mp,
               int32_t* args) {
  const int64_t H = g.height, W = g.width, OH = g.pooled_h, OW = g.pooled_w;
  const __m256 lowest = _mm256_set1_ps(-FLT_MAX);
  const __m256 none = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  for (int64_t py = 0; py < OH; ++py) {
    int64_t hs = py * g.stride_h - g.pad_h;
    const int64_t he = std::min(hs + g.kernel_h, H);
    hs = std::max<int64_t>(hs, 0);
    float* yrow = yp + py * OW;
    float* arow = reinterpret_cast<float*>(mp ? mp + py * OW : args);  // int32 bits as float lanes
    if (hs >= he) {
      for (int64_t px0 = 0; px0 < OW; px0 += 8) {
        const bool full = px0 + 8 <= OW;
        const __m256i st = tail_mask(k, OW - px0);
        store8(yrow + px0, st, full, lowest);
        store8(arow + px0, st, full, none);
      }
      continue;
    }
    for (int64_t h = hs; h < he; ++h) {
      const float* row = xp + h * W;
      const __m256i hw = _mm256_set1_epi32(static_cast<int>(h * W));
      for (int64_t px0 = 0; px0 < OW; px0 += 8) {
        const bool full = px0 + 8 <= OW;
        const __m256i st = tail_mask(k, OW - px0);
        const int64_t c0 = px0 * g.stride_w - g.pad_w;
        const __m256i cbase = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(c0)), k.lane_stride);
        __m256 best = lowest, arg = none;
        if (h != hs) {
          best = full ? _mm256_loadu_ps(yrow + px0) : _mm256_maskload_ps(yrow + px0, st);
          arg = full ? _mm256_loadu_ps(arow + px0) : _mm256_maskload_ps(arow + px0, st);
        }
        const bool all_inside = block_inside(k, g, c0);
        for (int64_t j = 0; j < g.kernel_w; ++j) {
          const __m256i c = _mm256_add_epi32(cbase, _mm256_set1_epi32(static_cast<int>(j)));
          __m256 v, better;
          if (all_inside) {
            v = load_cols_inside(k, row, c0 + j, c);
            better = _mm256_cmp_ps(v, best, _CMP_GT_OQ);
          } else {
            const __m256i valid = inside(k, c);
            v = load_cols(k, row, c0 + j, c, valid);
            better = _mm256_and_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ), _mm256_castsi256_ps(valid));
          }
          best = _mm256_blendv_ps(best, v, better);
          arg = _mm256_blendv_ps(arg, _mm256_castsi256_ps(_mm256_add_epi32(c, hw)), better);
        }
        store8(yrow + px0, st, full, best);
        store8(arow + px0, st, full, arg);
      }
    }
  }
}

void ave_plane(const Cols& k, const float* xp, const PoolGeom& g, float* yp) {
  const int64_t H = g.height, W = g.width, OH = g.pooled_h, OW = g.pooled_w;
  for (int64_t py = 0; py < OH; ++py) {
    int64_t hs = py * g.stride_h - g.pad_h;
    int64_t he = std::min(hs + g.kernel_h, H + g.pad_h);
    const int64_t hsize = he - hs;
    hs = std::max<int64_t>(hs, 0);
    he = std::min(he, H);
    float* yrow = yp + py * OW;
    if (hs >= he) {
      std::memset(yrow, 0, sizeof(float) * static_cast<size_t>(OW));
      continue;
    }
    for (int64_t h = hs; h < he; ++h) {
      const float* row = xp + h * W;
      for (int64_t px0 = 0; px0 < OW; px0 += 8) {
        const bool full = px0 + 8 <= OW;
        const __m256i st = tail_mask(k, OW - px0);
        const int64_t c0 = px0 * g.stride_w - g.pad_w;
        const __m256i cbase = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(c0)), k.lane_stride);
        __m256 sum = _mm256_setzero_ps();
        if (h != hs) sum = full ? _mm256_loadu_ps(yrow + px0) : _mm256_maskload_ps(yrow + px0, st);
        const bool all_inside = block_inside(k, g, c0);
        for (int64_t j = 0; j < g.kernel_w; ++j) {
          const __m256i c = _mm256_add_epi32(cbase, _mm256_set1_epi32(static_cast<int>(j)));
          // Masked-off lanes load +0, and adding +0 leaves a sum that started at +0 unchanged.
          sum = _mm256_add_ps(sum, all_inside ? load_cols_inside(k, row, c0 + j, c)
                                              : load_cols(k, row, c0 + j, c, inside(k, c)));
        }
        if (h + 1 == he) {
          const __m256 size = divisor(g, cbase, hsize);
          const __m256 nonempty = _mm256_cmp_ps(size, _mm256_setzero_ps(), _CMP_GT_OQ);
          sum = _mm256_and_ps(_mm256_div_ps(sum, _mm256_max_ps(size, _mm256_set1_ps(1.f))), nonempty);
        }
        store8(yrow + px0, st, full, sum);
      }
    }
  }
}

// Per input element, as avx512_impl: column w of each window row gets grad[px] for the windows
// that hold it, in increasing px (gathered from the cached grad row).
void ave_bwd_plane(const Cols& k, const PoolColumnWindows& cw, const float* dyp,
                   const PoolGeom& g, float* dxp, float* grad) {
  const int64_t H = g.height, W = g.width, OH = g.pooled_h, OW = g.pooled_w;
  const int64_t most = cw.most();
  std::memset(dxp, 0, sizeof(float) * static_cast<size_t>(g.in_plane()));
  for (int64_t py = 0; py < OH; ++py) {
    int64_t hs = py * g.stride_h - g.pad_h;
    int64_t he = std::min(hs + g.kernel_h, H + g.pad_h);
    const int64_t hsize = he - hs;
    hs = std::max<int64_t>(hs, 0);
    he = std::min(he, H);
    if (hs >= he) continue;
    for (int64_t px0 = 0; px0 < OW; px0 += 8) {
      const bool full = px0 + 8 <= OW;
      const __m256i st = tail_mask(k, OW - px0);
      const __m256i cbase = _mm256_add_epi32(
          _mm256_set1_epi32(static_cast<int>(px0 * g.stride_w - g.pad_w)), k.lane_stride);
      const __m256 size = divisor(g, cbase, hsize);
      const __m256 live = _mm256_cmp_ps(size, _mm256_setzero_ps(), _CMP_GT_OQ);
      const __m256 dyv = full ? _mm256_loadu_ps(dyp + py * OW + px0) : _mm256_maskload_ps(dyp + py * OW + px0, st);
      store8(grad + px0, st, full,
             _mm256_and_ps(_mm256_div_ps(dyv, _mm256_max_ps(size, _mm256_set1_ps(1.f))), live));
    }
    for (int64_t h = hs; h < he; ++h) {
      float* row = dxp + h * W;
      for (int64_t w0 = 0; w0 < W; w0 += 8) {
        const bool full = w0 + 8 <= W;
        const __m256i st = tail_mask(k, W - w0);
        // tables padded by 16 entries of count 0
        const __m256i first = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cw.first() + w0));
        const __m256i count = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cw.count() + w0));
        __m256 acc = full ? _mm256_loadu_ps(row + w0) : _mm256_maskload_ps(row + w0, st);
        for (int64_t t = 0; t < most; ++t) {
          const __m256i tv = _mm256_set1_epi32(static_cast<int>(t));
          const __m256 m = _mm256_castsi256_ps(_mm256_and_si256(_mm256_cmpgt_epi32(count, tv), st));
          const __m256 gv = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), grad,
                                                     _mm256_add_epi32(first, tv), m, 4);
          acc = _mm256_blendv_ps(acc, _mm256_add_ps(acc, gv), m);
        }
        store8(row + w0, st, full, acc);
      }
    }
  }
}

}  // namespace

void max_pool_fwd(const float* x, const PoolGeom& g, float* y, int32_t* mask) {
  const Cols k = make_cols(g);
  // Without a mask output the running argmax of a row needs a row of scratch per thread
  // (allocated here, outside the parallel region, so a failure raises instead of aborting).
  const int threads = num_threads();
  const int64_t row = mask ? 0 : g.pooled_w;
  Scratch args(static_cast<size_t>(row * threads));
  parallel_for_indexed(g.planes(), g.out_plane() * g.kernel_h * g.kernel_w, threads,
                       [&](int64_t p, int t) {
    max_plane(k, x + p * g.in_plane(), g, y + p * g.out_plane(),
              mask ? mask + p * g.out_plane() : nullptr,
              reinterpret_cast<int32_t*>(args.p + t * row));
  });
}

void ave_pool_fwd(const float* x, const PoolGeom& g, float* y) {
  const Cols k = make_cols(g);
  parallel_for(g.planes(), g.out_plane() * g.kernel_h * g.kernel_w, [&](int64_t p) {
    ave_plane(k, x + p * g.in_plane(), g, y + p * g.out_plane());
  });
}

void ave_pool_bwd(const float* dy, const PoolGeom& g, float* dx) {
  const Cols k = make_cols(g);
  const PoolColumnWindows cw(g);
  const int threads = num_threads();
  const int64_t row = g.pooled_w;
  Scratch grad(static_cast<size_t>(row * threads));
  parallel_for_indexed(g.planes(), g.in_plane() + g.out_plane() * g.kernel_h * g.kernel_w,
                       threads, [&](int64_t p, int t) {
    ave_bwd_plane(k, cw, dy + p * g.out_plane(), g, dx + p * g.in_plane(), grad.p + t * row);
  });
}

}  // namespace avx2_impl
}  // namespace crema
