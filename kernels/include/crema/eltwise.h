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

// The solver's per-iteration passes over the parameter arena (engine/solvers/updates.py).
enum class Regularization : int { none = 0, l2 = 1, l1 = 2 };
// One SGD step with Caffe's float32 operations in Caffe's order (no fused multiply-add, so the
// floats equal numpy's op-by-op result), per element:
//   g = diff * diff_scale                         (only when diff_scale != 1: iter_size)
//   g = g + (decay_mult * weight_decay) * data    (l2; l1: * sign(data))
//   h = history * momentum + (lr_mult * rate) * g
//   history = h; diff = h; data = data - h        (the last only when `apply`)
struct SgdStep {
  float diff_scale;
  float weight_decay;
  Regularization regularization;
  float rate;
  float momentum;
  bool apply;
};
using SgdUpdateFn = void (*)(float* data, float* diff, float* history, const float* lr_mult,
                             const float* decay_mult, int64_t n, const SgdStep& step);
// True when every x[i] is finite (no NaN, no infinity).
using AllFiniteFn = bool (*)(const float* x, int64_t n);

struct SolverFns {
  SgdUpdateFn sgd_update;
  AllFiniteFn all_finite;
};
// Geometry: the element count (every row takes any).
using SolverKernel = KernelRow<int64_t, SolverFns>;
const SolverKernel& solver_kernel();

// The threaded entry points: the chosen row over blocks of the arrays, threads sized by work.
void sgd_update(float* data, float* diff, float* history, const float* lr_mult,
                const float* decay_mult, int64_t n, const SgdStep& step);
bool all_finite(const float* x, int64_t n);

namespace scalar_impl {
void relu_fwd(const float* x, float* y, int64_t n, float slope);
void relu_bwd(const float* x, const float* dy, float* dx, int64_t n, float slope);
void sgd_update(float* data, float* diff, float* history, const float* lr_mult,
                const float* decay_mult, int64_t n, const SgdStep& step);
bool all_finite(const float* x, int64_t n);
}  // namespace scalar_impl
// The vector kernels: kernels/src/eltwise/eltwise_vec.isa.cpp, one source compiled per ISA.
#define CREMA_ELTWISE_ISA_DECLS                                                      \
  void relu_fwd(const float* x, float* y, int64_t n, float slope);                   \
  void relu_bwd(const float* x, const float* dy, float* dx, int64_t n, float slope); \
  void sgd_update(float* data, float* diff, float* history, const float* lr_mult,    \
                  const float* decay_mult, int64_t n, const SgdStep& step);          \
  bool all_finite(const float* x, int64_t n);
namespace avx2_impl {
CREMA_ELTWISE_ISA_DECLS
}  // namespace avx2_impl
namespace avx512_impl {
CREMA_ELTWISE_ISA_DECLS
}  // namespace avx512_impl
#undef CREMA_ELTWISE_ISA_DECLS

}  // namespace crema
