// Winograd convolution F(m x m, 3 x 3), m = 4 (default) or 2: stride 1, dilation 1, one group,
// zero padding 0..2 per axis, NCHW float32 in and out. engine/reference/winograd.py states the
// algorithm in numpy (and is the tests' oracle); this is its native form.
//
//   x: N x C x H x W            w: K x C x 3 x 3            bias: K (or nullptr)
//   y: N x K x P x Q,  P = H + 2 ph - 2,  Q = W + 2 pw - 2   (written, not accumulated)
//   y[n,k,p,q] = bias[k] + sum_{c,i,j} w[k,c,i,j] x[n,c,p-ph+i,q-pw+j]   (Caffe's correlation)
//
// Transforms (alpha = m + 2 input tile, alpha^2 = 36 or 16 "positions" xi):
//   U = G g G^T per (k, c); V = B^T d B per (tile, c); M[xi] = V[xi] . U[xi], a [tiles x C] .
//   [C x K] product for each xi; Y = A^T M A + bias per (tile, k), clipped at the image border.
// Points: F(4x4): 0, 1, -1, 1/2, -2, inf; F(2x2): 0, 1, -1, inf (matrices in winograd_matrices
// and in engine/reference/winograd.py, which derives them by Toom-Cook; bench/winograd.py
// --points: of the sets tried, 0, +-1, 1/2, -2 gives half the float32 error of Lavin's 0, +-1, +-2).
//
// Accuracy (bench/winograd.py --accuracy): unit-variance x and w, N=2, 28x28, K=32, pad 1;
// errors against the float64 convolution divided by the RMS of the exact output, max / RMS,
// the same for the AVX-512, AVX2 and scalar kernels to +-20%:
//   C =             16               128              512              2048
//   F(4x4,3x3)      6.3e-6 / 7.1e-7  1.6e-5 / 1.5e-6  1.0e-5 / 1.5e-6  1.1e-5 / 1.6e-6
//   F(2x2,3x3)      9.7e-7 / 1.6e-7  2.0e-6 / 3.6e-7  1.7e-6 / 3.6e-7  1.6e-6 / 3.8e-7
//   direct (conv_*) 2.6e-6 / 2.1e-7  6.1e-6 / 6.0e-7  1.1e-5 / 1.2e-6  2.1e-5 / 2.4e-6
// The GEMMs sum channels in chunks of kWinogradChunk, each from zero, so the error does not grow
// with C (C = 8192: F(4x4) 9.8e-6 / 1.8e-6; summed in one run it was 8.1e-5 / 1.1e-5). F(4x4)
// thus meets the 1e-4 target with a wide margin for every C and is the default; F(2x2) is
// chosen (winograd_choose_tile) only where its smaller tile wastes less work, i.e. outputs a few
// pixels wide. The tests allow 1e-4 (max) and 1e-5 (RMS).
// The weight gradient (max / RMS of the error over the RMS of the exact dw, unit-variance x and
// dy, pad 1): N=8, 128 -> 128 at 56x56: F(4x4) 6.5e-6 / 1.2e-6 against the direct kernels'
// 2.6e-5 / 2.8e-6 (the sums over 1568 tiles run in blocks); at 14x14 7.4e-6 / 1.1e-6 against
// 6.5e-6 / 6.8e-7. Same tolerances in the tests.
//
// Layout and blocking (private to these kernels; the caller only sizes two arrays):
//   Tiles are numbered (n, tile row, tile column) and processed in blocks of TB
//   (winograd_tile_block); each thread takes a contiguous range of blocks and owns one slot of
//   the workspace (WinogradSlot): the packed input rows of the current tile-row segment, V and M
//   of one block. A block: pack (x -> channel-blocked rows, once per segment and thread) ->
//   input transform into V -> alpha^2 GEMMs into M -> output transform + bias into y.
//   workspace:    Kpad floats of bias, then slots; sized by winograd_workspace_floats(g, threads)
//                 (a call uses min(num_threads(), slots that fit, blocks) threads).
//   filter cache: a 16-word header, a bitwise copy of the weights it was computed from, and U
//                 packed in GEMM panels (alpha^2 x Kpad/panel x Cpad x panel). Each call compares
//                 the header (tile, C, K, panel width, direction, where U starts) and the weights
//                 (memcmp, about the cost of reading them twice) and recomputes U only when
//                 either differs: the cache is exact, needs no version counter from the caller,
//                 and notices a solver changing the weights in place. The caller must not share
//                 one cache (or one workspace) between calls running at the same time.
// The GEMM micro-kernels keep a register block of rows x panel columns of accumulators
// (AVX-512: 8 x 32 in 16 zmm; AVX2: 6 x 16 in 12 ymm; scalar: 4 x 16) over packed U panels;
// transforms are vectorized over 16 channels (input, filter) or 16 output channels (output), with
// the coefficients folded in at compile time.
#pragma once
#include <cstdint>

