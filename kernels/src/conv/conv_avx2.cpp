// Direct convolution, AVX2 + FMA (8 lanes, 16 ymm registers). Compiled with -mavx2 -mfma; the
// dispatcher (conv_common.cpp) only calls it when cpuid and the OS report them.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>

#include "crema/conv.h"
#include "crema/threads.h"

namespace crema {
namespace avx2_impl {
namespace {

alignas(32) const int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

struct VT {
  using reg = __m256;
  static constexpr int L = 8;
  // Forward tile: 2 output blocks x 6 pixels = 12 accumulators (+2 weights, 1 broadcast).
  static constexpr int kOB = 2, kWB = 6;
  // Weight-gradient tile: 4 input lanes x 2 output blocks = 8 accumulators.
  static constexpr int kCI = 4, kKJ = 2;
  // Few-channel forward: 2 output channels x 5 vectors = 10 accumulators.
  static constexpr int kKI = 2, kWV = 5;
  // Few-channel weight gradient: 3 output channels x 4 taps = 12 accumulators.
  static constexpr int kTKI = 3, kTT = 4;

  static reg zero() { return _mm256_setzero_ps(); }
  static reg load(const float* p) { return _mm256_load_ps(p); }
  static reg loadu(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, reg v) { _mm256_store_ps(p, v); }
  static void storeu(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static reg bcast(const float* p) { return _mm256_broadcast_ss(p); }
  // A prefetch ahead of writing (a plain T0 prefetch: PREFETCHW needs a flag this file lacks).
  static void prefetch_w(const float* p) { __builtin_prefetch(p, 1, 3); }
  static reg set1(float v) { return _mm256_set1_ps(v); }
  static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg relu(reg v, reg slope) {
    return fmadd(slope, _mm256_min_ps(v, zero()), _mm256_max_ps(v, zero()));
  }
  static __m256i mask(int n) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - n));
  }
  static reg maskz_loadu(const float* p, int n) { return _mm256_maskload_ps(p, mask(n)); }
  // Pins a loaded vector in a register (no folding of the load into each FMA that uses it).
  static void keep(reg& v) { __asm__("" : "+x"(v)); }
  static void mask_storeu(float* p, reg v, int n) { _mm256_maskstore_ps(p, mask(n), v); }
  static float hsum(reg v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

  // 8 x 8 transpose: 32-bit interleave, 64-bit shuffles, 128-bit lane permutes.
  static void transpose(reg* r) {
    reg t[8];
    for (int i = 0; i < 4; ++i) {
      t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; ++i) {
      r[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
      r[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
      r[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
      r[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int j = 0; j < 4; ++j) {
      t[j] = _mm256_permute2f128_ps(r[j], r[4 + j], 0x20);
      t[4 + j] = _mm256_permute2f128_ps(r[j], r[4 + j], 0x31);
    }
    for (int j = 0; j < 8; ++j) r[j] = t[j];
  }
};

}  // namespace

#include "conv_direct.inl"

}  // namespace avx2_impl
}  // namespace crema
