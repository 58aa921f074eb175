// Winograd F(m x m, 3 x 3): the vector Ops of winograd_impl.h, written once against crema/simd.h
// and compiled per vector ISA (a unit per ISA from CMake, namespace crema::<isa>_impl). A
// 16-channel block is 16 / L vectors (one zmm, two ymm). The GEMM micro-kernel keeps kRows rows x
// one panel (2L columns) of M in registers over packed U panels (AVX-512: 8 x 32 in 16 zmm; AVX2:
// 6 x 16 in 12 ymm); input packing and output stores transpose L x L blocks through registers.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "crema/simd.h"
#include "crema/winograd.h"

#define CREMA_WINOGRAD_NS CREMA_ISA_NS
#include "winograd_vec_ops.h"

namespace crema {
namespace CREMA_ISA_NS {
namespace {

using VV = simd::Vec<Isa::CREMA_UNIT_ISA>;
using reg = VV::reg;
constexpr int L = VV::L;
// GEMM rows per register block: AVX-512 has 32 registers, AVX2 16.
constexpr int kRows = L == 16 ? 8 : 6;

// c[r][0 .. L NV) (+)= sum over k < kc of a(r, k) b[k][.], a(r, k) = a[r lda + k], or with
// a_k_major a[k lda + r] (the weight gradient's E, tiles x channels).
template <int R, int NV, bool a_k_major = false>
inline void micro(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                  int64_t kc, bool add) {
  reg acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = VV::zero();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    reg bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = VV::loadu(b + k * ldb + L * v);
    for (int r = 0; r < R; ++r) {
      const reg ar = VV::bcast(a_k_major ? a + k * lda + r : a + r * lda + k);
      for (int v = 0; v < NV; ++v) acc[r][v] = VV::fmadd(ar, bv[v], acc[r][v]);
    }
  }
  // A chunk's sum starts from zero and is added to the earlier chunks' only here (see
  // kWinogradChunk): continuing the running sum would round exactly like one long sum.
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) {
      float* p = c + r * ldc + L * v;
      VV::storeu(p, add ? VV::add(VV::loadu(p), acc[r][v]) : acc[r][v]);
    }
}

template <int NV>
inline void panel_rows(const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
                       int64_t rows, int64_t kc, bool add) {
  constexpr int64_t ldb = L * NV;
  winograd_row_blocks<kRows>(rows, [&](auto r, int64_t r0) {
    micro<decltype(r)::value, NV>(a + r0 * lda, lda, b, ldb, c + r0 * ldc, ldc, kc, add);
  });
}

// The transforms, packing and stores come from winograd_vec_ops.h; this unit adds the float32
// GEMM over U panels.
struct Ops : WinogradVecOps<VV> {
  static constexpr bool bf16_operands = false;
  static constexpr int panel = 2 * L;
  static void gemm(const float* a, int64_t lda, const float* u, int64_t cpad, int64_t kpad,
                   float* c, int64_t ldc, int64_t rows) {
    for (int64_t k0 = 0; k0 < kpad; k0 += panel) {
      // kpad is a multiple of 16: the last panel may be one vector wide (AVX-512).
      const int64_t width = std::min<int64_t>(panel, kpad - k0);
      for (int64_t c0 = 0; c0 < cpad; c0 += kWinogradChunk) {
        const int64_t kc = std::min(kWinogradChunk, cpad - c0);
        const float* b = u + k0 * cpad + c0 * width;
        if (width == panel)
          panel_rows<2>(a + c0, lda, b, c + k0, ldc, rows, kc, c0 > 0);
        else
          panel_rows<1>(a + c0, lda, b, c + k0, ldc, rows, kc, c0 > 0);
      }
    }
  }

  // du[kpad x cpad] += e^T . v over `count` tiles: e is count x kpad, v count x cpad (row-major).
  static void gemm_wgrad(const float* e, int64_t kpad, const float* v, int64_t cpad, float* du,
                         int64_t count) {
    for (int64_t c0 = 0; c0 < cpad; c0 += 2 * L) {
      const bool two = cpad - c0 >= 2 * L;  // cpad is a multiple of 16: the last may be one (zmm)
      winograd_row_blocks<kRows>(kpad, [&](auto r, int64_t k0) {
        constexpr int R = decltype(r)::value;
        if (two)
          micro<R, 2, true>(e + k0, kpad, v + c0, cpad, du + k0 * cpad + c0, cpad, count, true);
        else
          micro<R, 1, true>(e + k0, kpad, v + c0, cpad, du + k0 * cpad + c0, cpad, count, true);
      });
    }
  }
};

}  // namespace
}  // namespace CREMA_ISA_NS
}  // namespace crema

#include "winograd_impl.h"