#include "crema/dispatch.h"
#include "crema/isa.h"

namespace crema {

struct WinogradGeom {
  int64_t batch, channels, height, width;  // x: N x C x H x W
  int64_t out_channels;                    // K
  int64_t pad_h, pad_w;                    // 0..2
  int tile;                                // m: 4 for F(4x4,3x3), 2 for F(2x2,3x3)
  // Forward epilogue (output transform): y = max(v, 0) + relu_slope * min(v, 0) of v = conv +
  // bias when relu is set (a fused Caffe ReLU); ignored by the backward-data pass.
  bool relu = false;
  float relu_slope = 0.f;

  int alpha() const { return tile + 2; }
  int64_t out_h() const { return height + 2 * pad_h - 2; }
  int64_t out_w() const { return width + 2 * pad_w - 2; }
  int64_t tiles_h() const { return (out_h() + tile - 1) / tile; }
  int64_t tiles_w() const { return (out_w() + tile - 1) / tile; }
  int64_t tiles() const { return batch * tiles_h() * tiles_w(); }
  int64_t c_pad() const { return (channels + 15) / 16 * 16; }
  int64_t k_pad() const { return (out_channels + 15) / 16 * 16; }
};

// nullptr when every kernel below accepts g, else what is wrong (sizes positive, pads in 0..2,
// the output non-empty, tile 2 or 4, and every buffer size representable).
const char* winograd_geom_error(const WinogradGeom& g);

// The tile (4 or 2) this library recommends for g: F(4x4) unless F(2x2)'s estimated work
// (tiles x alpha^2 GEMM work plus transforms) is lower, which happens for small outputs.
int winograd_choose_tile(const WinogradGeom& g);

// Tiles per block (TB): a function of the geometry only (never of the ISA or thread count), so
// a workspace sized once stays valid when CREMA_MAX_ISA or the thread count changes.
int64_t winograd_tile_block(const WinogradGeom& g);

// Sizes in floats (-1 when g is invalid). The workspace needs 16 floats of slack so the kernels
// can align it to 64 bytes; winograd_workspace_floats includes it.
int64_t winograd_workspace_floats(const WinogradGeom& g, int threads);
int64_t winograd_filter_cache_floats(const WinogradGeom& g);

// The GEMMs sum over channels in chunks of this many (each chunk in registers, then added to
// M): float32 rounding then grows with sqrt(chunk) + sqrt(C / chunk) instead of sqrt(C).
constexpr int64_t kWinogradChunk = 128;

// Per-thread buffers of one tile block (TB tiles), carved from the workspace by the driver.
//   v:    alpha^2 planes of TB x Cpad, plane stride winograd_v_stride (padded by one cache line so
//         that the 36 planes do not all map to the same L1 set)
//   m:    alpha^2 planes of TB x Kpad, plane stride winograd_m_stride
//   pack: the alpha input rows under one segment of a tile row (winograd_pack_tiles tiles, the
//         whole row unless it is very wide), channel-blocked: Cpad/16 x alpha x
//         winograd_pack_pitch x 16, zero outside the image. *pack_tag names the segment it
//         holds (-1: none), so the blocks of one thread pack each segment once.
struct WinogradSlot {
  float* v;
  float* m;
  float* pack;
  int64_t* pack_tag;
};
inline int64_t winograd_v_stride(const WinogradGeom& g, int64_t tb) { return tb * g.c_pad() + 16; }
inline int64_t winograd_m_stride(const WinogradGeom& g, int64_t tb) { return tb * g.k_pad() + 16; }
inline int64_t winograd_pack_tiles(const WinogradGeom& g) {
  return g.tiles_w() < 64 ? g.tiles_w() : 64;
}
inline int64_t winograd_pack_pitch(const WinogradGeom& g) {
  return g.tile * winograd_pack_tiles(g) + 2;
}

// The weight gradient's per-thread buffers: the forward's slot (V of a block in v, the output
// gradient's transform E in m, x's packed rows in pack), dy's packed rows (Kpad/16 x alpha x
// winograd_pack_pitch x 16, *dy_tag as pack_tag), the slot's running sums
// du (alpha^2 planes of Kpad x Cpad) and db (Kpad).
struct WinogradWgradSlot {
  WinogradSlot fwd;
  float* dy_pack;
  int64_t* dy_tag;
  float* du;
  float* db;
};

// Per-ISA pieces the common driver calls.
struct WinogradOps {
  int panel;  // GEMM panel width: columns of U packed together (recorded in the filter cache)
  // V and U in bf16 (the GEMM multiplies bf16 with float32 sums; M and everything after it stay
  // float32): U in channel pairs, word (c/2, k) of panel kp0 holding bf16(c even) | bf16(c odd)
  // << 16; V rows of Cpad bf16. Recorded in the filter cache too.
  bool bf16_operands;
  // U for input channels [c_begin, c_end) (panel layout with `panel` columns), from w as given
  // (K x C x 3 x 3); with flip, w is the forward weight Kf x Cf x 3 x 3 of the data-gradient
  // convolution (g.channels = Kf, g.out_channels = Cf) and U is built from
  // w'[k', c', i, j] = w[c', k', 2 - i, 2 - j].
  void (*filter_transform)(const float* w, const WinogradGeom& g, bool flip, int panel,
                           float* u, int64_t c_begin, int64_t c_end);
  // Tiles [t0, t0 + count) (count <= tb): pack + input transform into s.v, the alpha^2 GEMMs
  // into s.m, output transform (+ bias_pad: Kpad floats, zero beyond K) into y.
  void (*block)(const float* x, const float* u, const float* bias_pad, const WinogradGeom& g,
                int64_t t0, int64_t count, int64_t tb, const WinogradSlot& s, float* y);
  // Weight gradient. wgrad_block: tiles
  // [t0, t0 + count) of x and dy (N x K x P x Q) added into s.du and s.db. wgrad_finish:
  // dw[k] += G^T du[k] G for k in [k_begin, k_end) (du: the slots' sum).
  void (*wgrad_block)(const float* x, const float* dy, const WinogradGeom& g, int64_t t0,
                      int64_t count, int64_t tb, const WinogradWgradSlot& s);
  void (*wgrad_finish)(const float* du, const WinogradGeom& g, int64_t k_begin, int64_t k_end,
                       float* dw);
};

using WinogradKernel = KernelRow<WinogradGeom, const WinogradOps*>;

// The ordered table (best first, scalar last); the first usable entry that supports g.
const WinogradKernel& winograd_kernel(const WinogradGeom& g);

// The convolution. workspace: workspace_floats >= winograd_workspace_floats(g, 1) floats;
// filter_cache: winograd_filter_cache_floats(g) floats, any contents (an unknown header makes it
// recompute). bias may be nullptr. The caller validated g (winograd_geom_error) and the sizes.
void winograd_forward(const float* x, const float* w, const float* bias, const WinogradGeom& g,
                      float* y, float* workspace, int64_t workspace_floats, float* filter_cache);

// The data gradient of winograd_forward with forward geometry gf: dx (N x C x H x W) from
// dy (N x K x P x Q), overwritten. It is the forward convolution of dy with the flipped,
// transposed filter and padding 2 - pad, so it uses winograd_backward_geom(gf) for its sizes.
WinogradGeom winograd_backward_geom(const WinogradGeom& gf);
void winograd_backward_data(const float* dy, const float* w, const WinogradGeom& gf, float* dx,
                            float* workspace, int64_t workspace_floats, float* filter_cache);

// The weight gradient of winograd_forward: dw (K x C x 3 x 3) += dL/dw and, unless db is nullptr,
// db (K) += the sum of dy over n, p, q, from x and dy (N x K x P x Q). workspace: at least
// winograd_wgrad_workspace_floats(g, 1) floats (one slot per thread that fits; a slot holds the
// thread's running sums, alpha^2 x Kpad x Cpad floats, so the row rule keeps this to layers whose
// sums stay a few MB, and winograd_wgrad_workspace_floats(g, threads) stops at 256 MB of slots).
// The sums over tiles run in blocks (winograd_wgrad_tile_block, at least 64 tiles), each block's
// GEMM from zero; with bf16 operands V and E are rounded to bf16.
int64_t winograd_wgrad_workspace_floats(const WinogradGeom& g, int threads);
void winograd_backward_weights(const float* x, const float* dy, const WinogradGeom& g, float* dw,
                               float* db, float* workspace, int64_t workspace_floats);

// The matrices the kernels use for tile m (row-major): A^T (m x alpha), G (alpha x 3),
// B^T (alpha x alpha). Returns false for an unknown m.
bool winograd_matrices(int m, float* at, float* g, float* bt);

namespace scalar_impl {
extern const WinogradOps winograd_ops;
}
namespace avx2_impl {
extern const WinogradOps winograd_ops;
}
namespace avx512_impl {
extern const WinogradOps winograd_ops;
}
namespace avx512_bf16_impl {  // kernels/src/bf16/winograd_bf16_avx512bf16.cpp
extern const WinogradOps winograd_ops;
}

}  // namespace crema
