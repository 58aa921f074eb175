// Compiled with AVX-512 F/BW/VL/DQ flags; only called when cpuid (and the OS) report them.
#include <immintrin.h>

#include "crema/eltwise.h"

namespace crema {
namespace avx512_impl {

void relu_fwd(const float* x, float* y, int64_t n, float slope) {
  const __m512 zero = _mm512_setzero_ps(), s = _mm512_set1_ps(slope);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 v = _mm512_loadu_ps(x + i);
    __mmask16 neg = _mm512_cmp_ps_mask(v, zero, _CMP_NGT_UQ);
    _mm512_storeu_ps(y + i, _mm512_mask_mul_ps(v, neg, v, s));
  }
  if (i < n) {  // masked tail: no scalar loop, no out-of-bounds access
    __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    __mmask16 neg = _mm512_cmp_ps_mask(v, zero, _CMP_NGT_UQ);
    _mm512_mask_storeu_ps(y + i, m, _mm512_mask_mul_ps(v, neg, v, s));
  }
}

void relu_bwd(const float* x, const float* dy, float* dx, int64_t n, float slope) {
  const __m512 zero = _mm512_setzero_ps(), s = _mm512_set1_ps(slope);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 v = _mm512_loadu_ps(x + i), g = _mm512_loadu_ps(dy + i);
    __mmask16 neg = _mm512_cmp_ps_mask(v, zero, _CMP_NGT_UQ);
    _mm512_storeu_ps(dx + i, _mm512_mask_mul_ps(g, neg, g, s));
  }
  if (i < n) {
    __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    __m512 v = _mm512_maskz_loadu_ps(m, x + i), g = _mm512_maskz_loadu_ps(m, dy + i);
    __mmask16 neg = _mm512_cmp_ps_mask(v, zero, _CMP_NGT_UQ);
    _mm512_mask_storeu_ps(dx + i, m, _mm512_mask_mul_ps(g, neg, g, s));
  }
}

}  // namespace avx512_impl
}  // namespace crema
