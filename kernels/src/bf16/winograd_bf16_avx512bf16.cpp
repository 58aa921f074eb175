// Winograd F(m x m, 3 x 3) with bf16 operands on AVX512-BF16: winograd_impl.h's driver with the
// AVX-512 transforms of winograd_vec_ops.h, V and U rounded to bf16 where they are stored, and a
// GEMM on VDPBF16PS (fp32 sums; M, the output transform, bias and ReLU stay float32).
//   V: per position, rows of Cpad bf16 (tile-major), so a 32-bit word is a channel pair.
//   U: per position, panels of 32 output channels (16 for an odd last block): word (c/2, k) =
//      bf16(U[c even][k]) | bf16(U[c odd][k]) << 16; each filter-transform call (one channel)
//      writes its half of the words with a masked 16-bit store.
//   GEMM: kRows tiles x one panel of accumulators over the channel pairs of a chunk of
//      kWinogradChunk channels (each chunk summed from zero, then added, as in float32).
//   Weight gradient: V and E of a block in tile pairs (winograd_impl.h, store_wgrad_operand);
//      kRows output channels x 32 input channels of accumulators over the block's tile pairs.
// Compiled with -mavx512bf16 (CMakeLists.txt); used only where the CPU has AVX512-BF16.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include <immintrin.h>

#include "crema/bf16.h"
#include "crema/simd.h"
#include "crema/winograd.h"

#define CREMA_WINOGRAD_NS avx512_bf16_impl
#include "../conv/winograd_vec_ops.h"

namespace crema {
namespace avx512_bf16_impl {
namespace {

using VV = simd::Vec<Isa::avx512>;
constexpr int kRows = 12;  // 12 x 2 accumulators + 2 panel vectors + a broadcast: 27 zmm

inline __m512bh as_bh(__m512i v) { return reinterpret_cast<__m512bh>(v); }

// c[r][0 .. 16 NV) (+)= sum over `pairs` pairs j of a(r, j) . b[j]; a(r, j) = a[r lda + j], or
// with a_k_major a[j lda + r] (the weight gradient's E); b rows ldb words apart.
template <int R, int NV, bool a_k_major = false>
inline void micro(const uint32_t* a, int64_t lda, const uint32_t* b, int64_t ldb, float* c,
                  int64_t ldc, int64_t pairs, bool add) {
  __m512 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (int64_t j = 0; j < pairs; ++j) {
    __m512bh bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = as_bh(_mm512_loadu_si512(b + j * ldb + 16 * v));
    for (int r = 0; r < R; ++r) {
      const uint32_t aw = a_k_major ? a[j * lda + r] : a[r * lda + j];
      const __m512bh ar = as_bh(_mm512_set1_epi32(static_cast<int>(aw)));
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], ar, bv[v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) {
      float* p = c + r * ldc + 16 * v;
      _mm512_storeu_ps(p, add ? _mm512_add_ps(_mm512_loadu_ps(p), acc[r][v]) : acc[r][v]);
    }
}

template <int NV>
inline void panel_rows(const uint32_t* a, int64_t lda, const uint32_t* b, float* c, int64_t ldc,
                       int64_t rows, int64_t pairs, bool add) {
  constexpr int64_t ldb = 16 * NV;
  winograd_row_blocks<kRows>(rows, [&](auto r, int64_t r0) {
    micro<decltype(r)::value, NV>(a + r0 * lda, lda, b, ldb, c + r0 * ldc, ldc, pairs, add);
  });
}

struct Ops : WinogradVecOps<VV> {
  static constexpr bool bf16_operands = true;
  static constexpr int panel = 32;

  static void store_bf16(uint16_t* p, V v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v.r[0])));
  }
  // v rounded to bf16 into the low (even) or high (odd) halves of the 16 words at w.
  static void store_bf16_halves(uint32_t* w, bool odd, V v) {
    __m512i words = _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v.r[0])));
    if (odd) words = _mm512_slli_epi32(words, 16);
    _mm512_mask_storeu_epi16(w, odd ? 0xAAAAAAAAu : 0x55555555u, words);
  }
  static void store_u_bf16(float* plane, int64_t cpad, int64_t kp0, int64_t width, int64_t c,
                           int64_t koff, V v) {
    store_bf16_halves(reinterpret_cast<uint32_t*>(plane) + kp0 * cpad / 2 + (c / 2) * width + koff,
                      (c & 1) != 0, v);
  }

  // c[rows x kpad] = a[rows x cpad] . U: a is bf16 (rows cpad elements apart), U in pair panels.
  static void gemm(const float* a, int64_t lda, const float* u, int64_t cpad, int64_t kpad,
                   float* c, int64_t ldc, int64_t rows) {
    const uint32_t* aw = reinterpret_cast<const uint32_t*>(a);
    const uint32_t* uw = reinterpret_cast<const uint32_t*>(u);
    const int64_t lda_w = lda / 2;
    for (int64_t k0 = 0; k0 < kpad; k0 += panel) {
      const int64_t width = std::min<int64_t>(panel, kpad - k0);  // 32, or 16 for the last
      for (int64_t c0 = 0; c0 < cpad; c0 += kWinogradChunk) {
        const int64_t pairs = std::min(kWinogradChunk, cpad - c0) / 2;
        const uint32_t* b = uw + k0 * cpad / 2 + (c0 / 2) * width;
        if (width == panel)
          panel_rows<2>(aw + c0 / 2, lda_w, b, c + k0, ldc, rows, pairs, c0 > 0);
        else
          panel_rows<1>(aw + c0 / 2, lda_w, b, c + k0, ldc, rows, pairs, c0 > 0);
      }
    }
  }

  // du[kpad x cpad] += e^T . v over `count` tiles, e and v in tile pairs (words [count/2][ld],
  // an odd count's last pair completed with a zero tile; see store_wgrad_operand).
  static void gemm_wgrad(const float* e, int64_t kpad, const float* v, int64_t cpad, float* du,
                         int64_t count) {
    const uint32_t* ew = reinterpret_cast<const uint32_t*>(e);
    const uint32_t* vw = reinterpret_cast<const uint32_t*>(v);
    const int64_t pairs = (count + 1) / 2;
    for (int64_t c0 = 0; c0 < cpad; c0 += 32) {
      const bool two = cpad - c0 >= 32;
      winograd_row_blocks<kRows>(kpad, [&](auto r, int64_t k0) {
        constexpr int R = decltype(r)::value;
        if (two)
          micro<R, 2, true>(ew + k0, kpad, vw + c0, cpad, du + k0 * cpad + c0, cpad, pairs, true);
        else
          micro<R, 1, true>(ew + k0, kpad, vw + c0, cpad, du + k0 * cpad + c0, cpad, pairs, true);
      });
    }
  }
};

}  // namespace
}  // namespace avx512_bf16_impl
}  // namespace crema

#include "../conv/winograd_impl.h"
