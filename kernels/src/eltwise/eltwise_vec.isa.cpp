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

// The product a * b rounded to float32 on its own: the barrier keeps the compiler from
// contracting it with a following add into one fused multiply-add (another rounding, so other
// floats than Caffe's and numpy's).
inline V::reg product(V::reg a, V::reg b) {
  V::reg p = V::mul(a, b);
  V::keep(p);
  return p;
}

// numpy's sign: -1, 0 or 1 by lane, NaN for NaN (x * 0 keeps NaN and gives a zero otherwise).
inline V::reg sign(V::reg x) {
  const V::reg zero = V::zero();
  return V::select(V::gt(x, zero), V::set1(1.f),
                   V::select(V::gt(zero, x), V::set1(-1.f), V::mul(x, zero)));
}

// The SGD step of one vector (see SgdStep); the template flags lift the per-call choices out of
// the loop.
template <bool kScale, Regularization kReg, bool kApply>
inline void sgd_vector(float* data, float* diff, float* history, const float* lr_mult,
                       const float* decay_mult, const SgdStep& s, V::mask m, bool full) {
  auto load = [&](const float* p) { return full ? V::loadu(p) : V::load_m(p, m); };
  auto store = [&](float* p, V::reg v) {
    if (full) V::storeu(p, v);
    else V::store_m(p, m, v);
  };
  V::reg g = load(diff);
  if (kScale) g = product(g, V::set1(s.diff_scale));
  V::reg w = V::zero();
  if (kReg != Regularization::none || kApply) w = load(data);
  if (kReg != Regularization::none) {
    const V::reg local_decay = product(load(decay_mult), V::set1(s.weight_decay));
    g = V::add(g, product(local_decay, kReg == Regularization::l2 ? w : sign(w)));
  }
  const V::reg step = product(product(load(lr_mult), V::set1(s.rate)), g);
  const V::reg h = V::add(product(load(history), V::set1(s.momentum)), step);
  store(history, h);
  store(diff, h);
  if (kApply) store(data, V::sub(w, h));
}

template <bool kScale, Regularization kReg, bool kApply>
void sgd_loop(float* data, float* diff, float* history, const float* lr_mult,
              const float* decay_mult, int64_t n, const SgdStep& s) {
  int64_t i = 0;
  for (; i + L <= n; i += L)
    sgd_vector<kScale, kReg, kApply>(data + i, diff + i, history + i, lr_mult + i,
                                     decay_mult + i, s, V::tail(L), true);
  if (i < n)
    sgd_vector<kScale, kReg, kApply>(data + i, diff + i, history + i, lr_mult + i,
                                     decay_mult + i, s, V::tail(n - i), false);
}

template <bool kScale, Regularization kReg>
void sgd_apply_or_not(float* data, float* diff, float* history, const float* lr_mult,
                      const float* decay_mult, int64_t n, const SgdStep& s) {
  if (s.apply) sgd_loop<kScale, kReg, true>(data, diff, history, lr_mult, decay_mult, n, s);
  else sgd_loop<kScale, kReg, false>(data, diff, history, lr_mult, decay_mult, n, s);
}

template <bool kScale>
void sgd_by_regularization(float* data, float* diff, float* history, const float* lr_mult,
                           const float* decay_mult, int64_t n, const SgdStep& s) {
  switch (s.regularization) {
    case Regularization::none:
      return sgd_apply_or_not<kScale, Regularization::none>(data, diff, history, lr_mult,
                                                            decay_mult, n, s);
    case Regularization::l2:
      return sgd_apply_or_not<kScale, Regularization::l2>(data, diff, history, lr_mult,
                                                          decay_mult, n, s);
    case Regularization::l1:
      return sgd_apply_or_not<kScale, Regularization::l1>(data, diff, history, lr_mult,
                                                          decay_mult, n, s);
  }
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

void sgd_update(float* data, float* diff, float* history, const float* lr_mult,
                const float* decay_mult, int64_t n, const SgdStep& step) {
  if (step.diff_scale != 1.f)
    sgd_by_regularization<true>(data, diff, history, lr_mult, decay_mult, n, step);
  else
    sgd_by_regularization<false>(data, diff, history, lr_mult, decay_mult, n, step);
}

// x * 0 is 0 for a finite x and NaN for NaN or an infinity, so the sum of those products is
// NaN exactly when some x is not finite.
bool all_finite(const float* x, int64_t n) {
  const V::reg zero = V::zero();
  V::reg a0 = zero, a1 = zero;
  int64_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) {
    a0 = V::add(a0, V::mul(V::loadu(x + i), zero));
    a1 = V::add(a1, V::mul(V::loadu(x + i + L), zero));
  }
  for (; i < n; i += L) a0 = V::add(a0, V::mul(V::load_m(x + i, V::tail(n - i)), zero));
  return V::hsum(V::add(a0, a1)) == 0.f;
}

}  // namespace CREMA_ISA_NS
}  // namespace crema
