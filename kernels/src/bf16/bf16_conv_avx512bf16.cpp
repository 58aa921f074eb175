// The direct bf16 convolution on AVX512-BF16 (crema/bf16.h describes the layouts): VDPBF16PS adds
// to each of 16 float32 lanes the two products of a 32-bit word pair, so the reduction runs over
// pairs -- of input channels in the forward and data-gradient passes (activations nChw16c in
// bf16: the word at channel 2i of a pixel holds channels 2i and 2i+1), of consecutive output
// pixels in the weight gradient (dy interleaved as [q/2][k][2], x rows whose neighbouring columns
// make the word). Every product of two bf16 values is exact in float32; only the order of the
// float32 sums differs from the im2col + GEMM row.
// Compiled with -mavx512bf16 on top of the AVX-512 flags (CMakeLists.txt); only called after the
// dispatcher has checked the CPU. Threading as conv_direct.isa.cpp: one parallel region per call
// whose phases are worksharing loops ending in barriers.
#if defined(CREMA_BUILD_AVX512_BF16)
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <utility>

#include "crema/bf16.h"
#include "crema/conv.h"
#include "crema/region.h"
#include "crema/simd.h"
#include "crema/threads.h"

namespace crema {
namespace avx512_bf16_impl {
namespace {

#include "bf16_gemm_impl.h"  // bf16_round (the conversion rule)

using V = simd::Vec<Isa::avx512>;
using reg = V::reg;
using bf16x32 = __m512bh;
constexpr int L = 16;   // channels per block: the float32 lanes of one accumulator
constexpr int LP = 8;   // channel pairs per block
constexpr int kTap = LP * L * 2;  // bf16 of one packed weight tap block (16 in x 16 out)
// Forward tile: 2 output blocks x 14 pixels = 28 accumulators, 2 weight vectors, 1 broadcast.
constexpr int kOB = 2, kWB = 14;
// Weight-gradient tile: 4 output blocks x 6 taps = 24 accumulators, 4 dy vectors, 1 broadcast.
constexpr int kKJ = 4, kTT = 6;
// Images are processed in chunks whose bf16 copies hold at most this many elements (>= 1 image).
constexpr int64_t kChunkElems = int64_t{1} << 21;  // 4 MB

// ceil_div, round_up, run_region, loop, once, Carver: crema/region.h (shared with the float32
// direct kernels).

int64_t floats_of_bf16(int64_t n) { return round_up(ceil_div(n, 2), 16); }

bf16x32 as_bh(__m512i v) { return reinterpret_cast<bf16x32&>(v); }
bf16x32 load_pairs(const uint16_t* p) { return as_bh(_mm512_load_si512(p)); }
// The 32-bit word at p (any 2-byte alignment) in every lane.
bf16x32 bcast_pair(const uint16_t* p) {
  int32_t w;
  std::memcpy(&w, p, 4);
  return as_bh(_mm512_set1_epi32(w));
}
__m256i to_bf16x16(reg v) {
  const __m256bh h = _mm512_cvtneps_pbh(v);
  return reinterpret_cast<const __m256i&>(h);
}
void keep(bf16x32& v) { __asm__("" : "+v"(v)); }

// A convolution in "forward form" (as conv_direct.isa.cpp's): Ci input channels per group at
// H x W, Co outputs per group at P x Q; pad may be negative (the data gradient's crop).
struct Desc {
  int64_t N, G, Ci, Co, H, W, P, Q, R, S, ph, pw, sh, sw, dh, dw;
  int64_t Hp() const { return (P - 1) * sh + (R - 1) * dh + 1; }
  int64_t Wp() const { return (Q - 1) * sw + (S - 1) * dw + 1; }
  int64_t CB() const { return ceil_div(Ci, L); }
  int64_t OBn() const { return ceil_div(Co, L); }
  int64_t blocked_in_image() const { return G * CB() * Hp() * Wp() * L; }  // bf16
  int64_t chunk() const {
    return std::max<int64_t>(1, std::min<int64_t>(N, kChunkElems / blocked_in_image()));
  }
  int64_t packed_weights() const { return G * OBn() * CB() * R * S * kTap; }  // bf16
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

int64_t macs(const ConvGeom& g) { return g.N * g.K * g.Cg() * g.R * g.S * g.P() * g.Q(); }

// ---- layout transforms ---------------------------------------------------------------------

// NCHW float32 images [n0, n0 + nb) into bf16 [nl][g][cb][Hp][Wp][16]:
// dst(hp, wp) = bf16(src(hp - ph, wp - pw)), 0 outside and in the channel tail.
void to_blocked(const float* src, int64_t nb, int64_t G, int64_t Ci, int64_t H, int64_t W,
                int64_t Hp, int64_t Wp, int64_t ph, int64_t pw, uint16_t* dst) {
  const int64_t CB = ceil_div(Ci, L), plane = H * W;
  const int64_t wlo = std::clamp<int64_t>(pw, 0, Wp), whi = std::clamp<int64_t>(pw + W, wlo, Wp);
  loop(nb * G * CB * Hp, [&](int64_t item) {
    const int64_t hp = item % Hp, blk = item / Hp;  // blk = (nl * G + g) * CB + cb
    const int64_t cb = blk % CB, ng = blk / CB;
    uint16_t* d = dst + item * Wp * L;
    const int64_t h = hp - ph;
    if (h < 0 || h >= H) {
      std::memset(d, 0, sizeof(uint16_t) * Wp * L);
      return;
    }
    std::memset(d, 0, sizeof(uint16_t) * wlo * L);
    std::memset(d + whi * L, 0, sizeof(uint16_t) * (Wp - whi) * L);
    const int64_t cn = std::min<int64_t>(L, Ci - cb * L);
    const float* s0 = src + (ng * Ci + cb * L) * plane + h * W;
    reg t[L];
    for (int64_t wp = wlo; wp < whi; wp += L) {
      const int m = static_cast<int>(std::min<int64_t>(L, whi - wp));
      const int64_t col = wp - pw;
      for (int i = 0; i < L; ++i)
        t[i] = i >= cn ? V::zero()
               : m == L ? V::loadu(s0 + i * plane + col)
                        : V::maskz_loadu(s0 + i * plane + col, m);
      V::transpose(t);
      for (int j = 0; j < m; ++j)
        _mm256_store_si256(reinterpret_cast<__m256i*>(d + (wp + j) * L), to_bf16x16(t[j]));
    }
  });
}

// Packs w (Caffe's [G*Kg][Cg][R][S], float32) into bf16 [g][ob][ib][r][s][i/2][o][i%2]. Forward:
// o over the group's Kg outputs, i over its Cg inputs; transpose swaps the roles (the data
// gradient's), flip reverses the taps.
void pack_weights(const float* w, int64_t G, int64_t Kg, int64_t Cg, int64_t R, int64_t S,
                  bool transpose, bool flip, uint16_t* out) {
  const int64_t Co = transpose ? Cg : Kg, Ci = transpose ? Kg : Cg;
  const int64_t OB = ceil_div(Co, L), IB = ceil_div(Ci, L), RS = R * S;
  loop(G * OB, [&](int64_t item) {
    const int64_t g = item / OB, ob = item % OB;
    const int64_t no = std::min<int64_t>(L, Co - ob * L);
    for (int64_t ib = 0; ib < IB; ++ib) {
      uint16_t* blk = out + (item * IB + ib) * RS * kTap;
      const int64_t ni = std::min<int64_t>(L, Ci - ib * L);
      if (no < L || ni < L) std::memset(blk, 0, sizeof(uint16_t) * RS * kTap);
      for (int64_t o = 0; o < no; ++o)
        for (int64_t i = 0; i < ni; ++i) {
          const int64_t k = transpose ? ib * L + i : ob * L + o;  // row of w
          const int64_t c = transpose ? ob * L + o : ib * L + i;  // its input channel
          const float* src = w + ((g * Kg + k) * Cg + c) * RS;
          uint16_t* dst = blk + ((i >> 1) * L + o) * 2 + (i & 1);
          for (int64_t rs = 0; rs < RS; ++rs)
            dst[(flip ? RS - 1 - rs : rs) * kTap] = bf16_round(src[rs]);
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

// ---- forward-form micro-kernel (forward and stride-1 data gradient) -------------------------

struct FwdTile {
  const uint16_t* x;  // blocked input at (image, group, cb 0, row oh*sh, col ow0*sw)
  int64_t xps;        // bf16 between output pixels (sw * L)
  int64_t xcs;        // between input-channel blocks (Hp * Wp * L)
  int64_t xrs;        // between kernel rows (dh * Wp * L)
  int64_t xss;        // between kernel columns (dw * L)
  const uint16_t* w;  // packed weights at (group, ob0, ib 0)
  int64_t wos;        // bf16 between output blocks (IB * R * S * kTap)
  int64_t ncb, R, S;
  int last_pairs;     // channel pairs of the last input block (the rest are 0)
  const float* bias;  // [OB][L] or nullptr
  float* y;           // NCHW output at (image, channel of ob0 lane 0, oh, ow0)
  int64_t yks;        // floats between output channels (P * Q)
  int64_t nvalid[kOB];  // valid output channels per block (<= 0: skip the block)
  bool relu;
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
  const uint16_t* w = a.w;
  for (int64_t cb = 0; cb < a.ncb; ++cb) {
    const uint16_t* xc = a.x + cb * a.xcs;
    const int pairs = cb + 1 == a.ncb ? a.last_pairs : LP;
    for (int64_t r = 0; r < a.R; ++r) {
      const uint16_t* xr = xc + r * a.xrs;
      for (int64_t s = 0; s < a.S; ++s, w += kTap) {
        const uint16_t* xs = xr + s * a.xss;
#pragma GCC unroll 2
        for (int c = 0; c < pairs; ++c) {
          bf16x32 wv[OB];
#pragma GCC unroll 4
          for (int j = 0; j < OB; ++j) {
            wv[j] = load_pairs(w + j * a.wos + c * 2 * L);
            keep(wv[j]);
          }
#pragma GCC unroll 32
          for (int p = 0; p < WB; ++p) {
            const bf16x32 b = bcast_pair(xs + p * xps + 2 * c);
#pragma GCC unroll 4
            for (int j = 0; j < OB; ++j) acc[j][p] = _mm512_dpbf16_ps(acc[j][p], b, wv[j]);
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

FwdTileFn fwd_fn(int ob, int wb, bool unit) {
  static_assert(kOB == 2, "the tile tables are written for kOB == 2");
  static constexpr auto t2u = fwd_row<2, true>(std::make_integer_sequence<int, kWB>{});
  static constexpr auto t2n = fwd_row<2, false>(std::make_integer_sequence<int, kWB>{});
  static constexpr auto t1u = fwd_row<1, true>(std::make_integer_sequence<int, kWB>{});
  static constexpr auto t1n = fwd_row<1, false>(std::make_integer_sequence<int, kWB>{});
  if (ob == 2) return (unit ? t2u : t2n)[wb - 1];
  return (unit ? t1u : t1n)[wb - 1];
}

// Forward-form convolution of the blocked chunk xb (images [n0, n0 + nb)) into NCHW y.
void blocked_compute(const Desc& d, int64_t n0, int64_t nb, const uint16_t* xb,
                     const uint16_t* wp, const float* biasb, float* y, bool relu, float slope) {
  const int64_t CB = d.CB(), OBn = d.OBn(), Hp = d.Hp(), Wp = d.Wp(), P = d.P, Q = d.Q;
  const int64_t OBp = ceil_div(OBn, kOB);
  const int last_pairs = static_cast<int>(ceil_div(d.Ci - (CB - 1) * L, 2));
  const bool unit = d.sw == 1;
  loop(nb * d.G * OBp * P, [&](int64_t item) {
    const int64_t oh = item % P;
    int64_t rest = item / P;
    const int64_t obp = rest % OBp;
    rest /= OBp;
    const int64_t g = rest % d.G, nl = rest / d.G;
    const int64_t ob0 = obp * kOB;
    const int ob = static_cast<int>(std::min<int64_t>(kOB, OBn - ob0));
    FwdTile a;
    a.xps = d.sw * L;
    a.xcs = Hp * Wp * L;
    a.xrs = d.dh * Wp * L;
    a.xss = d.dw * L;
    a.w = wp + (g * OBn + ob0) * CB * d.R * d.S * kTap;
    a.wos = CB * d.R * d.S * kTap;
    a.ncb = CB;
    a.R = d.R;
    a.S = d.S;
    a.last_pairs = last_pairs;
    a.bias = biasb ? biasb + (g * OBn + ob0) * L : nullptr;
    a.yks = P * Q;
    a.relu = relu;
    a.slope = slope;
    for (int j = 0; j < kOB; ++j) a.nvalid[j] = std::min<int64_t>(L, d.Co - (ob0 + j) * L);
    const uint16_t* xrow = xb + ((nl * d.G + g) * CB * Hp + oh * d.sh) * Wp * L;
    float* yrow = y + (((n0 + nl) * d.G + g) * d.Co + ob0 * L) * P * Q + oh * Q;
    for (int64_t ow0 = 0; ow0 < Q; ow0 += kWB) {
      const int wb = static_cast<int>(std::min<int64_t>(kWB, Q - ow0));
      a.x = xrow + ow0 * d.sw * L;
      a.y = yrow + ow0;
      fwd_fn(ob, wb, unit)(a);
    }
  });
}

int64_t ws_forward_form(const Desc& d, bool cached) {
  return kAlignSlack + floats_of_bf16(d.chunk() * d.blocked_in_image()) +
         (cached ? 0 : floats_of_bf16(d.packed_weights())) + round_up(d.G * d.OBn() * L, 16);
}

// ---- the packed-weight cache ------------------------------------------------------------------
// [header kCacheHeader floats][bitwise copy of the float32 weights][packed bf16 weights]; the
// weights are repacked when the header (layout, shape, pass) or the copy differs.
constexpr int64_t kCacheHeader = 16;

int64_t cache_floats(const ConvGeom& g, const Desc& d) {
  return kAlignSlack + kCacheHeader + round_up(g.K * g.Cg() * g.R * g.S, 16) +
         floats_of_bf16(d.packed_weights());
}

struct WeightCache {
  float *head = nullptr, *copy = nullptr;
  uint16_t* packed = nullptr;  // nullptr: no cache, pack into the workspace
  bool pack = true;
  int64_t hdr[kCacheHeader / 2];
  int64_t wn;

  WeightCache(float* cache, const float* w, const ConvGeom& g, const Desc& d, int64_t pass)
      : hdr{0x6372656d61626631LL, L, g.G, g.Kg(), g.Cg(), g.R, g.S, pass},
        wn(g.K * g.Cg() * g.R * g.S) {
    if (!cache) return;
    Carver cv(cache);
    head = cv.take(kCacheHeader);
    copy = cv.take(wn);
    packed = cv.take_bf16(d.packed_weights());
    pack = !(std::memcmp(head, hdr, sizeof(hdr)) == 0 &&
             std::memcmp(copy, w, sizeof(float) * wn) == 0);
    if (pack) std::memset(head, 0, sizeof(hdr));  // incomplete until commit
  }
  void commit(const float* w) {
    if (!head || !pack) return;
    std::memcpy(copy, w, sizeof(float) * wn);
    std::memcpy(head, hdr, sizeof(hdr));
  }
};

// x (NCHW, the desc's input) -> y, inside a region. wp: where the packed weights are (pack: to
// be packed there first from w, transposed / flipped as given).
void forward_form(const Desc& d, const float* x, const float* w, bool transpose, bool flip,
                  const float* bias, float* y, float* ws, uint16_t* wp, bool pack, bool relu,
                  float slope) {
  Carver cv(ws);
  const int64_t nbmax = d.chunk();
  uint16_t* xb = cv.take_bf16(nbmax * d.blocked_in_image());
  float* bb = cv.take(d.G * d.OBn() * L);
  if (!wp) wp = cv.take_bf16(d.packed_weights());
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

// ---- weight gradient (sw == 1) ------------------------------------------------------------------
// dwb[g][kb][tap][ko] += sum over output pixel pairs (q, q+1) of
//   x(row + r*dh, q + s*dw)[c] * dy(q)[ko] + x(row + r*dh, q + 1 + s*dw)[c] * dy(q + 1)[ko]
// with tap = (c*R + r)*S + s (Caffe's order within a weight row).
// The passes run band by band: a band is `rows` output rows of one image, or `nb` whole images
// where an image is small. Each band's operands are converted to bf16 and then used while they
// are still in L2 (converting whole images first sent them to memory and back: the first layer
// at 224 x 224 spent two thirds of its weight gradient there). Band buffers: x as zero-bordered
// bf16 planes [nl][G*Ci][hin][Wx], Wx = Wp + 1 so that the odd last pair's second column exists
// (it meets the zero of dy's padded pixel); dy as [nl][g][kb][rows][Qh][16 ko][2], Qh = ceil(Q/2).
// The bias gradient is summed from the float32 dy as it is converted: per (image, row) partial
// sums, added in a fixed order, so the result does not depend on the thread count.

// bf16 elements of x + dy per band: the band is used from L2 (1-2 MB per core on current CPUs).
constexpr int64_t kBandElems = int64_t{1} << 18;  // 512 KB

struct BwwDesc {
  Desc d;
  int64_t Wx, Qh, taps, taps_pad;
  int64_t rows, hin, nb;  // output rows, padded input rows and images per band
  int64_t x_img() const { return d.G * d.Ci * hin * Wx; }
  int64_t dy_img() const { return d.G * d.OBn() * rows * Qh * 2 * L; }
  int64_t row_items() const { return d.G * d.OBn() * rows; }  // dy rows per image of a band
};

BwwDesc bww_desc(const ConvGeom& g) {
  BwwDesc z;
  z.d = forward_desc(g);
  const Desc& d = z.d;
  z.Wx = d.Wp() + 1;
  z.Qh = ceil_div(d.Q, 2);
  z.taps = d.Ci * d.R * d.S;
  z.taps_pad = round_up(z.taps, kTT);
  const int64_t in_row = d.G * d.Ci * z.Wx, out_row = d.G * d.OBn() * z.Qh * 2 * L;
  const int64_t halo = (d.R - 1) * d.dh + 1 - d.sh;  // input rows beyond rows * sh
  z.rows = std::clamp<int64_t>((kBandElems - halo * in_row) / (d.sh * in_row + out_row), 1, d.P);
  z.hin = (z.rows - 1) * d.sh + (d.R - 1) * d.dh + 1;
  z.nb = z.rows < d.P ? 1
                      : std::max<int64_t>(1, std::min<int64_t>(
                                                 d.N, kBandElems / (z.x_img() + z.dy_img())));
  return z;
}

int64_t ws_bww(const BwwDesc& z) {
  return kAlignSlack + floats_of_bf16(z.nb * z.x_img()) + floats_of_bf16(z.nb * z.dy_img()) +
         round_up(z.d.G * z.d.OBn() * z.taps_pad * L, 16) +   // dwb
         round_up(z.nb * z.row_items() * L, 16) +             // the band's bias partials
         round_up(z.d.G * z.d.OBn() * L, 16);                  // the bias sums
}

// Rows [hp0, hp0 + hn) of the zero-bordered planes of Hp x Wx made from NCHW float32 planes of
// H x W (pad ph, pw): one padded row of one plane per call, dst at the band buffer's row.
void to_padded_row(const float* plane, int64_t hp, int64_t H, int64_t W, int64_t Wx, int64_t ph,
                   int64_t pw, uint16_t* dst) {
  const int64_t wlo = std::clamp<int64_t>(pw, 0, Wx), whi = std::clamp<int64_t>(pw + W, wlo, Wx);
  const int64_t h = hp - ph;
  if (h < 0 || h >= H) {
    std::memset(dst, 0, sizeof(uint16_t) * Wx);
    return;
  }
  std::memset(dst, 0, sizeof(uint16_t) * wlo);
  std::memset(dst + whi, 0, sizeof(uint16_t) * (Wx - whi));
  const float* s = plane + h * W + (wlo - pw);
  for (int64_t i = 0; i < whi - wlo; i += L) {
    const int m = static_cast<int>(std::min<int64_t>(L, whi - wlo - i));
    _mm256_mask_storeu_epi16(dst + wlo + i, static_cast<__mmask16>((1u << m) - 1u),
                             to_bf16x16(V::maskz_loadu(s + i, m)));
  }
}

// One row of dy (kn <= 16 channels from s0, channel stride `plane`, Q pixels) into [Qh][16][2];
// dbp[i] = the float32 sum of channel i's row (0 for i >= kn).
void to_pixel_pairs_row(const float* s0, int64_t plane, int64_t kn, int64_t Q, uint16_t* d,
                        float* dbp) {
  const int64_t Qh = ceil_div(Q, 2);
  reg t[L], sum[L];
  for (int i = 0; i < L; ++i) sum[i] = V::zero();
  for (int64_t q0 = 0; q0 < Q; q0 += 2 * L) {  // 32 pixels: 16 pairs
    const int64_t left = Q - q0;
    const int m0 = static_cast<int>(std::min<int64_t>(L, left));
    const int m1 = static_cast<int>(std::clamp<int64_t>(left - L, 0, L));
    for (int i = 0; i < L; ++i) {
      if (i >= kn) {
        t[i] = V::zero();
        continue;
      }
      const float* s = s0 + i * plane + q0;
      const reg lo = m0 == L ? V::loadu(s) : V::maskz_loadu(s, m0);
      const reg hi = m1 == L ? V::loadu(s + L) : V::maskz_loadu(s + L, m1);
      sum[i] = V::add(sum[i], V::add(lo, hi));
      const __m512bh h = _mm512_cvtne2ps_pbh(hi, lo);  // word j = pixels 2j, 2j+1 of channel i
      t[i] = _mm512_castsi512_ps(reinterpret_cast<const __m512i&>(h));
    }
    V::transpose(t);  // t[j]: pair j, word i = channel i
    const int64_t pairs = std::min<int64_t>(L, Qh - q0 / 2);
    for (int64_t j = 0; j < pairs; ++j)
      V::store(reinterpret_cast<float*>(d + (q0 / 2 + j) * 2 * L), t[j]);
  }
  for (int i = 0; i < L; ++i) dbp[i] = i < kn ? V::hsum(sum[i]) : 0.f;
}

struct BwwTile {
  const uint16_t* x[kTT];  // per tap: x plane at (image, c, row oh0*sh + r*dh, col s*dw)
  int64_t xrow;            // bf16 between output rows (sh * Wx)
  const uint16_t* dy;      // at (image, group, kb0, oh0, pair 0)
  int64_t dykbs;           // bf16 between dy blocks (P * Qh * 32)
  int64_t rows, Qh;
  int64_t images;          // images run one after the other (small planes: all of a chunk)
  int64_t ximg, dyimg;     // bf16 between images in x and dy
  float* dw;               // dwb at (group, kb0, tap t0, lane 0)
  int64_t dwjs;            // floats between kb blocks in dwb (taps_pad * L)
};

template <int KJ, int TT>
void bww_tile(const BwwTile& a) {
  reg acc[KJ][TT];
#pragma GCC unroll 4
  for (int j = 0; j < KJ; ++j)
#pragma GCC unroll 8
    for (int t = 0; t < TT; ++t) acc[j][t] = V::load(a.dw + j * a.dwjs + t * L);
  for (int64_t io = 0; io < a.images * a.rows; ++io) {
    const int64_t img = io / a.rows, oh = io % a.rows;
    const uint16_t* xt[TT];
#pragma GCC unroll 8
    for (int t = 0; t < TT; ++t) xt[t] = a.x[t] + img * a.ximg + oh * a.xrow;
    const uint16_t* dr = a.dy + img * a.dyimg + oh * a.Qh * 2 * L;
    for (int64_t qp = 0; qp < a.Qh; ++qp) {
      bf16x32 d[KJ];
#pragma GCC unroll 4
      for (int j = 0; j < KJ; ++j) {
        d[j] = load_pairs(dr + qp * 2 * L + j * a.dykbs);
        keep(d[j]);
      }
#pragma GCC unroll 8
      for (int t = 0; t < TT; ++t) {
        const bf16x32 b = bcast_pair(xt[t] + 2 * qp);
#pragma GCC unroll 4
        for (int j = 0; j < KJ; ++j) acc[j][t] = _mm512_dpbf16_ps(acc[j][t], b, d[j]);
      }
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < KJ; ++j)
#pragma GCC unroll 8
    for (int t = 0; t < TT; ++t) V::store(a.dw + j * a.dwjs + t * L, acc[j][t]);
}

using BwwTileFn = void (*)(const BwwTile&);

template <int KJ, int... I>
constexpr std::array<BwwTileFn, sizeof...(I)> bww_row(std::integer_sequence<int, I...>) {
  return {&bww_tile<KJ, I + 1>...};
}

BwwTileFn bww_fn(int kj, int tt) {
  static constexpr std::array<std::array<BwwTileFn, kTT>, kKJ> t = {
      bww_row<1>(std::make_integer_sequence<int, kTT>{}),
      bww_row<2>(std::make_integer_sequence<int, kTT>{}),
      bww_row<3>(std::make_integer_sequence<int, kTT>{}),
      bww_row<4>(std::make_integer_sequence<int, kTT>{})};
  static_assert(kKJ == 4, "the tile table is written for kKJ == 4");
  return t[kj - 1][tt - 1];
}

void bww(const ConvGeom& g, const float* x, const float* dy, float* dw, float* db, float* ws) {
  const BwwDesc z = bww_desc(g);
  const Desc& d = z.d;
  Carver cv(ws);
  uint16_t* xp = cv.take_bf16(z.nb * z.x_img());
  uint16_t* dyp = cv.take_bf16(z.nb * z.dy_img());
  float* dwb = cv.take(d.G * d.OBn() * z.taps_pad * L);
  float* dbp = cv.take(z.nb * z.row_items() * L);
  float* dbs = cv.take(d.G * d.OBn() * L);
  const int64_t KB = d.OBn(), KS = ceil_div(KB, kKJ), P = d.P, Q = d.Q;
  const int64_t RS = d.R * d.S, plane = z.hin * z.Wx, PQ = P * Q;
  const int64_t in_planes = d.G * d.Ci;
  // Work items: (group, set of kKJ output blocks, channel group); the channel group's taps are
  // done in tiles of kTT against each sub-band of output rows while that part of dy is in L1.
  const int64_t cgs = std::max<int64_t>(1, std::min<int64_t>(d.Ci, 16));
  const int64_t CGn = ceil_div(d.Ci, cgs);
  const int64_t rows_per = std::max<int64_t>(1, 64 / z.Qh);
  loop(KB * z.taps_pad + KB, [&](int64_t i) {
    if (i < KB * z.taps_pad) {
      std::memset(dwb + i * d.G * L, 0, sizeof(float) * d.G * L);
    } else {
      std::memset(dbs + (i - KB * z.taps_pad) * d.G * L, 0, sizeof(float) * d.G * L);
    }
  });
  for (int64_t n0 = 0; n0 < d.N; n0 += z.nb) {
    const int64_t nb = std::min(z.nb, d.N - n0);
    for (int64_t p0 = 0; p0 < P; p0 += z.rows) {
      const int64_t rows = std::min(z.rows, P - p0);
      const int64_t hin = (rows - 1) * d.sh + (d.R - 1) * d.dh + 1;
      // Convert the band: x rows, then dy rows (each dy row also gives its bias partials).
      const int64_t x_rows = nb * in_planes * z.hin, dy_items = nb * d.G * KB * rows;
      loop(x_rows + dy_items, [&](int64_t item) {
        if (item < x_rows) {
          const int64_t hl = item % z.hin, pl = item / z.hin;  // pl = nl * in_planes + plane
          if (hl >= hin) return;
          const int64_t nl = pl / in_planes, c = pl % in_planes;
          to_padded_row(x + ((n0 + nl) * in_planes + c) * d.H * d.W, p0 * d.sh + hl, d.H, d.W,
                        z.Wx, d.ph, d.pw, xp + item * z.Wx);
          return;
        }
        item -= x_rows;
        const int64_t pl = item % rows, blk = item / rows;  // blk = (nl * G + g) * KB + kb
        const int64_t kb = blk % KB, ng = blk / KB;
        to_pixel_pairs_row(dy + ((n0 * d.G + ng) * d.Co + kb * L) * PQ + (p0 + pl) * Q, PQ,
                           std::min<int64_t>(L, d.Co - kb * L), Q,
                           dyp + (blk * z.rows + pl) * z.Qh * 2 * L,
                           dbp + (blk * z.rows + pl) * L);
      });
      loop(d.G * KS * CGn, [&](int64_t item) {
        const int64_t cgi = item % CGn, rest = item / CGn;
        const int64_t ks = rest % KS, g_ = rest / KS;
        const int64_t kb0 = ks * kKJ;
        const int kj = static_cast<int>(std::min<int64_t>(kKJ, KB - kb0));
        if (cgi == 0) {  // this item's output blocks' bias sums, in a fixed order
          for (int64_t nl = 0; nl < nb; ++nl)
            for (int64_t j = 0; j < kj; ++j) {
              const int64_t blk = (nl * d.G + g_) * KB + kb0 + j;
              reg acc = V::load(dbs + (g_ * KB + kb0 + j) * L);
              for (int64_t pl = 0; pl < rows; ++pl)
                acc = V::add(acc, V::load(dbp + (blk * z.rows + pl) * L));
              V::store(dbs + (g_ * KB + kb0 + j) * L, acc);
            }
        }
        const int64_t t_begin = cgi * cgs * RS, t_end = std::min(z.taps, (cgi + 1) * cgs * RS);
        BwwTile a;
        a.xrow = d.sh * z.Wx;
        a.dykbs = z.rows * z.Qh * 2 * L;
        a.Qh = z.Qh;
        a.dwjs = z.taps_pad * L;
        a.ximg = z.x_img();
        a.dyimg = z.dy_img();
        // Planes that fit one sub-band: the tile runs over every image of the band at once.
        a.images = rows <= rows_per ? nb : 1;
        for (int64_t nl = 0; nl < nb; nl += a.images) {
          const uint16_t* xg = xp + (nl * d.G + g_) * d.Ci * plane;
          const uint16_t* dyg = dyp + ((nl * d.G + g_) * KB + kb0) * z.rows * z.Qh * 2 * L;
          for (int64_t oh0 = 0; oh0 < rows; oh0 += rows_per) {
            a.rows = std::min(rows_per, rows - oh0);
            a.dy = dyg + oh0 * z.Qh * 2 * L;
            for (int64_t t0 = t_begin; t0 < t_end; t0 += kTT) {
              const int tt = static_cast<int>(std::min<int64_t>(kTT, t_end - t0));
              for (int t = 0; t < tt; ++t) {
                const int64_t tap = t0 + t, c = tap / RS, r = tap % RS / d.S, s = tap % d.S;
                a.x[t] = xg + c * plane + (oh0 * d.sh + r * d.dh) * z.Wx + s * d.dw;
              }
              a.dw = dwb + ((g_ * KB + kb0) * z.taps_pad + t0) * L;
              bww_fn(kj, tt)(a);
            }
          }
        }
      });
    }
  }
  // dw[g*Kg + kb*L + ko][tap] += dwb[g][kb][tap][ko]; db likewise from the bias sums.
  const int64_t Kg = d.Co;
  loop(d.G * KB, [&](int64_t item) {
    const int64_t g_ = item / KB, kb = item % KB;
    const int64_t nk = std::min<int64_t>(L, Kg - kb * L);
    const float* blk = dwb + item * z.taps_pad * L;
    for (int64_t ko = 0; ko < nk; ++ko) {
      float* out = dw + (g_ * Kg + kb * L + ko) * z.taps;
      for (int64_t t = 0; t < z.taps; ++t) out[t] += blk[t * L + ko];
      if (db) db[g_ * Kg + kb * L + ko] += dbs[item * L + ko];
    }
  });
}

}  // namespace

// ---- entry points -------------------------------------------------------------------------------

int64_t ws_fwd_direct(const ConvGeom& g) { return ws_forward_form(forward_desc(g), false); }
int64_t cache_fwd_direct(const ConvGeom& g) { return cache_floats(g, forward_desc(g)); }

void bf16_conv_fwd_direct(const float* x, const float* w, const float* bias, float* y,
                          const ConvGeom& g, const ConvScratch& s, bool relu, float slope) {
  const Desc d = forward_desc(g);
  WeightCache wc(s.cache, w, g, d, 0);
  run_region(macs(g), [&] {
    forward_form(d, x, w, false, false, bias, y, s.ws, wc.packed, wc.pack, relu, slope);
  });
  wc.commit(w);
}

int64_t ws_bwd_data_direct(const ConvGeom& g) { return ws_forward_form(flipped_desc(g), false); }
int64_t cache_bwd_data_direct(const ConvGeom& g) { return cache_floats(g, flipped_desc(g)); }

void bf16_conv_bwd_data_direct(const float* dy, const float* w, float* dx, const ConvGeom& g,
                               const ConvScratch& s) {
  const Desc d = flipped_desc(g);
  WeightCache wc(s.cache, w, g, d, 1);
  run_region(macs(g), [&] {
    forward_form(d, dy, w, true, true, nullptr, dx, s.ws, wc.packed, wc.pack, false, 0.f);
  });
  wc.commit(w);
}

int64_t ws_bwd_weights_direct(const ConvGeom& g) { return ws_bww(bww_desc(g)); }

void bf16_conv_bwd_weights_direct(const float* x, const float* dy, float* dw, float* db,
                                  const ConvGeom& g, const ConvScratch& s) {
  run_region(macs(g), [&] { bww(g, x, dy, dw, db, s.ws); });
}

}  // namespace avx512_bf16_impl
}  // namespace crema
#endif
