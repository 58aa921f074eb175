// Winograd F(m x m, 3 x 3): the vector Ops of winograd_impl.h, written once against crema/simd.h
// and compiled per vector ISA (a unit per ISA from CMake, namespace crema::<isa>_impl). A
// 16-channel block is 16 / L vectors (one zmm, two ymm). The GEMM micro-kernel keeps kRows rows x
// one panel (2L columns) of M in registers over packed U panels (AVX-512: 8 x 32 in 16 zmm; AVX2:
// 6 x 16 in 12 ymm); input packing and output stores transpose L x L blocks through registers.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "crema/simd.h"
#include "crema/winograd.h"

namespace crema {
namespace CREMA_ISA_NS {
namespace {

using VV = simd::Vec<Isa::CREMA_UNIT_ISA>;
using reg = VV::reg;
constexpr int L = VV::L;
constexpr int NB = 16 / L;  // vectors per 16-channel block
// GEMM rows per register block: AVX-512 has 32 registers, AVX2 16.
constexpr int kRows = L == 16 ? 8 : 6;

struct V16 {
  reg r[NB];
};

template <int R, int NV>
inline void micro(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                  int64_t kc, bool add) {
  reg acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = VV::zero();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    reg bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = VV::loadu(b + k * ldb + L * v);
    for (int r = 0; r < R; ++r) {
      const reg ar = VV::bcast(a + r * lda + k);
      for (int v = 0; v < NV; ++v) acc[r][v] = VV::fmadd(ar, bv[v], acc[r][v]);
    }
  }
  // A chunk's sum starts from zero and is added to the earlier chunks' only here (see
  // kWinogradChunk): continuing the running sum would round exactly like one long sum.
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) {
      float* p = c + r * ldc + L * v;
      VV::storeu(p, add ? VV::add(VV::loadu(p), acc[r][v]) : acc[r][v]);
    }
}

// micro<R> for the R = rows % kRows leftover rows.
template <int NV, int R = kRows - 1>
inline void tail_rows(int rows, const float* a, int64_t lda, const float* b, int64_t ldb,
                      float* c, int64_t ldc, int64_t kc, bool add) {
  if constexpr (R >= 1) {
    if (rows == R)
      micro<R, NV>(a, lda, b, ldb, c, ldc, kc, add);
    else
      tail_rows<NV, R - 1>(rows, a, lda, b, ldb, c, ldc, kc, add);
  }
}

template <int NV>
inline void panel_rows(const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
                       int64_t rows, int64_t kc, bool add) {
  constexpr int64_t ldb = L * NV;
  int64_t r = 0;
  for (; r + kRows <= rows; r += kRows)
    micro<kRows, NV>(a + r * lda, lda, b, ldb, c + r * ldc, ldc, kc, add);
  if (rows > r)
    tail_rows<NV>(static_cast<int>(rows - r), a + r * lda, lda, b, ldb, c + r * ldc, ldc, kc,
                  add);
}

struct Ops {
  using V = V16;
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

  static constexpr int panel = 2 * L;
  static void gemm(const float* a, int64_t lda, const float* u, int64_t cpad, int64_t kpad,
                   float* c, int64_t ldc, int64_t rows) {
    for (int64_t k0 = 0; k0 < kpad; k0 += panel) {
      // kpad is a multiple of 16: the last panel may be one vector wide (AVX-512).
      const int64_t width = std::min<int64_t>(panel, kpad - k0);
      for (int64_t c0 = 0; c0 < cpad; c0 += kWinogradChunk) {
        const int64_t kc = std::min(kWinogradChunk, cpad - c0);
        const float* b = u + k0 * cpad + c0 * width;
        if (width == panel)
          panel_rows<2>(a + c0, lda, b, c + k0, ldc, rows, kc, c0 > 0);
        else
          panel_rows<1>(a + c0, lda, b, c + k0, ldc, rows, kc, c0 > 0);
      }
    }
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
}  // namespace CREMA_ISA_NS
}  // namespace crema

#define CREMA_WINOGRAD_NS CREMA_ISA_NS
#include "winograd_impl.h"
