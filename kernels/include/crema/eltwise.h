// Elementwise kernels. Every pointer is float32, contiguous, n elements; in-place (y == x) is allowed.
#pragma once
#include <cstdint>

#include "crema/dispatch.h"
#include "crema/isa.h"

namespace crema {

// y = x > 0 ? x : slope * x
using ReluFwdFn = void (*)(const float* x, float* y, int64_t n, float slope);
// dx = dy * (x > 0 ? 1 : slope)
using ReluBwdFn = void (*)(const float* x, const float* dy, float* dx, int64_t n, float slope);

struct ReluFns {
  ReluFwdFn fwd;
  ReluBwdFn bwd;
};
// Geometry: the element count (every row takes any).
using ReluKernel = KernelRow<int64_t, ReluFns>;

// The ordered table's choice (best first, scalar last).
const ReluKernel& relu_kernel();

namespace scalar_impl {
void relu_fwd(const float* x, float* y, int64_t n, float slope);
void relu_bwd(const float* x, const float* dy, float* dx, int64_t n, float slope);
}  // namespace scalar_impl
// The vector kernels: kernels/src/eltwise/eltwise_vec.isa.cpp, one source compiled per ISA.
#define CREMA_ELTWISE_ISA_DECLS                                                  \
  void relu_fwd(const float* x, float* y, int64_t n, float slope);               \
  void relu_bwd(const float* x, const float* dy, float* dx, int64_t n, float slope);
namespace avx2_impl {
CREMA_ELTWISE_ISA_DECLS
}  // namespace avx2_impl
namespace avx512_impl {
CREMA_ELTWISE_ISA_DECLS
}  // namespace avx512_impl
#undef CREMA_ELTWISE_ISA_DECLS

}  // namespace crema
