// bf16 tables (conversion, GEMM, the three convolution passes), the portable scalar rows, and
// the portable convolution row (crema/bf16.h): per image, bf16 input -> im2col over bands of
// output rows -> bf16 GEMM.
#include "crema/bf16.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#include "crema/threads.h"

namespace crema {
namespace scalar_impl {
namespace {

#include "bf16_gemm_impl.h"

float widen(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

struct ScalarTile {
  static constexpr int MR = 4, NR = 8;
  static constexpr int64_t KC = 256, MC = MR * 32, NC = NR * 256;
  static void tile(int64_t kp, const uint32_t* a, const uint32_t* b, float* c, int64_t ldc,
                   int mr, int nr, float alpha, float beta) {
    float acc[MR][NR] = {};
    for (int64_t p = 0; p < kp; ++p) {
      for (int i = 0; i < MR; ++i) {
        const float a1 = widen(a[i] & 0xFFFF0000u), a0 = widen(a[i] << 16);
        for (int j = 0; j < NR; ++j) {
          acc[i][j] += a1 * widen(b[j] & 0xFFFF0000u);  // k+1 first, as VDPBF16PS
          acc[i][j] += a0 * widen(b[j] << 16);
        }
      }
      a += MR;
      b += NR;
    }
    for (int i = 0; i < mr; ++i) {
      float* row = c + i * ldc;
      for (int j = 0; j < nr; ++j)
        row[j] = beta == 0.0f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * row[j];
    }
  }
};

}  // namespace

void bf16_gemm(const Bf16GemmArgs& g) { bf16_gemm_run<ScalarTile>(g); }

void to_bf16(const float* src, bf16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_round(src[i]);
}

}  // namespace scalar_impl

namespace {

constexpr auto any_gemm = any_geometry<Bf16GemmArgs>;
const Bf16GemmKernel kGemmRows[] = {
#if defined(CREMA_BUILD_AVX512_BF16)
    {"bf16gemm_avx512_bf16_14x32", Isa::avx512_bf16, any_gemm, avx512_bf16_impl::bf16_gemm},
#endif
#if defined(CREMA_BUILD_AVX512)
    {"bf16gemm_avx512_12x32", Isa::avx512, any_gemm, avx512_impl::bf16_gemm},
#endif
#if defined(CREMA_BUILD_AVX2)
    {"bf16gemm_avx2_4x16", Isa::avx2, any_gemm, avx2_impl::bf16_gemm},
#endif
    {"bf16gemm_scalar_4x8", Isa::scalar, any_gemm, scalar_impl::bf16_gemm},
};
constexpr KernelTable<Bf16GemmArgs, Bf16GemmFn> kGemmTable(kGemmRows);

constexpr auto any_count = any_geometry<int64_t>;
const Bf16ConvertKernel kConvertRows[] = {
#if defined(CREMA_BUILD_AVX512_BF16)
    {"to_bf16_avx512_bf16", Isa::avx512_bf16, any_count, avx512_bf16_impl::to_bf16},
#endif
#if defined(CREMA_BUILD_AVX512)
    {"to_bf16_avx512", Isa::avx512, any_count, avx512_impl::to_bf16},
#endif
#if defined(CREMA_BUILD_AVX2)
    {"to_bf16_avx2", Isa::avx2, any_count, avx2_impl::to_bf16},
#endif
    {"to_bf16_scalar", Isa::scalar, any_count, scalar_impl::to_bf16},
};
constexpr KernelTable<int64_t, Bf16ConvertFn> kConvertTable(kConvertRows);

// -- convolution: bands of output rows ------------------------------------------------------------

constexpr int64_t kColBandElems = int64_t{1} << 21;  // bf16 elements of one im2col band (4 MB)

int64_t band_rows(const ConvGeom& g) {
  const int64_t per_row = g.C * g.R * g.S * g.Q();
  return std::max<int64_t>(1, std::min<int64_t>(g.P(), kColBandElems / per_row));
}

int64_t aligned(int64_t floats) { return (floats + 15) / 16 * 16; }

// The im2col rows' workspace: the weights in bf16 (shared), then one slot per thread holding one
// image's x, band columns, data-gradient columns and dy. The forward and data-gradient rows run
// each image on one thread in its own slot: a LeNet-sized image's steps are too small to split
// over threads (LeNet conv2's data gradient took 3.97 ms on one thread and on two with each step
// split); the steps' own parallel_for then runs on that thread (OpenMP does not nest by default).
struct Scratch {
  bf16_t* x;      // one image, C x H x W
  bf16_t* col;    // one band: (C*R*S) x (rows*Q)
  float* dcol;    // the band's data gradient columns
  bf16_t* dy;     // one image's output gradient, K x P x Q
  bf16_t* w;      // the weights in bf16 (shared by the slots)
};

int64_t im2col_weights_floats(const ConvGeom& g) {
  return aligned((g.K * g.Cg() * g.R * g.S + 1) / 2);
}

int64_t im2col_slot_floats(const ConvGeom& g) {
  const int64_t band = g.C * g.R * g.S * band_rows(g) * g.Q();
  return aligned((g.C * g.H * g.W + 1) / 2) + aligned((band + 1) / 2) + aligned(band) +
         aligned((g.K * g.P() * g.Q() + 1) / 2);
}

Scratch carve(const ConvGeom& g, float* ws, int64_t slot) {
  const int64_t band = g.C * g.R * g.S * band_rows(g) * g.Q();
  Scratch s{};
  s.w = reinterpret_cast<bf16_t*>(ws);
  ws += im2col_weights_floats(g) + slot * im2col_slot_floats(g);
  s.x = reinterpret_cast<bf16_t*>(ws);
  ws += aligned((g.C * g.H * g.W + 1) / 2);
  s.col = reinterpret_cast<bf16_t*>(ws);
  ws += aligned((band + 1) / 2);
  s.dcol = ws;
  ws += aligned(band);
  s.dy = reinterpret_cast<bf16_t*>(ws);
  return s;
}

// Slots the workspace holds for a call over g.N images on num_threads() threads.
int im2col_slots(const ConvGeom& g, int64_t ws_floats) {
  const int64_t fit = (ws_floats - im2col_weights_floats(g)) / im2col_slot_floats(g);
  return static_cast<int>(std::max<int64_t>(
      1, std::min<int64_t>({static_cast<int64_t>(num_threads()), fit, g.N})));
}

// Output columns q whose input column q*sw - pw + s*dw lies inside [0, W): [lo, hi).
void inside_cols(const ConvGeom& g, int64_t s, int64_t* lo, int64_t* hi) {
  const int64_t off = s * g.dw - g.pw, Q = g.Q();
  int64_t l = off >= 0 ? 0 : (-off + g.sw - 1) / g.sw;
  int64_t h = (g.W - 1 - off) < 0 ? 0 : (g.W - 1 - off) / g.sw + 1;
  *lo = std::min(l, Q);
  *hi = std::max(*lo, std::min(h, Q));
}

// col[(c*R + r)*S + s][pl*Q + q] = x[c][(p0 + pl)*sh - ph + r*dh][q*sw - pw + s*dw] (0 outside).
void im2col_band(const bf16_t* x, const ConvGeom& g, int64_t p0, int64_t rows, bf16_t* col) {
  const int64_t Q = g.Q(), nb = rows * Q;
  parallel_for(g.C, g.R * g.S * nb, [&](int64_t c) {
    for (int64_t r = 0; r < g.R; ++r)
      for (int64_t s = 0; s < g.S; ++s) {
        int64_t lo, hi;
        inside_cols(g, s, &lo, &hi);
        bf16_t* d = col + ((c * g.R + r) * g.S + s) * nb;
        for (int64_t pl = 0; pl < rows; ++pl, d += Q) {
          const int64_t ih = (p0 + pl) * g.sh - g.ph + r * g.dh;
          if (ih < 0 || ih >= g.H) {
            std::memset(d, 0, Q * sizeof(bf16_t));
            continue;
          }
          const bf16_t* src = x + (c * g.H + ih) * g.W + s * g.dw - g.pw;
          std::memset(d, 0, lo * sizeof(bf16_t));
          if (g.sw == 1)
            std::memcpy(d + lo, src + lo, (hi - lo) * sizeof(bf16_t));
          else
            for (int64_t q = lo; q < hi; ++q) d[q] = src[q * g.sw];
          std::memset(d + hi, 0, (Q - hi) * sizeof(bf16_t));
        }
      }
  });
}

// The adjoint of im2col_band in float32, one input plane (crema/conv.h's col2im_rows): the
// vector ISAs' rows, and this loop elsewhere.
void col2im_rows_scalar(const float* cols, int64_t J, const ConvGeom& g, int64_t p0, int64_t rows,
                        bool add, float* plane) {
  const int64_t Q = g.Q();
  if (!add) std::memset(plane, 0, sizeof(float) * g.H * g.W);
  for (int64_t r = 0; r < g.R; ++r)
    for (int64_t s = 0; s < g.S; ++s) {
      int64_t lo, hi;
      inside_cols(g, s, &lo, &hi);
      const float* src = cols + (r * g.S + s) * J;
      for (int64_t pl = 0; pl < rows; ++pl, src += Q) {
        const int64_t ih = (p0 + pl) * g.sh - g.ph + r * g.dh;
        if (ih < 0 || ih >= g.H) continue;
        float* d = plane + ih * g.W + s * g.dw - g.pw;
        for (int64_t q = lo; q < hi; ++q) d[q * g.sw] += src[q];
      }
    }
}

using Col2imFn = void (*)(const float*, int64_t, const ConvGeom&, int64_t, int64_t, bool, float*);
const KernelRow<ConvGeom, Col2imFn> kCol2imRows[] = {
#if defined(CREMA_BUILD_AVX512)
    {"col2im_avx512", Isa::avx512, any_geometry<ConvGeom>, avx512_impl::col2im_rows},
#endif
#if defined(CREMA_BUILD_AVX2)
    {"col2im_avx2", Isa::avx2, any_geometry<ConvGeom>, avx2_impl::col2im_rows},
#endif
    {"col2im_scalar", Isa::scalar, any_geometry<ConvGeom>, col2im_rows_scalar},
};
constexpr KernelTable<ConvGeom, Col2imFn> kCol2imTable(kCol2imRows);

// dx[c] += the band's columns, channels over threads.
void col2im_band_add(const float* dcol, const ConvGeom& g, int64_t p0, int64_t rows, float* dx) {
  const Col2imFn fn = kCol2imTable.choose(g).fn;
  const int64_t nb = rows * g.Q(), taps = g.R * g.S;
  parallel_for(g.C, taps * nb, [&](int64_t c) {
    fn(dcol + c * taps * nb, nb, g, p0, rows, true, dx + c * g.H * g.W);
  });
}

int64_t ws_im2col(const ConvGeom& g) {
  return im2col_weights_floats(g) + im2col_slot_floats(g) * num_threads();
}
int64_t min_ws_im2col(const ConvGeom& g) {
  return im2col_weights_floats(g) + im2col_slot_floats(g);
}

void conv_fwd_im2col(const float* x, const float* w, const float* bias, float* y,
                     const ConvGeom& g, const ConvScratch& ws, bool relu, float slope) {
  const int64_t P = g.P(), Q = g.Q(), PQ = P * Q, crs = g.Cg() * g.R * g.S, band = band_rows(g);
  to_bf16(w, carve(g, ws.ws, 0).w, g.K * crs);
  parallel_for_indexed(g.N, g.K * crs * PQ, im2col_slots(g, ws.ws_floats), [&](int64_t n, int t) {
    const Scratch s = carve(g, ws.ws, t);
    to_bf16(x + n * g.C * g.H * g.W, s.x, g.C * g.H * g.W);
    float* yn = y + n * g.K * PQ;
    for (int64_t p0 = 0; p0 < P; p0 += band) {
      const int64_t rows = std::min(band, P - p0), nb = rows * Q;
      im2col_band(s.x, g, p0, rows, s.col);
      for (int64_t gi = 0; gi < g.G; ++gi)
        bf16_gemm({false, false, g.Kg(), nb, crs, 1.0f, s.w + gi * g.Kg() * crs, crs,
                   s.col + gi * crs * nb, nb, 0.0f, yn + gi * g.Kg() * PQ + p0 * Q, PQ});
    }
    if (bias || relu)
      parallel_for(g.K, PQ, [&](int64_t k) {
        float* row = yn + k * PQ;
        const float b = bias ? bias[k] : 0.0f;
        for (int64_t i = 0; i < PQ; ++i) {
          const float v = row[i] + b;  // crema/conv.h's epilogue
          row[i] = relu ? std::max(v, 0.0f) + slope * std::min(v, 0.0f) : v;
        }
      });
  });
}

void conv_bwd_data_im2col(const float* dy, const float* w, float* dx, const ConvGeom& g,
                          const ConvScratch& ws) {
  const int64_t P = g.P(), Q = g.Q(), PQ = P * Q, crs = g.Cg() * g.R * g.S, band = band_rows(g);
  to_bf16(w, carve(g, ws.ws, 0).w, g.K * crs);
  parallel_for_indexed(g.N, g.K * crs * PQ, im2col_slots(g, ws.ws_floats), [&](int64_t n, int t) {
    const Scratch s = carve(g, ws.ws, t);
    to_bf16(dy + n * g.K * PQ, s.dy, g.K * PQ);
    float* dxn = dx + n * g.C * g.H * g.W;
    std::memset(dxn, 0, g.C * g.H * g.W * sizeof(float));
    for (int64_t p0 = 0; p0 < P; p0 += band) {
      const int64_t rows = std::min(band, P - p0), nb = rows * Q;
      for (int64_t gi = 0; gi < g.G; ++gi)
        bf16_gemm({true, false, crs, nb, g.Kg(), 1.0f, s.w + gi * g.Kg() * crs, crs,
                   s.dy + gi * g.Kg() * PQ + p0 * Q, PQ, 0.0f, s.dcol + gi * crs * nb, nb});
      col2im_band_add(s.dcol, g, p0, rows, dxn);
    }
  });
}

// The weight gradient sums over images into dw: one slot, the steps split over the threads.
void conv_bwd_weights_im2col(const float* x, const float* dy, float* dw, float* db,
                             const ConvGeom& g, const ConvScratch& ws) {
  const Scratch s = carve(g, ws.ws, 0);
  const int64_t P = g.P(), Q = g.Q(), PQ = P * Q, crs = g.Cg() * g.R * g.S, band = band_rows(g);
  for (int64_t n = 0; n < g.N; ++n) {
    const float* dyn = dy + n * g.K * PQ;
    to_bf16(x + n * g.C * g.H * g.W, s.x, g.C * g.H * g.W);
    to_bf16(dyn, s.dy, g.K * PQ);
    for (int64_t p0 = 0; p0 < P; p0 += band) {
      const int64_t rows = std::min(band, P - p0), nb = rows * Q;
      im2col_band(s.x, g, p0, rows, s.col);
      for (int64_t gi = 0; gi < g.G; ++gi)
        bf16_gemm({false, true, g.Kg(), crs, nb, 1.0f, s.dy + gi * g.Kg() * PQ + p0 * Q, PQ,
                   s.col + gi * crs * nb, nb, 1.0f, dw + gi * g.Kg() * crs, crs});
    }
    if (db)
      parallel_for(g.K, PQ, [&](int64_t k) {
        const float* row = dyn + k * PQ;
        float sum = 0.0f;
        for (int64_t i = 0; i < PQ; ++i) sum += row[i];
        db[k] += sum;
      });
  }
}

// The direct rows' rules: the data gradient as a forward convolution needs stride 1, the
// weight gradient's pixel pairs need consecutive input columns (sw == 1).
bool direct_bwd_data_supports(const ConvGeom& g) { return g.sh == 1 && g.sw == 1; }
bool direct_bwd_weights_supports(const ConvGeom& g) { return g.sw == 1; }

constexpr auto any_conv = any_geometry<ConvGeom>;
const ConvKernel<ConvFwdFn> kConvFwdRows[] = {
#if defined(CREMA_BUILD_AVX512_BF16)
    // the AVX-512 rule of the float32 tables, so bf16 runs Winograd exactly where float32 does
    {"bf16conv_winograd_avx512_bf16", Isa::avx512_bf16,
     winograd_row_supports<Isa::avx512, ConvPass::fwd>, avx512_bf16_impl::conv_fwd_winograd,
     winograd_row_workspace<ConvPass::fwd>, winograd_row_cache<ConvPass::fwd>,
     winograd_row_min_workspace<ConvPass::fwd>},
#endif
// Forward passes with at most 4 input channels per group (a first layer on RGB or calorimeter
// images) stay float32: bf16 pairs would round 3 channels up to 4 and the blocked bf16 kernel up
// to 16, and the float32 few-channel kernel runs such a layer faster (HEP conv1, 3 -> 128 at
// 64x64: 67 against 46 GFLOP/s, one thread) and exactly.
#if defined(CREMA_BUILD_AVX512)
    {"fp32_direct_fewc_avx512", Isa::avx512, conv_fewc_supports_fwd, avx512_impl::conv_fwd_fewc,
     avx512_impl::ws_fwd_fewc},
#endif
#if defined(CREMA_BUILD_AVX2)
    {"fp32_direct_fewc_avx2", Isa::avx2, conv_fewc_supports_fwd, avx2_impl::conv_fwd_fewc,
     avx2_impl::ws_fwd_fewc},
#endif
#if defined(CREMA_BUILD_AVX512_BF16)
    {"bf16conv_direct_avx512_bf16", Isa::avx512_bf16, any_conv,
     avx512_bf16_impl::bf16_conv_fwd_direct, avx512_bf16_impl::ws_fwd_direct,
     avx512_bf16_impl::cache_fwd_direct},
#endif
    {"bf16conv_im2col_gemm", Isa::scalar, any_conv, conv_fwd_im2col, ws_im2col, nullptr,
     min_ws_im2col},
};
constexpr KernelTable<ConvGeom, ConvFwdFn> kConvFwdTable(kConvFwdRows);

// The data gradient's GEMM rule: the im2col row ahead of the direct one where the float32
// tables' AVX-512 rule prefers GEMM (the direct kernels would compute mostly channel padding and
// zero border; LeNet conv2, 50 -> 20 channels at 8x8: 2.7 against 4.0 ms, batch 64, one thread).
bool gemm_bwd_data_preferred(const ConvGeom& g) {
  return conv_gemm_preferred(g, ConvPass::bwd_data, Isa::avx512);
}

const ConvKernel<ConvBwdDataFn> kConvBwdDataRows[] = {
#if defined(CREMA_BUILD_AVX512_BF16)
    {"bf16conv_winograd_avx512_bf16", Isa::avx512_bf16,
     winograd_row_supports<Isa::avx512, ConvPass::bwd_data>,
     avx512_bf16_impl::conv_bwd_data_winograd, winograd_row_workspace<ConvPass::bwd_data>,
     winograd_row_cache<ConvPass::bwd_data>, winograd_row_min_workspace<ConvPass::bwd_data>},
    {"bf16conv_gemm_rule", Isa::avx512_bf16, gemm_bwd_data_preferred, conv_bwd_data_im2col,
     ws_im2col, nullptr, min_ws_im2col},
    {"bf16conv_direct_avx512_bf16", Isa::avx512_bf16, direct_bwd_data_supports,
     avx512_bf16_impl::bf16_conv_bwd_data_direct, avx512_bf16_impl::ws_bwd_data_direct,
     avx512_bf16_impl::cache_bwd_data_direct},
#endif
    {"bf16conv_im2col_gemm", Isa::scalar, any_conv, conv_bwd_data_im2col, ws_im2col, nullptr,
     min_ws_im2col},
};
constexpr KernelTable<ConvGeom, ConvBwdDataFn> kConvBwdDataTable(kConvBwdDataRows);

const ConvKernel<ConvBwdWeightsFn> kConvBwdWeightsRows[] = {
#if defined(CREMA_BUILD_AVX512_BF16)
    {"bf16conv_winograd_avx512_bf16", Isa::avx512_bf16,
     winograd_row_supports<Isa::avx512, ConvPass::bwd_weights>,
     avx512_bf16_impl::conv_bwd_weights_winograd, winograd_row_workspace<ConvPass::bwd_weights>,
     nullptr, winograd_row_min_workspace<ConvPass::bwd_weights>},
    {"bf16conv_direct_avx512_bf16", Isa::avx512_bf16, direct_bwd_weights_supports,
     avx512_bf16_impl::bf16_conv_bwd_weights_direct, avx512_bf16_impl::ws_bwd_weights_direct},
#endif
    {"bf16conv_im2col_gemm", Isa::scalar, any_conv, conv_bwd_weights_im2col, min_ws_im2col},
};
constexpr KernelTable<ConvGeom, ConvBwdWeightsFn> kConvBwdWeightsTable(kConvBwdWeightsRows);

}  // namespace

const KernelTable<int64_t, Bf16ConvertFn>& bf16_convert_table() { return kConvertTable; }
const KernelTable<Bf16GemmArgs, Bf16GemmFn>& bf16_gemm_table() { return kGemmTable; }

void to_bf16(const float* src, bf16_t* dst, int64_t n) { kConvertTable.choose(n).fn(src, dst, n); }

void from_bf16(const bf16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = static_cast<uint32_t>(src[i]) << 16;
    std::memcpy(dst + i, &u, 4);
  }
}

const char* bf16_gemm_args_error(const Bf16GemmArgs& g) {
  if (g.m < 0 || g.n < 0 || g.k < 0) return "M, N and K must be non-negative";
  const int64_t limit = int64_t{1} << 40;
  if (g.m > limit || g.n > limit || g.k > limit) return "M, N and K must be below 2^40";
  const int64_t a_cols = g.trans_a ? g.m : g.k, b_cols = g.trans_b ? g.k : g.n;
  if (g.lda < std::max<int64_t>(1, a_cols)) return "lda is smaller than A's stored row length";
  if (g.ldb < std::max<int64_t>(1, b_cols)) return "ldb is smaller than B's stored row length";
  if (g.ldc < std::max<int64_t>(1, g.n)) return "ldc is smaller than N";
  return nullptr;
}

void bf16_gemm(const Bf16GemmArgs& g) { kGemmTable.choose(g).fn(g); }

const KernelTable<ConvGeom, ConvFwdFn>& bf16_conv_fwd_table() { return kConvFwdTable; }
const KernelTable<ConvGeom, ConvBwdDataFn>& bf16_conv_bwd_data_table() {
  return kConvBwdDataTable;
}
const KernelTable<ConvGeom, ConvBwdWeightsFn>& bf16_conv_bwd_weights_table() {
  return kConvBwdWeightsTable;
}

int64_t bf16_conv_workspace_floats(const ConvGeom& g) {
  return std::max({kConvFwdTable.max_workspace(g), kConvBwdDataTable.max_workspace(g),
                   kConvBwdWeightsTable.max_workspace(g)});
}

int64_t bf16_conv_cache_floats(const ConvGeom& g, ConvPass pass) {
  switch (pass) {
    case ConvPass::fwd: return kConvFwdTable.max_cache(g);
    case ConvPass::bwd_data: return kConvBwdDataTable.max_cache(g);
    default: return kConvBwdWeightsTable.max_cache(g);
  }
}

void bf16_conv_forward(const float* x, const float* w, const float* bias, float* y,
                       const ConvGeom& g, const ConvScratch& s, bool relu, float slope) {
  kConvFwdTable.choose(g).fn(x, w, bias, y, g, s, relu, slope);
}

void bf16_conv_backward_data(const float* dy, const float* w, float* dx, const ConvGeom& g,
                             const ConvScratch& s) {
  kConvBwdDataTable.choose(g).fn(dy, w, dx, g, s);
}

void bf16_conv_backward_weights(const float* x, const float* dy, float* dw, float* db,
                                const ConvGeom& g, const ConvScratch& s) {
  kConvBwdWeightsTable.choose(g).fn(x, dy, dw, db, g, s);
}

}  // namespace crema
