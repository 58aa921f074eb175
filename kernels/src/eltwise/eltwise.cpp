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

namespace {
constexpr auto any = any_geometry<int64_t>;
const ReluKernel kRows[] = {
#ifdef CREMA_BUILD_AVX512
    {"relu_avx512", Isa::avx512, any, {avx512_impl::relu_fwd, avx512_impl::relu_bwd}},
#endif
#ifdef CREMA_BUILD_AVX2
    {"relu_avx2", Isa::avx2, any, {avx2_impl::relu_fwd, avx2_impl::relu_bwd}},
#endif
    {"relu_scalar", Isa::scalar, any, {scalar_impl::relu_fwd, scalar_impl::relu_bwd}},
};
constexpr KernelTable<int64_t, ReluFns> kTable(kRows);
}  // namespace

const ReluKernel& relu_kernel() { return kTable.choose(0); }

}  // namespace crema
