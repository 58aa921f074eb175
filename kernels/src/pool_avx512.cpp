// Compiled with AVX-512 F/BW/VL/DQ flags; only called when cpuid (and the OS) report them.
//
// One plane at a time (planes spread over threads), 16 adjacent outputs of a row per vector:
// lane l holds output px0 + l, whose window column for kernel offset j is
// c = (px0 + l) * stride_w - pad_w + j. Columns outside [0, W) are masked off, and masked
// loads/stores/gathers never touch those addresses. The input columns of the lanes are one
// load for stride 1, two loads and an even-lane permute for stride 2, a gather otherwise
// (unmasked where the whole block is inside the row). Each lane walks its window in row-major
// order, so MAX keeps the first maximum and AVE sums in the reference's order.
// No std:: containers here: their inline code would be compiled with AVX-512 flags and could
// be picked by the linker for the portable files too.
#include <immintrin.h>

#include <algorithm>
#include <cfloat>
#include <cstring>

#include "crema/pool.h"
#include "crema/threads.h"

namespace crema {
namespace avx512_impl {
namespace {

struct Cols {
  __m512i lane_stride;  // l * stride_w
  __m512i even;         // permute indices 0, 2, ..., 30
  __m512i width;
  int64_t W, sw;
};

inline Cols make_cols(const PoolGeom& g) {
  Cols k;
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  k.lane_stride = _mm512_mullo_epi32(lane, _mm512_set1_epi32(static_cast<int>(g.stride_w)));
  k.even = _mm512_add_epi32(lane, lane);
  k.width = _mm512_set1_epi32(static_cast<int>(g.width));
  k.W = g.width;
  k.sw = g.stride_w;
  return k;
}

inline __mmask16 tail_mask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

inline __mmask16 inside(const Cols& k, __m512i c) {
  return _mm512_cmpge_epi32_mask(c, _mm512_setzero_si512()) & _mm512_cmplt_epi32_mask(c, k.width);
}

// Masked loads and stores are kept to the edges: on some cores (AMD Zen 5 here) a masked load
// that misses the cache is several times slower than a plain one, so full vectors go unmasked.
inline __m512 load16(const float* p, __mmask16 m) {
  return m == 0xFFFF ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
}
inline void store16(float* p, __mmask16 m, __m512 v) {
  if (m == 0xFFFF)
    _mm512_storeu_ps(p, v);
  else
    _mm512_mask_storeu_ps(p, m, v);
}
inline void store16(int32_t* p, __mmask16 m, __m512i v) {
  if (m == 0xFFFF)
    _mm512_storeu_si512(p, v);
  else
    _mm512_mask_storeu_epi32(p, m, v);
}

// Bits [lo, hi) of a 32-bit mask (0 when empty).
inline uint32_t range32(int64_t lo, int64_t hi) {
  lo = std::max<int64_t>(lo, 0);
  hi = std::min<int64_t>(hi, 32);
  if (hi <= lo) return 0;
  const uint32_t upto = hi == 32 ? 0xFFFFFFFFu : ((1u << hi) - 1u);
  return upto & ~((1u << lo) - 1u);
}

// row[c] for the lanes' columns c (first column c0, lane step sw), 0 where !valid.
inline __m512 load_cols(const Cols& k, const float* row, int64_t c0, __m512i c, __mmask16 valid) {
  if (k.sw == 1) return load16(row + c0, valid);
  if (k.sw == 2) {
    // The 32 consecutive columns c0 .. c0 + 31 (in-image ones only), then the even ones.
    const uint32_t m = range32(-c0, k.W - c0);
    if (m == 0xFFFFFFFFu)
      return _mm512_permutex2var_ps(_mm512_loadu_ps(row + c0), k.even, _mm512_loadu_ps(row + c0 + 16));
    const __m512 a = _mm512_maskz_loadu_ps(static_cast<__mmask16>(m), row + c0);
    const __m512 b = _mm512_maskz_loadu_ps(static_cast<__mmask16>(m >> 16), row + c0 + 16);
    return _mm512_maskz_permutex2var_ps(valid, a, k.even, b);
  }
  return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid, c, row, 4);
}

// The same for a block whose every lane column (and every column the loads span) is inside.
inline __m512 load_cols_inside(const Cols& k, const float* row, int64_t c0, __m512i c) {
  if (k.sw == 1) return _mm512_loadu_ps(row + c0);
  if (k.sw == 2)
    return _mm512_permutex2var_ps(_mm512_loadu_ps(row + c0), k.even, _mm512_loadu_ps(row + c0 + 16));
  return _mm512_i32gather_ps(c, row, 4);
}

// Whether the block of lanes starting at column c0 reads only inside the row, for every kernel
// offset: then no lane needs a mask.
inline bool block_inside(const Cols& k, const PoolGeom& g, int64_t c0) {
  const int64_t span = k.sw == 2 ? 32 : 15 * k.sw + 1;
  return c0 >= 0 && c0 + g.kernel_w - 1 + span <= k.W;
}

// Scratch memory with internal linkage (see the note at the top).
struct Scratch {
  explicit Scratch(size_t n) : p(new float[n]) {}
  ~Scratch() { delete[] p; }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* p;
};

// Rows are streamed one at a time: the running maximum and argmax of an output row live in y
// and the mask (or `args`) and each input row is read start to end. (Walking all window rows
// per block of outputs reads kernel_h rows in an interleaved pattern that the prefetchers of
// some cores follow poorly: 3-4x slower on 224-wide planes here.) Each lane still sees its
// window in row-major order.
void max_plane(const Cols& k, const float* xp, const PoolGeom& g, float* yp, int32_t* mp,
               int32_t* args) {
  const int64_t H = g.height, W = g.width, OH = g.pooled_h, OW = g.pooled_w;
  const __m512 lowest = _mm512_set1_ps(-FLT_MAX);
  const __m512i none = _mm512_set1_epi32(-1);
  for (int64_t py = 0; py < OH; ++py) {
    int64_t hs = py * g.stride_h - g.pad_h;
    const int64_t he = std::min(hs + g.kernel_h, H);
    hs = std::max<int64_t>(hs, 0);
    float* yrow = yp + py * OW;
    int32_t* arow = mp ? mp + py * OW : args;
    if (hs >= he) {
      for (int64_t px0 = 0; px0 < OW; px0 += 16) {
        store16(yrow + px0, tail_mask(OW - px0), lowest);
        store16(arow + px0, tail_mask(OW - px0), none);
      }
      continue;
    }
    for (int64_t h = hs; h < he; ++h) {
      const float* row = xp + h * W;
      const __m512i hw = _mm512_set1_epi32(static_cast<int>(h * W));
      for (int64_t px0 = 0; px0 < OW; px0 += 16) {
        const __mmask16 st = tail_mask(OW - px0);
        const int64_t c0 = px0 * g.stride_w - g.pad_w;
        const __m512i cbase = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(c0)), k.lane_stride);
        __m512 best = h == hs ? lowest : _mm512_maskz_loadu_ps(st, yrow + px0);
        __m512i arg = h == hs ? none : _mm512_maskz_loadu_epi32(st, arow + px0);
        const bool all_inside = block_inside(k, g, c0);
        for (int64_t j = 0; j < g.kernel_w; ++j) {
          const __m512i c = _mm512_add_epi32(cbase, _mm512_set1_epi32(static_cast<int>(j)));
          __mmask16 better;
          __m512 v;
          if (all_inside) {
            v = load_cols_inside(k, row, c0 + j, c);
            better = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ);
          } else {
            const __mmask16 valid = inside(k, c);
            v = load_cols(k, row, c0 + j, c, valid);
            better = _mm512_mask_cmp_ps_mask(valid, v, best, _CMP_GT_OQ);
          }
          best = _mm512_mask_mov_ps(best, better, v);
          arg = _mm512_mask_mov_epi32(arg, better, _mm512_add_epi32(c, hw));
        }
        store16(yrow + px0, st, best);
        store16(arow + px0, st, arg);
      }
    }
  }
}

