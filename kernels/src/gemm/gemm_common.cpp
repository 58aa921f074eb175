// SGEMM dispatch table, argument checks and the portable scalar variant (4 x 8 tile).
#include <algorithm>
#include <cstdint>

#include "crema/gemm.h"

#define CREMA_GEMM_NS crema_gemm_scalar
#include "gemm_impl.h"

namespace {

struct ScalarTile {
  static constexpr int MR = 4, NR = 8;
  static constexpr int64_t KC = 256, MC = 4 * 32, NC = 8 * 256;
  static constexpr bool kT8 = false;
  static void t8(const float*, int64_t, float*, int64_t) {}

  static void tile(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr,
                   int nr, float alpha, float beta) {
    float acc[MR][NR] = {};
    for (int64_t p = 0; p < kc; ++p) {
      for (int i = 0; i < MR; ++i) {
        const float ai = a[i];
        for (int j = 0; j < NR; ++j) acc[i][j] += ai * b[j];
      }
      a += MR;
      b += NR;
    }
    for (int i = 0; i < mr; ++i) {
      float* row = c + i * ldc;
      if (beta == 0.0f) {
        for (int j = 0; j < nr; ++j) row[j] = alpha * acc[i][j];
      } else {
        for (int j = 0; j < nr; ++j) row[j] = alpha * acc[i][j] + beta * row[j];
      }
    }
  }
};

constexpr auto any = crema::any_geometry<crema::GemmArgs>;
const crema::SgemmKernel kRows[] = {
#if defined(CREMA_BUILD_AVX512)
    {"sgemm_avx512_14x32", crema::Isa::avx512, any, crema::avx512_impl::sgemm},
#endif
#if defined(CREMA_BUILD_AVX2)
    {"sgemm_avx2_6x16", crema::Isa::avx2, any, crema::avx2_impl::sgemm},
#endif
    {"sgemm_scalar_4x8", crema::Isa::scalar, any, crema::scalar_impl::sgemm},
};
constexpr crema::KernelTable<crema::GemmArgs, crema::SgemmFn> kTable(kRows);

}  // namespace

namespace crema {

void scalar_impl::sgemm(const GemmArgs& g) { crema_gemm_scalar::run<ScalarTile>(g); }

const char* sgemm_args_error(const GemmArgs& g) {
  if (g.m < 0 || g.n < 0 || g.k < 0) return "M, N and K must be non-negative";
  const int64_t limit = int64_t{1} << 40;
  if (g.m > limit || g.n > limit || g.k > limit) return "M, N and K must be below 2^40";
  const int64_t a_cols = g.trans_a ? g.m : g.k;  // stored row length of A
  const int64_t b_cols = g.trans_b ? g.k : g.n;
  if (g.lda < std::max<int64_t>(1, a_cols)) return "lda is smaller than A's stored row length";
  if (g.ldb < std::max<int64_t>(1, b_cols)) return "ldb is smaller than B's stored row length";
  if (g.ldc < std::max<int64_t>(1, g.n)) return "ldc is smaller than N";
  return nullptr;
}

const SgemmKernel& sgemm_kernel() { return kTable.choose(GemmArgs{}); }

void sgemm(const GemmArgs& g) { kTable.choose(g).fn(g); }

}  // namespace crema
