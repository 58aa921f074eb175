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
// Convolution (crema/conv.h's ConvGeom and layouts; weights given as bf16): per image the input
// is converted to bf16, unfolded (im2col) and multiplied with the bf16 GEMM above:
//   fwd:          y = W * col(x) + bias
//   bwd_data:     dx = col2im(W^T * dy)        (dy converted to bf16; col2im in float32)
//   bwd_weights:  dw += dy * col(x)^T, db += sum of dy (float32)
// `ws` is caller-owned scratch of bf16_conv_workspace_floats(g) floats.
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
int64_t bf16_conv_workspace_floats(const ConvGeom& g);
void bf16_conv_forward(const float* x, const bf16_t* w, const float* bias, float* y,
                       const ConvGeom& g, float* ws);
void bf16_conv_backward_data(const float* dy, const bf16_t* w, float* dx, const ConvGeom& g,
                             float* ws);
void bf16_conv_backward_weights(const float* x, const float* dy, float* dw, float* db,
                                const ConvGeom& g, float* ws);

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

}  // namespace crema
