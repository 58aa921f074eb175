// Winograd F(m x m, 3 x 3), AVX2 + FMA: a 16-channel block is two ymm. The GEMM micro-kernel
// keeps 6 rows x 16 columns of M in 12 ymm accumulators over packed 16-column U panels.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "crema/winograd.h"

namespace crema {
namespace avx2_impl {
namespace {

struct V16 {
  __m256 lo, hi;
};

template <int R>
inline void micro(const float* a, int64_t lda, const float* b, float* c, int64_t ldc, int64_t kc,
                  bool add) {
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * 16), b1 = _mm256_loadu_ps(b + k * 16 + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 ar = _mm256_broadcast_ss(a + r * lda + k);
      acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
    }
  }
  for (int r = 0; r < R; ++r)  // chunk sums start from zero (kWinogradChunk)
    for (int v = 0; v < 2; ++v) {
      float* p = c + r * ldc + 8 * v;
      _mm256_storeu_ps(p, add ? _mm256_add_ps(_mm256_loadu_ps(p), acc[r][v]) : acc[r][v]);
    }
}

// An 8 x 8 transpose of r[0..7] in place.
inline void transpose8(__m256 r[8]) {
  __m256 t[8], s[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    s[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    s[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    s[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    s[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  // s[q] (rows 0-3) and s[4 + q] (rows 4-7), 128-bit lane L: column 4L + q.
  for (int q = 0; q < 4; ++q) {
    r[q] = _mm256_permute2f128_ps(s[q], s[4 + q], 0x20);
    r[4 + q] = _mm256_permute2f128_ps(s[q], s[4 + q], 0x31);
  }
}

struct Ops {
  using V = V16;
  static V load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  static void store(float* p, V v) {
    _mm256_storeu_ps(p, v.lo);
    _mm256_storeu_ps(p + 8, v.hi);
  }
  static V zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static V add(V a, V b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
  static V relu(V a, float slope) {  // max(a, 0) + slope * min(a, 0)
    const __m256 z = _mm256_setzero_ps(), s = _mm256_set1_ps(slope);
    return {_mm256_fmadd_ps(s, _mm256_min_ps(a.lo, z), _mm256_max_ps(a.lo, z)),
            _mm256_fmadd_ps(s, _mm256_min_ps(a.hi, z), _mm256_max_ps(a.hi, z))};
  }
  static V sub(V a, V b) { return {_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)}; }
  static V neg(V a) { return sub(zero(), a); }
  static V mul(V a, float c) {
    const __m256 k = _mm256_set1_ps(c);
    return {_mm256_mul_ps(a.lo, k), _mm256_mul_ps(a.hi, k)};
  }
  static V fmadd(V x, float c, V acc) {
    const __m256 k = _mm256_set1_ps(c);
    return {_mm256_fmadd_ps(x.lo, k, acc.lo), _mm256_fmadd_ps(x.hi, k, acc.hi)};
  }

  static constexpr int panel = 16;
  static void gemm(const float* a, int64_t lda, const float* u, int64_t cpad, int64_t kpad,
                   float* c, int64_t ldc, int64_t rows) {
    constexpr int R = 6;
    for (int64_t k0 = 0; k0 < kpad; k0 += panel) {
      float* ck = c + k0;
      for (int64_t c0 = 0; c0 < cpad; c0 += kWinogradChunk) {
        const int64_t kc = std::min(kWinogradChunk, cpad - c0);
        const bool add = c0 > 0;
        const float* b = u + k0 * cpad + c0 * panel;
        const float* a0 = a + c0;
        int64_t r = 0;
        for (; r + R <= rows; r += R) micro<R>(a0 + r * lda, lda, b, ck + r * ldc, ldc, kc, add);
        const float* ar = a0 + r * lda;
        float* cr = ck + r * ldc;
        switch (rows - r) {
          case 5: micro<5>(ar, lda, b, cr, ldc, kc, add); break;
          case 4: micro<4>(ar, lda, b, cr, ldc, kc, add); break;
          case 3: micro<3>(ar, lda, b, cr, ldc, kc, add); break;
          case 2: micro<2>(ar, lda, b, cr, ldc, kc, add); break;
          case 1: micro<1>(ar, lda, b, cr, ldc, kc, add); break;
          default: break;
        }
      }
    }
  }

  static constexpr bool fast_pack = true;
  static void pack_row(const float* src, int64_t plane, int c_valid, int64_t width, float* dst) {
    int64_t x0 = 0;
    for (; x0 + 8 <= width; x0 += 8) {
      for (int h = 0; h < 2; ++h) {
        __m256 r[8];
        for (int c = 0; c < 8; ++c) {
          const int ch = 8 * h + c;
          r[c] = ch < c_valid ? _mm256_loadu_ps(src + ch * plane + x0) : _mm256_setzero_ps();
        }
        transpose8(r);
        for (int x = 0; x < 8; ++x) _mm256_storeu_ps(dst + (x0 + x) * 16 + 8 * h, r[x]);
      }
    }
    for (; x0 < width; ++x0)
      for (int c = 0; c < 16; ++c) dst[x0 * 16 + c] = c < c_valid ? src[c * plane + x0] : 0.f;
  }

  static constexpr bool fast_store = true;
  // y[16]: pixel (r, c) at 4r + c, lanes = 16 output channels.
  static void store_outputs4(const V* y, float* dst, int64_t plane, int64_t ldq, int rows,
                             int cols, int kv) {
    for (int h = 0; h < 2; ++h) {
      if (8 * h >= kv) break;
      for (int half = 0; half < 2; ++half) {  // output rows 2 half, 2 half + 1
        if (2 * half >= rows) break;
        __m256 r[8];
        for (int p = 0; p < 8; ++p) r[p] = h ? y[8 * half + p].hi : y[8 * half + p].lo;
        transpose8(r);  // r[kk]: 8 pixels (2 rows x 4) of output channel 8h + kk
        for (int kk = 0; kk < 8 && 8 * h + kk < kv; ++kk) {
          float* out = dst + (8 * h + kk) * plane + 2 * half * ldq;
          const int nr = std::min(2, rows - 2 * half);
          if (cols == 4) {
            _mm_storeu_ps(out, _mm256_castps256_ps128(r[kk]));
            if (nr > 1) _mm_storeu_ps(out + ldq, _mm256_extractf128_ps(r[kk], 1));
          } else {
            alignas(32) float v[8];
            _mm256_store_ps(v, r[kk]);
            for (int rr = 0; rr < nr; ++rr)
              for (int c = 0; c < cols; ++c) out[rr * ldq + c] = v[rr * 4 + c];
          }
        }
      }
    }
  }
};

}  // namespace
}  // namespace avx2_impl
}  // namespace crema

#define CREMA_WINOGRAD_NS avx2_impl
#include "winograd_impl.h"
