// Compiled with -mavx2 -mfma. 12 ymm accumulators + 2 constants fit the 16 ymm registers.
#include <immintrin.h>

#include "crema/peak.h"

namespace crema {
namespace avx2_impl {

CREMA_PEAK_NO_ASAN
double fma_loop(int64_t iters, float* sink) {
  const __m256 m = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-6f);
  __m256 a[12];
  for (int k = 0; k < 12; ++k) a[k] = _mm256_set1_ps(1.f + 0.1f * k);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int k = 0; k < 12; ++k) a[k] = _mm256_fmadd_ps(a[k], m, b);
  }
  __m256 s = a[0];
  for (int k = 1; k < 12; ++k) s = _mm256_add_ps(s, a[k]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  *sink = out[0] + out[7];
  return static_cast<double>(iters) * 12 * 8 * 2;
}

}  // namespace avx2_impl
}  // namespace crema
