// Winograd F(m x m, 3 x 3), AVX-512 (F/BW/VL/DQ): one zmm holds a 16-channel block. The GEMM
// micro-kernel keeps 8 rows x 32 columns of M in 16 zmm accumulators and streams packed
// 32-column U panels; input packing and output stores transpose through registers.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "crema/winograd.h"

namespace crema {
namespace avx512_impl {
namespace {

// A 16 x 16 transpose: r[i] row i in, r[j] = old column j out.
inline void transpose16(__m512 r[16]) {
  __m512 a[16], b[16];
  for (int i = 0; i < 8; ++i) {
    a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a0 = _mm512_castps_pd(a[4 * i]), a1 = _mm512_castps_pd(a[4 * i + 1]);
    const __m512d a2 = _mm512_castps_pd(a[4 * i + 2]), a3 = _mm512_castps_pd(a[4 * i + 3]);
    b[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
    b[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
    b[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
    b[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
  }
  // b[4i + q], 128-bit lane L: column 4L + q of rows 4i .. 4i + 3.
  for (int q = 0; q < 4; ++q) {
    const __m512 c = _mm512_shuffle_f32x4(b[q], b[4 + q], 0x88);
    const __m512 d = _mm512_shuffle_f32x4(b[q], b[4 + q], 0xDD);
    const __m512 e = _mm512_shuffle_f32x4(b[8 + q], b[12 + q], 0x88);
    const __m512 f = _mm512_shuffle_f32x4(b[8 + q], b[12 + q], 0xDD);
    r[q] = _mm512_shuffle_f32x4(c, e, 0x88);
    r[8 + q] = _mm512_shuffle_f32x4(c, e, 0xDD);
    r[4 + q] = _mm512_shuffle_f32x4(d, f, 0x88);
    r[12 + q] = _mm512_shuffle_f32x4(d, f, 0xDD);
  }
}

template <int R, int NV>
inline void micro(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                  int64_t kc, bool add) {
  __m512 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    __m512 bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_ps(b + k * ldb + 16 * v);
    for (int r = 0; r < R; ++r) {
      const __m512 ar = _mm512_set1_ps(a[r * lda + k]);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
    }
  }
  // A chunk's sum starts from zero and is added to the earlier chunks' only here (see
  // kWinogradChunk): continuing the running sum would round exactly like one long sum.
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) {
      float* p = c + r * ldc + 16 * v;
      _mm512_storeu_ps(p, add ? _mm512_add_ps(_mm512_loadu_ps(p), acc[r][v]) : acc[r][v]);
    }
}

constexpr int kRows = 8;

// micro<R> for the R = rows % kRows leftover rows.
template <int NV, int R = kRows - 1>
inline void tail_rows(int rows, const float* a, int64_t lda, const float* b, int64_t ldb,
                      float* c, int64_t ldc, int64_t kc, bool add) {
  if constexpr (R >= 1) {
    if (rows == R)
      micro<R, NV>(a, lda, b, ldb, c, ldc, kc, add);
    else
      tail_rows<NV, R - 1>(rows, a, lda, b, ldb, c, ldc, kc, add);
  }
}

template <int NV>
inline void panel_rows(const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
                       int64_t rows, int64_t kc, bool add) {
  constexpr int64_t ldb = 16 * NV;
  int64_t r = 0;
  for (; r + kRows <= rows; r += kRows)
    micro<kRows, NV>(a + r * lda, lda, b, ldb, c + r * ldc, ldc, kc, add);
  if (rows > r)
    tail_rows<NV>(static_cast<int>(rows - r), a + r * lda, lda, b, ldb, c + r * ldc, ldc, kc,
                  add);
}

struct Ops {
  using V = __m512;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V zero() { return _mm512_setzero_ps(); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V relu(V a, float slope) {  // max(a, 0) + slope * min(a, 0)
    const __m512 z = _mm512_setzero_ps();
    return _mm512_fmadd_ps(_mm512_set1_ps(slope), _mm512_min_ps(a, z), _mm512_max_ps(a, z));
  }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V neg(V a) { return _mm512_sub_ps(_mm512_setzero_ps(), a); }
  static V mul(V a, float c) { return _mm512_mul_ps(a, _mm512_set1_ps(c)); }
  static V fmadd(V x, float c, V acc) { return _mm512_fmadd_ps(x, _mm512_set1_ps(c), acc); }

  static constexpr int panel = 32;
  static void gemm(const float* a, int64_t lda, const float* u, int64_t cpad, int64_t kpad,
                   float* c, int64_t ldc, int64_t rows) {
    for (int64_t k0 = 0; k0 < kpad; k0 += panel) {
      const int64_t width = std::min<int64_t>(panel, kpad - k0);
      for (int64_t c0 = 0; c0 < cpad; c0 += kWinogradChunk) {
        const int64_t kc = std::min(kWinogradChunk, cpad - c0);
        const float* b = u + k0 * cpad + c0 * width;
        if (width == 32)
          panel_rows<2>(a + c0, lda, b, c + k0, ldc, rows, kc, c0 > 0);
        else
          panel_rows<1>(a + c0, lda, b, c + k0, ldc, rows, kc, c0 > 0);
      }
    }
  }

  static constexpr bool fast_pack = true;
  static void pack_row(const float* src, int64_t plane, int c_valid, int64_t width, float* dst) {
    for (int64_t x0 = 0; x0 < width; x0 += 16) {
      const int nx = static_cast<int>(std::min<int64_t>(16, width - x0));
      const __mmask16 m = static_cast<__mmask16>((1u << nx) - 1u);
      __m512 r[16];
      for (int c = 0; c < 16; ++c)
        r[c] = c < c_valid ? _mm512_maskz_loadu_ps(m, src + c * plane + x0) : _mm512_setzero_ps();
      transpose16(r);
      for (int x = 0; x < nx; ++x) _mm512_storeu_ps(dst + (x0 + x) * 16, r[x]);
    }
  }

  // y[16]: pixel (r, c) at 4r + c, lanes = 16 output channels; see winograd_impl.h.
  static constexpr bool fast_store = true;
  static void store_outputs4(const V* y, float* dst, int64_t plane, int64_t ldq, int rows,
                             int cols, int kv) {
    const __mmask8 cm = static_cast<__mmask8>((1u << cols) - 1u);
    for (int r = 0; r < rows; ++r) {
      const __m512 t0 = _mm512_unpacklo_ps(y[4 * r], y[4 * r + 1]);
      const __m512 t1 = _mm512_unpackhi_ps(y[4 * r], y[4 * r + 1]);
      const __m512 t2 = _mm512_unpacklo_ps(y[4 * r + 2], y[4 * r + 3]);
      const __m512 t3 = _mm512_unpackhi_ps(y[4 * r + 2], y[4 * r + 3]);
      // u[q], 128-bit lane L: the 4 pixels of row r for output channel 4L + q.
      __m512 u[4];
      u[0] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2)));
      u[1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2)));
      u[2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3)));
      u[3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3)));
      float* row = dst + r * ldq;
      for (int kk = 0; kk < kv; ++kk) {
        const __m512 src = u[kk & 3];
        __m128 v;
        switch (kk >> 2) {
          case 0: v = _mm512_castps512_ps128(src); break;
          case 1: v = _mm512_extractf32x4_ps(src, 1); break;
          case 2: v = _mm512_extractf32x4_ps(src, 2); break;
          default: v = _mm512_extractf32x4_ps(src, 3); break;
        }
        if (cols == 4)
          _mm_storeu_ps(row + kk * plane, v);
        else
          _mm_mask_storeu_ps(row + kk * plane, cm, v);
      }
    }
  }
};

}  // namespace
}  // namespace avx512_impl
}  // namespace crema

#define CREMA_WINOGRAD_NS avx512_impl
#include "winograd_impl.h"
