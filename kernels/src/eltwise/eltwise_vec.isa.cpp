// Elementwise kernels written once against simd::Vec (crema/simd.h), compiled per vector ISA
// (a *.isa.cpp file). The tail is one masked vector, so no scalar loop and no access past n.
#include "crema/eltwise.h"
#include "crema/simd.h"

namespace crema {
namespace CREMA_ISA_NS {
namespace {

using V = simd::Vec<Isa::CREMA_UNIT_ISA>;
constexpr int L = V::L;

// x > 0 ? a : slope * a (NaN x takes the slope branch, as the scalar kernel does).
inline V::reg leaky(V::reg x, V::reg a, V::reg slope) {
  return V::select(V::gt(x, V::zero()), a, V::mul(a, slope));
}

}  // namespace

void relu_fwd(const float* x, float* y, int64_t n, float slope) {
  const V::reg s = V::set1(slope);
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const V::reg v = V::loadu(x + i);
    V::storeu(y + i, leaky(v, v, s));
  }
  if (i < n) {
    const V::mask m = V::tail(n - i);
    const V::reg v = V::load_m(x + i, m);
    V::store_m(y + i, m, leaky(v, v, s));
  }
}

void relu_bwd(const float* x, const float* dy, float* dx, int64_t n, float slope) {
  const V::reg s = V::set1(slope);
  int64_t i = 0;
  for (; i + L <= n; i += L) V::storeu(dx + i, leaky(V::loadu(x + i), V::loadu(dy + i), s));
  if (i < n) {
    const V::mask m = V::tail(n - i);
    V::store_m(dx + i, m, leaky(V::load_m(x + i, m), V::load_m(dy + i, m), s));
  }
}

}  // namespace CREMA_ISA_NS
}  // namespace crema
