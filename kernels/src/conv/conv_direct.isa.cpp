// Direct convolution, written once against crema/simd.h and compiled per vector ISA (CMake makes
// one unit per ISA from every *.isa.cpp, with -DCREMA_UNIT_ISA=avx512|avx2 and that ISA's flags;
// the namespace is crema::<isa>_impl). V = simd::Vec<isa> gives the vector operations; the only
// per-ISA choice here is the register-tile sizes (DirectTiles):
//   kOB x kWB   forward tile: output-channel blocks x output pixels (accumulators),
//   kCI x kKJ   weight-gradient tile: input lanes x output-channel blocks,
//   kKI x kWV   few-channel forward tile: output channels x vectors along the output,
//   kTKI x kTT  few-channel weight-gradient tile: output channels x taps.
//
// Layouts (L = V::L; per group g, Ci/Co input/output channels of the group, CB = ceil(Ci/L)):
//   blocked activations  [n][g][cb][hp][wp][L]: the zero-padded image, hp/wp = padded row/col
//   packed weights       [g][ob][ib][r][s][i][o]: an L x L block per tap (input lane i, output
//                        lane o), zero outside the channel range.
// The forward micro-kernel keeps an kOB x kWB tile of outputs (kOB * L channels x kWB pixels of
// one output row) in registers for the whole C*R*S reduction: per input lane, kOB weight vectors
// and kWB broadcasts of input values feed kOB * kWB FMAs. The finished tile is transposed in
// registers and stored straight into NCHW (no output transform pass).
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>

#include "crema/conv.h"
#include "crema/region.h"
#include "crema/simd.h"
#include "crema/threads.h"

