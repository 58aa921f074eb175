// Compiled with -mavx2 -mfma; only called when cpuid reports AVX2+FMA.
#include <immintrin.h>

#include "crema/eltwise.h"

namespace crema {
namespace avx2_impl {

void relu_fwd(const float* x, float* y, int64_t n, float slope) {
  const __m256 zero = _mm256_setzero_ps(), s = _mm256_set1_ps(slope);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    __m256 pos = _mm256_cmp_ps(v, zero, _CMP_GT_OQ);
    _mm256_storeu_ps(y + i, _mm256_blendv_ps(_mm256_mul_ps(v, s), v, pos));
  }
  scalar_impl::relu_fwd(x + i, y + i, n - i, slope);
}

void relu_bwd(const float* x, const float* dy, float* dx, int64_t n, float slope) {
  const __m256 zero = _mm256_setzero_ps(), s = _mm256_set1_ps(slope);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i), g = _mm256_loadu_ps(dy + i);
    __m256 pos = _mm256_cmp_ps(v, zero, _CMP_GT_OQ);
    _mm256_storeu_ps(dx + i, _mm256_blendv_ps(_mm256_mul_ps(g, s), g, pos));
  }
  scalar_impl::relu_bwd(x + i, dy + i, dx + i, n - i, slope);
}

}  // namespace avx2_impl
}  // namespace crema
