// Compiled with AVX-512 flags. 16 zmm accumulators (of 32 registers): enough independent chains
// to keep both FMA pipes busy through a 4-cycle latency.
#include <immintrin.h>

#include "crema/peak.h"

namespace crema {
namespace avx512_impl {

CREMA_PEAK_NO_ASAN
double fma_loop(int64_t iters, float* sink) {
  const __m512 m = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-6f);
  __m512 a[16];
  for (int k = 0; k < 16; ++k) a[k] = _mm512_set1_ps(1.f + 0.1f * k);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16
    for (int k = 0; k < 16; ++k) a[k] = _mm512_fmadd_ps(a[k], m, b);
  }
  __m512 s = a[0];
  for (int k = 1; k < 16; ++k) s = _mm512_add_ps(s, a[k]);
  *sink = _mm512_reduce_add_ps(s);
  return static_cast<double>(iters) * 16 * 16 * 2;
}

}  // namespace avx512_impl
}  // namespace crema
