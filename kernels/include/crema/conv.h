// Direct 2-D convolution (Caffe's cross-correlation, NCHW float32), forward and both gradients.
//
// Geometry (ConvGeom): x is N x C x H x W, weights w are K x (C/G) x R x S (Caffe's
// (num_output, channels/group, kernel_h, kernel_w)), bias is K, y is N x K x P x Q with
//   P = (H + 2*ph - (dh*(R-1) + 1)) / sh + 1,  Q likewise,
//   y[n][k][p][q] = bias[k] + sum_{c in group(k), r, s} w[k][c - c0][r][s] *
//                   x[n][c][p*sh - ph + r*dh][q*sw - pw + s*dw]     (0 outside the image).
// Every pointer is contiguous in that layout.
//
// Ops (each table below is ordered best first; the first entry that isa_usable() and that
// supports the geometry wins; the scalar entry supports everything):
//   fwd:          y = conv(x, w) + bias (bias may be nullptr); y is overwritten.
//   bwd_data:     dx = conv^T(dy, w); dx is overwritten.
//   bwd_weights:  dw += dconv/dw (dy, x); db += sum over n, p, q of dy (db may be nullptr).
//
// Workspace: `ws` is caller-owned float storage of at least conv_workspace_floats(g) floats
// (the maximum over every kernel of every op that supports g and that this CPU and build can
// run, so an ISA cap set later still fits); no kernel allocates. Blocked layouts are private to
// the kernels:
//   activations nChw16c (AVX-512) / nChw8c (AVX2), zero-padded channel tail and a zero border
//   of the convolution's padding; weights OIhw16i16o / OIhw8i8o, repacked on every call unless
//   the forward pass is given a weight cache (below) whose copy of the weights is bitwise equal
//   (inference / test nets with unchanged weights skip the repack; in training the memcmp stops
//   at the first changed weight and the copy is refreshed).
// Images are processed in chunks whose blocked copy fits a few MB (so the transform's output is
// still in cache when the micro-kernel reads it); every op parallelizes with threads.h.
#pragma once
#include <cstdint>

#include "crema/dispatch.h"
#include "crema/isa.h"

