// AVX2 + FMA SGEMM: 6 x 16 micro-kernel (12 ymm accumulators), masked loads/stores for the
// column edge. Compiled with -mavx2 -mfma (CMakeLists.txt); only called after the dispatcher has
// checked the CPU.
#if defined(CREMA_BUILD_AVX2)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#define CREMA_GEMM_NS crema_gemm_avx2
#include "gemm_impl.h"
#include "transpose8x8_avx.h"

namespace {

struct Avx2Tile {
  static constexpr int MR = 6, NR = 16;
  static constexpr int64_t KC = 256, MC = 6 * 48, NC = 16 * 256;

  static constexpr bool kT8 = true;
  // d[k*dld + i] = s[i*ld + k], i, k < 8
  static void t8(const float* s, int64_t ld, float* d, int64_t dld) { transpose8x8(s, ld, d, dld); }

  // The k loop alone (nothing else live, so all accumulators stay in registers; alpha and
  // beta live across it would push one to the stack), then the tile goes to acc.
  __attribute__((noinline)) static void accumulate(int64_t kc, const float* a,
                                                   const float* b, float* acc) {
    __m256 c0[MR], c1[MR];
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      c0[i] = _mm256_setzero_ps();
      c1[i] = _mm256_setzero_ps();
    }
    for (int64_t p = 0; p < kc; ++p) {
      const __m256 b0 = _mm256_load_ps(b);
      const __m256 b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
      for (int i = 0; i < MR; ++i) {
        const __m256 ai = _mm256_broadcast_ss(a + i);
        c0[i] = _mm256_fmadd_ps(ai, b0, c0[i]);
        c1[i] = _mm256_fmadd_ps(ai, b1, c1[i]);
      }
      a += MR;
      b += NR;
    }
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      _mm256_store_ps(acc + i * NR, c0[i]);
      _mm256_store_ps(acc + i * NR + 8, c1[i]);
    }
  }

  static void tile(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr,
                   int nr, float alpha, float beta) {
    alignas(64) float acc[MR * NR];
    accumulate(kc, a, b, acc);
    __m256 c0[MR], c1[MR];
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      c0[i] = _mm256_load_ps(acc + i * NR);
      c1[i] = _mm256_load_ps(acc + i * NR + 8);
    }
    const __m256i iota0 = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i iota1 = _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15);
    const __m256i vn = _mm256_set1_epi32(nr);
    const __m256i m0 = _mm256_cmpgt_epi32(vn, iota0), m1 = _mm256_cmpgt_epi32(vn, iota1);
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      if (i < mr) {
        float* row = c + i * ldc;
        __m256 v0 = _mm256_mul_ps(va, c0[i]);
        __m256 v1 = _mm256_mul_ps(va, c1[i]);
        if (nr == NR) {
          if (beta != 0.0f) {
            v0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(row), v0);
            v1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(row + 8), v1);
          }
          _mm256_storeu_ps(row, v0);
          _mm256_storeu_ps(row + 8, v1);
        } else {
          if (beta != 0.0f) {
            v0 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(row, m0), v0);
            v1 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(row + 8, m1), v1);
          }
          _mm256_maskstore_ps(row, m0, v0);
          _mm256_maskstore_ps(row + 8, m1, v1);
        }
      }
    }
  }
};

}  // namespace

namespace crema {
void sgemm_avx2(const GemmArgs& g) { crema_gemm_avx2::run<Avx2Tile>(g); }
}  // namespace crema
#endif
