// The vector-traits layer: simd::Vec<isa>, one struct per instruction set with the same static
// interface, so a kernel is written once as a template over V = Vec<isa> and compiled per ISA.
//
// Only for the per-ISA translation units (the *.isa.cpp files, which CMakeLists.txt compiles
// once per ISA with that ISA's flags and -DCREMA_UNIT_ISA=avx512|avx2|scalar): Vec<avx512> exists
// where the compiler targets AVX-512, Vec<avx2> where it targets AVX2 + FMA, Vec<scalar> always.
// Everything is in an unnamed namespace: each unit gets its own copy, so the linker can never
// merge a function compiled with AVX-512 flags into a unit that runs on an AVX2-only CPU.
//
// Interface (L lanes of float; reg a vector, ireg L int32 lanes, mask a lane predicate):
//   zero() set1(f) bcast(p)  load(p) (aligned) loadu(p) store(p, v) storeu(p, v)
//   add sub mul div min max fmadd(a, b, c) = a*b + c   relu(v, slope) = max(v,0) + slope*min(v,0)
//   hsum(v)  transpose(reg[L])  keep(v&) (pins v in a register)  prefetch_w(p)
//   Tails (first n lanes, 0 <= n; n >= L means all): tail(n) -> mask, all(m), any(m),
//     maskz_loadu(p, n) / mask_storeu(p, v, n), and by mask: load_m(p, m) (masked-off lanes 0)
//     store_m(p, m, v), iload_m / istore_m for int32; full vectors go unmasked: a masked load
//     that misses the cache is several times slower than a plain one on some cores (AMD Zen 5).
//   Predicates: gt(a, b), m_and(a, b), select(m, a, b) = m ? a : b, iselect, igt(a, b),
//     inside(c, n) = 0 <= c < n
//   int32 lanes: iset1 iramp() (0, 1, ..., L-1) iadd imullo imin imax to_float
//   Memory by index (int32 lanes, in floats): gather(base, idx, m) (masked-off lanes 0, their
//     addresses untouched), gather_all(base, idx), scatter(base, idx, m, v) (AVX-512 and scalar;
//     lanes must not repeat an index), even(a, b) (lanes 0, 2, ... of the 2L floats a:b),
//     permute2(lo, idx, hi) (lane i = (lo:hi)[idx[i]], idx in [0, 2L)).
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "crema/isa.h"

// The ISA of this translation unit and its namespace (crema::avx512_impl, ...).
#if defined(CREMA_UNIT_ISA)
#define CREMA_UNIT_PASTE2(a, b) a##b
#define CREMA_UNIT_PASTE(a, b) CREMA_UNIT_PASTE2(a, b)
#define CREMA_ISA_NS CREMA_UNIT_PASTE(CREMA_UNIT_ISA, _impl)
#endif

namespace crema {
namespace simd {
namespace {

template <Isa isa>
struct Vec;

#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512BW__) && defined(__AVX512VL__)
template <>
struct Vec<Isa::avx512> {
  using reg = __m512;
  using ireg = __m512i;
  using mask = __mmask16;
  static constexpr int L = 16;

  static reg zero() { return _mm512_setzero_ps(); }
  static reg set1(float v) { return _mm512_set1_ps(v); }
  static reg bcast(const float* p) { return _mm512_set1_ps(*p); }
  static reg load(const float* p) { return _mm512_load_ps(p); }
  static reg loadu(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, reg v) { _mm512_store_ps(p, v); }
  static void storeu(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm512_div_ps(a, b); }
  static reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
  static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg relu(reg v, reg slope) { return fmadd(slope, min(v, zero()), max(v, zero())); }
  static float hsum(reg v) { return _mm512_reduce_add_ps(v); }
  // Without it GCC may fold a load into every FMA that uses it (one load per use).
  static void keep(reg& v) { __asm__("" : "+v"(v)); }
  // PREFETCHW (every AVX-512 CPU has it); never faults.
  static void prefetch_w(const float* p) {
    __asm__ volatile("prefetchw %0" : : "m"(*reinterpret_cast<const char*>(p)));
  }

  static mask tail(int64_t n) {
    return n >= L ? static_cast<mask>(0xFFFF) : static_cast<mask>((1u << n) - 1u);
  }
  static bool all(mask m) { return m == 0xFFFF; }
  static bool any(mask m) { return m != 0; }
  static reg maskz_loadu(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(tail(n), p); }
  static void mask_storeu(float* p, reg v, int64_t n) { _mm512_mask_storeu_ps(p, tail(n), v); }
  static reg load_m(const float* p, mask m) {
    return all(m) ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
  }
  static void store_m(float* p, mask m, reg v) {
    if (all(m))
      _mm512_storeu_ps(p, v);
    else
      _mm512_mask_storeu_ps(p, m, v);
  }
  static ireg iload_m(const int32_t* p, mask m) {
    return all(m) ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi32(m, p);
  }
  static void istore_m(int32_t* p, mask m, ireg v) {
    if (all(m))
      _mm512_storeu_si512(p, v);
    else
      _mm512_mask_storeu_epi32(p, m, v);
  }
  static ireg iloadu(const int32_t* p) { return _mm512_loadu_si512(p); }

