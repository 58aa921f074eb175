// Private to the Winograd kernels: the vector half of winograd_impl.h's Ops (transforms over one
// 16-channel block, input packing and output stores) written once against crema/simd.h, for the
// units that include it: winograd_vec.isa.cpp (float32 GEMM, once per vector ISA) and
// kernels/src/bf16/winograd_bf16_avx512bf16.cpp (the bf16 GEMM). Each unit derives its Ops from
// WinogradVecOps<its Vec> and adds the GEMM. Define CREMA_WINOGRAD_NS (the unit's namespace) and
// include crema/simd.h first; everything lands in an unnamed namespace inside it, so code compiled
// with different -m flags is never merged by the linker.
#ifndef CREMA_WINOGRAD_NS
#error "define CREMA_WINOGRAD_NS before including winograd_vec_ops.h"
#endif
#include <type_traits>

namespace crema {
namespace CREMA_WINOGRAD_NS {
namespace {

// A GEMM panel's rows in register blocks of R rows, the leftover rows as one smaller block:
// run(std::integral_constant<int, r>, first row) computes r rows (r a compile-time constant for
// the unit's micro-kernel).
template <int R, class Run>
inline void winograd_tail_block(int left, int64_t r0, const Run& run) {
  if constexpr (R >= 1) {
    if (left == R)
      run(std::integral_constant<int, R>{}, r0);
    else
      winograd_tail_block<R - 1>(left, r0, run);
  }
}
template <int R, class Run>
inline void winograd_row_blocks(int64_t rows, const Run& run) {
  int64_t r = 0;
  for (; r + R <= rows; r += R) run(std::integral_constant<int, R>{}, r);
  if (rows > r) winograd_tail_block<R - 1>(static_cast<int>(rows - r), r, run);
}

// A 16-channel block is 16 / L vectors (one zmm, two ymm).
template <class VV>
struct WinogradV16 {
  typename VV::reg r[16 / VV::L];
};

template <class VV>
struct WinogradVecOps {
  using reg = typename VV::reg;
  static constexpr int L = VV::L;
  static constexpr int NB = 16 / L;  // vectors per 16-channel block
  using V = WinogradV16<VV>;

  static V load(const float* p) {
    V v;
    for (int i = 0; i < NB; ++i) v.r[i] = VV::loadu(p + L * i);
    return v;
  }
  static void store(float* p, V v) {
    for (int i = 0; i < NB; ++i) VV::storeu(p + L * i, v.r[i]);
  }
  static V zero() {
    V v;
    for (int i = 0; i < NB; ++i) v.r[i] = VV::zero();
    return v;
  }
  static V add(V a, V b) {
    for (int i = 0; i < NB; ++i) a.r[i] = VV::add(a.r[i], b.r[i]);
    return a;
  }
  static V sub(V a, V b) {
    for (int i = 0; i < NB; ++i) a.r[i] = VV::sub(a.r[i], b.r[i]);
    return a;
  }
  static V neg(V a) { return sub(zero(), a); }
  static V mul(V a, float c) {
    const reg k = VV::set1(c);
    for (int i = 0; i < NB; ++i) a.r[i] = VV::mul(a.r[i], k);
    return a;
  }
  static V fmadd(V x, float c, V acc) {  // acc + c x
    const reg k = VV::set1(c);
    for (int i = 0; i < NB; ++i) acc.r[i] = VV::fmadd(x.r[i], k, acc.r[i]);
    return acc;
  }
  static V relu(V a, float slope) {  // max(a, 0) + slope * min(a, 0)
    const reg s = VV::set1(slope);
    for (int i = 0; i < NB; ++i) a.r[i] = VV::relu(a.r[i], s);
    return a;
  }

  // dst[x][16] = the 16 channels (zero from c_valid on) of pixel x: L x L register transposes.
  static constexpr bool fast_pack = true;
  static void pack_row(const float* src, int64_t plane, int c_valid, int64_t width, float* dst) {
    for (int64_t x0 = 0; x0 < width; x0 += L) {
      const int nx = static_cast<int>(std::min<int64_t>(L, width - x0));
      for (int h = 0; h < NB; ++h) {
        reg r[L];
        for (int c = 0; c < L; ++c) {
          const int ch = h * L + c;
          const float* s = src + ch * plane + x0;
          r[c] = ch >= c_valid ? VV::zero() : nx == L ? VV::loadu(s) : VV::maskz_loadu(s, nx);
        }
        VV::transpose(r);
        for (int x = 0; x < nx; ++x) VV::storeu(dst + (x0 + x) * 16 + h * L, r[x]);
      }
    }
  }

  // y[16]: pixel (r, c) at 4r + c, lanes = 16 output channels; see winograd_impl.h. Each L x L
  // transpose turns L pixels (L / 4 output rows) x L channels into one vector per channel.
  static constexpr bool fast_store = true;
  static void store_outputs4(const V* y, float* dst, int64_t plane, int64_t ldq, int rows,
                             int cols, int kv) {
    constexpr int kRowsPerGroup = L / 4;
    for (int h = 0; h < NB && h * L < kv; ++h) {
      for (int pg = 0; pg * kRowsPerGroup < rows; ++pg) {
        reg r[L];
        for (int p = 0; p < L; ++p) r[p] = y[pg * L + p].r[h];
        VV::transpose(r);  // r[kk]: the group's pixels of output channel h * L + kk
        const int nr = std::min(kRowsPerGroup, rows - pg * kRowsPerGroup);
        for (int kk = 0; kk < L && h * L + kk < kv; ++kk) {
          alignas(64) float v[L];
          VV::store(v, r[kk]);
          float* out = dst + (h * L + kk) * plane + pg * kRowsPerGroup * ldq;
          for (int rr = 0; rr < nr; ++rr) {
            if (cols == 4)
              std::memcpy(out + rr * ldq, v + 4 * rr, 4 * sizeof(float));
            else
              for (int c = 0; c < cols; ++c) out[rr * ldq + c] = v[4 * rr + c];
          }
        }
      }
    }
  }
};

}  // namespace
}  // namespace CREMA_WINOGRAD_NS
}  // namespace crema