// Divisor of each lane's window (padding counts), as float; 0 for an empty window.
inline __m512 ave_divisor(const PoolGeom& g, __m512i cbase, int64_t hsize) {
  const __m512i wend = _mm512_min_epi32(
      _mm512_add_epi32(cbase, _mm512_set1_epi32(static_cast<int>(g.kernel_w))),
      _mm512_set1_epi32(static_cast<int>(g.width + g.pad_w)));
  const __m512i wsize = _mm512_max_epi32(_mm512_sub_epi32(wend, cbase), _mm512_setzero_si512());
  return _mm512_cvtepi32_ps(_mm512_mullo_epi32(wsize, _mm512_set1_epi32(static_cast<int>(hsize))));
}

// Streams the rows like max_plane: y holds the running float32 sums (the same values a register
// would hold) until the last window row, which divides.
void ave_plane(const Cols& k, const float* xp, const PoolGeom& g, float* yp) {
  const int64_t H = g.height, W = g.width, OH = g.pooled_h, OW = g.pooled_w;
  for (int64_t py = 0; py < OH; ++py) {
    int64_t hs = py * g.stride_h - g.pad_h;
    int64_t he = std::min(hs + g.kernel_h, H + g.pad_h);
    const int64_t hsize = he - hs;
    hs = std::max<int64_t>(hs, 0);
    he = std::min(he, H);
    float* yrow = yp + py * OW;
    if (hs >= he) {  // the window rows lie in the padding (or past it): 0, like an empty sum
      std::memset(yrow, 0, sizeof(float) * static_cast<size_t>(OW));
      continue;
    }
    for (int64_t h = hs; h < he; ++h) {
      const float* row = xp + h * W;
      for (int64_t px0 = 0; px0 < OW; px0 += 16) {
        const __mmask16 st = tail_mask(OW - px0);
        const int64_t c0 = px0 * g.stride_w - g.pad_w;
        const __m512i cbase = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(c0)), k.lane_stride);
        __m512 sum = h == hs ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(st, yrow + px0);
        const bool all_inside = block_inside(k, g, c0);
        for (int64_t j = 0; j < g.kernel_w; ++j) {
          const __m512i c = _mm512_add_epi32(cbase, _mm512_set1_epi32(static_cast<int>(j)));
          if (all_inside) {
            sum = _mm512_add_ps(sum, load_cols_inside(k, row, c0 + j, c));
          } else {
            const __mmask16 valid = inside(k, c);
            sum = _mm512_mask_add_ps(sum, valid, sum, load_cols(k, row, c0 + j, c, valid));
          }
        }
        if (h + 1 == he) {
          const __m512 size = ave_divisor(g, cbase, hsize);
          const __mmask16 nonempty = _mm512_cmp_ps_mask(size, _mm512_setzero_ps(), _CMP_GT_OQ);
          sum = _mm512_maskz_div_ps(nonempty, sum, size);
        }
        store16(yrow + px0, st, sum);
      }
    }
  }
}