  static mask gt(reg a, reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static mask m_and(mask a, mask b) { return a & b; }
  static reg select(mask m, reg a, reg b) { return _mm512_mask_mov_ps(b, m, a); }
  static ireg iselect(mask m, ireg a, ireg b) { return _mm512_mask_mov_epi32(b, m, a); }
  static mask igt(ireg a, ireg b) { return _mm512_cmpgt_epi32_mask(a, b); }
  static mask inside(ireg c, ireg n) {
    return _mm512_cmpge_epi32_mask(c, _mm512_setzero_si512()) & _mm512_cmplt_epi32_mask(c, n);
  }

  static ireg iset1(int64_t v) { return _mm512_set1_epi32(static_cast<int>(v)); }
  static ireg iramp() {
    return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  }
  static ireg iadd(ireg a, ireg b) { return _mm512_add_epi32(a, b); }
  static ireg isub(ireg a, ireg b) { return _mm512_sub_epi32(a, b); }
  static ireg imullo(ireg a, ireg b) { return _mm512_mullo_epi32(a, b); }
  static ireg imin(ireg a, ireg b) { return _mm512_min_epi32(a, b); }
  static ireg imax(ireg a, ireg b) { return _mm512_max_epi32(a, b); }
  static reg to_float(ireg a) { return _mm512_cvtepi32_ps(a); }

  static reg gather(const float* base, ireg idx, mask m) {
    return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, base, 4);
  }
  static reg gather_all(const float* base, ireg idx) { return _mm512_i32gather_ps(idx, base, 4); }
  static void scatter(float* base, ireg idx, mask m, reg v) {
    _mm512_mask_i32scatter_ps(base, m, idx, v, 4);
  }
  static reg even(reg a, reg b) {
    const ireg two_l = _mm512_add_epi32(iramp(), iramp());
    return _mm512_permutex2var_ps(a, two_l, b);
  }
  static reg permute2(reg lo, ireg idx, reg hi) { return _mm512_permutex2var_ps(lo, idx, hi); }

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
#endif  // AVX-512

#if defined(__AVX2__) && defined(__FMA__)
template <>
struct Vec<Isa::avx2> {
  using reg = __m256;
  using ireg = __m256i;
  using mask = __m256i;  // all-ones lanes are true
  static constexpr int L = 8;

  static reg zero() { return _mm256_setzero_ps(); }
  static reg set1(float v) { return _mm256_set1_ps(v); }
  static reg bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static reg load(const float* p) { return _mm256_load_ps(p); }
  static reg loadu(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, reg v) { _mm256_store_ps(p, v); }
  static void storeu(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm256_div_ps(a, b); }
  static reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
  static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg relu(reg v, reg slope) { return fmadd(slope, min(v, zero()), max(v, zero())); }
  static float hsum(reg v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static void keep(reg& v) { __asm__("" : "+x"(v)); }
  // A plain T0 prefetch: PREFETCHW needs a flag AVX2 builds do not set.
  static void prefetch_w(const float* p) { __builtin_prefetch(p, 1, 3); }

  static mask tail(int64_t n) {
    return _mm256_cmpgt_epi32(iset1(n < L ? n : L), iramp());
  }
  static bool all(mask m) { return _mm256_movemask_ps(_mm256_castsi256_ps(m)) == 0xFF; }
  static bool any(mask m) { return _mm256_movemask_ps(_mm256_castsi256_ps(m)) != 0; }
  static reg maskz_loadu(const float* p, int64_t n) { return _mm256_maskload_ps(p, tail(n)); }
  static void mask_storeu(float* p, reg v, int64_t n) { _mm256_maskstore_ps(p, tail(n), v); }
  static reg load_m(const float* p, mask m) {
    return all(m) ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m);
  }
  static void store_m(float* p, mask m, reg v) {
    if (all(m))
      _mm256_storeu_ps(p, v);
    else
      _mm256_maskstore_ps(p, m, v);
  }
  static ireg iload_m(const int32_t* p, mask m) {
    return all(m) ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                  : _mm256_maskload_epi32(reinterpret_cast<const int*>(p), m);
  }
  static void istore_m(int32_t* p, mask m, ireg v) {
    if (all(m))
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
    else
      _mm256_maskstore_epi32(reinterpret_cast<int*>(p), m, v);
  }
  static ireg iloadu(const int32_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }

  static mask gt(reg a, reg b) { return _mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_GT_OQ)); }
  static mask m_and(mask a, mask b) { return _mm256_and_si256(a, b); }
  static reg select(mask m, reg a, reg b) {
    return _mm256_blendv_ps(b, a, _mm256_castsi256_ps(m));
  }
  static ireg iselect(mask m, ireg a, ireg b) {
    return _mm256_castps_si256(_mm256_blendv_ps(
        _mm256_castsi256_ps(b), _mm256_castsi256_ps(a), _mm256_castsi256_ps(m)));
  }
  static mask igt(ireg a, ireg b) { return _mm256_cmpgt_epi32(a, b); }
  static mask inside(ireg c, ireg n) {
    return _mm256_and_si256(_mm256_cmpgt_epi32(c, iset1(-1)), _mm256_cmpgt_epi32(n, c));
  }