namespace crema {
namespace CREMA_ISA_NS {
namespace {

template <Isa isa>
struct DirectTiles;
#if defined(__AVX512F__)
template <>
struct DirectTiles<Isa::avx512> {  // 32 zmm registers
  // Forward: 2 output blocks x 14 pixels = 28 accumulators, 2 weight vectors, 1 broadcast.
  static constexpr int kOB = 2, kWB = 14;
  // Weight gradient: 4 input lanes x 4 output blocks = 16 accumulators (4 dy vectors, 4
  // broadcasts per pixel: 0.5 loads per FMA).
  static constexpr int kCI = 4, kKJ = 4;
  // Few-channel forward: 6 output channels x 4 vectors (64 pixels) = 24 accumulators; per tap
  // 4 input vectors + 6 weight broadcasts feed 24 FMAs.
  static constexpr int kKI = 6, kWV = 4;
  // Few-channel weight gradient: 6 output channels x 4 taps = 24 accumulators.
  static constexpr int kTKI = 6, kTT = 4;
};
#endif
template <>
struct DirectTiles<Isa::avx2> {  // 16 ymm registers
  // Forward: 2 output blocks x 6 pixels = 12 accumulators (+2 weights, 1 broadcast).
  static constexpr int kOB = 2, kWB = 6;
  // Weight gradient: 4 input lanes x 2 output blocks = 8 accumulators.
  static constexpr int kCI = 4, kKJ = 2;
  // Few-channel forward: 2 output channels x 5 vectors = 10 accumulators.
  static constexpr int kKI = 2, kWV = 5;
  // Few-channel weight gradient: 3 output channels x 4 taps = 12 accumulators.
  static constexpr int kTKI = 3, kTT = 4;
};

using V = simd::Vec<Isa::CREMA_UNIT_ISA>;
using T = DirectTiles<Isa::CREMA_UNIT_ISA>;
constexpr int L = V::L;
using reg = typename V::reg;

// Images are processed in chunks whose blocked copy is at most this many floats (>= 1 image).
constexpr int64_t kChunkFloats = int64_t{1} << 21;  // 8 MB

// ceil_div, round_up, run_region, loop, once, team_size, Carver: crema/region.h.

// A convolution in "forward form": input Ci channels per group at H x W, output Co channels per
// group at P x Q; pad may be negative (the flipped backward-data convolution crops).
struct Desc {
  int64_t N, G, Ci, Co, H, W, P, Q, R, S, ph, pw, sh, sw, dh, dw;
  int64_t Hp() const { return (P - 1) * sh + (R - 1) * dh + 1; }
  int64_t Wp() const { return (Q - 1) * sw + (S - 1) * dw + 1; }
  int64_t CB() const { return ceil_div(Ci, L); }
  int64_t OBn() const { return ceil_div(Co, L); }
  int64_t blocked_in_image() const { return G * CB() * Hp() * Wp() * L; }
  int64_t chunk() const {
    return std::max<int64_t>(1, std::min<int64_t>(N, kChunkFloats / blocked_in_image()));
  }
  int64_t packed_weights() const { return G * OBn() * CB() * R * S * L * L; }
};

Desc forward_desc(const ConvGeom& g) {
  return {g.N, g.G, g.Cg(), g.Kg(), g.H, g.W, g.P(), g.Q(), g.R, g.S,
          g.ph, g.pw, g.sh, g.sw, g.dh, g.dw};
}

// dx = conv(dy padded by dh*(R-1) - ph, w flipped and transposed), for stride 1.
Desc flipped_desc(const ConvGeom& g) {
  return {g.N, g.G, g.Kg(), g.Cg(), g.P(), g.Q(), g.H, g.W, g.R, g.S,
          g.dh * (g.R - 1) - g.ph, g.dw * (g.S - 1) - g.pw, 1, 1, g.dh, g.dw};
}

// ---- layout transforms ---------------------------------------------------------------------

// NCHW images [n0, n0 + nb) (src points at image n0; each image has G*Ci planes of H x W) into
// blocked [nl][g][cb][Hp][Wp][L]: dst(hp, wp) = src(hp - ph, wp - pw), 0 outside.
void to_blocked(const float* src, int64_t nb, int64_t G, int64_t Ci, int64_t H, int64_t W,
                int64_t Hp, int64_t Wp, int64_t ph, int64_t pw, float* dst) {
  const int64_t CB = ceil_div(Ci, L);
  const int64_t plane = H * W;
  const int64_t wlo = std::clamp<int64_t>(pw, 0, Wp), whi = std::clamp<int64_t>(pw + W, wlo, Wp);
  loop(nb * G * CB * Hp, [&](int64_t item) {
    const int64_t hp = item % Hp;
    const int64_t blk = item / Hp;  // (nl * G + g) * CB + cb
    const int64_t cb = blk % CB, ng = blk / CB;
    float* d = dst + item * Wp * L;
    const int64_t h = hp - ph;
    if (h < 0 || h >= H) {
      std::memset(d, 0, sizeof(float) * Wp * L);
      return;
    }
    std::memset(d, 0, sizeof(float) * wlo * L);
    std::memset(d + whi * L, 0, sizeof(float) * (Wp - whi) * L);
    const int64_t cn = std::min<int64_t>(L, Ci - cb * L);
    const float* s0 = src + (ng * Ci + cb * L) * plane + h * W;  // row h of lane 0's plane
    reg t[L];
    for (int64_t wp = wlo; wp < whi; wp += L) {
      const int m = static_cast<int>(std::min<int64_t>(L, whi - wp));
      const int64_t col = wp - pw;
      if (m == L) {
        for (int i = 0; i < L; ++i) t[i] = i < cn ? V::loadu(s0 + i * plane + col) : V::zero();
      } else {
        for (int i = 0; i < L; ++i)
          t[i] = i < cn ? V::maskz_loadu(s0 + i * plane + col, m) : V::zero();
      }
      V::transpose(t);
      for (int j = 0; j < m; ++j) V::store(d + (wp + j) * L, t[j]);
    }
  });
}

// Blocked [nl][g][cb][Hp][Wp][L] back to NCHW (crop): dst(h, w) = src(h + ph, w + pw), 0 where
// that lies outside [0, Hp) x [0, Wp). pad >= 0 here.
void from_blocked(const float* src, int64_t nb, int64_t G, int64_t Ci, int64_t H, int64_t W,
                  int64_t Hp, int64_t Wp, int64_t ph, int64_t pw, float* dst) {
  const int64_t CB = ceil_div(Ci, L);
  const int64_t plane = H * W;
  loop(nb * G * CB * H, [&](int64_t item) {
    const int64_t h = item % H;
    const int64_t blk = item / H;
    const int64_t cb = blk % CB, ng = blk / CB;
    const int64_t cn = std::min<int64_t>(L, Ci - cb * L);
    float* d0 = dst + (ng * Ci + cb * L) * plane + h * W;
    const int64_t hp = h + ph;
    if (hp >= Hp) {
      for (int64_t i = 0; i < cn; ++i) std::memset(d0 + i * plane, 0, sizeof(float) * W);
      return;
    }
    const float* s = src + (blk * Hp + hp) * Wp * L;
    reg t[L];
    for (int64_t w = 0; w < W; w += L) {
      const int m = static_cast<int>(std::min<int64_t>(L, W - w));
      const int64_t valid = std::clamp<int64_t>(Wp - (w + pw), 0, m);
      for (int j = 0; j < L; ++j) t[j] = j < valid ? V::load(s + (w + pw + j) * L) : V::zero();
      V::transpose(t);
      if (m == L) {
        for (int64_t i = 0; i < cn; ++i) V::storeu(d0 + i * plane + w, t[i]);
      } else {
        for (int64_t i = 0; i < cn; ++i) V::mask_storeu(d0 + i * plane + w, t[i], m);
      }
    }
  });
}

// Packs w (Caffe's [G*Kg][Cg][R][S]) into [g][ob][ib][r][s][i][o] blocks. Forward: o runs over
// the group's Kg output channels, i over its Cg inputs. transpose: o over Cg, i over Kg (the
// backward-data convolution's roles); flip: taps reversed (r -> R-1-r, s -> S-1-s).
void pack_weights(const float* w, int64_t G, int64_t Kg, int64_t Cg, int64_t R, int64_t S,
                  bool transpose, bool flip, float* out) {
  const int64_t Co = transpose ? Cg : Kg, Ci = transpose ? Kg : Cg;
  const int64_t OB = ceil_div(Co, L), IB = ceil_div(Ci, L), RS = R * S;
  // One L x L x RS block at a time (9 KB for 3x3, in L1): each weight row w[k][c0..c0+L)[:] is
  // read sequentially and scattered into the block.
  loop(G * OB, [&](int64_t item) {
    const int64_t g = item / OB, ob = item % OB;
    const int64_t no = std::min<int64_t>(L, Co - ob * L);
    for (int64_t ib = 0; ib < IB; ++ib) {
      float* blk = out + (item * IB + ib) * RS * L * L;
      const int64_t ni = std::min<int64_t>(L, Ci - ib * L);
      if (no < L || ni < L) std::memset(blk, 0, sizeof(float) * RS * L * L);
      const int64_t na = transpose ? ni : no, nb = transpose ? no : ni;
      for (int64_t a = 0; a < na; ++a) {
        // Forward: a = output lane o (weight row k = ob*L + o), b = input lane i (channel).
        // Transposed: a = input lane i (row k = ib*L + i), b = output lane o (channel).
        const int64_t k = transpose ? ib * L + a : ob * L + a;
        const int64_t c0 = transpose ? ob * L : ib * L;
        const float* src = w + ((g * Kg + k) * Cg + c0) * RS;
        for (int64_t b = 0; b < nb; ++b) {
          const int64_t i = transpose ? a : b, o = transpose ? b : a;
          float* dst = blk + i * L + o;
          if (flip) {
            for (int64_t rs = 0; rs < RS; ++rs) dst[(RS - 1 - rs) * L * L] = src[b * RS + rs];
          } else {
            for (int64_t rs = 0; rs < RS; ++rs) dst[rs * L * L] = src[b * RS + rs];
          }
        }
      }
    }
  });
}

// Bias padded per block: [G][OBn][L].
void pack_bias(const float* bias, int64_t G, int64_t Co, float* out) {
  const int64_t OB = ceil_div(Co, L);
  for (int64_t g = 0; g < G; ++g)
    for (int64_t j = 0; j < OB * L; ++j) out[g * OB * L + j] = j < Co ? bias[g * Co + j] : 0.f;
}

// db[k] += sum over n, p, q of dy[n][k][p][q].
void bias_grad(const float* dy, int64_t N, int64_t K, int64_t PQ, float* db) {
  loop(K, [&](int64_t k) {
    reg acc0 = V::zero(), acc1 = V::zero();
    for (int64_t n = 0; n < N; ++n) {
      const float* p = dy + (n * K + k) * PQ;
      int64_t i = 0;
      for (; i + 2 * L <= PQ; i += 2 * L) {
        acc0 = V::add(acc0, V::loadu(p + i));
        acc1 = V::add(acc1, V::loadu(p + i + L));
      }
      for (; i + L <= PQ; i += L) acc0 = V::add(acc0, V::loadu(p + i));
      if (i < PQ) acc1 = V::add(acc1, V::maskz_loadu(p + i, static_cast<int>(PQ - i)));
    }
    db[k] += V::hsum(V::add(acc0, acc1));
  });
}

// ---- blocked forward micro-kernel ----------------------------------------------------------

struct FwdTile {
  const float* x;    // blocked input at (image, group, cb 0, row oh*sh, col ow0*sw)
  int64_t xps;       // floats between output pixels (sw * L)
  int64_t xcs;       // floats between input-channel blocks (Hp * Wp * L)
  int64_t xrs;       // floats between kernel rows (dh * Wp * L)
  int64_t xss;       // floats between kernel columns (dw * L)
  const float* w;    // packed weights at (group, ob0, ib 0)
  int64_t wos;       // floats between output blocks (IB * R * S * L * L)
  int64_t ncb, R, S;
  int last_lanes;     // input channels in the last block (1..L): the zero lanes are skipped
  const float* bias;  // [OB][L] or nullptr
  float* y;           // NCHW output at (image, channel of ob0 lane 0, oh, ow0)
  int64_t yks;        // floats between output channels (P * Q)
  int64_t nvalid[T::kOB];  // valid output channels per block (<= 0: skip the block)
  bool relu;          // epilogue: y = max(v, 0) + slope * min(v, 0)
  float slope;
};

template <int OB, int WB, bool UNIT>
void fwd_tile(const FwdTile& a) {
  reg acc[OB][WB];
#pragma GCC unroll 4
  for (int j = 0; j < OB; ++j) {
    const reg b = a.bias ? V::load(a.bias + j * L) : V::zero();
#pragma GCC unroll 32
    for (int p = 0; p < WB; ++p) acc[j][p] = b;
  }
  const int64_t xps = UNIT ? L : a.xps;
  const float* w = a.w;
  for (int64_t cb = 0; cb < a.ncb; ++cb) {
    const float* xc = a.x + cb * a.xcs;
    const int lanes = cb + 1 == a.ncb ? a.last_lanes : L;
    for (int64_t r = 0; r < a.R; ++r) {
      const float* xr = xc + r * a.xrs;
      for (int64_t s = 0; s < a.S; ++s, w += L * L) {
        const float* xs = xr + s * a.xss;
#pragma GCC unroll 2
        for (int c = 0; c < lanes; ++c) {
          reg wv[OB];
#pragma GCC unroll 4
          for (int j = 0; j < OB; ++j) {
            wv[j] = V::load(w + j * a.wos + c * L);
            V::keep(wv[j]);
          }
#pragma GCC unroll 32
          for (int p = 0; p < WB; ++p) {
            const reg b = V::bcast(xs + p * xps + c);
#pragma GCC unroll 4
            for (int j = 0; j < OB; ++j) acc[j][p] = V::fmadd(b, wv[j], acc[j][p]);
          }
        }
      }
    }
  }
  finish_tile_nchw<V>(acc, a.relu, a.slope, a.y, a.yks, a.nvalid);
}

using FwdTileFn = void (*)(const FwdTile&);

template <int OB, bool UNIT, int... I>
constexpr std::array<FwdTileFn, sizeof...(I)> fwd_row(std::integer_sequence<int, I...>) {
  return {&fwd_tile<OB, I + 1, UNIT>...};
}

template <int OB, bool UNIT>
const FwdTileFn* fwd_table() {
  static constexpr auto t = fwd_row<OB, UNIT>(std::make_integer_sequence<int, T::kWB>{});
  return t.data();
}

FwdTileFn fwd_fn(int ob, int wb, bool unit) {
  static_assert(T::kOB == 2, "tile tables are written for kOB == 2");
  if (ob == 2) return (unit ? fwd_table<2, true>() : fwd_table<2, false>())[wb - 1];
  return (unit ? fwd_table<1, true>() : fwd_table<1, false>())[wb - 1];
}

// Forward-form convolution of blocked input chunk xb (images [n0, n0+nb)) into NCHW y.
// wp: packed weights (pack_weights layout for this desc); biasb: [G][OBn][L] or nullptr.
void blocked_compute(const Desc& d, int64_t n0, int64_t nb, const float* xb, const float* wp,
                     const float* biasb, float* y, bool relu, float slope) {
  const int64_t CB = d.CB(), OBn = d.OBn(), Hp = d.Hp(), Wp = d.Wp();
  const int64_t OBp = ceil_div(OBn, T::kOB);
  const int64_t P = d.P, Q = d.Q;
  const bool unit = d.sw == 1;
  loop(nb * d.G * OBp * P, [&](int64_t item) {
    const int64_t oh = item % P;
    int64_t rest = item / P;
    const int64_t obp = rest % OBp;
    rest /= OBp;
    const int64_t g = rest % d.G, nl = rest / d.G;
    const int64_t ob0 = obp * T::kOB;
    const int ob = static_cast<int>(std::min<int64_t>(T::kOB, OBn - ob0));
    FwdTile a;
    a.xps = d.sw * L;
    a.xcs = Hp * Wp * L;
    a.xrs = d.dh * Wp * L;
    a.xss = d.dw * L;
    a.w = wp + (g * OBn + ob0) * CB * d.R * d.S * L * L;
    a.wos = CB * d.R * d.S * L * L;
    a.ncb = CB;
    a.R = d.R;
    a.S = d.S;
    a.last_lanes = static_cast<int>(d.Ci - (CB - 1) * L);
    a.bias = biasb ? biasb + (g * OBn + ob0) * L : nullptr;
    a.yks = P * Q;
    a.relu = relu;
    a.slope = slope;
    for (int j = 0; j < T::kOB; ++j) a.nvalid[j] = std::min<int64_t>(L, d.Co - (ob0 + j) * L);
    const float* xrow = xb + ((nl * d.G + g) * CB * Hp + oh * d.sh) * Wp * L;
    float* yrow = y + (((n0 + nl) * d.G + g) * d.Co + ob0 * L) * P * Q + oh * Q;
    for (int64_t ow0 = 0; ow0 < Q; ow0 += T::kWB) {
      const int wb = static_cast<int>(std::min<int64_t>(T::kWB, Q - ow0));
      a.x = xrow + ow0 * d.sw * L;
      a.y = yrow + ow0;
      fwd_fn(ob, wb, unit)(a);
    }
  });
}

int64_t ws_blocked_forward_form(const Desc& d) {
  return kAlignSlack + round_up(d.chunk() * d.blocked_in_image(), 16) +
         round_up(d.packed_weights(), 16) + round_up(d.G * d.OBn() * L, 16);
}

// x (NCHW, input of the forward-form desc) -> y. Runs inside a region (all its threads).
// packed (not nullptr): the weights already packed there (pack false) or to be packed there
// (pack true) instead of the workspace.
void blocked_forward_form(const Desc& d, const float* x, const float* w, bool transpose,
                          bool flip, const float* bias, float* y, float* ws, bool relu = false,
                          float slope = 0.f, float* packed = nullptr, bool pack = true) {
  Carver cv(ws);
  const int64_t nbmax = d.chunk();
  float* xb = cv.take(nbmax * d.blocked_in_image());
  float* wp = cv.take(d.packed_weights());
  float* bb = cv.take(d.G * d.OBn() * L);
  if (packed) wp = packed;
  const int64_t Kg = transpose ? d.Ci : d.Co, Cg = transpose ? d.Co : d.Ci;
  if (pack) pack_weights(w, d.G, Kg, Cg, d.R, d.S, transpose, flip, wp);
  if (bias) once([&] { pack_bias(bias, d.G, d.Co, bb); });
  const int64_t img = d.G * d.Ci * d.H * d.W;
  for (int64_t n0 = 0; n0 < d.N; n0 += nbmax) {
    const int64_t nb = std::min(nbmax, d.N - n0);
    to_blocked(x + n0 * img, nb, d.G, d.Ci, d.H, d.W, d.Hp(), d.Wp(), d.ph, d.pw, xb);
    blocked_compute(d, n0, nb, xb, wp, bias ? bb : nullptr, y, relu, slope);
  }
}

// ---- blocked backward data for stride > 1 (scatter form) -----------------------------------
// dxb (padded, blocked) += for every output pixel and tap: W^T dy; then cropped into NCHW.

struct ScatterTile {
  float* dx;          // blocked dx at (image, group, cb0, row oh*sh, col ow0*sw)
  int64_t xps, xcs, xrs, xss;
  const float* dy;    // blocked dy at (image, group, kb 0, oh, ow0)
  int64_t dykbs;      // floats between dy channel blocks (P * Q * L)
  const float* w;     // packed [g][cb][kb][r][s][k][c] at (group, cb0, kb 0, tap 0)
  int64_t wos;        // between cb blocks
  int64_t nkb, R, S;
};

template <int OB, int WB>
void scatter_tile(const ScatterTile& a) {
  const int64_t RSLL = a.R * a.S * L * L;
  for (int64_t r = 0; r < a.R; ++r)
    for (int64_t s = 0; s < a.S; ++s) {
      float* dxp = a.dx + r * a.xrs + s * a.xss;
      reg acc[OB][WB];
#pragma GCC unroll 4
      for (int j = 0; j < OB; ++j)
#pragma GCC unroll 32
        for (int p = 0; p < WB; ++p) acc[j][p] = V::load(dxp + j * a.xcs + p * a.xps);
      const float* wt = a.w + (r * a.S + s) * L * L;
      for (int64_t kb = 0; kb < a.nkb; ++kb) {
        const float* dyk = a.dy + kb * a.dykbs;
        const float* wk = wt + kb * RSLL;
#pragma GCC unroll 2
        for (int k = 0; k < L; ++k) {
          reg wv[OB];
#pragma GCC unroll 4
          for (int j = 0; j < OB; ++j) {
            wv[j] = V::load(wk + j * a.wos + k * L);
            V::keep(wv[j]);
          }
#pragma GCC unroll 32
          for (int p = 0; p < WB; ++p) {
            const reg b = V::bcast(dyk + p * L + k);
#pragma GCC unroll 4
            for (int j = 0; j < OB; ++j) acc[j][p] = V::fmadd(b, wv[j], acc[j][p]);
          }
        }
      }
#pragma GCC unroll 4
      for (int j = 0; j < OB; ++j)
#pragma GCC unroll 32
        for (int p = 0; p < WB; ++p) V::store(dxp + j * a.xcs + p * a.xps, acc[j][p]);
    }
}

using ScatterTileFn = void (*)(const ScatterTile&);

template <int OB, int... I>
constexpr std::array<ScatterTileFn, sizeof...(I)> scatter_row(std::integer_sequence<int, I...>) {
  return {&scatter_tile<OB, I + 1>...};
}

ScatterTileFn scatter_fn(int ob, int wb) {
  static constexpr auto t2 = scatter_row<2>(std::make_integer_sequence<int, T::kWB>{});
  static constexpr auto t1 = scatter_row<1>(std::make_integer_sequence<int, T::kWB>{});
  return ob == 2 ? t2[wb - 1] : t1[wb - 1];
}

struct ScatterSizes {
  Desc d;  // forward geometry (input x = dx, output y = dy)
  int64_t nb, dxb, dyb, wt;
};

ScatterSizes scatter_sizes(const ConvGeom& g) {
  ScatterSizes z;
  z.d = forward_desc(g);
  const Desc& d = z.d;
  const int64_t per_img = d.blocked_in_image() + d.G * ceil_div(d.Co, L) * d.P * d.Q * L;
  z.nb = std::max<int64_t>(1, std::min<int64_t>(d.N, kChunkFloats / per_img));
  z.dxb = z.nb * d.blocked_in_image();
  z.dyb = z.nb * d.G * ceil_div(d.Co, L) * d.P * d.Q * L;
  z.wt = d.packed_weights();
  return z;
}

void scatter_bwd_data(const ConvGeom& g, const float* dy, const float* w, float* dx, float* ws) {
  const ScatterSizes z = scatter_sizes(g);
  const Desc& d = z.d;
  Carver cv(ws);
  float* dxb = cv.take(z.dxb);
  float* dyb = cv.take(z.dyb);
  float* wt = cv.take(z.wt);
  // wt[g][cb][kb][r][s][k][c] = w[g*Kg + kb*L + k][cb*L + c][r][s] (no flip).
  pack_weights(w, d.G, d.Co, d.Ci, d.R, d.S, true, false, wt);
  const int64_t CB = d.CB(), KB = d.OBn(), Hp = d.Hp(), Wp = d.Wp(), P = d.P, Q = d.Q;
  const int64_t CBp = ceil_div(CB, T::kOB);
  for (int64_t n0 = 0; n0 < d.N; n0 += z.nb) {
    const int64_t nb = std::min(z.nb, d.N - n0);
    to_blocked(dy + n0 * d.G * d.Co * P * Q, nb, d.G, d.Co, P, Q, P, Q, 0, 0, dyb);
    loop(nb * d.G * CBp, [&](int64_t item) {
      const int64_t cbp = item % CBp, ng = item / CBp;
      const int64_t g_ = ng % d.G;
      const int64_t cb0 = cbp * T::kOB;
      const int ob = static_cast<int>(std::min<int64_t>(T::kOB, CB - cb0));
      float* dxg = dxb + (ng * CB + cb0) * Hp * Wp * L;
      std::memset(dxg, 0, sizeof(float) * ob * Hp * Wp * L);
      ScatterTile a;
      a.xps = d.sw * L;
      a.xcs = Hp * Wp * L;
      a.xrs = d.dh * Wp * L;
      a.xss = d.dw * L;
      a.dykbs = P * Q * L;
      a.w = wt + (g_ * CB + cb0) * KB * d.R * d.S * L * L;
      a.wos = KB * d.R * d.S * L * L;
      a.nkb = KB;
      a.R = d.R;
      a.S = d.S;
      const float* dyg = dyb + ng * KB * P * Q * L;
      for (int64_t oh = 0; oh < P; ++oh)
        for (int64_t ow0 = 0; ow0 < Q; ow0 += T::kWB) {
          const int wb = static_cast<int>(std::min<int64_t>(T::kWB, Q - ow0));
          a.dx = dxg + (oh * d.sh * Wp + ow0 * d.sw) * L;
          a.dy = dyg + (oh * Q + ow0) * L;
          scatter_fn(ob, wb)(a);
        }
    });
    from_blocked(dxb, nb, d.G, d.Ci, d.H, d.W, Hp, Wp, d.ph, d.pw,
                 dx + n0 * d.G * d.Ci * d.H * d.W);
  }
}

int64_t ws_scatter(const ConvGeom& g) {
  const ScatterSizes z = scatter_sizes(g);
  return kAlignSlack + round_up(z.dxb, 16) + round_up(z.dyb, 16) + round_up(z.wt, 16);
}

// ---- blocked weight gradient ---------------------------------------------------------------
// dwb[g][kb][cb][r][s][ci][ko] += sum over pixels of x(pixel + tap)[ci] * dy(pixel)[ko]: a tile
// of kCI input lanes x KJ output blocks stays in registers over a chunk of output rows.

struct BwwTile {
  const float* x;     // blocked x at (image, group, cb, row oh0*sh + r*dh, col s*dw) + ci0
  int64_t xrow;       // floats between output rows (sh * Wp * L)
  int64_t xps;        // floats between output columns (sw * L)
  const float* dy;    // blocked dy at (image, group, kb0, oh0, 0)
  int64_t dykbs;      // floats between dy blocks (P * Q * L)
  int64_t rows, Q;
  float* dw;          // dwb at (group, kb0, cb, r, s, ci0)
  int64_t dwjs;       // floats between kb blocks in dwb (CB * R * S * L * L)
};

template <int CI, int KJ, bool UNIT>
void bww_tile(const BwwTile& a) {
  reg acc[CI][KJ];
#pragma GCC unroll 8
  for (int i = 0; i < CI; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < KJ; ++j) acc[i][j] = V::load(a.dw + j * a.dwjs + i * L);
  const int64_t xps = UNIT ? L : a.xps;
  for (int64_t oh = 0; oh < a.rows; ++oh) {
    const float* xr = a.x + oh * a.xrow;
    const float* dr = a.dy + oh * a.Q * L;
    for (int64_t ow = 0; ow < a.Q; ++ow) {
      reg d[KJ];
#pragma GCC unroll 8
      for (int j = 0; j < KJ; ++j) {
        d[j] = V::load(dr + ow * L + j * a.dykbs);
        V::keep(d[j]);
      }
#pragma GCC unroll 8
      for (int i = 0; i < CI; ++i) {
        const reg b = V::bcast(xr + ow * xps + i);
#pragma GCC unroll 8
        for (int j = 0; j < KJ; ++j) acc[i][j] = V::fmadd(b, d[j], acc[i][j]);
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < CI; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < KJ; ++j) V::store(a.dw + j * a.dwjs + i * L, acc[i][j]);
}

using BwwTileFn = void (*)(const BwwTile&);

template <bool UNIT, int... I>
constexpr std::array<BwwTileFn, sizeof...(I)> bww_row(std::integer_sequence<int, I...>) {
  return {&bww_tile<T::kCI, I + 1, UNIT>...};
}

BwwTileFn bww_fn(int kj, bool unit) {
  static constexpr auto tu = bww_row<true>(std::make_integer_sequence<int, T::kKJ>{});
  static constexpr auto tn = bww_row<false>(std::make_integer_sequence<int, T::kKJ>{});
  return (unit ? tu : tn)[kj - 1];
}

struct BwwSizes {
  Desc d;
  int64_t nb, xb, dyb, dwb;
};

BwwSizes bww_sizes(const ConvGeom& g) {
  BwwSizes z;
  z.d = forward_desc(g);
  const Desc& d = z.d;
  const int64_t dy_img = d.G * d.OBn() * d.P * d.Q * L;
  z.nb = std::max<int64_t>(1,
                           std::min<int64_t>(d.N, kChunkFloats / (d.blocked_in_image() + dy_img)));
  z.xb = z.nb * d.blocked_in_image();
  z.dyb = z.nb * dy_img;
  z.dwb = d.packed_weights();
  return z;
}

void blocked_bwd_weights(const ConvGeom& g, const float* x, const float* dy, float* dw,
                         float* db, float* ws) {
  static_assert(L % T::kCI == 0, "kCI must divide the vector length");
  const BwwSizes z = bww_sizes(g);
  const Desc& d = z.d;
  Carver cv(ws);
  float* xb = cv.take(z.xb);
  float* dyb = cv.take(z.dyb);
  float* dwb = cv.take(z.dwb);
  const int64_t CB = d.CB(), KB = d.OBn(), Hp = d.Hp(), Wp = d.Wp(), P = d.P, Q = d.Q;
  const int64_t R = d.R, S = d.S, RSLL = R * S * L * L;
  // kb sets of kj_step output blocks; narrower sets where there would be fewer than two items
  // per thread (LeNet conv2: one set of 4 blocks x 2 channel blocks = 2 items, one of them a
  // 4-lane tail block) so that the team shares the work out evenly.
  int64_t kj_step = T::kKJ;
  while (kj_step > 1 && d.G * ceil_div(KB, kj_step) * CB < 2 * team_size()) kj_step /= 2;
  const int64_t KS = ceil_div(KB, kj_step);
  once([&] { std::memset(dwb, 0, sizeof(float) * z.dwb); });
  const int64_t rows_per = std::max<int64_t>(1, 128 / Q);
  const bool unit = d.sw == 1;
  for (int64_t n0 = 0; n0 < d.N; n0 += z.nb) {
    const int64_t nb = std::min(z.nb, d.N - n0);
    to_blocked(x + n0 * d.G * d.Ci * d.H * d.W, nb, d.G, d.Ci, d.H, d.W, Hp, Wp, d.ph, d.pw, xb);
    to_blocked(dy + n0 * d.G * d.Co * P * Q, nb, d.G, d.Co, P, Q, P, Q, 0, 0, dyb);
    loop(d.G * KS * CB, [&](int64_t item) {
      const int64_t cb = item % CB, rest = item / CB;
      const int64_t ks = rest % KS, g_ = rest / KS;
      const int64_t kb0 = ks * kj_step;
      const int kj = static_cast<int>(std::min<int64_t>(kj_step, KB - kb0));
      BwwTileFn fn = bww_fn(kj, unit);
      BwwTile a;
      a.xrow = d.sh * Wp * L;
      a.xps = d.sw * L;
      a.dykbs = P * Q * L;
      a.Q = Q;
      a.dwjs = CB * RSLL;
      float* dwg = dwb + ((g_ * KB + kb0) * CB + cb) * RSLL;
      // Input lanes past the channel count are zero in xb: their dwb rows stay zero unread.
      const int64_t lanes = std::min<int64_t>(L, d.Ci - cb * L);
      for (int64_t nl = 0; nl < nb; ++nl) {
        const float* xg = xb + ((nl * d.G + g_) * CB + cb) * Hp * Wp * L;
        const float* dyg = dyb + ((nl * d.G + g_) * KB + kb0) * P * Q * L;
        for (int64_t oh0 = 0; oh0 < P; oh0 += rows_per) {
          a.rows = std::min(rows_per, P - oh0);
          a.dy = dyg + oh0 * Q * L;
          for (int64_t ci0 = 0; ci0 < lanes; ci0 += T::kCI)
            for (int64_t r = 0; r < R; ++r)
              for (int64_t s = 0; s < S; ++s) {
                a.x = xg + ((oh0 * d.sh + r * d.dh) * Wp + s * d.dw) * L + ci0;
                a.dw = dwg + (r * S + s) * L * L + ci0 * L;
                fn(a);
              }
        }
      }
    });
  }
  // dw[g*Kg + kb*L + ko][cb*L + ci][r][s] += dwb[g][kb][cb][r][s][ci][ko], block by block
  // (each block's destination rows are L runs of L*R*S floats: it stays in L1).
  const int64_t Cg = d.Ci, Kg = d.Co, RS = R * S;
  loop(d.G * KB, [&](int64_t item) {
    const int64_t g_ = item / KB, kb = item % KB;
    const int64_t nk = std::min<int64_t>(L, Kg - kb * L);
    for (int64_t cb = 0; cb < CB; ++cb) {
      const float* blk = dwb + (item * CB + cb) * RSLL;
      const int64_t nc = std::min<int64_t>(L, Cg - cb * L);
      for (int64_t ko = 0; ko < nk; ++ko) {
        float* out = dw + ((g_ * Kg + kb * L + ko) * Cg + cb * L) * RS;
        for (int64_t ci = 0; ci < nc; ++ci)
          for (int64_t rs = 0; rs < RS; ++rs) out[ci * RS + rs] += blk[(rs * L + ci) * L + ko];
      }
    }
  });
  if (db) bias_grad(dy, g.N, g.K, P * Q, db);
}

int64_t ws_bww(const ConvGeom& g) {
  const BwwSizes z = bww_sizes(g);
  return kAlignSlack + round_up(z.xb, 16) + round_up(z.dyb, 16) + round_up(z.dwb, 16);
}

// ---- few-input-channel kernels (NCHW kept, vectors along the output) -----------------------
// The input is copied with its zero border into planes (+ L floats of slack for the last
// vector reads); w is used in Caffe's layout, [k][c][r][s], one broadcast per tap.
// A column stride sw > 1 (dilation 1, S >= sw) is made a unit stride by splitting each padded
// row into sw column phases, phase(ph)[j] = padded[j*sw + ph]: tap s reads phase s % sw at
// column q + s / sw, so output vectors load contiguous inputs. The phase planes are the input
// channels of an "inner" convolution (Ci*sw channels, ceil(S/sw) taps per row, unit column
// stride) whose weights are w regrouped, with zeros for the taps s >= S.
//
// Two modes run the inner convolution:
//   row mode:  vectors along one output row; planes [c][Hp][Wp] of the inner convolution. The
//              last vector of a row is partly idle (AlexNet conv1 on AVX-512: 55 outputs in 4
//              vectors, 86% of the lanes).
//   flat mode: vectors along the "pitched" output m = oh*Wp + ow of a whole image, across row
//              ends; the Wp - Q columns ow >= Q are computed and dropped (AlexNet conv1: 57
//              columns for 55, 96.5% of the lanes). Each plane is split further into sh row
//              phases, plane(rp)[i] = padded row i*sh + rp, so consecutive output rows read
//              consecutive rows: tap row offset o = r*dh reads row phase o % sh at row o / sh.
//              The weight gradient reads dy through a copy with the same pitch (zero columns).
// few_flat is the rule: flat mode where it computes fewer lanes than row mode.

struct FewDesc {
  Desc d;      // the convolution asked for
  Desc inner;  // what the tiles run: d itself for sw == 1, else over the column phase planes
  bool flat;
  int64_t hs;     // row phases of a plane: sh in flat mode, 1 in row mode
  int64_t rows;   // rows per row phase: Hp in row mode; in flat mode the last output row's
                  // reads reach row P - 1 + (R-1)*dh / sh
  int64_t width;  // columns: the inner convolution's Wp (flat mode: the output pitch)
  int64_t dyp;    // floats of the weight gradient's pitched dy copy per image (flat mode)
  int64_t nb;     // images per chunk
  int64_t plane() const { return rows * width; }
  int64_t img() const { return inner.G * inner.Ci * hs * plane(); }
  // The pitched output positions of an image: up to the last row's last valid column.
  int64_t span() const { return (d.P - 1) * width + d.Q; }
  int64_t inner_weights() const {
    return d.sw == 1 ? 0 : inner.G * inner.Co * inner.Ci * inner.R * inner.S;
  }
};

FewDesc few_desc(const Desc& d, bool with_dy = false) {
  FewDesc f{d, d, false, 1, 0, 0, 0, 1};
  if (d.sw > 1) {
    const int64_t T = ceil_div(d.S, d.sw);
    f.inner = {d.N, d.G, d.Ci * d.sw, d.Co, d.H, d.W, d.P, d.Q, d.R, T,
               d.ph, 0, d.sh, 1, d.dh, 1};
  }
  f.width = f.inner.Wp();
  // The rule: flat mode where the pitched row holds fewer lanes than row mode's whole vectors
  // and one image's planes and pitched dy fit the chunk budget.
  const int64_t flat_img = f.inner.G * f.inner.Ci * d.sh * (d.P + (d.R - 1) * d.dh / d.sh) *
                           f.width;
  const int64_t flat_dy = with_dy ? d.G * d.Co * d.P * f.width : 0;
  f.flat = f.width < round_up(d.Q, L) && flat_img + flat_dy <= kChunkFloats;
  if (f.flat) {
    f.hs = d.sh;
    f.rows = d.P + (d.R - 1) * d.dh / d.sh;
    f.dyp = flat_dy;
  } else {
    f.rows = f.inner.Hp();
  }
  f.nb = std::max<int64_t>(1, std::min<int64_t>(d.N, kChunkFloats / (f.img() + f.dyp)));
  return f;
}

// The input of images [n0, n0 + nb) (x points at n0) as the tiles read it:
// [nl][c][column phase][row phase][rows][width], row i of row phase rp = padded row i*hs + rp,
// column j of column phase ph = padded column j*sw + ph (0 outside the image).
void few_input_copy(const FewDesc& f, const float* x, int64_t nb, float* dst) {
  const Desc& d = f.d;
  const int64_t sw = d.sw, hs = f.hs, rows = f.rows, width = f.width, C = d.G * d.Ci;
  loop(nb * C * sw * hs * rows, [&](int64_t item) {
    const int64_t i = item % rows, rp = item / rows % hs, phase = item / (rows * hs) % sw;
    const int64_t plane = item / (rows * hs * sw);  // nl * C + channel
    float* out = dst + item * width;
    const int64_t h = i * hs + rp - d.ph;
    if (h < 0 || h >= d.H) {
      std::memset(out, 0, sizeof(float) * width);
      return;
    }
    const float* row = x + (plane * d.H + h) * d.W;
    // Columns j with 0 <= j*sw + phase - pw < W: [jlo, jhi).
    const int64_t first = phase - d.pw;
    const int64_t jlo = std::min<int64_t>(width, first >= 0 ? 0 : (-first + sw - 1) / sw);
    const int64_t past = first >= d.W ? 0 : (d.W - first + sw - 1) / sw;
    const int64_t jhi = std::clamp<int64_t>(past, jlo, width);
    std::memset(out, 0, sizeof(float) * jlo);
    if (sw == 1) {
      std::memcpy(out + jlo, row + jlo + first, sizeof(float) * (jhi - jlo));
    } else {
      for (int64_t j = jlo; j < jhi; ++j) out[j] = row[j * sw + first];
    }
    std::memset(out + jhi, 0, sizeof(float) * (width - jhi));
  });
}

// The inner convolution's weights: wi[k][c*sw + ph][r][t] = w[k][c][r][t*sw + ph] (0 where
// t*sw + ph >= S).
void few_inner_weights(const FewDesc& f, const float* w, float* wi) {
  const Desc& d = f.d;
  const int64_t sw = d.sw, T = f.inner.S;
  loop(d.G * d.Co * d.Ci, [&](int64_t kc) {
    for (int64_t ph = 0; ph < sw; ++ph)
      for (int64_t r = 0; r < d.R; ++r)
        for (int64_t t = 0; t < T; ++t) {
          const int64_t s = t * sw + ph;
          wi[((kc * sw + ph) * d.R + r) * T + t] = s < d.S ? w[(kc * d.R + r) * d.S + s] : 0.f;
        }
  });
}

// Tap (c, r, s) of the inner convolution reads x + c*xcs + (o % hs)*xrp + (o / hs)*xrs + s*xss,
// o = r*dh (row mode: hs = 1).
struct FewTile {
  const float* x;   // the planes of (image, group's first channel) at the tile's first output
  int64_t xcs;      // floats between input channels
  int64_t hs;       // row phases
  int64_t xrp;      // floats between row phases
  int64_t xrs;      // floats between rows
  int64_t dh;
  int64_t xss;      // floats between kernel columns
  const float* w;   // weights of the first output channel, [c][r][s]
  int64_t wks;      // floats between output channels (Ci * R * S)
  int64_t Ci, R, S;
  int64_t phases, S_outer;  // column phase planes (1: none) and the taps per row they split
  const float* bias;  // of the first output channel, or nullptr
  float* y;         // NCHW output of the first output channel: row mode at (oh, ow0), flat
                    // mode at (0, 0)
  int64_t yks;      // P * Q
  int last;         // lanes of the last vector (1..L)
  int64_t m0;       // flat mode: the tile's first pitched output m = oh*pitch + ow
  int64_t pitch, Q; // flat mode: output pitch and valid columns (pitch 0: row mode)
  const float* pf;  // the next tile's output (same channels), prefetched for writing
  bool relu;        // epilogue: y = max(v, 0) + slope * min(v, 0)
  float slope;
};

template <int KI, int WV>
void few_tile(const FewTile& a) {
  // A large output goes to DRAM: claiming the next tile's lines now keeps the stores at the end
  // of this tile from stalling on write-allocate misses.
#pragma GCC unroll 8
  for (int i = 0; i < KI; ++i)
#pragma GCC unroll 16
    for (int v = 0; v < WV; ++v) V::prefetch_w(a.pf + i * a.yks + v * L);
  reg acc[KI][WV];
#pragma GCC unroll 8
  for (int i = 0; i < KI; ++i) {
    const reg b = a.bias ? V::set1(a.bias[i]) : V::zero();
#pragma GCC unroll 16
    for (int v = 0; v < WV; ++v) acc[i][v] = b;
  }
  for (int64_t r = 0; r < a.R; ++r) {
    const int64_t o = r * a.dh;
    const float* xrow = a.x + (o % a.hs) * a.xrp + (o / a.hs) * a.xrs;
    for (int64_t c = 0; c < a.Ci; ++c) {
      // Phase c % phases holds the taps s < S_outer of its residue: the zero-weight tail is
      // skipped.
      const int64_t taps =
          a.phases == 1 ? a.S : (a.S_outer - c % a.phases + a.phases - 1) / a.phases;
      const float* xr = xrow + c * a.xcs;
      const float* wr = a.w + (c * a.R + r) * a.S;
      for (int64_t s = 0; s < taps; ++s) {
        const float* xs = xr + s * a.xss;
        reg wv[KI];
#pragma GCC unroll 8
        for (int i = 0; i < KI; ++i) wv[i] = V::bcast(wr + i * a.wks + s);
#pragma GCC unroll 16
        for (int v = 0; v < WV; ++v) {
          reg xv = V::loadu(xs + v * L);
          V::keep(xv);
#pragma GCC unroll 8
          for (int i = 0; i < KI; ++i) acc[i][v] = V::fmadd(wv[i], xv, acc[i][v]);
        }
      }
    }
  }
  if (a.relu) {
    const reg sl = V::set1(a.slope);
#pragma GCC unroll 8
    for (int i = 0; i < KI; ++i)
#pragma GCC unroll 16
      for (int v = 0; v < WV; ++v) acc[i][v] = V::relu(acc[i][v], sl);
  }
  if (a.pitch == 0) {
#pragma GCC unroll 8
    for (int i = 0; i < KI; ++i) {
      float* yi = a.y + i * a.yks;
#pragma GCC unroll 16
      for (int v = 0; v < WV - 1; ++v) V::storeu(yi + v * L, acc[i][v]);
      if (a.last == L)
        V::storeu(yi + (WV - 1) * L, acc[i][WV - 1]);
      else
        V::mask_storeu(yi + (WV - 1) * L, acc[i][WV - 1], a.last);
    }
    return;
  }
  // Flat mode: the tile's pitched outputs go through a buffer; each row's valid columns are
  // copied to y (a few short copies per channel, against R*S*Ci*WV*KI FMAs).
  alignas(64) float buf[KI][WV * L];
#pragma GCC unroll 8
  for (int i = 0; i < KI; ++i)
#pragma GCC unroll 16
    for (int v = 0; v < WV; ++v) V::store(buf[i] + v * L, acc[i][v]);
  const int64_t end = a.m0 + (WV - 1) * L + a.last;
  for (int64_t m = a.m0; m < end;) {
    const int64_t oh = m / a.pitch, ow = m % a.pitch;
    const int64_t n = std::min(a.pitch - ow, end - m);
    const int64_t valid = std::clamp<int64_t>(a.Q - ow, 0, n);
    if (valid > 0) {
      float* dst = a.y + oh * a.Q + ow;
      for (int i = 0; i < KI; ++i)
        std::memcpy(dst + i * a.yks, buf[i] + (m - a.m0), sizeof(float) * valid);
    }
    m += n;
  }
}

using FewTileFn = void (*)(const FewTile&);

template <int KI, int... I>
constexpr std::array<FewTileFn, sizeof...(I)> few_row(std::integer_sequence<int, I...>) {
  return {&few_tile<KI, I + 1>...};
}

template <int... K>
constexpr std::array<std::array<FewTileFn, T::kWV>, sizeof...(K)> few_table(
    std::integer_sequence<int, K...>) {
  return {few_row<K + 1>(std::make_integer_sequence<int, T::kWV>{})...};
}

FewTileFn few_fn(int ki, int wv) {
  static constexpr auto t = few_table(std::make_integer_sequence<int, T::kKI>{});
  return t[ki - 1][wv - 1];
}

// Forward-form few-channel convolution: x NCHW, w [G*Co][Ci][R][S]. The workspace holds the
// inner weights (sw > 1) and then the input planes of a chunk. Row mode: an item is one output
// row of one block of output channels. Flat mode: an item is one tile of pitched outputs of one
// image and group, for every block of output channels in turn (the tile's inputs stay in cache).
void few_forward_form(const Desc& outer, const float* x, const float* w_outer, const float* bias,
                      float* y, float* ws, bool relu = false, float slope = 0.f) {
  const FewDesc f = few_desc(outer);
  const Desc& d = f.inner;
  Carver cv(ws);
  float* wi = cv.take(f.inner_weights());
  float* xp_buf = cv.take(0);
  const float* w = w_outer;
  if (outer.sw > 1) {
    few_inner_weights(f, w_outer, wi);
    w = wi;
  }
  const int64_t P = d.P, Q = d.Q, plane = f.plane(), width = f.width;
  const int64_t KS = ceil_div(d.Co, T::kKI);
  const int64_t tile_px = T::kWV * L;
  const int64_t tiles = f.flat ? ceil_div(f.span(), tile_px) : 1;
  FewTile a0;
  a0.xcs = f.hs * plane;
  a0.hs = f.hs;
  a0.xrp = plane;
  a0.xrs = width;
  a0.dh = d.dh;
  a0.xss = d.dw;
  a0.wks = d.Ci * d.R * d.S;
  a0.Ci = d.Ci;
  a0.R = d.R;
  a0.S = d.S;
  a0.phases = outer.sw;
  a0.S_outer = outer.S;
  a0.yks = P * Q;
  a0.pitch = f.flat ? width : 0;
  a0.Q = Q;
  a0.relu = relu;
  a0.slope = slope;
  for (int64_t n0 = 0; n0 < d.N; n0 += f.nb) {
    const int64_t nb = std::min(f.nb, d.N - n0);
    few_input_copy(f, x + n0 * outer.G * outer.Ci * outer.H * outer.W, nb, xp_buf);
    // Slack after the last plane: the last vectors may read up to L - 1 past it.
    once([&] { std::memset(xp_buf + nb * f.img(), 0, sizeof(float) * L); });
    if (f.flat) {
      loop(nb * d.G * tiles, [&](int64_t item) {
        const int64_t m0 = item % tiles * tile_px, ng = item / tiles;  // ng = nl * G + g
        const int64_t px = std::min(tile_px, f.span() - m0);
        const int wv = static_cast<int>(ceil_div(px, L));
        FewTile a = a0;
        a.x = xp_buf + ng * d.Ci * f.hs * plane + m0;
        a.m0 = m0;
        a.last = static_cast<int>(px - (wv - 1) * L);
        const int64_t kg0 = ng % d.G * d.Co;  // the group's first output channel
        float* yg = y + (n0 * d.G + ng) * d.Co * P * Q;
        // The tile's first output row, where the next block of channels will store.
        const int64_t out0 = m0 / width * Q;
        for (int64_t k0 = 0; k0 < d.Co; k0 += T::kKI) {
          const int ki = static_cast<int>(std::min<int64_t>(T::kKI, d.Co - k0));
          a.w = w + (kg0 + k0) * a.wks;
          a.bias = bias ? bias + kg0 + k0 : nullptr;
          a.y = yg + k0 * P * Q;
          a.pf = a.y + ki * P * Q + out0;  // (a prefetch never faults)
          few_fn(ki, wv)(a);
        }
      });
      continue;
    }
    loop(nb * d.G * KS * P, [&](int64_t item) {
      const int64_t oh = item % P;
      int64_t rest = item / P;
      const int64_t ks = rest % KS;
      rest /= KS;
      const int64_t g = rest % d.G, nl = rest / d.G;
      const int64_t k0 = ks * T::kKI;
      const int ki = static_cast<int>(std::min<int64_t>(T::kKI, d.Co - k0));
      const int64_t kglob = g * d.Co + k0;
      FewTile a = a0;
      a.w = w + kglob * a.wks;
      a.bias = bias ? bias + kglob : nullptr;
      const float* xrow = xp_buf + ((nl * d.G + g) * d.Ci * f.rows + oh * d.sh) * width;
      float* yrow = y + ((n0 + nl) * d.G * d.Co + kglob) * P * Q + oh * Q;
      for (int64_t ow0 = 0; ow0 < Q; ow0 += tile_px) {
        const int64_t px = std::min(tile_px, Q - ow0);
        const int wv = static_cast<int>(ceil_div(px, L));
        a.last = static_cast<int>(px - (wv - 1) * L);
        a.x = xrow + ow0;
        a.y = yrow + ow0;
        // The next tile of this row, or the start of the next row (a prefetch never faults).
        a.pf = ow0 + tile_px < Q ? a.y + tile_px : yrow + Q;
        few_fn(ki, wv)(a);
      }
    });
  }
}

int64_t ws_few_forward_form(const Desc& d) {
  const FewDesc f = few_desc(d);
  return kAlignSlack + round_up(f.inner_weights(), 16) + round_up(f.nb * f.img() + L, 16);
}

// Few-channel weight gradient: per output channel and tap, vector partial sums accv[k][t][L]
// over the outputs, reduced across lanes at the end. Row mode runs rows of Q outputs; flat mode
// runs spans of the pitched outputs against the pitched dy copy (zeros in the dropped columns).
struct FewBwwTile {
  const float* x;        // input planes at (image, group's first channel, first output)
  int64_t xrow;          // floats between output rows (row mode: sh * Wp)
  const int64_t* off;    // tap offsets, TT of them
  const float* dy;       // dy (or its pitched copy) at (image, first output channel, first output)
  int64_t dyks;          // floats between output channels
  int64_t rows, Q;       // rows of Q outputs (flat mode: one span of Q)
  float* acc;            // accv at (first output channel, first tap)
  int64_t accks;         // floats between output channels in accv (T * L)
};

template <int KI, int TT>
void few_bww_tile(const FewBwwTile& a) {
  reg acc[KI][TT];
  int64_t off[TT];
#pragma GCC unroll 16
  for (int t = 0; t < TT; ++t) off[t] = a.off[t];
#pragma GCC unroll 8
  for (int i = 0; i < KI; ++i)
#pragma GCC unroll 16
    for (int t = 0; t < TT; ++t) acc[i][t] = V::load(a.acc + i * a.accks + t * L);
  for (int64_t oh = 0; oh < a.rows; ++oh) {
    const float* xr = a.x + oh * a.xrow;
    const float* dr = a.dy + oh * a.Q;
    int64_t ow = 0;
    for (; ow + L <= a.Q; ow += L) {
      reg d[KI];
#pragma GCC unroll 8
      for (int i = 0; i < KI; ++i) {
        d[i] = V::loadu(dr + i * a.dyks + ow);
        V::keep(d[i]);
      }
#pragma GCC unroll 16
      for (int t = 0; t < TT; ++t) {
        reg xv = V::loadu(xr + off[t] + ow);
        V::keep(xv);
#pragma GCC unroll 8
        for (int i = 0; i < KI; ++i) acc[i][t] = V::fmadd(d[i], xv, acc[i][t]);
      }
    }
    if (ow < a.Q) {
      const int m = static_cast<int>(a.Q - ow);
      reg d[KI];
#pragma GCC unroll 8
      for (int i = 0; i < KI; ++i) d[i] = V::maskz_loadu(dr + i * a.dyks + ow, m);
#pragma GCC unroll 16
      for (int t = 0; t < TT; ++t) {
        const reg xv = V::maskz_loadu(xr + off[t] + ow, m);
#pragma GCC unroll 8
        for (int i = 0; i < KI; ++i) acc[i][t] = V::fmadd(d[i], xv, acc[i][t]);
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < KI; ++i)
#pragma GCC unroll 16
    for (int t = 0; t < TT; ++t) V::store(a.acc + i * a.accks + t * L, acc[i][t]);
}

using FewBwwTileFn = void (*)(const FewBwwTile&);

template <int KI, int... I>
constexpr std::array<FewBwwTileFn, sizeof...(I)> few_bww_row(std::integer_sequence<int, I...>) {
  return {&few_bww_tile<KI, I + 1>...};
}

template <int... K>
constexpr std::array<std::array<FewBwwTileFn, T::kTT>, sizeof...(K)> few_bww_table(
    std::integer_sequence<int, K...>) {
  return {few_bww_row<K + 1>(std::make_integer_sequence<int, T::kTT>{})...};
}

FewBwwTileFn few_bww_fn(int ki, int tt) {
  static constexpr auto t = few_bww_table(std::make_integer_sequence<int, T::kTKI>{});
  return t[ki - 1][tt - 1];
}

struct FewBwwSizes {
  FewDesc f;
  int64_t T, xp, dyp, offs, accv;
};

FewBwwSizes few_bww_sizes(const ConvGeom& g) {
  FewBwwSizes z{few_desc(forward_desc(g), true), 0, 0, 0, 0, 0};
  const Desc& d = z.f.d;
  z.T = d.Ci * d.R * d.S;
  z.xp = z.f.nb * z.f.img() + L;
  z.dyp = z.f.nb * z.f.dyp;
  z.offs = 2 * z.T;  // int64 offsets stored in float slots
  z.accv = g.K * z.T * L;
  return z;
}

// dy of images [n0, n0 + nb) (dy points at n0) with the output pitch: [nl][k][oh][width], zero
// in the columns ow >= Q.
void pitched_dy_copy(const FewDesc& f, const float* dy, int64_t nb, float* dst) {
  const Desc& d = f.d;
  const int64_t Q = d.Q, width = f.width;
  loop(nb * d.G * d.Co * d.P, [&](int64_t row) {
    std::memcpy(dst + row * width, dy + row * Q, sizeof(float) * Q);
    std::memset(dst + row * width + Q, 0, sizeof(float) * (width - Q));
  });
}

// Pitched outputs per flat-mode span: dy's span of a block of output channels stays in L1.
constexpr int64_t kBwwSpan = 1024;

void few_bwd_weights(const ConvGeom& g, const float* x, const float* dy, float* dw, float* db,
                     float* ws) {
  const FewBwwSizes z = few_bww_sizes(g);
  const FewDesc& f = z.f;
  const Desc& d = f.d;
  Carver cv(ws);
  float* xp = cv.take(z.xp);
  float* dyp = cv.take(z.dyp);
  auto* offs = reinterpret_cast<int64_t*>(cv.take(z.offs));
  float* accv = cv.take(z.accv);
  const int64_t plane = f.plane(), width = f.width, P = d.P, Q = d.Q, T = z.T;
  const int64_t sw = d.sw, hs = f.hs;
  once([&] {
    // Tap (c, r, s): column phase s % sw at column s / sw (sw > 1), row phase o % hs at row
    // o / hs (o = r*dh).
    for (int64_t c = 0, t = 0; c < d.Ci; ++c)
      for (int64_t r = 0; r < d.R; ++r)
        for (int64_t s = 0; s < d.S; ++s, ++t) {
          const int64_t phase = sw == 1 ? 0 : s % sw;
          const int64_t col = sw == 1 ? s * d.dw : s / sw;
          const int64_t o = r * d.dh;
          offs[t] = ((c * sw + phase) * hs + o % hs) * plane + o / hs * width + col;
        }
    std::memset(accv, 0, sizeof(float) * z.accv);
  });
  const int64_t KS = ceil_div(d.Co, T::kTKI);
  const int64_t rows_per = std::max<int64_t>(1, 1024 / Q);
  for (int64_t n0 = 0; n0 < d.N; n0 += f.nb) {
    const int64_t nb = std::min(f.nb, d.N - n0);
    few_input_copy(f, x + n0 * d.G * d.Ci * d.H * d.W, nb, xp);
    once([&] { std::memset(xp + nb * f.img(), 0, sizeof(float) * L); });
    if (f.flat) pitched_dy_copy(f, dy + n0 * g.K * P * Q, nb, dyp);
    loop(d.G * KS, [&](int64_t item) {
      const int64_t ks = item % KS, g_ = item / KS;
      const int64_t k0 = ks * T::kTKI;
      const int ki = static_cast<int>(std::min<int64_t>(T::kTKI, d.Co - k0));
      const int64_t kglob = g_ * d.Co + k0;
      FewBwwTile a;
      a.xrow = d.sh * width;
      a.accks = T * L;
      const auto taps = [&] {
        for (int64_t t0 = 0; t0 < T; t0 += T::kTT) {
          const int tt = static_cast<int>(std::min<int64_t>(T::kTT, T - t0));
          a.off = offs + t0;
          a.acc = accv + (kglob * T + t0) * L;
          few_bww_fn(ki, tt)(a);
        }
      };
      for (int64_t nl = 0; nl < nb; ++nl) {
        const float* xg = xp + (nl * d.G + g_) * f.inner.Ci * hs * plane;
        if (f.flat) {
          a.dyks = P * width;
          a.rows = 1;
          const float* dyg = dyp + (nl * g.K + kglob) * P * width;
          for (int64_t m0 = 0; m0 < f.span(); m0 += kBwwSpan) {
            a.Q = std::min(kBwwSpan, f.span() - m0);
            a.x = xg + m0;
            a.dy = dyg + m0;
            taps();
          }
          continue;
        }
        a.dyks = P * Q;
        a.Q = Q;
        const float* dyg = dy + ((n0 + nl) * g.K + kglob) * P * Q;
        for (int64_t oh0 = 0; oh0 < P; oh0 += rows_per) {
          a.rows = std::min(rows_per, P - oh0);
          a.x = xg + oh0 * d.sh * width;
          a.dy = dyg + oh0 * Q;
          taps();
        }
      }
    });
  }
  loop(g.K, [&](int64_t k) {
    for (int64_t t = 0; t < T; ++t) dw[k * T + t] += V::hsum(V::load(accv + (k * T + t) * L));
  });
  if (db) bias_grad(dy, g.N, g.K, P * Q, db);
}

int64_t ws_few_bww(const ConvGeom& g) {
  const FewBwwSizes z = few_bww_sizes(g);
  return kAlignSlack + round_up(z.xp, 16) + round_up(z.dyp, 16) + round_up(z.offs, 16) +
         round_up(z.accv, 16);
}

// Flipped, transposed weights for the few-channel backward data: wf[g*Cg + c][k][r][s] =
// w[g*Kg + k][c][R-1-r][S-1-s].
void flip_weights(const ConvGeom& g, const float* w, float* wf) {
  const int64_t Kg = g.Kg(), Cg = g.Cg(), R = g.R, S = g.S;
  for (int64_t gi = 0; gi < g.G; ++gi)
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t k = 0; k < Kg; ++k)
        for (int64_t r = 0; r < R; ++r)
          for (int64_t s = 0; s < S; ++s)
            wf[(((gi * Cg + c) * Kg + k) * R + r) * S + s] =
                w[(((gi * Kg + k) * Cg + c) * R + (R - 1 - r)) * S + (S - 1 - s)];
}

int64_t macs(const ConvGeom& g) { return g.N * g.K * g.Cg() * g.R * g.S * g.P() * g.Q(); }

}  // namespace

// ---- entry points ----------------------------------------------------------------------------
// Each is one parallel region (run_region) around the drivers above.

// Weight cache: [header kCacheHeader floats][copy of w][packed weights], 64-byte aligned.
constexpr int64_t kCacheHeader = 16;

int64_t wcache_fwd_blocked(const ConvGeom& g) {
  return kAlignSlack + kCacheHeader + round_up(g.K * g.Cg() * g.R * g.S, 16) +
         round_up(forward_desc(g).packed_weights(), 16);
}

void conv_fwd_blocked(const float* x, const float* w, const float* bias, float* y,
                      const ConvGeom& g, const ConvScratch& s, bool relu, float slope) {
  float* const ws = s.ws;
  float* const wcache = s.cache;
  const Desc d = forward_desc(g);
  float* packed = nullptr;
  bool pack = true;
  int64_t hdr[kCacheHeader / 2] = {0x6372656d61776331LL, L, g.G, g.Kg(), g.Cg(), g.R, g.S, 1};
  const int64_t wn = g.K * g.Cg() * g.R * g.S;
  float *head = nullptr, *copy = nullptr;
  if (wcache) {
    Carver cv(wcache);
    head = cv.take(kCacheHeader);
    copy = cv.take(wn);
    packed = cv.take(d.packed_weights());
    pack = !(std::memcmp(head, hdr, sizeof(hdr)) == 0 &&
             std::memcmp(copy, w, sizeof(float) * wn) == 0);
    if (pack) std::memset(head, 0, sizeof(hdr));  // incomplete until the end
  }
  run_region(macs(g), [&] {
    blocked_forward_form(d, x, w, false, false, bias, y, ws, relu, slope, packed, pack);
  });
  if (wcache && pack) {
    std::memcpy(copy, w, sizeof(float) * wn);
    std::memcpy(head, hdr, sizeof(hdr));
  }
}

int64_t ws_fwd_blocked(const ConvGeom& g) { return ws_blocked_forward_form(forward_desc(g)); }

void conv_bwd_data_blocked(const float* dy, const float* w, float* dx, const ConvGeom& g,
                           const ConvScratch& s) {
  run_region(macs(g), [&] {
    if (g.sh == 1 && g.sw == 1)
      blocked_forward_form(flipped_desc(g), dy, w, true, true, nullptr, dx, s.ws);
    else
      scatter_bwd_data(g, dy, w, dx, s.ws);
  });
}

int64_t ws_bwd_data_blocked(const ConvGeom& g) {
  if (g.sh == 1 && g.sw == 1) return ws_blocked_forward_form(flipped_desc(g));
  return ws_scatter(g);
}

void conv_bwd_weights_blocked(const float* x, const float* dy, float* dw, float* db,
                              const ConvGeom& g, const ConvScratch& s) {
  run_region(macs(g), [&] { blocked_bwd_weights(g, x, dy, dw, db, s.ws); });
}

int64_t ws_bwd_weights_blocked(const ConvGeom& g) { return ws_bww(g); }

void conv_fwd_fewc(const float* x, const float* w, const float* bias, float* y,
                   const ConvGeom& g, const ConvScratch& s, bool relu, float slope) {
  Carver cv(s.ws);
  float* buf = cv.take(0);
  run_region(macs(g),
             [&] { few_forward_form(forward_desc(g), x, w, bias, y, buf, relu, slope); });
}

int64_t ws_fwd_fewc(const ConvGeom& g) { return ws_few_forward_form(forward_desc(g)); }

void conv_bwd_data_fewc(const float* dy, const float* w, float* dx, const ConvGeom& g,
                        const ConvScratch& s) {
  const Desc d = flipped_desc(g);
  Carver cv(s.ws);
  float* wf = cv.take(g.K * g.Cg() * g.R * g.S);
  float* buf = cv.take(0);
  run_region(macs(g), [&] {
    once([&] { flip_weights(g, w, wf); });
    few_forward_form(d, dy, wf, nullptr, dx, buf);
  });
}

int64_t ws_bwd_data_fewc(const ConvGeom& g) {
  return round_up(g.K * g.Cg() * g.R * g.S, 16) + ws_few_forward_form(flipped_desc(g));
}

void conv_bwd_weights_fewc(const float* x, const float* dy, float* dw, float* db,
                           const ConvGeom& g, const ConvScratch& s) {
  run_region(macs(g), [&] { few_bwd_weights(g, x, dy, dw, db, s.ws); });
}

int64_t ws_bwd_weights_fewc(const ConvGeom& g) { return ws_few_bww(g); }

}  // namespace CREMA_ISA_NS
}  // namespace crema