// AVE backward, gathered per input element instead of scattered per window: for each window
// row (py, h), input column w receives grad[px] for the windows px that hold it, in increasing
// order (PoolColumnWindows), so each element of dx is read and written once per (py, h) and
// gets its additions in the reference's order (py, then px).
// grad: scratch of pooled_w + 32 floats for one output row of dy / divisor (zero padded, so a
// block may read grad[base, base + 32) whole).
void ave_bwd_plane(const Cols& k, const PoolColumnWindows& cw, const float* dyp,
                   const PoolGeom& g, float* dxp, float* grad) {
  const int64_t H = g.height, W = g.width, OH = g.pooled_h, OW = g.pooled_w;
  const int64_t most = cw.most();
  std::memset(dxp, 0, sizeof(float) * static_cast<size_t>(g.in_plane()));
  std::memset(grad, 0, sizeof(float) * static_cast<size_t>(OW + 32));
  for (int64_t py = 0; py < OH; ++py) {
    int64_t hs = py * g.stride_h - g.pad_h;
    int64_t he = std::min(hs + g.kernel_h, H + g.pad_h);
    const int64_t hsize = he - hs;
    hs = std::max<int64_t>(hs, 0);
    he = std::min(he, H);
    if (hs >= he) continue;
    for (int64_t px0 = 0; px0 < OW; px0 += 16) {
      const __mmask16 st = tail_mask(OW - px0);
      const __m512i cbase = _mm512_add_epi32(
          _mm512_set1_epi32(static_cast<int>(px0 * g.stride_w - g.pad_w)), k.lane_stride);
      const __m512 size = ave_divisor(g, cbase, hsize);
      const __mmask16 live = st & _mm512_cmp_ps_mask(size, _mm512_setzero_ps(), _CMP_GT_OQ);
      // 0 for an empty window (it holds no column anyway)
      _mm512_mask_storeu_ps(grad + px0, st,
                            _mm512_maskz_div_ps(live, load16(dyp + py * OW + px0, st), size));
    }
    for (int64_t h = hs; h < he; ++h) {
      float* row = dxp + h * W;
      for (int64_t w0 = 0; w0 < W; w0 += 16) {
        const __mmask16 st = tail_mask(W - w0);
        const __m512i first = _mm512_loadu_si512(cw.first() + w0);  // tables padded by 16
        const __m512i count = _mm512_loadu_si512(cw.count() + w0);
        __m512 acc = load16(row + w0, st);
        const int64_t base = cw.first()[w0];
        const int64_t last = cw.first()[std::min<int64_t>(w0 + 15, W - 1)];
        if (last + most - 1 - base < 32) {
          // every window of the block lies in grad[base, base + 32): two loads and permutes
          const __m512 g_lo = _mm512_loadu_ps(grad + base);
          const __m512 g_hi = _mm512_loadu_ps(grad + base + 16);
          const __m512i rel = _mm512_sub_epi32(first, _mm512_set1_epi32(static_cast<int>(base)));
          for (int64_t t = 0; t < most; ++t) {
            const __m512i tv = _mm512_set1_epi32(static_cast<int>(t));
            const __mmask16 m = _mm512_mask_cmpgt_epi32_mask(st, count, tv);
            acc = _mm512_mask_add_ps(acc, m, acc,
                                     _mm512_permutex2var_ps(g_lo, _mm512_add_epi32(rel, tv), g_hi));
          }
        } else {  // wide windows at stride 1: gather from the (cached) grad row
          for (int64_t t = 0; t < most; ++t) {
            const __m512i tv = _mm512_set1_epi32(static_cast<int>(t));
            const __mmask16 m = _mm512_mask_cmpgt_epi32_mask(st, count, tv);
            const __m512 gv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m,
                                                       _mm512_add_epi32(first, tv), grad, 4);
            acc = _mm512_mask_add_ps(acc, m, acc, gv);
          }
        }
        store16(row + w0, st, acc);
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
  const int64_t row = g.pooled_w + 32;
  Scratch grad(static_cast<size_t>(row * threads));
  parallel_for_indexed(g.planes(), g.in_plane() + g.out_plane() * g.kernel_h * g.kernel_w,
                       threads, [&](int64_t p, int t) {
    ave_bwd_plane(k, cw, dy + p * g.out_plane(), g, dx + p * g.in_plane(), grad.p + t * row);
  });
}

// Disjoint windows only (the table checks): each image element receives at most one gradient,
// so a gather-add-scatter of 16 argmaxes never has two lanes on one element. Masks outside
// [0, H*W) are skipped.
void max_pool_bwd(const float* dy, const int32_t* mask, const PoolGeom& g, float* dx) {
  const int64_t in = g.in_plane(), out = g.out_plane();
  parallel_for(g.planes(), in + out, [&](int64_t p) {
    float* dxp = dx + p * in;
    const float* dyp = dy + p * out;
    const int32_t* mp = mask + p * out;
    std::memset(dxp, 0, sizeof(float) * static_cast<size_t>(in));
    const __m512i limit = _mm512_set1_epi32(static_cast<int>(in));
    for (int64_t i = 0; i < out; i += 16) {
      const __mmask16 st = tail_mask(out - i);
      const __m512i m = st == 0xFFFF ? _mm512_loadu_si512(mp + i) : _mm512_maskz_loadu_epi32(st, mp + i);
      const __mmask16 valid = st & _mm512_cmpge_epi32_mask(m, _mm512_setzero_si512()) &
                              _mm512_cmplt_epi32_mask(m, limit);
      if (!valid) continue;
      const __m512 d = load16(dyp + i, st);
      const __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid, m, dxp, 4);
      _mm512_mask_i32scatter_ps(dxp, valid, m, _mm512_add_ps(v, d), 4);
    }
  });
}

}  // namespace avx512_impl
}  // namespace crema
