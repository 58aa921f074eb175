// bfloat16 mixed precision: bf16 operands, fp32 accumulation and fp32 results.
//
// bf16 is the upper half of an IEEE float32 (sign, 8-bit exponent, 7-bit mantissa), stored as
// uint16_t. Conversion float32 -> bf16 rounds to nearest even and treats denormal inputs as
// (signed) zero, as VCVTNE2PS2BF16 does; NaN stays NaN (quiet). Every row of the conversion
// table gives the same bits.
//
// GEMM:  C = alpha * op(A) * op(B) + beta * C, A and B bf16, C float32 (row-major, the layout
// conventions of crema/gemm.h; leading dimensions in elements). Every product of two bf16 values
// is exact in float32, so the rows differ only in the order of the fp32 sums (and in denormal
// results, which VDPBF16PS flushes to zero):
//   bf16gemm_avx512_bf16_14x32  VDPBF16PS: one instruction per 16 lanes x 2 consecutive k
//   bf16gemm_avx512_12x32, bf16gemm_avx2_4x16, bf16gemm_scalar_4x8: the fallback, widening the
//   bf16 pairs to float32 (a shift / a mask) and FMA, in VDPBF16PS's order (k+1, then k).
// Packing (GotoBLAS blocking as in crema/gemm.h) puts k in pairs: a packed panel holds, per pair
// of k and per row (A) or column (B), one 32-bit word = bf16(k) | bf16(k+1) << 16 (zero past K).
// Packed buffers are thread_local to the calling thread, grow-only.
//
// Convolution (crema/conv.h's ConvGeom, layouts and ConvScratch; x, dy, the weights w -- the
// float32 master weights -- and every result float32; the operands of each product rounded to
// bf16). One table per pass, best first:
//   bf16conv_winograd_avx512_bf16  (forward and data gradient) Winograd F(4x4 / 2x2, 3x3) of
//     crema/winograd.h with the transformed input V and filter U rounded to bf16 and multiplied
//     by VDPBF16PS (winograd_bf16_avx512bf16.cpp): where Winograd applies and the geometry's
//     algorithm for the pass is Winograd (the float32 tables' choice, so ranks agree; forcing
//     direct gets the direct row). The transforms amplify the rounding: RMS error about 1.5e-2
//     of the output's RMS for unit-variance data, against 2.4e-3 for the direct rows
//     (tests/kernels/test_bf16.py states the bounds).
//   bf16conv_direct_avx512_bf16  blocked direct convolution on VDPBF16PS (bf16_conv_avx512bf16.cpp):
//     activations nChw16c in bf16 (a 32-bit word = two consecutive channels, the pair VDPBF16PS
//     multiplies), weights [g][ob][ib][r][s][16 in as 8 pairs][16 out][2], a 2 x 14 tile of
//     16-channel accumulators in registers over the C*R*S reduction with the bias and ReLU in its
//     epilogue, stored straight into NCHW. The data gradient (stride 1) is the same kernel on dy
//     with the weights transposed and flipped. The weight gradient (sw == 1) pairs consecutive
//     output pixels instead: dy as [kb][p][q/2][16 k][2], x as zero-bordered bf16 planes whose
//     consecutive columns make the broadcast word, a 4 k-blocks x 6 taps tile. The forward and
//     data-gradient rows keep their packed bf16 weights in the per-layer cache (with a bitwise
//     copy of the float32 weights: repacked only when they changed).
//   bf16conv_im2col_gemm  every geometry, any CPU: per image bf16 input -> im2col over bands of
//     output rows -> the bf16 GEMM above (whose own table follows the ISA cap); the data gradient
//     through float32 col2im. On AVX512-BF16 CPUs the data gradient also runs it ahead of the
//     direct row (as bf16conv_gemm_rule) where the float32 tables' AVX-512 GEMM rule holds.
//   fp32_direct_fewc_avx512 / _avx2  (forward only) the float32 few-channel rows of crema/conv.h
//     for at most 4 input channels per group: a first layer stays float32 (faster, and exact).
// Passes: fwd y = conv(x, w) + bias (then the ReLU of crema/conv.h's epilogue when relu);
// bwd_data dx = conv^T(dy, w) (overwritten); bwd_weights dw += dconv/dw, db += sum of dy (float32).
#pragma once
#include <cstdint>

#include "crema/conv.h"
#include "crema/dispatch.h"
#include "crema/isa.h"

