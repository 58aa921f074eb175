// Direct convolution, AVX-512 (16 lanes, 32 zmm registers). Compiled with AVX-512 F/BW/VL/DQ
// flags; the dispatcher (conv_common.cpp) only calls it when cpuid and the OS report them.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>

#include "crema/conv.h"
#include "crema/threads.h"

namespace crema {
namespace avx512_impl {
namespace {

struct VT {
  using reg = __m512;
  static constexpr int L = 16;
  // Forward tile: 2 output blocks x 14 pixels = 28 accumulators, 2 weight vectors, 1 broadcast.
  static constexpr int kOB = 2, kWB = 14;
  // Weight-gradient tile: 4 input lanes x 4 output blocks = 16 accumulators (4 dy vectors,
  // 4 broadcasts per pixel: 0.5 loads per FMA).
  static constexpr int kCI = 4, kKJ = 4;
  // Few-channel forward: 6 output channels x 4 vectors (64 pixels) = 24 accumulators; per tap
  // 4 input vectors + 6 weight broadcasts feed 24 FMAs.
  static constexpr int kKI = 6, kWV = 4;
  // Few-channel weight gradient: 6 output channels x 4 taps = 24 accumulators.
  static constexpr int kTKI = 6, kTT = 4;

  static reg zero() { return _mm512_setzero_ps(); }
  static reg load(const float* p) { return _mm512_load_ps(p); }
  static reg loadu(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, reg v) { _mm512_store_ps(p, v); }
  static void storeu(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static reg bcast(const float* p) { return _mm512_set1_ps(*p); }
  // A prefetch for writing (PREFETCHW: every AVX-512 CPU has it); never faults.
  static void prefetch_w(const float* p) {
    __asm__ volatile("prefetchw %0" : : "m"(*reinterpret_cast<const char*>(p)));
  }
  static reg set1(float v) { return _mm512_set1_ps(v); }
  static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg relu(reg v, reg slope) {
    return fmadd(slope, _mm512_min_ps(v, zero()), _mm512_max_ps(v, zero()));
  }
  static __mmask16 mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static reg maskz_loadu(const float* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void mask_storeu(float* p, reg v, int n) { _mm512_mask_storeu_ps(p, mask(n), v); }
  static float hsum(reg v) { return _mm512_reduce_add_ps(v); }
  // Pins a loaded vector in a register: without it GCC may fold the load into every FMA that
  // uses it (one load per use instead of one per vector).
  static void keep(reg& v) { __asm__("" : "+v"(v)); }

  // 16 x 16 transpose in registers: 32-bit interleave, 64-bit interleave, then two rounds of
  // 128-bit lane shuffles.
  static void transpose(reg* r) {
    reg t[16];
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {
      const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
      const __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
      r[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
      r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
      r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
      r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    for (int j = 0; j < 4; ++j) {
      t[j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
      t[4 + j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xdd);
      t[8 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
      t[12 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xdd);
    }
    for (int j = 0; j < 4; ++j) {
      r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
      r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
      r[4 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88);
      r[12 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xdd);
    }
  }
};

}  // namespace

#include "conv_direct.inl"

}  // namespace avx512_impl
}  // namespace crema
