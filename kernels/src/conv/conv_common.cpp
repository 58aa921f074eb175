// Portable direct convolution (the plain loops every geometry can use), the geometry check and
// the dispatch tables of conv.h.
#include <algorithm>
#include <cstring>
#include <initializer_list>

#include "crema/conv.h"
#include "crema/threads.h"

namespace crema {

const char* conv_geom_error(const ConvGeom& g) {
  if (g.N <= 0 || g.C <= 0 || g.H <= 0 || g.W <= 0 || g.K <= 0)
    return "N, C, H, W and num_output must be positive";
  if (g.R <= 0 || g.S <= 0) return "kernel sizes must be positive";
  if (g.sh <= 0 || g.sw <= 0 || g.dh <= 0 || g.dw <= 0)
    return "stride and dilation must be positive";
  if (g.ph < 0 || g.pw < 0) return "pad must be non-negative";
  if (g.G <= 0 || g.C % g.G || g.K % g.G)
    return "group must be positive and divide both the input and output channels";
  // Keep every product below far from int64 overflow (each factor < 2^20, products checked).
  const int64_t big = int64_t{1} << 20;
  for (int64_t v : {g.N, g.C, g.H, g.W, g.K, g.R, g.S, g.ph, g.pw, g.sh, g.sw, g.dh, g.dw})
    if (v >= big) return "a convolution size is too large (each must be below 2^20)";
  if (g.H + 2 * g.ph < g.dh * (g.R - 1) + 1 || g.W + 2 * g.pw < g.dw * (g.S - 1) + 1)
    return "the dilated kernel is larger than the padded input";
  const int64_t lim = int64_t{1} << 40;
  auto fits = [&](std::initializer_list<int64_t> f) {
    int64_t p = 1;
    for (int64_t v : f) {
      if (__builtin_mul_overflow(p, v, &p) || p >= lim) return false;
    }
    return true;
  };
  // Padded (and channel-rounded) copies: up to (C + 16) * (H + 2 pad + dilated extent) * (...).
  const int64_t hp = g.H + 2 * g.ph + g.dh * g.R + g.sh, wp = g.W + 2 * g.pw + g.dw * g.S + g.sw;
  if (!fits({g.N, g.C + 16 * g.G, hp, wp}) || !fits({g.N, g.K + 16 * g.G, g.P(), g.Q()}) ||
      !fits({g.K + 16, g.C + 16, g.R, g.S}) || !fits({g.N, g.K, g.C, g.R, g.S}))
    return "the convolution is too large (a tensor would have 2^40 elements or more)";
  return nullptr;
}

namespace scalar_impl {

void conv_fwd(const float* x, const float* w, const float* bias, float* y, const ConvGeom& g,
              float*, bool relu, float slope, float*) {
  const int64_t P = g.P(), Q = g.Q(), Cg = g.Cg(), Kg = g.Kg(), RS = g.R * g.S;
  parallel_for(g.N * g.K, P * Q * Cg * RS, [&](int64_t item) {
    const int64_t n = item / g.K, k = item % g.K, c0 = (k / Kg) * Cg;
    float* yk = y + item * P * Q;
    const float b = bias ? bias[k] : 0.f;
    for (int64_t i = 0; i < P * Q; ++i) yk[i] = b;
    for (int64_t c = 0; c < Cg; ++c) {
      const float* xc = x + (n * g.C + c0 + c) * g.H * g.W;
      for (int64_t r = 0; r < g.R; ++r)
        for (int64_t s = 0; s < g.S; ++s) {
          const float wv = w[((k * Cg + c) * g.R + r) * g.S + s];
          for (int64_t p = 0; p < P; ++p) {
            const int64_t h = p * g.sh - g.ph + r * g.dh;
            if (h < 0 || h >= g.H) continue;
            for (int64_t q = 0; q < Q; ++q) {
              const int64_t ww = q * g.sw - g.pw + s * g.dw;
              if (ww >= 0 && ww < g.W) yk[p * Q + q] += wv * xc[h * g.W + ww];
            }
          }
        }
    }
    if (relu)
      for (int64_t i = 0; i < P * Q; ++i)
        yk[i] = std::max(yk[i], 0.f) + slope * std::min(yk[i], 0.f);
  });
}

void conv_bwd_data(const float* dy, const float* w, float* dx, const ConvGeom& g, float*) {
  const int64_t P = g.P(), Q = g.Q(), Cg = g.Cg(), Kg = g.Kg();
  // One item per input plane: it gathers from every output plane of its group.
  parallel_for(g.N * g.C, Kg * P * Q * g.R * g.S, [&](int64_t item) {
    const int64_t n = item / g.C, c = item % g.C, gi = c / Cg, cc = c % Cg;
    float* dxc = dx + item * g.H * g.W;
    std::memset(dxc, 0, sizeof(float) * g.H * g.W);
    for (int64_t kk = 0; kk < Kg; ++kk) {
      const int64_t k = gi * Kg + kk;
      const float* dyk = dy + (n * g.K + k) * P * Q;
      for (int64_t r = 0; r < g.R; ++r)
        for (int64_t s = 0; s < g.S; ++s) {
          const float wv = w[((k * Cg + cc) * g.R + r) * g.S + s];
          for (int64_t p = 0; p < P; ++p) {
            const int64_t h = p * g.sh - g.ph + r * g.dh;
            if (h < 0 || h >= g.H) continue;
            for (int64_t q = 0; q < Q; ++q) {
              const int64_t ww = q * g.sw - g.pw + s * g.dw;
              if (ww >= 0 && ww < g.W) dxc[h * g.W + ww] += wv * dyk[p * Q + q];
            }
          }
        }
    }
  });
}

void conv_bwd_weights(const float* x, const float* dy, float* dw, float* db, const ConvGeom& g,
                      float*) {
  const int64_t P = g.P(), Q = g.Q(), Cg = g.Cg(), Kg = g.Kg();
  parallel_for(g.K, g.N * P * Q * Cg * g.R * g.S, [&](int64_t k) {
    const int64_t c0 = (k / Kg) * Cg;
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t r = 0; r < g.R; ++r)
        for (int64_t s = 0; s < g.S; ++s) {
          float acc = 0.f;
          for (int64_t n = 0; n < g.N; ++n) {
            const float* xc = x + (n * g.C + c0 + c) * g.H * g.W;
            const float* dyk = dy + (n * g.K + k) * P * Q;
            for (int64_t p = 0; p < P; ++p) {
              const int64_t h = p * g.sh - g.ph + r * g.dh;
              if (h < 0 || h >= g.H) continue;
              for (int64_t q = 0; q < Q; ++q) {
                const int64_t ww = q * g.sw - g.pw + s * g.dw;
                if (ww >= 0 && ww < g.W) acc += dyk[p * Q + q] * xc[h * g.W + ww];
              }
            }
          }
          dw[((k * Cg + c) * g.R + r) * g.S + s] += acc;
        }
    if (db) {
      float acc = 0.f;
      for (int64_t n = 0; n < g.N; ++n) {
        const float* dyk = dy + (n * g.K + k) * P * Q;
        for (int64_t i = 0; i < P * Q; ++i) acc += dyk[i];
      }
      db[k] += acc;
    }
  });
}

}  // namespace scalar_impl

