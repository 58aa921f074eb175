#include "crema/peak.h"

#include <algorithm>
#include <chrono>

namespace crema {
namespace scalar_impl {

// Keep this loop scalar: the SLP vectorizer would otherwise pack the chains into SSE registers
// and measure something other than the portable scalar path.
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize", "no-tree-slp-vectorize")))
#endif
CREMA_PEAK_NO_ASAN
double fma_loop(int64_t iters, float* sink) {
  const float m = 0.999999f, b = 1e-6f;
  float a0 = 1.f, a1 = 1.1f, a2 = 1.2f, a3 = 1.3f, a4 = 1.4f, a5 = 1.5f;
  float a6 = 1.6f, a7 = 1.7f, a8 = 1.8f, a9 = 1.9f, a10 = 2.f, a11 = 2.1f;
  for (int64_t i = 0; i < iters; ++i) {
    a0 = a0 * m + b; a1 = a1 * m + b; a2 = a2 * m + b; a3 = a3 * m + b;
    a4 = a4 * m + b; a5 = a5 * m + b; a6 = a6 * m + b; a7 = a7 * m + b;
    a8 = a8 * m + b; a9 = a9 * m + b; a10 = a10 * m + b; a11 = a11 * m + b;
  }
  *sink = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
  return static_cast<double>(iters) * 12 * 2;
}

}  // namespace scalar_impl

double peak_gflops(Isa isa, double seconds) {
  if (!isa_usable(isa)) return 0.0;
  double (*loop)(int64_t, float*) = scalar_impl::fma_loop;
#ifdef CREMA_BUILD_AVX512
  if (isa == Isa::avx512) loop = avx512_impl::fma_loop;
#endif
#ifdef CREMA_BUILD_AVX2
  if (isa == Isa::avx2) loop = avx2_impl::fma_loop;
#endif
  using clock = std::chrono::steady_clock;
  float sink = 0.f;
  const int64_t chunk = 1 << 16;  // ~1M multiply-adds: well under a millisecond per call
  // Warm-up: let the core reach its vector clock before timing.
  const double warm_seconds = std::min(0.05, seconds * 0.25);
  const auto warm_end = clock::now() + std::chrono::duration<double>(warm_seconds);
  while (clock::now() < warm_end) loop(chunk, &sink);
  double flops = 0.0;
  const auto start = clock::now();
  double elapsed = 0.0;
  do {
    flops += loop(chunk, &sink);
    elapsed = std::chrono::duration<double>(clock::now() - start).count();
  } while (elapsed < seconds);
  volatile float keep = sink;
  (void)keep;
  return flops / elapsed * 1e-9;
}

}  // namespace crema
