// The threading and workspace helpers of the direct convolution kernels (fp32 and bf16), and
// their forward tile's epilogue.
//
// Threading: every kernel call is ONE parallel region (run_region, threads sized by its work) whose
// phases -- weight packing, layout transforms, the micro-kernel loops -- are worksharing loops
// (loop) or single-thread steps (once), each ending in a barrier. Waking a team costs a
// scheduler latency when another process holds the core (milliseconds on a shared machine), a
// barrier between phases of an awake team does not. Loops are dynamic, in chunks of about 1/16
// of a thread's share, so a thread that is descheduled holds up the others by one chunk at most.
// loop/once called outside a region (one thread) just run the body.
//
// Everything is in an unnamed namespace, as in simd.h: each unit (compiled for its own ISA) gets
// its own copy, so the linker can never hand one ISA's code to another.
#pragma once
#include <algorithm>
#include <cstdint>

#include "crema/threads.h"

namespace crema {
namespace {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

template <class Body>
void run_region(int64_t work, Body&& body) {
#if defined(CREMA_HAVE_OPENMP)
  const int nt = threads_for_work(work, num_threads());  // work: multiply-adds
  const bool par = nt > 1;
#pragma omp parallel num_threads(nt) if (par)
  body();
#else
  (void)work;
  body();
#endif
}

template <class Fn>
void loop(int64_t n, Fn&& fn) {
#if defined(CREMA_HAVE_OPENMP)
  const int64_t chunk = std::max<int64_t>(1, n / (int64_t{16} * omp_get_num_threads()));
#pragma omp for schedule(dynamic, chunk)
  for (int64_t i = 0; i < n; ++i) fn(i);
#else
  for (int64_t i = 0; i < n; ++i) fn(i);
#endif
}

// Threads of the running region (1 outside one).
inline int team_size() {
#if defined(CREMA_HAVE_OPENMP)
  return omp_get_num_threads();
#else
  return 1;
#endif
}

template <class Fn>
void once(Fn&& fn) {
#if defined(CREMA_HAVE_OPENMP)
#pragma omp single
  fn();
#else
  fn();
#endif
}

// Workspace carving: 64-byte aligned pieces of caller-owned float storage; the workspace size a
// kernel reports includes kAlignSlack floats for the first alignment.
inline float* align64(float* p) {
  auto v = reinterpret_cast<uintptr_t>(p);
  return reinterpret_cast<float*>((v + 63) & ~uintptr_t{63});
}
constexpr int64_t kAlignSlack = 16;  // floats

struct Carver {
  float* p;
  explicit Carver(float* base) : p(align64(base)) {}
  float* take(int64_t floats) {
    float* r = p;
    p += round_up(floats, 16);
    return r;
  }
  // n bfloat16 values (two per float of storage).
  uint16_t* take_bf16(int64_t n) { return reinterpret_cast<uint16_t*>(take(ceil_div(n, 2))); }
};

// The forward tile's epilogue (fp32 and bf16 direct kernels alike): the fused ReLU, then OB
// output blocks x WB pixels of accumulators (V::L channels each) stored into NCHW through
// L x L transposes, nvalid[j] channels of block j (<= 0: the block is skipped).
template <class V, int OB, int WB>
inline void finish_tile_nchw(typename V::reg (&acc)[OB][WB], bool relu, float slope, float* y,
                             int64_t yks, const int64_t* nvalid) {
  using reg = typename V::reg;
  constexpr int L = V::L;
  if (relu) {
    const reg sl = V::set1(slope);
#pragma GCC unroll 4
    for (int j = 0; j < OB; ++j)
#pragma GCC unroll 32
      for (int p = 0; p < WB; ++p) acc[j][p] = V::relu(acc[j][p], sl);
  }
#pragma GCC unroll 4
  for (int j = 0; j < OB; ++j) {
    if (nvalid[j] <= 0) continue;
    float* yj = y + j * L * yks;
    for (int p0 = 0; p0 < WB; p0 += L) {
      reg t[L];
#pragma GCC unroll 16
      for (int i = 0; i < L; ++i)  // (the inner select keeps the index in range for the compiler)
        t[i] = (p0 + i < WB) ? acc[j][p0 + i < WB ? p0 + i : 0] : V::zero();
      V::transpose(t);
      const int m = WB - p0 < L ? WB - p0 : L;
      if (m == L) {
        for (int64_t c = 0; c < nvalid[j]; ++c) V::storeu(yj + c * yks + p0, t[c]);
      } else {
        for (int64_t c = 0; c < nvalid[j]; ++c) V::mask_storeu(yj + c * yks + p0, t[c], m);
      }
    }
  }
}

}  // namespace
}  // namespace crema
