// Direct 2-D convolution (Caffe's cross-correlation, NCHW float32), forward and both gradients.
//
// Geometry (ConvGeom): x is N x C x H x W, weights w are K x (C/G) x R x S (Caffe's
// (num_output, channels/group, kernel_h, kernel_w)), bias is K, y is N x K x P x Q with
//   P = (H + 2*ph - (dh*(R-1) + 1)) / sh + 1,  Q likewise,
//   y[n][k][p][q] = bias[k] + sum_{c in group(k), r, s} w[k][c - c0][r][s] *
//                   x[n][c][p*sh - ph + r*dh][q*sw - pw + s*dw]     (0 outside the image).
// Every pointer is contiguous in that layout.
//
// Ops, one entry point each (conv_forward, conv_backward_data, conv_backward_weights), which
// runs the first row of the op's table (best first) that isa_usable() and that supports the
// geometry; the scalar direct row supports everything:
//   fwd:          y = conv(x, w) + bias (bias may be nullptr); y is overwritten.
//   bwd_data:     dx = conv^T(dy, w); dx is overwritten.
//   bwd_weights:  dw += dconv/dw (dy, x); db += sum over n, p, q of dy (db may be nullptr).
// The forward and data-gradient tables hold Winograd rows (crema/winograd.h) ahead of each ISA's
// direct rows: they support g where Winograd applies (3x3, stride 1, dilation 1, one group,
// pad 0..2) and g.algo_* allows it (rule: the fixed per-ISA rule of conv_winograd_preferred for
// the row's ISA; winograd: always; direct: never). The weight-gradient table holds Winograd
// rows the same way (winograd_backward_weights; algo_bwd_weights).
// Every table then holds, per ISA, the few-channel direct row, a GEMM row (im2col / col2im
// around that ISA's SGEMM: conv_gemm_preferred, a fixed per-ISA rule on how much of the direct
// kernel's work would be padding) and the blocked direct row. "direct" as a ConvAlgo means "not
// Winograd": any of these three.
//
// Scratch (ConvScratch), caller-owned, no kernel allocates:
//   workspace: conv_workspace_floats(g) floats, the maximum over every row of every op that
//     supports g and that this CPU and build can run (so an ISA cap set later still fits);
//     a Winograd row runs with less (one slot per thread; conv_min_workspace_floats) on fewer
//     threads.
//   cache: per layer and pass, conv_cache_floats(g, pass) floats, zeroed before first use. The
//     direct blocked forward keeps the packed weights there (OIhw16i16o / OIhw8i8o), the Winograd
//     rows the transformed filter U; each with a header and a bitwise copy of the weights it was
//     made from, so a call whose weights compare equal (memcmp) skips the repack and a changed
//     weight (training) refreshes it. The direct blocked forward also runs without one.
// Blocked layouts are private to the direct kernels: activations nChw16c (AVX-512) / nChw8c
// (AVX2), zero-padded channel tail and a zero border of the convolution's padding. Images are
// processed in chunks whose blocked copy fits a few MB (so the transform's output is still in
// cache when the micro-kernel reads it); every op parallelizes with threads.h.
#pragma once
#include <cstdint>

#include "crema/dispatch.h"
#include "crema/isa.h"