  static ireg iset1(int64_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }
  static ireg iramp() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
  static ireg iadd(ireg a, ireg b) { return _mm256_add_epi32(a, b); }
  static ireg isub(ireg a, ireg b) { return _mm256_sub_epi32(a, b); }
  static ireg imullo(ireg a, ireg b) { return _mm256_mullo_epi32(a, b); }
  static ireg imin(ireg a, ireg b) { return _mm256_min_epi32(a, b); }
  static ireg imax(ireg a, ireg b) { return _mm256_max_epi32(a, b); }
  static reg to_float(ireg a) { return _mm256_cvtepi32_ps(a); }

  static reg gather(const float* base, ireg idx, mask m) {
    return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), base, idx, _mm256_castsi256_ps(m), 4);
  }
  static reg gather_all(const float* base, ireg idx) { return _mm256_i32gather_ps(base, idx, 4); }
  static reg even(reg a, reg b) {
    const reg ev = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));  // a0 a2 b0 b2 a4 a6 b4 b6
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), _MM_SHUFFLE(3, 1, 2, 0)));
  }
  static reg permute2(reg lo, ireg idx, reg hi) {
    const reg from_lo = _mm256_permutevar8x32_ps(lo, idx);  // uses the low 3 bits
    const reg from_hi = _mm256_permutevar8x32_ps(hi, idx);
    return select(igt(idx, iset1(L - 1)), from_hi, from_lo);
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
#endif  // AVX2

// One lane: the same template code as plain C++ (what the portable build compiles).
template <>
struct Vec<Isa::scalar> {
  using reg = float;
  using ireg = int32_t;
  using mask = bool;
  static constexpr int L = 1;

  static reg zero() { return 0.f; }
  static reg set1(float v) { return v; }
  static reg bcast(const float* p) { return *p; }
  static reg load(const float* p) { return *p; }
  static reg loadu(const float* p) { return *p; }
  static void store(float* p, reg v) { *p = v; }
  static void storeu(float* p, reg v) { *p = v; }
  static reg add(reg a, reg b) { return a + b; }
  static reg sub(reg a, reg b) { return a - b; }
  static reg mul(reg a, reg b) { return a * b; }
  static reg div(reg a, reg b) { return a / b; }
  static reg min(reg a, reg b) { return b < a ? b : a; }
  static reg max(reg a, reg b) { return a < b ? b : a; }
  static reg fmadd(reg a, reg b, reg c) { return a * b + c; }
  static reg relu(reg v, reg slope) { return max(v, 0.f) + slope * min(v, 0.f); }
  static float hsum(reg v) { return v; }
  static void keep(reg&) {}
  static void prefetch_w(const float* p) { __builtin_prefetch(p, 1, 3); }

  static mask tail(int64_t n) { return n > 0; }
  static bool all(mask m) { return m; }
  static bool any(mask m) { return m; }
  static reg maskz_loadu(const float* p, int64_t n) { return n > 0 ? *p : 0.f; }
  static void mask_storeu(float* p, reg v, int64_t n) {
    if (n > 0) *p = v;
  }
  static reg load_m(const float* p, mask m) { return m ? *p : 0.f; }
  static void store_m(float* p, mask m, reg v) {
    if (m) *p = v;
  }
  static ireg iload_m(const int32_t* p, mask m) { return m ? *p : 0; }
  static void istore_m(int32_t* p, mask m, ireg v) {
    if (m) *p = v;
  }
  static ireg iloadu(const int32_t* p) { return *p; }

  static mask gt(reg a, reg b) { return a > b; }
  static mask m_and(mask a, mask b) { return a && b; }
  static reg select(mask m, reg a, reg b) { return m ? a : b; }
  static ireg iselect(mask m, ireg a, ireg b) { return m ? a : b; }
  static mask igt(ireg a, ireg b) { return a > b; }
  static mask inside(ireg c, ireg n) { return c >= 0 && c < n; }

  static ireg iset1(int64_t v) { return static_cast<ireg>(v); }
  static ireg iramp() { return 0; }
  static ireg iadd(ireg a, ireg b) { return a + b; }
  static ireg isub(ireg a, ireg b) { return a - b; }
  static ireg imullo(ireg a, ireg b) { return a * b; }
  static ireg imin(ireg a, ireg b) { return b < a ? b : a; }
  static ireg imax(ireg a, ireg b) { return a < b ? b : a; }
  static reg to_float(ireg a) { return static_cast<float>(a); }

  static reg gather(const float* base, ireg idx, mask m) { return m ? base[idx] : 0.f; }
  static reg gather_all(const float* base, ireg idx) { return base[idx]; }
  static void scatter(float* base, ireg idx, mask m, reg v) {
    if (m) base[idx] = v;
  }
  static reg even(reg a, reg) { return a; }
  static reg permute2(reg lo, ireg idx, reg hi) { return idx == 0 ? lo : hi; }
  static void transpose(reg*) {}
};

}  // namespace
}  // namespace simd
}  // namespace crema
