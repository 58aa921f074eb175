// AVX512-BF16 rows: the GEMM micro-kernel on VDPBF16PS (14 x 32 tile: 28 zmm accumulators, two
// B vectors of 16 words, one broadcast A word; each instruction adds both k of a pair to 16
// lanes) and the conversion on VCVTNEPS2BF16. Compiled with -mavx512bf16 (CMakeLists.txt); only
// called after the dispatcher has checked the CPU.
#if defined(CREMA_BUILD_AVX512_BF16)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#include "crema/bf16.h"
#include "crema/threads.h"

namespace crema {
namespace avx512_bf16_impl {
namespace {

#include "bf16_gemm_impl.h"

__m512bh as_bh(__m512i v) { return reinterpret_cast<__m512bh&>(v); }

struct DpTile {
  static constexpr int MR = 14, NR = 32;
  static constexpr int64_t KC = 512, MC = MR * 24, NC = NR * 128;

  __attribute__((noinline)) static void accumulate(int64_t kp, const uint32_t* a,
                                                   const uint32_t* b, float* acc) {
    __m512 c0[MR], c1[MR];
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm512_setzero_ps();
    for (int64_t p = 0; p < kp; ++p) {
      const __m512bh b0 = as_bh(_mm512_load_si512(b));
      const __m512bh b1 = as_bh(_mm512_load_si512(b + 16));
      _mm_prefetch(reinterpret_cast<const char*>(b + 8 * NR), _MM_HINT_T0);
#pragma GCC unroll 14
      for (int i = 0; i < MR; ++i) {
        const __m512bh ai = as_bh(_mm512_set1_epi32(static_cast<int>(a[i])));
        c0[i] = _mm512_dpbf16_ps(c0[i], ai, b0);
        c1[i] = _mm512_dpbf16_ps(c1[i], ai, b1);
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

  static void tile(int64_t kp, const uint32_t* a, const uint32_t* b, float* c, int64_t ldc,
                   int mr, int nr, float alpha, float beta) {
    alignas(64) float acc[MR * NR];
    for (int i = 0; i < mr; ++i) {
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + NR - 1), _MM_HINT_T0);
    }
    accumulate(kp, a, b, acc);
    const __mmask16 m0 = nr >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << nr) - 1u);
    const __mmask16 m1 = nr >= 32 ? __mmask16(0xFFFF)
                         : nr > 16 ? __mmask16((1u << (nr - 16)) - 1u)
                                   : __mmask16(0);
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int i = 0; i < mr; ++i) {
      float* row = c + i * ldc;
      __m512 v0 = _mm512_mul_ps(va, _mm512_load_ps(acc + i * NR));
      __m512 v1 = _mm512_mul_ps(va, _mm512_load_ps(acc + i * NR + 16));
      if (beta != 0.0f) {
        v0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, row), v0);
        v1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, row + 16), v1);
      }
      _mm512_mask_storeu_ps(row, m0, v0);
      _mm512_mask_storeu_ps(row + 16, m1, v1);
    }
  }
};

}  // namespace

void bf16_gemm(const Bf16GemmArgs& g) { bf16_gemm_run<DpTile>(g); }

void to_bf16(const float* src, bf16_t* dst, int64_t n) {
  crema::parallel_for(bf16_ceil_div(n, 4096), 4096, [&](int64_t blk) {
    const int64_t end = std::min<int64_t>(n, (blk + 1) * 4096);
    int64_t i = blk * 4096;
    for (; i + 16 <= end; i += 16) {
      const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), reinterpret_cast<const __m256i&>(h));
    }
    if (i < end) {
      const __mmask16 m = static_cast<__mmask16>((1u << (end - i)) - 1u);
      const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
      _mm256_mask_storeu_epi16(dst + i, m, reinterpret_cast<const __m256i&>(h));
    }
  });
}

}  // namespace avx512_bf16_impl
}  // namespace crema
#endif
