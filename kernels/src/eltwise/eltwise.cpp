#include "crema/eltwise.h"

namespace crema {
namespace scalar_impl {

void relu_fwd(const float* x, float* y, int64_t n, float slope) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.f ? x[i] : slope * x[i];
}

void relu_bwd(const float* x, const float* dy, float* dx, int64_t n, float slope) {
  for (int64_t i = 0; i < n; ++i) dx[i] = x[i] > 0.f ? dy[i] : slope * dy[i];
}

}  // namespace scalar_impl

const ReluKernel& relu_kernel() {
  static const ReluKernel table[] = {
#ifdef CREMA_BUILD_AVX512
      {"relu_avx512", Isa::avx512, avx512_impl::relu_fwd, avx512_impl::relu_bwd},
#endif
#ifdef CREMA_BUILD_AVX2
      {"relu_avx2", Isa::avx2, avx2_impl::relu_fwd, avx2_impl::relu_bwd},
#endif
      {"relu_scalar", Isa::scalar, scalar_impl::relu_fwd, scalar_impl::relu_bwd},
  };
  for (const auto& k : table)
    if (isa_usable(k.isa)) return k;
  return table[sizeof(table) / sizeof(table[0]) - 1];
}

}  // namespace crema
