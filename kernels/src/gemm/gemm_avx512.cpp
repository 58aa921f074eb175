// AVX-512 SGEMM: 14 x 32 micro-kernel (28 zmm accumulators, two B vectors, one broadcast A),
// masked stores for the column edge. Compiled with -mavx512f (CMakeLists.txt); only called
// after the dispatcher has checked the CPU.
#if defined(CREMA_BUILD_AVX512)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#define CREMA_GEMM_NS crema_gemm_avx512
#include "gemm_impl.h"

namespace {

struct Avx512Tile {
  static constexpr int MR = 14, NR = 32;
#ifndef CREMA_GEMM512_BLOCKS  // (KC, MC/MR, NC/NR): overridable for block-size experiments
#define CREMA_GEMM512_BLOCKS 256, 36, 128
#endif
  static constexpr int64_t blocks[3] = {CREMA_GEMM512_BLOCKS};
  static constexpr int64_t KC = blocks[0], MC = MR * blocks[1], NC = NR * blocks[2];

  static constexpr bool kT8 = true;
  // d[k*dld + i] = s[i*ld + k], i, k < 8: unpack pairs, shuffle quads, swap 128-bit halves.
  static void t8(const float* s, int64_t ld, float* d, int64_t dld) {
    const __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + ld);
    const __m256 r2 = _mm256_loadu_ps(s + 2 * ld), r3 = _mm256_loadu_ps(s + 3 * ld);
    const __m256 r4 = _mm256_loadu_ps(s + 4 * ld), r5 = _mm256_loadu_ps(s + 5 * ld);
    const __m256 r6 = _mm256_loadu_ps(s + 6 * ld), r7 = _mm256_loadu_ps(s + 7 * ld);
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(d + dld, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(d + 2 * dld, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(d + 3 * dld, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(d + 4 * dld, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(d + 5 * dld, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(d + 6 * dld, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(d + 7 * dld, _mm256_permute2f128_ps(u3, u7, 0x31));
  }

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