namespace crema {

using bf16_t = uint16_t;

// -- conversion ---------------------------------------------------------------------------------
using Bf16ConvertFn = void (*)(const float* src, bf16_t* dst, int64_t n);
using Bf16ConvertKernel = KernelRow<int64_t, Bf16ConvertFn>;  // geometry: the element count
const KernelTable<int64_t, Bf16ConvertFn>& bf16_convert_table();
void to_bf16(const float* src, bf16_t* dst, int64_t n);  // the chosen row
void from_bf16(const bf16_t* src, float* dst, int64_t n);  // exact

// -- GEMM ---------------------------------------------------------------------------------------
struct Bf16GemmArgs {
  bool trans_a, trans_b;
  int64_t m, n, k;
  float alpha;
  const bf16_t* a;
  int64_t lda;
  const bf16_t* b;
  int64_t ldb;
  float beta;
  float* c;
  int64_t ldc;
};
using Bf16GemmFn = void (*)(const Bf16GemmArgs& g);
using Bf16GemmKernel = KernelRow<Bf16GemmArgs, Bf16GemmFn>;
const KernelTable<Bf16GemmArgs, Bf16GemmFn>& bf16_gemm_table();
// nullptr when the arguments are valid (as sgemm_args_error), else why.
const char* bf16_gemm_args_error(const Bf16GemmArgs& g);
void bf16_gemm(const Bf16GemmArgs& g);  // the chosen row; args must be valid

// -- convolution --------------------------------------------------------------------------------
// Same function types as the float32 passes (crema/conv.h): w is the float32 master weights.
const KernelTable<ConvGeom, ConvFwdFn>& bf16_conv_fwd_table();
const KernelTable<ConvGeom, ConvBwdDataFn>& bf16_conv_bwd_data_table();
const KernelTable<ConvGeom, ConvBwdWeightsFn>& bf16_conv_bwd_weights_table();
// Floats of workspace for every pass's rows (any ISA cap) and of `pass`'s cache.
int64_t bf16_conv_workspace_floats(const ConvGeom& g);
int64_t bf16_conv_cache_floats(const ConvGeom& g, ConvPass pass);
// The entry points: the chosen row with the caller's scratch (sizes checked by the caller).
void bf16_conv_forward(const float* x, const float* w, const float* bias, float* y,
                       const ConvGeom& g, const ConvScratch& s, bool relu, float slope);
void bf16_conv_backward_data(const float* dy, const float* w, float* dx, const ConvGeom& g,
                             const ConvScratch& s);
void bf16_conv_backward_weights(const float* x, const float* dy, float* dw, float* db,
                                const ConvGeom& g, const ConvScratch& s);

// Per-ISA rows (defined only when built with that ISA).
#define CREMA_BF16_DECLARE(ns)                              \
  namespace ns {                                            \
  void bf16_gemm(const Bf16GemmArgs& g);                    \
  void to_bf16(const float* src, bf16_t* dst, int64_t n);   \
  }
CREMA_BF16_DECLARE(avx512_bf16_impl)
CREMA_BF16_DECLARE(avx512_impl)
CREMA_BF16_DECLARE(avx2_impl)
#undef CREMA_BF16_DECLARE

namespace avx512_bf16_impl {
void bf16_conv_fwd_direct(const float* x, const float* w, const float* bias, float* y,
                          const ConvGeom& g, const ConvScratch& s, bool relu, float slope);
void bf16_conv_bwd_data_direct(const float* dy, const float* w, float* dx, const ConvGeom& g,
                               const ConvScratch& s);
void bf16_conv_bwd_weights_direct(const float* x, const float* dy, float* dw, float* db,
                                  const ConvGeom& g, const ConvScratch& s);
int64_t ws_fwd_direct(const ConvGeom& g);
int64_t ws_bwd_data_direct(const ConvGeom& g);
int64_t ws_bwd_weights_direct(const ConvGeom& g);
int64_t cache_fwd_direct(const ConvGeom& g);
int64_t cache_bwd_data_direct(const ConvGeom& g);
// Winograd F(4x4 / 2x2, 3x3) with bf16 V and U (the weight gradient: V and E)
// (winograd_bf16_avx512bf16.cpp; the driver and the sizes are crema/winograd.h's, the wrappers
// winograd_common.cpp's).
void conv_fwd_winograd(const float* x, const float* w, const float* bias, float* y,
                       const ConvGeom& g, const ConvScratch& s, bool relu, float slope);
void conv_bwd_data_winograd(const float* dy, const float* w, float* dx, const ConvGeom& g,
                            const ConvScratch& s);
void conv_bwd_weights_winograd(const float* x, const float* dy, float* dw, float* db,
                               const ConvGeom& g, const ConvScratch& s);
}  // namespace avx512_bf16_impl

}  // namespace crema
