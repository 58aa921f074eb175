// AVX-512 SGEMM: 14 x 32 micro-kernel (28 zmm accumulators, two B vectors, one broadcast A),
// masked stores for the column edge. Compiled with -mavx512f (CMakeLists.txt); only called
// after the dispatcher has checked the CPU.
#if defined(CREMA_BUILD_AVX512)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#define CREMA_GEMM_NS crema_gemm_avx512
#include "gemm_impl.h"
#include "transpose8x8_avx.h"

namespace {

struct Avx512Tile {
  static constexpr int MR = 14, NR = 32;
#ifndef CREMA_GEMM512_BLOCKS  // (KC, MC/MR, NC/NR): overridable for block-size experiments
#define CREMA_GEMM512_BLOCKS 256, 36, 128
#endif
  static constexpr int64_t blocks[3] = {CREMA_GEMM512_BLOCKS};
  static constexpr int64_t KC = blocks[0], MC = MR * blocks[1], NC = NR * blocks[2];

  static constexpr bool kT8 = true;
  // d[k*dld + i] = s[i*ld + k], i, k < 8
  static void t8(const float* s, int64_t ld, float* d, int64_t dld) { transpose8x8(s, ld, d, dld); }

  // The k loop alone (nothing else live, so all accumulators stay in registers; alpha and
  // beta live across it would push one to the stack), then the tile goes to acc.
  __attribute__((noinline)) static void accumulate(int64_t kc, const float* a,
                                                   const float* b, float* acc) {
    __m512 c0[MR], c1[MR];
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      c0[i] = _mm512_setzero_ps();
      c1[i] = _mm512_setzero_ps();
    }
    for (int64_t p = 0; p < kc; ++p) {
      const __m512 b0 = _mm512_load_ps(b);
      const __m512 b1 = _mm512_load_ps(b + 16);
      _mm_prefetch(reinterpret_cast<const char*>(b + 8 * NR), _MM_HINT_T0);
#pragma GCC unroll 14
      for (int i = 0; i < MR; ++i) {
        const __m512 ai = _mm512_set1_ps(a[i]);
        c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
        c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
      }
      a += MR;
      b += NR;
    }
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      _mm512_store_ps(acc + i * NR, c0[i]);
      _mm512_store_ps(acc + i * NR + 16, c1[i]);
    }
  }

  static void tile(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr,
                   int nr, float alpha, float beta) {
    alignas(64) float acc[MR * NR];
    // The tile of C is read (beta != 0) and written after the loop: start fetching it now.
    for (int i = 0; i < mr; ++i) {
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + NR - 1), _MM_HINT_T0);
    }
    accumulate(kc, a, b, acc);
    __m512 c0[MR], c1[MR];
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      c0[i] = _mm512_load_ps(acc + i * NR);
      c1[i] = _mm512_load_ps(acc + i * NR + 16);
    }
    const __mmask16 m0 = nr >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << nr) - 1u);
    const __mmask16 m1 = nr >= 32 ? __mmask16(0xFFFF)
                         : nr > 16 ? __mmask16((1u << (nr - 16)) - 1u)
                                   : __mmask16(0);
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      if (i < mr) {
        float* row = c + i * ldc;
        __m512 v0 = _mm512_mul_ps(va, c0[i]);
        __m512 v1 = _mm512_mul_ps(va, c1[i]);
        if (beta != 0.0f) {
          v0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, row), v0);
          v1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, row + 16), v1);
        }
        _mm512_mask_storeu_ps(row, m0, v0);
        _mm512_mask_storeu_ps(row + 16, m1, v1);
      }
    }
  }
};

}  // namespace

namespace crema {
void sgemm_avx512(const GemmArgs& g) { crema_gemm_avx512::run<Avx512Tile>(g); }
}  // namespace crema
#endif
