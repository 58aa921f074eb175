// Portable direct convolution (the plain loops every geometry can use), the geometry check and
// the dispatch tables of conv.h.
#include <algorithm>
#include <cstring>
#include <initializer_list>

#include "crema/conv.h"
#include "crema/threads.h"
#include "crema/winograd.h"

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
              const ConvScratch&, bool relu, float slope) {
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

void conv_bwd_data(const float* dy, const float* w, float* dx, const ConvGeom& g,
                   const ConvScratch&) {
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
                      const ConvScratch&) {
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

// A column stride above 1 runs over phase planes (conv_direct.isa.cpp, few_desc): every phase
// must hold taps (dilation 1, S >= sw), else the inner convolution multiplies by zeros.
bool conv_fewc_supports_fwd(const ConvGeom& g) {
  return g.Cg() <= 4 && (g.sw == 1 || (g.dw == 1 && g.S >= g.sw));
}
bool conv_fewc_supports_bwd_data(const ConvGeom& g) {
  return g.Kg() <= 4 && g.sh == 1 && g.sw == 1;
}
bool conv_fewc_supports_bwd_weights(const ConvGeom& g) { return conv_fewc_supports_fwd(g); }

bool conv_winograd_applies(const ConvGeom& g) {
  return g.R == 3 && g.S == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && g.G == 1 &&
         g.ph >= 0 && g.ph <= 2 && g.pw >= 0 && g.pw <= 2 && g.P() > 0 && g.Q() > 0;
}

// The rule comes from bench/winograd.py --sweep (batch 4, pad 1, one thread, AMD EPYC Zen 5;
// ratio = direct ms / Winograd ms, > 1: Winograd faster; cin/cout = the pass's own input/output
// channels, i.e. (C, K) forward and (K, C) for the data gradient):
//   AVX-512: cin <= 4 goes to the few-channel direct kernel, 2-2.5x faster (C=3, K=32..64:
//     0.40-0.76); cin, cout <= 16 on maps up to 14x14: 0.82-0.98; everything else Winograd:
//     8x8 at 28x28 1.39, 8->64 at 7x7 1.22, 16x16 at 28x28 1.33, 32x32 1.27-2.34,
//     64x64 1.79-2.31, 128x128 1.81-3.07, 256x256 2.46-3.12.
//   AVX2: any side below 16 channels: direct (8x8 0.47-0.61; C=3 0.34-1.12; 8->64 0.93-1.61);
//     16x16 at 7x7: 0.76 forward / 1.27 data gradient, so direct; otherwise Winograd:
//     16x16 at 14x14 and up 1.61-2.64, 16->64 1.79-2.95, 32x32 1.60-3.01, 64x64 1.99-2.55.
//   scalar: not measured (a fallback); it follows the AVX2 rule.
// The weight gradient's rule, from the same kind of A/B runs (batch 8, pad 1, one thread, AMD
// EPYC Zen 4; ratio = direct ms / Winograd ms): 128 -> 128 at 14..112 pixels 2.2-3.3 (AVX-512)
// and 2.5-4.0 (AVX2), 16 -> 16 at 7x7..56x56 1.2-2.2, 256 -> 256 at 7x7..28x28 1.4-2.1, 64 -> 8
// 2.1; 8 -> 8 at 28x28 2.3 on AVX-512 (its direct row is the GEMM) but 0.65 on AVX2; 3 -> 16
// (the few-channel row) 0.4. Each thread sums into its own alpha^2 x Kpad x Cpad floats, so
// layers whose sums would pass 2^23 floats (32 MB; 512 -> 512: 1.1-1.7 on AVX-512, 0.9-1.4 on
// AVX2) stay direct.
static bool conv_winograd_wgrad_preferred(const ConvGeom& g, Isa isa) {
  const WinogradGeom wg = conv_winograd_geom(g, ConvPass::bwd_weights);
  const int64_t sums = int64_t{wg.alpha()} * wg.alpha() * wg.k_pad() * wg.c_pad();
  if (g.C <= 4 || sums > (int64_t{1} << 23)) return false;
  return isa == Isa::avx512 || std::min(g.C, g.K) >= 16;
}

bool conv_winograd_preferred(const ConvGeom& g, ConvPass pass, Isa isa) {
  if (!conv_winograd_applies(g)) return false;
  if (pass == ConvPass::bwd_weights) return conv_winograd_wgrad_preferred(g, isa);
  const bool backward = pass == ConvPass::bwd_data;
  const int64_t cin = backward ? g.K : g.C, cout = backward ? g.C : g.K;
  const int64_t pixels = g.P() * g.Q();
  const bool small_channels = std::max(cin, cout) <= 16;
  if (isa == Isa::avx512) return cin > 4 && !(small_channels && pixels <= 14 * 14);
  return std::min(cin, cout) >= 16 && !(small_channels && pixels <= 7 * 7);
}

bool conv_winograd_row_supports(const ConvGeom& g, ConvPass pass, Isa rule_isa) {
  const ConvAlgo a = pass == ConvPass::fwd        ? g.algo_fwd
                     : pass == ConvPass::bwd_data ? g.algo_bwd_data
                                                  : g.algo_bwd_weights;
  if (a == ConvAlgo::direct || !conv_winograd_applies(g)) return false;
  if (winograd_geom_error(conv_winograd_geom(g, pass)) != nullptr) return false;
  return a == ConvAlgo::winograd || conv_winograd_preferred(g, pass, rule_isa);
}

// The GEMM rows' rule (im2col/col2im around the ISA's SGEMM, conv_gemm.isa.cpp), from
// A/B runs of every pass (one thread, alternating, medians; AMD EPYC Zen 5; ratio =
// direct ms / GEMM ms) on LeNet, AlexNet conv1-3 and 3x3/5x5/7x7/1x1 layers, strides 1-4.
// The direct kernels' useful fraction is e = Cg/ceil_L(Cg) * Kg/ceil_L(Kg) (channels rounded up to
// whole vectors), times P*Q/(H*W) for a stride-1 data gradient (its flipped convolution computes
// every tap over the zero border). The GEMM runs every pass at 40-95 GFLOP/s whatever the shape.
//   AVX-512: forward and weight gradient where e < 0.35 (AlexNet conv1 e = 0.19: 3.7-4.2;
//     7x7 stride 2 on 3 channels: 2.8-2.9; LeNet conv2 e = 0.49: 0.83-0.85; e = 1: 0.24-0.94);
//     data gradient where e (with the border) < 0.6 (LeNet conv2 0.22: 1.9-3.0; 5x5 pad 0 on
//     16x16 0.56: 1.25; 3x3 pad 0 on 10x10 0.64: 1.1; AlexNet conv1 3.8; e = 1: 0.29-0.80).
//   AVX2: the forward always (its 2 x 6 direct tile: 1.0-3.2 on every shape tried, AlexNet
//     conv2-3 1.5-1.8, 1x1 2.0); the stride-1 data gradient always (1.1-4.3); strided data
//     gradients and weight gradients where e < 0.5 (AlexNet conv1, e = 3/8: 2.6 / 1.9; 3x3
//     stride 2 at e = 1: 0.74; weight gradients at e >= 0.7: 0.21-0.85).
//   scalar: no GEMM row (the scalar rows are the reference loops).
// The few-channel direct rows stay ahead of these rows in the tables (LeNet conv1: 1.0).
// The GEMM's workspace holds one image's im2col matrix per thread (Cg*R*S x P*Q floats): above
// 2^22 floats (16 MB; a 3x3 layer of 128 channels at 224x224 would take 231 MB) the direct rows
// run instead.
bool conv_gemm_preferred(const ConvGeom& g, ConvPass pass, Isa isa) {
  if (g.Cg() * g.R * g.S * g.P() * g.Q() > (int64_t{1} << 22)) return false;
  const int64_t L = isa == Isa::avx512 ? 16 : 8;
  const auto used = [L](int64_t c) { return double(c) / double((c + L - 1) / L * L); };
  const double e = used(g.Cg()) * used(g.Kg());
  const bool unit_stride = g.sh == 1 && g.sw == 1;
  if (isa == Isa::avx512) {
    if (pass == ConvPass::bwd_data && unit_stride)
      return e * double(g.P() * g.Q()) / double(g.H * g.W) < 0.6;
    return e < 0.35;
  }
  if (isa != Isa::avx2) return false;
  if (pass == ConvPass::fwd || (pass == ConvPass::bwd_data && unit_stride)) return true;
  return e < 0.5;
}

namespace {

constexpr auto any = any_geometry<ConvGeom>;
int64_t none(const ConvGeom&) { return 0; }

template <Isa isa, ConvPass pass>
bool gemm_row_supports(const ConvGeom& g) {
  return conv_gemm_preferred(g, pass, isa);
}


#define CREMA_WINOGRAD_FWD_ROW(isa)                                                            \
  {"winograd_" #isa, Isa::isa, winograd_row_supports<Isa::isa, ConvPass::fwd>,                 \
   isa##_impl::conv_fwd_winograd, winograd_row_workspace<ConvPass::fwd>,                       \
   winograd_row_cache<ConvPass::fwd>, winograd_row_min_workspace<ConvPass::fwd>}
#define CREMA_WINOGRAD_BWD_ROW(isa)                                                            \
  {"winograd_" #isa, Isa::isa, winograd_row_supports<Isa::isa, ConvPass::bwd_data>,            \
   isa##_impl::conv_bwd_data_winograd, winograd_row_workspace<ConvPass::bwd_data>,             \
   winograd_row_cache<ConvPass::bwd_data>, winograd_row_min_workspace<ConvPass::bwd_data>}

#define CREMA_WINOGRAD_WGRAD_ROW(isa)                                                          \
  {"winograd_" #isa, Isa::isa, winograd_row_supports<Isa::isa, ConvPass::bwd_weights>,         \
   isa##_impl::conv_bwd_weights_winograd, winograd_row_workspace<ConvPass::bwd_weights>,       \
   nullptr, winograd_row_min_workspace<ConvPass::bwd_weights>}

const ConvKernel<ConvFwdFn> kFwdRows[] = {
#ifdef CREMA_BUILD_AVX512
    CREMA_WINOGRAD_FWD_ROW(avx512),
    {"direct_fewc_avx512", Isa::avx512, conv_fewc_supports_fwd,
     avx512_impl::conv_fwd_fewc, avx512_impl::ws_fwd_fewc},
    {"gemm_avx512", Isa::avx512, gemm_row_supports<Isa::avx512, ConvPass::fwd>,
     avx512_impl::conv_fwd_gemm, avx512_impl::ws_conv_gemm, nullptr,
     avx512_impl::min_ws_conv_gemm},
    {"direct_blocked_avx512", Isa::avx512, any, avx512_impl::conv_fwd_blocked,
     avx512_impl::ws_fwd_blocked, avx512_impl::wcache_fwd_blocked},
#endif
#ifdef CREMA_BUILD_AVX2
    CREMA_WINOGRAD_FWD_ROW(avx2),
    {"direct_fewc_avx2", Isa::avx2, conv_fewc_supports_fwd,
     avx2_impl::conv_fwd_fewc, avx2_impl::ws_fwd_fewc},
    {"gemm_avx2", Isa::avx2, gemm_row_supports<Isa::avx2, ConvPass::fwd>,
     avx2_impl::conv_fwd_gemm, avx2_impl::ws_conv_gemm, nullptr,
     avx2_impl::min_ws_conv_gemm},
    {"direct_blocked_avx2", Isa::avx2, any, avx2_impl::conv_fwd_blocked,
     avx2_impl::ws_fwd_blocked, avx2_impl::wcache_fwd_blocked},
#endif
    CREMA_WINOGRAD_FWD_ROW(scalar),
    {"direct_scalar", Isa::scalar, any, scalar_impl::conv_fwd, none},
};

const ConvKernel<ConvBwdDataFn> kBwdDataRows[] = {
#ifdef CREMA_BUILD_AVX512
    CREMA_WINOGRAD_BWD_ROW(avx512),
    {"direct_fewc_avx512", Isa::avx512, conv_fewc_supports_bwd_data,
     avx512_impl::conv_bwd_data_fewc, avx512_impl::ws_bwd_data_fewc},
    {"gemm_avx512", Isa::avx512, gemm_row_supports<Isa::avx512, ConvPass::bwd_data>,
     avx512_impl::conv_bwd_data_gemm, avx512_impl::ws_conv_gemm, nullptr,
     avx512_impl::min_ws_conv_gemm},
    {"direct_blocked_avx512", Isa::avx512, any,
     avx512_impl::conv_bwd_data_blocked, avx512_impl::ws_bwd_data_blocked},
#endif
#ifdef CREMA_BUILD_AVX2
    CREMA_WINOGRAD_BWD_ROW(avx2),
    {"direct_fewc_avx2", Isa::avx2, conv_fewc_supports_bwd_data,
     avx2_impl::conv_bwd_data_fewc, avx2_impl::ws_bwd_data_fewc},
    {"gemm_avx2", Isa::avx2, gemm_row_supports<Isa::avx2, ConvPass::bwd_data>,
     avx2_impl::conv_bwd_data_gemm, avx2_impl::ws_conv_gemm, nullptr,
     avx2_impl::min_ws_conv_gemm},
    {"direct_blocked_avx2", Isa::avx2, any,
     avx2_impl::conv_bwd_data_blocked, avx2_impl::ws_bwd_data_blocked},
#endif
    CREMA_WINOGRAD_BWD_ROW(scalar),
    {"direct_scalar", Isa::scalar, any, scalar_impl::conv_bwd_data, none},
};

const ConvKernel<ConvBwdWeightsFn> kBwdWeightsRows[] = {
#ifdef CREMA_BUILD_AVX512
    CREMA_WINOGRAD_WGRAD_ROW(avx512),
    {"direct_fewc_avx512", Isa::avx512, conv_fewc_supports_bwd_weights,
     avx512_impl::conv_bwd_weights_fewc, avx512_impl::ws_bwd_weights_fewc},
    {"gemm_avx512", Isa::avx512, gemm_row_supports<Isa::avx512, ConvPass::bwd_weights>,
     avx512_impl::conv_bwd_weights_gemm, avx512_impl::ws_conv_gemm, nullptr,
     avx512_impl::min_ws_conv_gemm},
    {"direct_blocked_avx512", Isa::avx512, any,
     avx512_impl::conv_bwd_weights_blocked, avx512_impl::ws_bwd_weights_blocked},
#endif
#ifdef CREMA_BUILD_AVX2
    CREMA_WINOGRAD_WGRAD_ROW(avx2),
    {"direct_fewc_avx2", Isa::avx2, conv_fewc_supports_bwd_weights,
     avx2_impl::conv_bwd_weights_fewc, avx2_impl::ws_bwd_weights_fewc},
    {"gemm_avx2", Isa::avx2, gemm_row_supports<Isa::avx2, ConvPass::bwd_weights>,
     avx2_impl::conv_bwd_weights_gemm, avx2_impl::ws_conv_gemm, nullptr,
     avx2_impl::min_ws_conv_gemm},
    {"direct_blocked_avx2", Isa::avx2, any,
     avx2_impl::conv_bwd_weights_blocked, avx2_impl::ws_bwd_weights_blocked},
#endif
    CREMA_WINOGRAD_WGRAD_ROW(scalar),
    {"direct_scalar", Isa::scalar, any, scalar_impl::conv_bwd_weights, none},
};

#undef CREMA_WINOGRAD_FWD_ROW
#undef CREMA_WINOGRAD_BWD_ROW
#undef CREMA_WINOGRAD_WGRAD_ROW

constexpr KernelTable<ConvGeom, ConvFwdFn> kFwd(kFwdRows);
constexpr KernelTable<ConvGeom, ConvBwdDataFn> kBwdData(kBwdDataRows);
constexpr KernelTable<ConvGeom, ConvBwdWeightsFn> kBwdWeights(kBwdWeightsRows);

}  // namespace

const ConvKernel<ConvFwdFn>& conv_fwd_kernel(const ConvGeom& g) { return kFwd.choose(g); }
const ConvKernel<ConvBwdDataFn>& conv_bwd_data_kernel(const ConvGeom& g) {
  return kBwdData.choose(g);
}
const ConvKernel<ConvBwdWeightsFn>& conv_bwd_weights_kernel(const ConvGeom& g) {
  return kBwdWeights.choose(g);
}

const char* conv_kernel_name(const ConvGeom& g, ConvPass pass) {
  switch (pass) {
    case ConvPass::fwd: return conv_fwd_kernel(g).name;
    case ConvPass::bwd_data: return conv_bwd_data_kernel(g).name;
    default: return conv_bwd_weights_kernel(g).name;
  }
}

void conv_forward(const float* x, const float* w, const float* bias, float* y, const ConvGeom& g,
                  const ConvScratch& s, bool relu, float slope) {
  conv_fwd_kernel(g).fn(x, w, bias, y, g, s, relu, slope);
}
void conv_backward_data(const float* dy, const float* w, float* dx, const ConvGeom& g,
                        const ConvScratch& s) {
  conv_bwd_data_kernel(g).fn(dy, w, dx, g, s);
}
void conv_backward_weights(const float* x, const float* dy, float* dw, float* db,
                           const ConvGeom& g, const ConvScratch& s) {
  conv_bwd_weights_kernel(g).fn(x, dy, dw, db, g, s);
}

int64_t conv_workspace_floats(const ConvGeom& g) {
  return std::max({kFwd.max_workspace(g), kBwdData.max_workspace(g), kBwdWeights.max_workspace(g)});
}

int64_t conv_min_workspace_floats(const ConvGeom& g, ConvPass pass) {
  switch (pass) {
    case ConvPass::fwd: return conv_fwd_kernel(g).needed_workspace(g);
    case ConvPass::bwd_data: return conv_bwd_data_kernel(g).needed_workspace(g);
    default: return conv_bwd_weights_kernel(g).needed_workspace(g);
  }
}

int64_t conv_cache_floats(const ConvGeom& g, ConvPass pass) {
  switch (pass) {
    case ConvPass::fwd: return kFwd.max_cache(g);
    case ConvPass::bwd_data: return kBwdData.max_cache(g);
    default: return kBwdWeights.max_cache(g);
  }
}

}  // namespace crema
