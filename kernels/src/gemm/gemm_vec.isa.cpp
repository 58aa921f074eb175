// SGEMM micro-kernel, written once against crema/simd.h and compiled per vector ISA (a unit per
// ISA from CMake, namespace crema::<isa>_impl): an MR x 2L register tile (AVX-512: 14 x 32 in 28
// zmm accumulators; AVX2: 6 x 16 in 12 ymm), two B vectors and one broadcast A per k, masked
// loads/stores for the column edge. The driver (blocking, packing, threads) is gemm_impl.h; the
// per-ISA choices are the tile height, the block sizes and whether to prefetch (GemmBlocks).
#include <cstdint>

#include "crema/gemm.h"
#include "crema/simd.h"

#define CREMA_GEMM_NS CREMA_UNIT_PASTE(crema_gemm_, CREMA_UNIT_ISA)
#include "gemm_impl.h"

namespace {

template <crema::Isa isa>
struct GemmBlocks;
#if defined(__AVX512F__)
template <>
struct GemmBlocks<crema::Isa::avx512> {
  static constexpr int MR = 14;
#ifndef CREMA_GEMM512_BLOCKS  // (KC, MC/MR, NC/NR): overridable for block-size experiments
#define CREMA_GEMM512_BLOCKS 256, 36, 128
#endif
  static constexpr int64_t blocks[3] = {CREMA_GEMM512_BLOCKS};
  static constexpr int64_t KC = blocks[0], MC_TILES = blocks[1], NC_TILES = blocks[2];
  // Prefetch B 8 steps ahead and the tile of C before the k loop (measured gains on Zen 5).
  static constexpr bool kPrefetch = true;
};
#endif
template <>
struct GemmBlocks<crema::Isa::avx2> {
  static constexpr int MR = 6;
  static constexpr int64_t KC = 256, MC_TILES = 48, NC_TILES = 256;
  static constexpr bool kPrefetch = false;
};

struct VecTile {
  using V = crema::simd::Vec<crema::Isa::CREMA_UNIT_ISA>;
  using B = GemmBlocks<crema::Isa::CREMA_UNIT_ISA>;
  using reg = V::reg;
  static constexpr int L = V::L;
  static constexpr int MR = B::MR, NR = 2 * L;
  static constexpr int64_t KC = B::KC, MC = MR * B::MC_TILES, NC = NR * B::NC_TILES;

  // d[k*dld + i] = s[i*ld + k], i, k < 8: an 8 x 8 transpose in ymm registers (every vector ISA
  // here has AVX2).
  static constexpr bool kT8 = true;
  static void t8(const float* s, int64_t ld, float* d, int64_t dld) {
    using V8 = crema::simd::Vec<crema::Isa::avx2>;
    V8::reg r[8];
    for (int i = 0; i < 8; ++i) r[i] = V8::loadu(s + i * ld);
    V8::transpose(r);
    for (int k = 0; k < 8; ++k) V8::storeu(d + k * dld, r[k]);
  }

  // The k loop alone (nothing else live, so all accumulators stay in registers; alpha and
  // beta live across it would push one to the stack), then the tile goes to acc.
  __attribute__((noinline)) static void accumulate(int64_t kc, const float* a, const float* b,
                                                   float* acc) {
    reg c0[MR], c1[MR];
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      c0[i] = V::zero();
      c1[i] = V::zero();
    }
    for (int64_t p = 0; p < kc; ++p) {
      const reg b0 = V::load(b);
      const reg b1 = V::load(b + L);
      if constexpr (B::kPrefetch) __builtin_prefetch(b + 8 * NR, 0, 3);
#pragma GCC unroll 14
      for (int i = 0; i < MR; ++i) {
        const reg ai = V::bcast(a + i);
        c0[i] = V::fmadd(ai, b0, c0[i]);
        c1[i] = V::fmadd(ai, b1, c1[i]);
      }
      a += MR;
      b += NR;
    }
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      V::store(acc + i * NR, c0[i]);
      V::store(acc + i * NR + L, c1[i]);
    }
  }

  static void tile(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr,
                   int nr, float alpha, float beta) {
    alignas(64) float acc[MR * NR];
    if constexpr (B::kPrefetch) {  // C is read (beta != 0) and written after the loop
      for (int i = 0; i < mr; ++i) {
        __builtin_prefetch(c + i * ldc, 0, 3);
        __builtin_prefetch(c + i * ldc + NR - 1, 0, 3);
      }
    }
    accumulate(kc, a, b, acc);
    const auto m0 = V::tail(nr), m1 = V::tail(nr > L ? nr - L : 0);  // tail(n) needs n >= 0
    const reg va = V::set1(alpha), vb = V::set1(beta);
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      if (i < mr) {
        float* row = c + i * ldc;
        reg v0 = V::mul(va, V::load(acc + i * NR));
        reg v1 = V::mul(va, V::load(acc + i * NR + L));
        if (beta != 0.0f) {
          v0 = V::fmadd(vb, V::load_m(row, m0), v0);
          v1 = V::fmadd(vb, V::load_m(row + L, m1), v1);
        }
        V::store_m(row, m0, v0);
        V::store_m(row + L, m1, v1);
      }
    }
  }
};

}  // namespace

namespace crema {
namespace CREMA_ISA_NS {
void sgemm(const GemmArgs& g) { CREMA_GEMM_NS::run<VecTile>(g); }
}  // namespace CREMA_ISA_NS
}  // namespace crema