namespace crema {

// Which algorithm the forward / data-gradient tables may choose (see above).
enum class ConvAlgo : int { rule = 0, direct = 1, winograd = 2 };

struct ConvGeom {
  int64_t N, C, H, W;   // input
  int64_t K, R, S;      // output channels, kernel height, width
  int64_t ph, pw, sh, sw, dh, dw;
  int64_t G;            // groups: C and K divisible by G
  ConvAlgo algo_fwd = ConvAlgo::rule;
  ConvAlgo algo_bwd_data = ConvAlgo::rule;
  ConvAlgo algo_bwd_weights = ConvAlgo::rule;
  int64_t P() const { return (H + 2 * ph - (dh * (R - 1) + 1)) / sh + 1; }
  int64_t Q() const { return (W + 2 * pw - (dw * (S - 1) + 1)) / sw + 1; }
  int64_t Cg() const { return C / G; }
  int64_t Kg() const { return K / G; }
};

// nullptr when g is valid for every kernel, else what is wrong: sizes positive, pad >= 0,
// C and K divisible by G, output at least 1x1, and every tensor (and the blocked copies) under
// 2^40 elements.
const char* conv_geom_error(const ConvGeom& g);

enum class ConvPass : int { fwd = 0, bwd_data = 1, bwd_weights = 2 };

struct ConvScratch {
  float* ws;           // workspace
  int64_t ws_floats;   // its size (>= the chosen row's needed_workspace)
  float* cache;        // this pass's cache, conv_cache_floats(g, pass) floats; may be nullptr
                       // only where that is 0 or the row is the direct blocked forward
};

// Forward epilogue: with relu, y = max(v, 0) + slope * min(v, 0) of v = conv + bias (Caffe's
// ReLU with negative_slope), applied before y is stored (no extra pass).
using ConvFwdFn = void (*)(const float* x, const float* w, const float* bias, float* y,
                           const ConvGeom& g, const ConvScratch& s, bool relu, float slope);
using ConvBwdDataFn = void (*)(const float* dy, const float* w, float* dx, const ConvGeom& g,
                               const ConvScratch& s);
using ConvBwdWeightsFn = void (*)(const float* x, const float* dy, float* dw, float* db,
                                  const ConvGeom& g, const ConvScratch& s);

template <class Fn>
using ConvKernel = KernelRow<ConvGeom, Fn>;

// The rows the entry points run for g now (after the ISA cap).
const ConvKernel<ConvFwdFn>& conv_fwd_kernel(const ConvGeom& g);
const ConvKernel<ConvBwdDataFn>& conv_bwd_data_kernel(const ConvGeom& g);
const ConvKernel<ConvBwdWeightsFn>& conv_bwd_weights_kernel(const ConvGeom& g);
const char* conv_kernel_name(const ConvGeom& g, ConvPass pass);

// The entry points: the chosen row with the caller's scratch (sizes checked by the caller).
void conv_forward(const float* x, const float* w, const float* bias, float* y, const ConvGeom& g,
                  const ConvScratch& s, bool relu, float slope);
void conv_backward_data(const float* dy, const float* w, float* dx, const ConvGeom& g,
                        const ConvScratch& s);
void conv_backward_weights(const float* x, const float* dy, float* dw, float* db,
                           const ConvGeom& g, const ConvScratch& s);

// Sizes in floats: the workspace every op's rows want for g (any ISA cap), the least the row
// chosen now for `pass` runs with, and the cache of `pass` (any ISA cap).
int64_t conv_workspace_floats(const ConvGeom& g);
int64_t conv_min_workspace_floats(const ConvGeom& g, ConvPass pass);
int64_t conv_cache_floats(const ConvGeom& g, ConvPass pass);

// Kernels per ISA. "blocked": nChw{16,8}c activations, register tile of output pixels x
// output-channel blocks, broadcast-FMA over input channels and taps; any geometry (groups are
// separate blocked convolutions; a depthwise layer wastes most lanes there). "fewc": NCHW kept,
// vectors along the output rows (or, where that fills more lanes, along an image's whole output
// across row ends: flat mode), for few input channels per group (first layers, depthwise):
// Cg <= 4 and sw == 1, or a larger column stride with dilation 1 and S >= sw (run over sw phase
// planes of the input; bwd_data: Kg <= 4 and sh == sw == 1). "gemm": any geometry, per group
// and chunk of images one SGEMM over every output pixel of the chunk (conv_gemm.isa.cpp).
namespace scalar_impl {
void conv_fwd(const float* x, const float* w, const float* bias, float* y, const ConvGeom& g,
              const ConvScratch& s, bool relu, float slope);
void conv_bwd_data(const float* dy, const float* w, float* dx, const ConvGeom& g,
                   const ConvScratch& s);
void conv_bwd_weights(const float* x, const float* dy, float* dw, float* db, const ConvGeom& g,
                      const ConvScratch& s);
}  // namespace scalar_impl

#define CREMA_CONV_ISA_DECLS                                                                   \
  void conv_fwd_blocked(const float* x, const float* w, const float* bias, float* y,           \
                        const ConvGeom& g, const ConvScratch& s, bool relu, float slope);      \
  int64_t wcache_fwd_blocked(const ConvGeom& g);                                               \
  void conv_bwd_data_blocked(const float* dy, const float* w, float* dx, const ConvGeom& g,    \
                             const ConvScratch& s);                                            \
  void conv_bwd_weights_blocked(const float* x, const float* dy, float* dw, float* db,         \
                                const ConvGeom& g, const ConvScratch& s);                      \
  int64_t ws_fwd_blocked(const ConvGeom& g);                                                   \
  int64_t ws_bwd_data_blocked(const ConvGeom& g);                                              \
  int64_t ws_bwd_weights_blocked(const ConvGeom& g);                                           \
  void conv_fwd_fewc(const float* x, const float* w, const float* bias, float* y,              \
                     const ConvGeom& g, const ConvScratch& s, bool relu, float slope);         \
  void conv_bwd_data_fewc(const float* dy, const float* w, float* dx, const ConvGeom& g,       \
                          const ConvScratch& s);                                               \
  void conv_bwd_weights_fewc(const float* x, const float* dy, float* dw, float* db,            \
                             const ConvGeom& g, const ConvScratch& s);                         \
  int64_t ws_fwd_fewc(const ConvGeom& g);                                                      \
  int64_t ws_bwd_data_fewc(const ConvGeom& g);                                                 \
  int64_t ws_bwd_weights_fewc(const ConvGeom& g);                                              \
  void conv_fwd_gemm(const float* x, const float* w, const float* bias, float* y,              \
                     const ConvGeom& g, const ConvScratch& s, bool relu, float slope);         \
  void conv_bwd_data_gemm(const float* dy, const float* w, float* dx, const ConvGeom& g,       \
                          const ConvScratch& s);                                               \
  void conv_bwd_weights_gemm(const float* x, const float* dy, float* dw, float* db,            \
                             const ConvGeom& g, const ConvScratch& s);                         \
  int64_t ws_conv_gemm(const ConvGeom& g);                                                     \
  int64_t min_ws_conv_gemm(const ConvGeom& g);                                                 \
  void col2im_rows(const float* cols, int64_t J, const ConvGeom& g, int64_t p0, int64_t rows,  \
                   bool add, float* plane);

// col2im_rows (conv_gemm.isa.cpp): one input plane of the adjoint of im2col, from the columns of
// output rows [p0, p0 + rows): cols is the plane's tap (0, 0) row of a col laid out
// [tap (r, s)][J] with output pixel (p, q) at (p - p0) * Q + q of each row; the plane is
// overwritten (add false: p0 = 0 and rows = P) or added to (add true, e.g. a band of rows).
namespace avx2_impl {
CREMA_CONV_ISA_DECLS
}  // namespace avx2_impl
namespace avx512_impl {
CREMA_CONV_ISA_DECLS
}  // namespace avx512_impl
#undef CREMA_CONV_ISA_DECLS

// Whether the Winograd rows can run g (3x3, stride 1, dilation 1, one group, pad 0..2), and
// whether the fixed rule of `isa` (measured once, conv_common.cpp) says Winograd is faster than
// direct for the pass. A rule, not a timing, so every process with the same ISA makes the same
// choice.
bool conv_winograd_applies(const ConvGeom& g);
bool conv_winograd_preferred(const ConvGeom& g, ConvPass pass, Isa isa);

// The Winograd rows (winograd_common.cpp): g as the Winograd geometry of the forward pass, the
// tile chosen by winograd_choose_tile for `pass` (the weight gradient uses the forward's).
struct WinogradGeom;
WinogradGeom conv_winograd_geom(const ConvGeom& g, ConvPass pass);
#define CREMA_CONV_WINOGRAD_DECLS                                                              \
  void conv_fwd_winograd(const float* x, const float* w, const float* bias, float* y,          \
                         const ConvGeom& g, const ConvScratch& s, bool relu, float slope);     \
  void conv_bwd_data_winograd(const float* dy, const float* w, float* dx, const ConvGeom& g,   \
                              const ConvScratch& s);                                           \
  void conv_bwd_weights_winograd(const float* x, const float* dy, float* dw, float* db,        \
                                 const ConvGeom& g, const ConvScratch& s);
namespace scalar_impl {
CREMA_CONV_WINOGRAD_DECLS
}
namespace avx2_impl {
CREMA_CONV_WINOGRAD_DECLS
}
namespace avx512_impl {
CREMA_CONV_WINOGRAD_DECLS
}
#undef CREMA_CONV_WINOGRAD_DECLS
// Winograd sizes (floats) of g for `pass`: workspace for num_threads() threads, for one thread,
// and the filter cache.
int64_t conv_winograd_workspace(const ConvGeom& g, ConvPass pass, bool all_threads);
int64_t conv_winograd_cache(const ConvGeom& g, ConvPass pass);

// A Winograd row supports g where Winograd applies and g's algorithm for the pass allows it
// (rule: the fixed rule of rule_isa). choose() reaches a float32 row only when no better ISA is
// usable, so under the rule the row's own ISA is the ISA in use; the bf16 rows use AVX-512's.
bool conv_winograd_row_supports(const ConvGeom& g, ConvPass pass, Isa rule_isa);
// The same and the sizes in KernelRow's member form, for the float32 and bf16 tables.
template <Isa rule_isa, ConvPass pass>
bool winograd_row_supports(const ConvGeom& g) {
  return conv_winograd_row_supports(g, pass, rule_isa);
}
template <ConvPass pass>
int64_t winograd_row_workspace(const ConvGeom& g) {
  return conv_winograd_workspace(g, pass, true);
}
template <ConvPass pass>
int64_t winograd_row_min_workspace(const ConvGeom& g) {
  return conv_winograd_workspace(g, pass, false);
}
template <ConvPass pass>
int64_t winograd_row_cache(const ConvGeom& g) {
  return conv_winograd_cache(g, pass);
}

// Whether the GEMM row of `isa` runs g's `pass` (the measured rule is in conv_common.cpp).
bool conv_gemm_preferred(const ConvGeom& g, ConvPass pass, Isa isa);

bool conv_fewc_supports_fwd(const ConvGeom& g);
bool conv_fewc_supports_bwd_data(const ConvGeom& g);
bool conv_fewc_supports_bwd_weights(const ConvGeom& g);

}  // namespace crema
