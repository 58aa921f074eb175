// Winograd F(m x m, 3 x 3): the portable (scalar) variant, the dispatch table, the sizes and the
// driver shared by every ISA (filter cache, workspace carving, threads). See crema/winograd.h.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>

#include "crema/bf16.h"
#include "crema/conv.h"
#include "crema/threads.h"
#include "crema/winograd.h"

namespace crema {
namespace scalar_impl {
namespace {

struct V16 {
  float v[16];
};

// The portable micro-kernel: R rows x 16 columns; the compiler vectorizes the column loops with
// whatever the baseline ISA offers (SSE2 on x86-64).
template <int R>
inline void micro(const float* a, int64_t lda, const float* b, float* c, int64_t ldc, int64_t kc,
                  bool add) {
  float acc[R][16] = {};
  for (int64_t k = 0; k < kc; ++k) {
    const float* bk = b + k * 16;
    for (int r = 0; r < R; ++r) {
      const float ar = a[r * lda + k];
      for (int j = 0; j < 16; ++j) acc[r][j] += ar * bk[j];
    }
  }
  for (int r = 0; r < R; ++r)  // chunk sums start from zero (kWinogradChunk)
    for (int j = 0; j < 16; ++j) c[r * ldc + j] = add ? c[r * ldc + j] + acc[r][j] : acc[r][j];
}

struct Ops {
  using V = V16;
  static V load(const float* p) {
    V r;
    std::memcpy(r.v, p, sizeof(r.v));
    return r;
  }
  static void store(float* p, V v) { std::memcpy(p, v.v, sizeof(v.v)); }
  static V zero() { return V{}; }
  static V add(V a, V b) {
    for (int i = 0; i < 16; ++i) a.v[i] += b.v[i];
    return a;
  }
  static V sub(V a, V b) {
    for (int i = 0; i < 16; ++i) a.v[i] -= b.v[i];
    return a;
  }
  static V neg(V a) {
    for (int i = 0; i < 16; ++i) a.v[i] = -a.v[i];
    return a;
  }
  static V relu(V a, float slope) {  // max(a, 0) + slope * min(a, 0)
    for (int i = 0; i < 16; ++i) a.v[i] = std::max(a.v[i], 0.f) + slope * std::min(a.v[i], 0.f);
    return a;
  }
  static V mul(V a, float c) {
    for (int i = 0; i < 16; ++i) a.v[i] *= c;
    return a;
  }
  static V fmadd(V x, float c, V acc) {
    for (int i = 0; i < 16; ++i) acc.v[i] += c * x.v[i];
    return acc;
  }

  static constexpr int panel = 16;
  static constexpr bool bf16_operands = false;
  static void gemm(const float* a, int64_t lda, const float* u, int64_t cpad, int64_t kpad,
                   float* c, int64_t ldc, int64_t rows) {
    constexpr int R = 4;
    for (int64_t k0 = 0; k0 < kpad; k0 += panel) {
      float* ck = c + k0;
      for (int64_t c0 = 0; c0 < cpad; c0 += kWinogradChunk) {
        const int64_t kc = std::min(kWinogradChunk, cpad - c0);
        const float* b = u + k0 * cpad + c0 * panel;
        int64_t r = 0;
        for (; r + R <= rows; r += R)
          micro<R>(a + c0 + r * lda, lda, b, ck + r * ldc, ldc, kc, c0 > 0);
        for (; r < rows; ++r) micro<1>(a + c0 + r * lda, lda, b, ck + r * ldc, ldc, kc, c0 > 0);
      }
    }
  }

  // du[kpad x cpad] += e^T . v over `count` tiles (e: count x kpad, v: count x cpad).
  static void gemm_wgrad(const float* e, int64_t kpad, const float* v, int64_t cpad, float* du,
                         int64_t count) {
    float row[kWinogradChunk];  // a block's sum starts from zero, as in the vector kernels
    for (int64_t k = 0; k < kpad; ++k)
      for (int64_t c0 = 0; c0 < cpad; c0 += kWinogradChunk) {
        const int64_t n = std::min(kWinogradChunk, cpad - c0);
        std::fill(row, row + n, 0.f);
        for (int64_t t = 0; t < count; ++t) {
          const float ek = e[t * kpad + k];
          const float* vt = v + t * cpad + c0;
          for (int64_t c = 0; c < n; ++c) row[c] += ek * vt[c];
        }
        float* d = du + k * cpad + c0;
        for (int64_t c = 0; c < n; ++c) d[c] += row[c];
      }
  }