bool conv_fewc_supports_fwd(const ConvGeom& g) { return g.Cg() <= 4 && g.sw == 1; }
bool conv_fewc_supports_bwd_data(const ConvGeom& g) {
  return g.Kg() <= 4 && g.sh == 1 && g.sw == 1;
}
bool conv_fewc_supports_bwd_weights(const ConvGeom& g) { return g.Cg() <= 4 && g.sw == 1; }

namespace {

bool any(const ConvGeom&) { return true; }
int64_t none(const ConvGeom&) { return 0; }

template <class Fn, size_t N>
const ConvKernel<Fn>& pick(const ConvKernel<Fn> (&table)[N], const ConvGeom& g) {
  for (const auto& k : table)
    if (isa_usable(k.isa) && k.supports(g)) return k;
  return table[N - 1];
}

const ConvKernel<ConvFwdFn> kFwd[] = {
#ifdef CREMA_BUILD_AVX512
    {"direct_fewc_avx512", Isa::avx512, conv_fewc_supports_fwd, avx512_impl::ws_fwd_fewc,
     avx512_impl::conv_fwd_fewc},
    {"direct_blocked_avx512", Isa::avx512, any, avx512_impl::ws_fwd_blocked,
     avx512_impl::conv_fwd_blocked},
#endif
#ifdef CREMA_BUILD_AVX2
    {"direct_fewc_avx2", Isa::avx2, conv_fewc_supports_fwd, avx2_impl::ws_fwd_fewc,
     avx2_impl::conv_fwd_fewc},
    {"direct_blocked_avx2", Isa::avx2, any, avx2_impl::ws_fwd_blocked,
     avx2_impl::conv_fwd_blocked},
#endif
    {"direct_scalar", Isa::scalar, any, none, scalar_impl::conv_fwd},
};

const ConvKernel<ConvBwdDataFn> kBwdData[] = {
#ifdef CREMA_BUILD_AVX512
    {"direct_fewc_avx512", Isa::avx512, conv_fewc_supports_bwd_data,
     avx512_impl::ws_bwd_data_fewc, avx512_impl::conv_bwd_data_fewc},
    {"direct_blocked_avx512", Isa::avx512, any, avx512_impl::ws_bwd_data_blocked,
     avx512_impl::conv_bwd_data_blocked},
#endif
#ifdef CREMA_BUILD_AVX2
    {"direct_fewc_avx2", Isa::avx2, conv_fewc_supports_bwd_data, avx2_impl::ws_bwd_data_fewc,
     avx2_impl::conv_bwd_data_fewc},
    {"direct_blocked_avx2", Isa::avx2, any, avx2_impl::ws_bwd_data_blocked,
     avx2_impl::conv_bwd_data_blocked},
#endif
    {"direct_scalar", Isa::scalar, any, none, scalar_impl::conv_bwd_data},
};

const ConvKernel<ConvBwdWeightsFn> kBwdWeights[] = {
#ifdef CREMA_BUILD_AVX512
    {"direct_fewc_avx512", Isa::avx512, conv_fewc_supports_bwd_weights,
     avx512_impl::ws_bwd_weights_fewc, avx512_impl::conv_bwd_weights_fewc},
    {"direct_blocked_avx512", Isa::avx512, any, avx512_impl::ws_bwd_weights_blocked,
     avx512_impl::conv_bwd_weights_blocked},
#endif
#ifdef CREMA_BUILD_AVX2
    {"direct_fewc_avx2", Isa::avx2, conv_fewc_supports_bwd_weights,
     avx2_impl::ws_bwd_weights_fewc, avx2_impl::conv_bwd_weights_fewc},
    {"direct_blocked_avx2", Isa::avx2, any, avx2_impl::ws_bwd_weights_blocked,
     avx2_impl::conv_bwd_weights_blocked},
#endif
    {"direct_scalar", Isa::scalar, any, none, scalar_impl::conv_bwd_weights},
};

// Whether the CPU and the build have `isa`, whatever CREMA_MAX_ISA says: the workspace must fit
// any cap set later, but code compiled for an ISA the CPU lacks must never run (even the
// workspace functions of conv_avx512.cpp are compiled with AVX-512 flags).
bool isa_runnable(Isa isa) {
  for (Isa built : built_isas())
    if (built == isa) {
      const CpuInfo& c = cpu_info();
      return isa == Isa::scalar || (isa == Isa::avx2 && c.cpu_avx2) ||
             (isa == Isa::avx512 && c.cpu_avx512);
    }
  return false;
}

template <class Fn, size_t N>
int64_t table_ws(const ConvKernel<Fn> (&table)[N], const ConvGeom& g) {
  int64_t m = 0;
  for (const auto& k : table)
    if (isa_runnable(k.isa) && k.supports(g)) m = std::max(m, k.workspace(g));
  return m;
}

}  // namespace

const ConvKernel<ConvFwdFn>& conv_fwd_kernel(const ConvGeom& g) { return pick(kFwd, g); }
const ConvKernel<ConvBwdDataFn>& conv_bwd_data_kernel(const ConvGeom& g) {
  return pick(kBwdData, g);
}
const ConvKernel<ConvBwdWeightsFn>& conv_bwd_weights_kernel(const ConvGeom& g) {
  return pick(kBwdWeights, g);
}

int64_t conv_weight_cache_floats(const ConvGeom& g) {
  int64_t m = 0;
#ifdef CREMA_BUILD_AVX512
  if (isa_runnable(Isa::avx512)) m = std::max(m, avx512_impl::wcache_fwd_blocked(g));
#endif
#ifdef CREMA_BUILD_AVX2
  if (isa_runnable(Isa::avx2)) m = std::max(m, avx2_impl::wcache_fwd_blocked(g));
#endif
  return m;
}

int64_t conv_workspace_floats(const ConvGeom& g) {
  return std::max({table_ws(kFwd, g), table_ws(kBwdData, g), table_ws(kBwdWeights, g)});
}

}  // namespace crema
