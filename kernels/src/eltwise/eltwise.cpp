#include "crema/eltwise.h"

#include <cmath>

#include "crema/threads.h"

namespace crema {
namespace scalar_impl {

void relu_fwd(const float* x, float* y, int64_t n, float slope) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.f ? x[i] : slope * x[i];
}

void relu_bwd(const float* x, const float* dy, float* dx, int64_t n, float slope) {
  for (int64_t i = 0; i < n; ++i) dx[i] = x[i] > 0.f ? dy[i] : slope * dy[i];
}

// numpy's sign: -1, 0 or 1, NaN for NaN.
static float sign(float v) { return v > 0.f ? 1.f : v < 0.f ? -1.f : v * 0.f; }

void sgd_update(float* data, float* diff, float* history, const float* lr_mult,
                const float* decay_mult, int64_t n, const SgdStep& s) {
  const bool scale = s.diff_scale != 1.f;
  for (int64_t i = 0; i < n; ++i) {
    float g = diff[i];
    if (scale) g = g * s.diff_scale;
    if (s.regularization != Regularization::none) {
      const float local_decay = decay_mult[i] * s.weight_decay;
      const float w = s.regularization == Regularization::l2 ? data[i] : sign(data[i]);
      g = g + local_decay * w;
    }
    const float h = history[i] * s.momentum + (lr_mult[i] * s.rate) * g;
    history[i] = h;
    diff[i] = h;
    if (s.apply) data[i] = data[i] - h;
  }
}

bool all_finite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
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

const SolverKernel kSolverRows[] = {
#ifdef CREMA_BUILD_AVX512
    {"solver_avx512", Isa::avx512, any, {avx512_impl::sgd_update, avx512_impl::all_finite}},
#endif
#ifdef CREMA_BUILD_AVX2
    {"solver_avx2", Isa::avx2, any, {avx2_impl::sgd_update, avx2_impl::all_finite}},
#endif
    {"solver_scalar", Isa::scalar, any, {scalar_impl::sgd_update, scalar_impl::all_finite}},
};
constexpr KernelTable<int64_t, SolverFns> kSolverTable(kSolverRows);

// The arena passes run over blocks of this many floats (64 KB of each stream, a multiple of
// every vector width and of the arena's 16-float alignment); a block is one parallel item.
constexpr int64_t kBlock = 16384;
// Rough element-operations per element of each pass (threads_for_work sizes the team by them).
constexpr int64_t kSgdWork = 10;
constexpr int64_t kFiniteWork = 1;
}  // namespace

const ReluKernel& relu_kernel() { return kTable.choose(0); }

const SolverKernel& solver_kernel() { return kSolverTable.choose(0); }

void sgd_update(float* data, float* diff, float* history, const float* lr_mult,
                const float* decay_mult, int64_t n, const SgdStep& step) {
  const SgdUpdateFn fn = solver_kernel().fn.sgd_update;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  parallel_for(blocks, kBlock * kSgdWork, [&](int64_t b) {
    const int64_t lo = b * kBlock;
    const int64_t len = n - lo < kBlock ? n - lo : kBlock;
    fn(data + lo, diff + lo, history + lo, lr_mult + lo, decay_mult + lo, len, step);
  });
}

bool all_finite(const float* x, int64_t n) {
  const AllFiniteFn fn = solver_kernel().fn.all_finite;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  bool finite = true;
  parallel_for(blocks, kBlock * kFiniteWork, [&](int64_t b) {
    const int64_t lo = b * kBlock;
    if (!fn(x + lo, n - lo < kBlock ? n - lo : kBlock)) {
#if defined(CREMA_HAVE_OPENMP)
#pragma omp atomic write
#endif
      finite = false;
    }
  });
  return finite;
}

}  // namespace crema