  static constexpr bool fast_pack = false;
  static void pack_row(const float*, int64_t, int, int64_t, float*) {}
  static constexpr bool fast_store = false;
  static void store_outputs4(const V*, float*, int64_t, int64_t, int, int, int) {}
};

}  // namespace
}  // namespace scalar_impl
}  // namespace crema

#define CREMA_WINOGRAD_NS scalar_impl
#include "winograd_impl.h"
#undef CREMA_WINOGRAD_NS

namespace crema {
namespace {

constexpr int32_t kCacheMagic = 0x57475531;  // "WGU1"
constexpr int kHeaderFloats = 16;

bool supports_all(const WinogradGeom&) { return true; }

// a * b * ..., false on int64 overflow.
bool mul(int64_t* r, std::initializer_list<int64_t> factors) {
  int64_t p = 1;
  for (int64_t f : factors)
    if (f < 0 || __builtin_mul_overflow(p, f, &p)) return false;
  *r = p;
  return true;
}

bool add(int64_t* r, std::initializer_list<int64_t> terms) {
  int64_t s = 0;
  for (int64_t t : terms)
    if (t < 0 || __builtin_add_overflow(s, t, &s)) return false;
  *r = s;
  return true;
}

float* align64(float* p) {
  const uintptr_t a = (reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t{63};
  return reinterpret_cast<float*>(a);
}

struct Layout {
  int64_t v, m, pack, slot, u, weights;  // floats
};

bool layout(const WinogradGeom& g, Layout* L, int64_t tb) {
  const int64_t a2 = g.alpha() * g.alpha();
  int64_t slot = 0;
  const bool ok = mul(&L->v, {a2, winograd_v_stride(g, tb)}) &&
                  mul(&L->m, {a2, winograd_m_stride(g, tb)}) &&
                  mul(&L->pack, {g.c_pad(), g.alpha(), winograd_pack_pitch(g)}) &&
                  add(&slot, {L->v, L->m, L->pack, 15}) &&
                  mul(&L->u, {a2, g.c_pad(), g.k_pad()}) &&
                  mul(&L->weights, {g.channels, g.out_channels, 9});
  L->slot = slot / 16 * 16;  // keeps every slot 64-byte aligned
  return ok;
}

// The U panel of the cache, recomputing it unless the header and the weights copy match.
float* ensure_filter(const WinogradOps* ops, const float* w, bool flip, const WinogradGeom& g,
                     float* cache) {
  Layout L{};
  layout(g, &L, winograd_tile_block(g));
  float* copy = cache + kHeaderFloats;
  float* u = align64(copy + L.weights);
  int32_t hdr[kHeaderFloats] = {};
  hdr[0] = kCacheMagic;
  hdr[1] = g.tile;
  hdr[2] = ops->panel;
  hdr[3] = flip ? 1 : 0;
  const int64_t dims[2] = {g.channels, g.out_channels};
  std::memcpy(&hdr[4], dims, sizeof(dims));
  hdr[8] = static_cast<int32_t>(u - cache);  // where U starts (the array's alignment decides)
  hdr[9] = 1;                                // complete
  hdr[10] = ops->bf16_operands ? 1 : 0;
  static_assert(sizeof(hdr) == kHeaderFloats * sizeof(float), "header size");
  if (std::memcmp(cache, hdr, sizeof(hdr)) == 0 &&
      std::memcmp(copy, w, sizeof(float) * L.weights) == 0)
    return u;
  std::memset(cache, 0, sizeof(hdr));  // incomplete until the end
  parallel_for(g.c_pad(), g.alpha() * g.alpha() * g.k_pad() * 8, [&](int64_t c) {
    ops->filter_transform(w, g, flip, ops->panel, u, c, c + 1);
  });
  std::memcpy(copy, w, sizeof(float) * L.weights);
  std::memcpy(cache, hdr, sizeof(hdr));
  return u;
}

void run(const WinogradOps* ops, const float* x, const float* w, bool flip, const float* bias,
         const WinogradGeom& g, float* y, float* workspace, int64_t workspace_floats,
         float* cache) {
  Layout L{};
  layout(g, &L, winograd_tile_block(g));
  const float* u = ensure_filter(ops, w, flip, g, cache);

  float* base = align64(workspace);
  const int64_t kpad = g.k_pad();
  float* bias_pad = base;
  for (int64_t k = 0; k < kpad; ++k)
    bias_pad[k] = (bias != nullptr && k < g.out_channels) ? bias[k] : 0.f;
  float* slot0 = bias_pad + kpad;
  const int64_t avail = workspace_floats - (slot0 - workspace);
  const int64_t fit = std::max<int64_t>(1, avail / L.slot);

  // Each thread takes a contiguous range of blocks, so consecutive blocks (which share input
  // rows and output cache lines) stay on one core.
  const int64_t tb = winograd_tile_block(g);
  const int64_t total = g.tiles();
  const int64_t nblocks = (total + tb - 1) / tb;
  const int64_t slots = std::max<int64_t>(
      1, std::min<int64_t>({static_cast<int64_t>(num_threads()), fit, nblocks}));
  parallel_for(slots, int64_t{1} << 20, [&](int64_t s) {
    float* v = slot0 + s * L.slot;
    int64_t pack_tag = -1;  // x may have changed since the last call: nothing is packed yet
    const WinogradSlot slot{v, v + L.v, v + L.v + L.m, &pack_tag};
    const int64_t b_begin = nblocks * s / slots, b_end = nblocks * (s + 1) / slots;
    for (int64_t b = b_begin; b < b_end; ++b) {
      const int64_t t0 = b * tb;
      ops->block(x, u, bias_pad, g, t0, std::min(tb, total - t0), tb, slot, y);
    }
  });
}

// The weight gradient's tiles per block: each block adds its sums into the slot's du
// (alpha^2 x Kpad x Cpad floats, beyond L2 for 128 channels and beyond L3 for a few hundred), so a
// block of at least 64 tiles keeps that traffic per tile small, while V and E of a block move
// through L3 once. (Forward-sized blocks of 8 tiles at 384 channels ran at 0.6x direct.)
int64_t winograd_wgrad_tile_block(const WinogradGeom& g) {
  const int64_t tiles = g.tiles();
  return std::min(std::max<int64_t>(winograd_tile_block(g), 64), (tiles + 7) / 8 * 8);
}

// The weight gradient's slot: the forward's slot, dy's packed rows, du and db.
struct WgradLayout {
  int64_t dy_pack, du, db, slot;  // floats
};

bool wgrad_layout(const WinogradGeom& g, WgradLayout* W) {
  Layout L{};
  int64_t slot = 0;
  const bool ok = layout(g, &L, winograd_wgrad_tile_block(g)) &&
                  mul(&W->dy_pack, {g.k_pad(), g.alpha(), winograd_pack_pitch(g)}) &&
                  mul(&W->du, {g.alpha() * g.alpha(), g.k_pad(), g.c_pad()}) &&
                  add(&W->db, {g.k_pad()}) &&
                  add(&slot, {L.slot, W->dy_pack, W->du, W->db, 15});
  W->slot = slot / 16 * 16;
  return ok;
}

void run_wgrad(const WinogradOps* ops, const float* x, const float* dy, const WinogradGeom& g,
               float* dw, float* db, float* workspace, int64_t workspace_floats) {
  Layout L{};
  WgradLayout W{};
  const int64_t tb = winograd_wgrad_tile_block(g);
  layout(g, &L, tb);
  wgrad_layout(g, &W);
  float* base = align64(workspace);
  const int64_t fit = std::max<int64_t>(1, (workspace_floats - (base - workspace)) / W.slot);
  const int64_t total = g.tiles(), nblocks = (total + tb - 1) / tb;
  const int64_t slots = std::max<int64_t>(
      1, std::min<int64_t>({static_cast<int64_t>(num_threads()), fit, nblocks}));
  auto slot_base = [&](int64_t s) { return base + s * W.slot; };
  auto du_of = [&](int64_t s) { return slot_base(s) + L.slot + W.dy_pack; };
  parallel_for(slots, int64_t{1} << 20, [&](int64_t s) {
    float* v = slot_base(s);
    float* du = du_of(s);
    std::memset(du, 0, sizeof(float) * (W.du + W.db));
    int64_t pack_tag = -1, dy_tag = -1;
    const WinogradWgradSlot slot{{v, v + L.v, v + L.v + L.m, &pack_tag}, v + L.slot, &dy_tag, du,
                                 du + W.du};
    const int64_t b_begin = nblocks * s / slots, b_end = nblocks * (s + 1) / slots;
    for (int64_t b = b_begin; b < b_end; ++b) {
      const int64_t t0 = b * tb;
      ops->wgrad_block(x, dy, g, t0, std::min(tb, total - t0), tb, slot);
    }
  });
  // The slots' sums into slot 0's, then G^T . G into dw, both split over output channels.
  const int64_t kpad = g.k_pad(), cpad = g.c_pad(), a2 = g.alpha() * g.alpha();
  float* du0 = du_of(0);
  parallel_for(g.out_channels, a2 * cpad * (slots + 4), [&](int64_t k) {
    for (int64_t s = 1; s < slots; ++s) {
      const float* dus = du_of(s);
      for (int64_t xi = 0; xi < a2; ++xi) {
        float* d = du0 + (xi * kpad + k) * cpad;
        const float* e = dus + (xi * kpad + k) * cpad;
        for (int64_t c = 0; c < cpad; ++c) d[c] += e[c];
      }
    }
    ops->wgrad_finish(du0, g, k, k + 1, dw);
  });
  if (db != nullptr)
    for (int64_t k = 0; k < g.out_channels; ++k)
      for (int64_t s = 0; s < slots; ++s) db[k] += du_of(s)[W.du + k];
}

}  // namespace

int64_t winograd_wgrad_workspace_floats(const WinogradGeom& g, int threads) {
  WgradLayout W{};
  int64_t slots = 0, total = 0;
  if (threads < 1 || !wgrad_layout(g, &W)) return -1;
  // A slot holds a thread's sums (4.7 MB at 128 channels): on many cores the slots stop at
  // kWgradBudget floats and the call runs on that many threads (run_wgrad fits them to the
  // workspace), so a layer's workspace stays bounded.
  constexpr int64_t kWgradBudget = int64_t{1} << 26;  // 256 MB
  const int64_t n = std::min<int64_t>(threads, std::max<int64_t>(1, kWgradBudget / W.slot));
  if (!mul(&slots, {W.slot, n}) || !add(&total, {16, slots})) return -1;
  return total;
}

void winograd_backward_weights(const float* x, const float* dy, const WinogradGeom& g, float* dw,
                               float* db, float* workspace, int64_t workspace_floats) {
  run_wgrad(winograd_kernel(g).fn, x, dy, g, dw, db, workspace, workspace_floats);
}

const char* winograd_geom_error(const WinogradGeom& g) {
  if (g.tile != 2 && g.tile != 4) return "tile must be 4 (F(4x4,3x3)) or 2 (F(2x2,3x3))";
  if (g.batch <= 0 || g.channels <= 0 || g.height <= 0 || g.width <= 0 || g.out_channels <= 0)
    return "batch, channels, height, width and output channels must be positive";
  if (g.pad_h < 0 || g.pad_h > 2 || g.pad_w < 0 || g.pad_w > 2)
    return "pad must be 0, 1 or 2 on each axis";
  const int64_t big = int64_t{1} << 40;
  if (g.channels > big || g.height > big || g.width > big || g.out_channels > big ||
      g.batch > big)
    return "a dimension is too large";
  if (g.out_h() <= 0 || g.out_w() <= 0) return "3x3 kernel larger than the padded input";
  Layout L{};
  int64_t xs = 0, ys = 0;
  if (!layout(g, &L, winograd_tile_block(g)) || !mul(&xs, {g.batch, g.channels, g.height, g.width}) ||
      !mul(&ys, {g.batch, g.out_channels, g.out_h(), g.out_w()}) ||
      winograd_workspace_floats(g, 1) < 0 || winograd_filter_cache_floats(g) < 0 ||
      winograd_wgrad_workspace_floats(g, 1) < 0)
    return "sizes overflow 64-bit integers";
  return nullptr;
}

int64_t winograd_tile_block(const WinogradGeom& g) {
  // V and M of one block take about 900 KB (24 tiles for C = K = 128 with F(4x4)). Measured on
  // the 128 -> 128 layers at 14..112 pixels, anything from 8 to 48 tiles is within noise: the
  // GEMMs stream U from L3 without losing speed and the transforms stay in L2.
  constexpr int64_t kTargetFloats = 224 * 1024;
  const int64_t a2 = g.alpha() * g.alpha();
  const int64_t per_tile = a2 * (g.c_pad() + g.k_pad());
  int64_t tb = per_tile > 0 ? kTargetFloats / per_tile : 8;
  tb = std::max<int64_t>(8, (tb + 4) / 8 * 8);
  const int64_t tiles = g.tiles();
  if (tiles > 0) tb = std::min(tb, (tiles + 7) / 8 * 8);
  return tb;
}

int winograd_choose_tile(const WinogradGeom& g) {
  // Work estimate per tile size: tiles x alpha^2 x (the GEMM row + its share of transforms).
  auto cost = [&](int m) {
    const int64_t t = ((g.out_h() + m - 1) / m) * ((g.out_w() + m - 1) / m);
    const int64_t a2 = (m + 2) * (m + 2);
    return static_cast<double>(t) * a2 *
           (static_cast<double>(g.c_pad()) * g.k_pad() + 8.0 * (g.c_pad() + g.k_pad()));
  };
  return cost(2) < cost(4) ? 2 : 4;
}

int64_t winograd_workspace_floats(const WinogradGeom& g, int threads) {
  Layout L{};
  int64_t slots = 0, total = 0;
  if (threads < 1 || !layout(g, &L, winograd_tile_block(g)) || !mul(&slots, {L.slot, threads}) ||
      !add(&total, {16, g.k_pad(), slots}))
    return -1;
  return total;
}

int64_t winograd_filter_cache_floats(const WinogradGeom& g) {
  Layout L{};
  int64_t total = 0;
  if (!layout(g, &L, winograd_tile_block(g)) || !add(&total, {kHeaderFloats, L.weights, 16, L.u})) return -1;
  return total;
}

const WinogradKernel& winograd_kernel(const WinogradGeom& g) {
  static const WinogradKernel rows[] = {
#ifdef CREMA_BUILD_AVX512
      {"winograd_avx512", Isa::avx512, supports_all, &avx512_impl::winograd_ops},
#endif
#ifdef CREMA_BUILD_AVX2
      {"winograd_avx2", Isa::avx2, supports_all, &avx2_impl::winograd_ops},
#endif
      {"winograd_scalar", Isa::scalar, supports_all, &scalar_impl::winograd_ops},
  };
  static constexpr KernelTable<WinogradGeom, const WinogradOps*> table(rows);
  return table.choose(g);
}

void winograd_forward(const float* x, const float* w, const float* bias, const WinogradGeom& g,
                      float* y, float* workspace, int64_t workspace_floats, float* filter_cache) {
  run(winograd_kernel(g).fn, x, w, false, bias, g, y, workspace, workspace_floats, filter_cache);
}

WinogradGeom winograd_backward_geom(const WinogradGeom& gf) {
  WinogradGeom gb = gf;
  gb.relu = false;
  gb.channels = gf.out_channels;
  gb.out_channels = gf.channels;
  gb.height = gf.out_h();
  gb.width = gf.out_w();
  gb.pad_h = 2 - gf.pad_h;
  gb.pad_w = 2 - gf.pad_w;
  return gb;
}

void winograd_backward_data(const float* dy, const float* w, const WinogradGeom& gf, float* dx,
                            float* workspace, int64_t workspace_floats, float* filter_cache) {
  const WinogradGeom gb = winograd_backward_geom(gf);
  run(winograd_kernel(gb).fn, dy, w, true, nullptr, gb, dx, workspace, workspace_floats,
      filter_cache);
}

// ---- the rows of the convolution tables (crema/conv.h) -----------------------------------------

WinogradGeom conv_winograd_geom(const ConvGeom& g, ConvPass pass) {
  WinogradGeom wg{};
  wg.batch = g.N;
  wg.channels = g.C;
  wg.height = g.H;
  wg.width = g.W;
  wg.out_channels = g.K;
  wg.pad_h = g.ph;
  wg.pad_w = g.pw;
  wg.tile = 4;
  wg.tile = winograd_choose_tile(pass == ConvPass::bwd_data ? winograd_backward_geom(wg) : wg);
  return wg;
}

// The geometry whose sizes the pass's kernels use (the backward pass runs a forward-form
// convolution of dy).
static WinogradGeom pass_geom(const ConvGeom& g, ConvPass pass) {
  const WinogradGeom wg = conv_winograd_geom(g, pass);
  return pass == ConvPass::bwd_data ? winograd_backward_geom(wg) : wg;
}

int64_t conv_winograd_workspace(const ConvGeom& g, ConvPass pass, bool all_threads) {
  const int threads = all_threads ? num_threads() : 1;
  if (pass == ConvPass::bwd_weights)
    return winograd_wgrad_workspace_floats(pass_geom(g, pass), threads);
  return winograd_workspace_floats(pass_geom(g, pass), threads);
}

int64_t conv_winograd_cache(const ConvGeom& g, ConvPass pass) {
  return pass == ConvPass::bwd_weights ? 0 : winograd_filter_cache_floats(pass_geom(g, pass));
}

namespace {

template <const WinogradOps* ops>
void conv_fwd_rows(const float* x, const float* w, const float* bias, float* y, const ConvGeom& g,
                   const ConvScratch& s, bool relu, float slope) {
  WinogradGeom wg = conv_winograd_geom(g, ConvPass::fwd);
  wg.relu = relu;
  wg.relu_slope = slope;
  run(ops, x, w, false, bias, wg, y, s.ws, s.ws_floats, s.cache);
}

template <const WinogradOps* ops>
void conv_bwd_weights_rows(const float* x, const float* dy, float* dw, float* db,
                           const ConvGeom& g, const ConvScratch& s) {
  run_wgrad(ops, x, dy, pass_geom(g, ConvPass::bwd_weights), dw, db, s.ws, s.ws_floats);
}

template <const WinogradOps* ops>
void conv_bwd_data_rows(const float* dy, const float* w, float* dx, const ConvGeom& g,
                        const ConvScratch& s) {
  const WinogradGeom gb = pass_geom(g, ConvPass::bwd_data);
  run(ops, dy, w, true, nullptr, gb, dx, s.ws, s.ws_floats, s.cache);
}

}  // namespace

#define CREMA_CONV_WINOGRAD_DEFS(ns)                                                           \
  namespace ns {                                                                               \
  void conv_fwd_winograd(const float* x, const float* w, const float* bias, float* y,          \
                         const ConvGeom& g, const ConvScratch& s, bool relu, float slope) {    \
    conv_fwd_rows<&winograd_ops>(x, w, bias, y, g, s, relu, slope);                            \
  }                                                                                            \
  void conv_bwd_data_winograd(const float* dy, const float* w, float* dx, const ConvGeom& g,   \
                              const ConvScratch& s) {                                          \
    conv_bwd_data_rows<&winograd_ops>(dy, w, dx, g, s);                                        \
  }                                                                                            \
  void conv_bwd_weights_winograd(const float* x, const float* dy, float* dw, float* db,        \
                                 const ConvGeom& g, const ConvScratch& s) {                    \
    conv_bwd_weights_rows<&winograd_ops>(x, dy, dw, db, g, s);                                 \
  }                                                                                            \
  }
CREMA_CONV_WINOGRAD_DEFS(scalar_impl)
#ifdef CREMA_BUILD_AVX2
CREMA_CONV_WINOGRAD_DEFS(avx2_impl)
#endif
#ifdef CREMA_BUILD_AVX512
CREMA_CONV_WINOGRAD_DEFS(avx512_impl)
#endif
#ifdef CREMA_BUILD_AVX512_BF16
CREMA_CONV_WINOGRAD_DEFS(avx512_bf16_impl)  // the rows of the bf16 tables (crema/bf16.h)
#endif
#undef CREMA_CONV_WINOGRAD_DEFS


bool winograd_matrices(int m, float* at, float* g, float* bt) {
  using namespace scalar_impl;
  if (m == 4) {
    std::memcpy(at, kAT4, sizeof(kAT4));
    std::memcpy(g, kG4, sizeof(kG4));
    std::memcpy(bt, kBT4, sizeof(kBT4));
    return true;
  }
  if (m == 2) {
    std::memcpy(at, kAT2, sizeof(kAT2));
    std::memcpy(g, kG2, sizeof(kG2));
    std::memcpy(bt, kBT2, sizeof(kBT2));
    return true;
  }
  return false;
}

}  // namespace crema
