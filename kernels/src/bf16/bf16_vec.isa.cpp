// The bf16 fallback written once against simd::Vec (this *.isa.cpp is compiled once per vector
// ISA): the GEMM micro-kernel widens each packed word (bf16 k | bf16 k+1 << 16) to two float32
// vectors -- k+1 is the word with its low half cleared, k the word shifted left by 16 -- and
// FMAs them, k+1 first as VDPBF16PS does. Products of bf16 values are exact in float32, so this
// is VDPBF16PS's arithmetic with float32 FMA. The float32 -> bf16 conversion is the scalar
// rule in a loop the compiler vectorizes with this unit's ISA.
// No std:: containers here (their inline code would carry this unit's ISA flags).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#include "crema/bf16.h"
#include "crema/simd.h"
#include "crema/threads.h"

namespace crema {
namespace CREMA_ISA_NS {
namespace {

#include "bf16_gemm_impl.h"

using V = simd::Vec<Isa::CREMA_UNIT_ISA>;
using reg = V::reg;
constexpr int L = V::L;

// The two float32 halves of L packed words.
#if defined(__AVX512F__)
struct Words {
  __m512i w;
  static Words load(const uint32_t* p) { return {_mm512_load_si512(p)}; }
  reg k0() const { return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xFFFF, w, 16)); }
  reg k1() const { return _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(-65536))); }
};
#else
struct Words {
  __m256i w;
  static Words load(const uint32_t* p) {
    return {_mm256_load_si256(reinterpret_cast<const __m256i*>(p))};
  }
  reg k0() const { return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)); }
  reg k1() const { return _mm256_castsi256_ps(_mm256_and_si256(w, _mm256_set1_epi32(-65536))); }
};
#endif

float word_k0(uint32_t w) {
  const uint32_t u = w << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
float word_k1(uint32_t w) {
  const uint32_t u = w & 0xFFFF0000u;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct WidenTile {
  // Registers: 2*MR accumulators + 4 widened B vectors + 2 broadcast A values.
  static constexpr int MR = L == 16 ? 12 : 4, NR = 2 * L;
  static constexpr int64_t KC = 384, MC = MR * 16, NC = NR * 128;

  __attribute__((noinline)) static void accumulate(int64_t kp, const uint32_t* a,
                                                   const uint32_t* b, float* acc) {
    reg c0[MR], c1[MR];
    for (int i = 0; i < MR; ++i) c0[i] = c1[i] = V::zero();
    for (int64_t p = 0; p < kp; ++p) {
      const Words w0 = Words::load(b), w1 = Words::load(b + L);
      const reg b0k1 = w0.k1(), b1k1 = w1.k1(), b0k0 = w0.k0(), b1k0 = w1.k0();
#pragma GCC unroll 12
      for (int i = 0; i < MR; ++i) {
        const reg a1 = V::set1(word_k1(a[i])), a0 = V::set1(word_k0(a[i]));
        c0[i] = V::fmadd(a0, b0k0, V::fmadd(a1, b0k1, c0[i]));
        c1[i] = V::fmadd(a0, b1k0, V::fmadd(a1, b1k1, c1[i]));
      }
      a += MR;
      b += NR;
    }
    for (int i = 0; i < MR; ++i) {
      V::store(acc + i * NR, c0[i]);
      V::store(acc + i * NR + L, c1[i]);
    }
  }

  static void tile(int64_t kp, const uint32_t* a, const uint32_t* b, float* c, int64_t ldc,
                   int mr, int nr, float alpha, float beta) {
    alignas(64) float acc[MR * NR];
    accumulate(kp, a, b, acc);
    const reg va = V::set1(alpha), vb = V::set1(beta);
    for (int i = 0; i < mr; ++i) {
      float* row = c + i * ldc;
      for (int h = 0; h < 2; ++h) {
        const int n = nr - h * L;
        if (n <= 0) break;
        reg v = V::mul(va, V::load(acc + i * NR + h * L));
        if (beta != 0.0f) v = V::fmadd(vb, V::maskz_loadu(row + h * L, n), v);
        V::mask_storeu(row + h * L, v, n);
      }
    }
  }
};

}  // namespace

void bf16_gemm(const Bf16GemmArgs& g) { bf16_gemm_run<WidenTile>(g); }

void to_bf16(const float* src, bf16_t* dst, int64_t n) {
  crema::parallel_for(bf16_ceil_div(n, 4096), 4096, [&](int64_t blk) {
    const int64_t end = std::min<int64_t>(n, (blk + 1) * 4096);
    for (int64_t i = blk * 4096; i < end; ++i) dst[i] = bf16_round(src[i]);
  });
}

}  // namespace CREMA_ISA_NS
}  // namespace crema