namespace crema {

struct ConvGeom {
  int64_t N, C, H, W;   // input
  int64_t K, R, S;      // output channels, kernel height, width
  int64_t ph, pw, sh, sw, dh, dw;
  int64_t G;            // groups: C and K divisible by G
  int64_t P() const { return (H + 2 * ph - (dh * (R - 1) + 1)) / sh + 1; }
  int64_t Q() const { return (W + 2 * pw - (dw * (S - 1) + 1)) / sw + 1; }
  int64_t Cg() const { return C / G; }
  int64_t Kg() const { return K / G; }
};

// nullptr when g is valid for every kernel, else what is wrong: sizes positive, pad >= 0,
// C and K divisible by G, output at least 1x1, and every tensor (and the blocked copies) under
// 2^40 elements.
const char* conv_geom_error(const ConvGeom& g);

// Forward weight cache: wcache (nullptr: none) is caller-owned storage of at least
// conv_weight_cache_floats(g) floats, zeroed before first use, one per layer. The blocked kernels
// keep there a header (layout, lane width), a bitwise copy of the weights and their packed
// (OIhw16i16o / OIhw8i8o) form; a call whose header matches and whose weights compare equal
// (memcmp) skips the repack. The other kernels ignore it.
// Forward epilogue: with relu, y = max(v, 0) + slope * min(v, 0) of v = conv + bias (Caffe's
// ReLU with negative_slope), applied to the register tile before it is stored (no extra pass).
using ConvFwdFn = void (*)(const float* x, const float* w, const float* bias, float* y,
                           const ConvGeom& g, float* ws, bool relu, float slope, float* wcache);
using ConvBwdDataFn = void (*)(const float* dy, const float* w, float* dx, const ConvGeom& g,
                               float* ws);
using ConvBwdWeightsFn = void (*)(const float* x, const float* dy, float* dw, float* db,
                                  const ConvGeom& g, float* ws);

template <class Fn>
using ConvKernel = KernelRow<ConvGeom, Fn>;

const ConvKernel<ConvFwdFn>& conv_fwd_kernel(const ConvGeom& g);
const ConvKernel<ConvBwdDataFn>& conv_bwd_data_kernel(const ConvGeom& g);
const ConvKernel<ConvBwdWeightsFn>& conv_bwd_weights_kernel(const ConvGeom& g);

// The workspace every op's chosen kernel needs, for any ISA cap (max over all table entries
// built here that support g).
int64_t conv_workspace_floats(const ConvGeom& g);
// Floats of the forward weight cache (max over the blocked kernels this CPU and build can run).
int64_t conv_weight_cache_floats(const ConvGeom& g);

// Kernels per ISA. "blocked": nChw{16,8}c activations, register tile of output pixels x
// output-channel blocks, broadcast-FMA over input channels and taps; any geometry (groups are
// separate blocked convolutions; a depthwise layer wastes most lanes there). "fewc": NCHW kept,
// vectors along the output width, for few input channels per group (first layers, depthwise):
// Cg <= 4 and sw == 1 (bwd_data: Kg <= 4 and sh == sw == 1).
namespace scalar_impl {
void conv_fwd(const float* x, const float* w, const float* bias, float* y, const ConvGeom& g,
              float* ws, bool relu, float slope, float* wcache);
void conv_bwd_data(const float* dy, const float* w, float* dx, const ConvGeom& g, float* ws);
void conv_bwd_weights(const float* x, const float* dy, float* dw, float* db, const ConvGeom& g,
                      float* ws);
}  // namespace scalar_impl

#define CREMA_CONV_ISA_DECLS                                                                   \
  void conv_fwd_blocked(const float* x, const float* w, const float* bias, float* y,           \
                        const ConvGeom& g, float* ws, bool relu, float slope, float* wcache);  \
  int64_t wcache_fwd_blocked(const ConvGeom& g);                                               \
  void conv_bwd_data_blocked(const float* dy, const float* w, float* dx, const ConvGeom& g,    \
                             float* ws);                                                       \
  void conv_bwd_weights_blocked(const float* x, const float* dy, float* dw, float* db,         \
                                const ConvGeom& g, float* ws);                                 \
  int64_t ws_fwd_blocked(const ConvGeom& g);                                                   \
  int64_t ws_bwd_data_blocked(const ConvGeom& g);                                              \
  int64_t ws_bwd_weights_blocked(const ConvGeom& g);                                           \
  void conv_fwd_fewc(const float* x, const float* w, const float* bias, float* y,              \
                     const ConvGeom& g, float* ws, bool relu, float slope, float* wcache);     \
  void conv_bwd_data_fewc(const float* dy, const float* w, float* dx, const ConvGeom& g,       \
                          float* ws);                                                          \
  void conv_bwd_weights_fewc(const float* x, const float* dy, float* dw, float* db,            \
                             const ConvGeom& g, float* ws);                                    \
  int64_t ws_fwd_fewc(const ConvGeom& g);                                                      \
  int64_t ws_bwd_data_fewc(const ConvGeom& g);                                                 \
  int64_t ws_bwd_weights_fewc(const ConvGeom& g);

namespace avx2_impl {
CREMA_CONV_ISA_DECLS
}  // namespace avx2_impl
namespace avx512_impl {
CREMA_CONV_ISA_DECLS
}  // namespace avx512_impl
#undef CREMA_CONV_ISA_DECLS

// Direct or Winograd for the forward (backward = false) or data-gradient pass of g on the ISA in
// use: Winograd where its kernels apply (3x3, stride 1, dilation 1, one group, pad 0..2) and a
// fixed rule per ISA, measured once, says it is faster (conv_common.cpp). A rule, not a timing,
// so every process with the same ISA makes the same choice. The weight gradient is always direct.
bool conv_winograd_applies(const ConvGeom& g);
bool conv_winograd_preferred(const ConvGeom& g, bool backward);

bool conv_fewc_supports_fwd(const ConvGeom& g);
bool conv_fewc_supports_bwd_data(const ConvGeom& g);
bool conv_fewc_supports_bwd_weights(const ConvGeom& g);

}  // namespace crema
