// Single-precision GEMM:  C = alpha * op(A) * op(B) + beta * C   (row-major, float32).
//
//   op(A) is M x K: A[i*lda + p] (trans_a false) or A[p*lda + i] (trans_a true);
//   op(B) is K x N: B[p*ldb + j] (trans_b false) or B[j*ldb + p] (trans_b true);
//   C is M x N: C[i*ldc + j].  Leading dimensions are at least the stored row length.
//   beta == 0 never reads C (NaN/Inf garbage in C is overwritten, as in BLAS); K == 0 scales C.
//   C must not overlap A or B.
//
// Structure (GotoBLAS/BLIS): loop over NC-wide column blocks of op(B), KC-deep slices of K and
// MC-tall row blocks of op(A); each KC x NC slice of op(B) is packed into NR-wide panels and each
// MC x KC block of op(A) into MR-tall panels (zero-padded), and an MR x NR register-blocked
// micro-kernel runs over the panels. The MC blocks of one (NC, KC) step are shared out over
// num_threads() threads (threads.h).
//
// Workspace: the packed panels live in two 64-byte-aligned buffers that are thread_local to the
// thread calling sgemm() (the OpenMP workers pack into and read from the caller's buffers). They
// grow to the largest size that thread has needed and are then reused, so nothing is allocated
// per call once they have reached it; the size is bounded by the block sizes, not by the problem:
// KC*NC floats for op(B) plus KC*MC*num_threads() for op(A) (about 4 MB + 0.5 MB per thread with
// AVX-512). Concurrent calls from different threads use different buffers.
//
// Dispatch: one KernelTable (crema/dispatch.h), best first; the first row whose ISA is usable
// (CPU, build, ISA cap) wins. The scalar row supports everything.
#pragma once
#include <cstdint>

#include "crema/dispatch.h"
#include "crema/isa.h"

namespace crema {

struct GemmArgs {
  bool trans_a, trans_b;
  int64_t m, n, k;
  float alpha;
  const float* a;
  int64_t lda;
  const float* b;
  int64_t ldb;
  float beta;
  float* c;
  int64_t ldc;
};

using SgemmFn = void (*)(const GemmArgs& g);

// Rows are named by their register tile (sgemm_avx512_14x32, ...); every row takes any valid
// arguments.
using SgemmKernel = KernelRow<GemmArgs, SgemmFn>;

// nullptr when the arguments are valid (sizes >= 0, leading dimensions large enough), else why.
const char* sgemm_args_error(const GemmArgs& g);
const SgemmKernel& sgemm_kernel();                 // the kernel sgemm() runs now
void sgemm(const GemmArgs& g);                      // dispatches; args must be valid

// Per-ISA entry points: the vector ones from src/gemm/gemm_vec.isa.cpp (defined only when built
// with that ISA), the scalar one in gemm_common.cpp.
namespace avx512_impl {
void sgemm(const GemmArgs& g);
}
namespace avx2_impl {
void sgemm(const GemmArgs& g);
}
namespace scalar_impl {
void sgemm(const GemmArgs& g);
}

}  // namespace crema
