// Private to the Winograd kernels: the ISA-independent body of F(m x m, 3 x 3), written against a
// vector type of 16 floats. Its includers (winograd_common.cpp for the scalar build,
// winograd_vec.isa.cpp, compiled once per vector ISA, and the bf16-operand unit
// kernels/src/bf16/winograd_bf16_avx512bf16.cpp) include <cstring>, <algorithm> and
// crema/winograd.h, define CREMA_WINOGRAD_NS (their namespace) and, inside
// crema::CREMA_WINOGRAD_NS, a struct Ops:
//
//   using V = ...;                              16 floats (one channel block)
//   static V load(const float*), zero();  static void store(float*, V);
//   static V add(V, V), sub(V, V), neg(V), mul(V, float), fmadd(V x, float c, V acc) (acc + c x)
//   static V relu(V, float slope)               max(v, 0) + slope * min(v, 0)
//   static constexpr int panel;                 GEMM panel width (16 or 32)
//   static void gemm(a, lda, u, cpad, kpad, c, ldc, rows)
//        c[rows x kpad] = a[rows x cpad] . U, U packed in panels (see winograd.h)
//   static constexpr bool fast_pack, fast_store; and, when true, pack_row / store_outputs4
//   static constexpr bool bf16_operands;   false: V and U are float32 as laid out below; true:
//        the GEMM reads them as bf16 (V rows of Cpad bf16, U in channel pairs), and Ops adds
//        store_bf16(uint16_t* p, V) and store_u_bf16(plane, cpad, kp0, width, c, koff, V)
//
// and then includes this file. Everything here is in an unnamed namespace inside the ISA's
// namespace, so code compiled with different -m flags is never merged by the linker.
#ifndef CREMA_WINOGRAD_NS
#error "define CREMA_WINOGRAD_NS before including winograd_impl.h"
#endif

namespace crema {
namespace CREMA_WINOGRAD_NS {
namespace {

// The matrices (see engine/reference/winograd.py for their derivation; the tests compare them).
// F(4x4, 3x3), points 0, 1, -1, 1/2, -2, inf.
constexpr float kAT4[4][6] = {{1.f, 1.f, 1.f, 1.f, 1.f, 0.f},
                              {0.f, 1.f, -1.f, 1.f / 2, -2.f, 0.f},
                              {0.f, 1.f, 1.f, 1.f / 4, 4.f, 0.f},
                              {0.f, 1.f, -1.f, 1.f / 8, -8.f, 1.f}};
constexpr float kG4[6][3] = {{1.f / 2, 0.f, 0.f},
                             {-1.f / 6, -1.f / 6, -1.f / 6},
                             {-1.f / 6, 1.f / 6, -1.f / 6},
                             {16.f / 15, 8.f / 15, 4.f / 15},
                             {1.f / 30, -1.f / 15, 2.f / 15},
                             {0.f, 0.f, 1.f / 2}};
constexpr float kBT4[6][6] = {{2.f, -3.f, -4.f, 3.f, 2.f, 0.f},
                              {0.f, 2.f, -1.f, -5.f, -2.f, 0.f},
                              {0.f, 2.f, -5.f, 1.f, 2.f, 0.f},
                              {0.f, 2.f, 1.f, -2.f, -1.f, 0.f},
                              {0.f, 1.f, -2.f, -1.f, 2.f, 0.f},
                              {0.f, 2.f, -3.f, -4.f, 3.f, 2.f}};
// F(2x2, 3x3), points 0, 1, -1, inf.
constexpr float kAT2[2][4] = {{1.f, 1.f, 1.f, 0.f}, {0.f, 1.f, -1.f, 1.f}};
constexpr float kG2[4][3] = {
    {1.f, 0.f, 0.f}, {1.f / 2, 1.f / 2, 1.f / 2}, {-1.f / 2, 1.f / 2, -1.f / 2}, {0.f, 0.f, -1.f}};
constexpr float kBT2[4][4] = {
    {1.f, 0.f, -1.f, 0.f}, {0.f, 1.f, 1.f, 0.f}, {0.f, 1.f, -1.f, 0.f}, {0.f, 1.f, 0.f, -1.f}};

template <int M>
struct Mats;
template <>
struct Mats<4> {
  static constexpr const float (&at)[4][6] = kAT4;
  static constexpr const float (&g)[6][3] = kG4;
  static constexpr const float (&bt)[6][6] = kBT4;
};
template <>
struct Mats<2> {
  static constexpr const float (&at)[2][4] = kAT2;
  static constexpr const float (&g)[4][3] = kG2;
  static constexpr const float (&bt)[4][4] = kBT2;
};

using V = Ops::V;

// out[r] = sum_c coef(r, c) in[c]. The loops unroll completely and the coefficients are
// compile-time constants, so zero terms vanish and +-1 become adds/subtracts.
template <int R, int N, class Coef>
inline __attribute__((always_inline)) void combine(const Coef& coef, const V* in, V* out) {
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    V acc = Ops::zero();
    bool have = false;
#pragma GCC unroll 8
    for (int c = 0; c < N; ++c) {
      const float k = coef(r, c);
      if (k == 0.f) continue;
      if (!have) {
        acc = k == 1.f ? in[c] : (k == -1.f ? Ops::neg(in[c]) : Ops::mul(in[c], k));
        have = true;
      } else if (k == 1.f) {
        acc = Ops::add(acc, in[c]);
      } else if (k == -1.f) {
        acc = Ops::sub(acc, in[c]);
      } else {
        acc = Ops::fmadd(in[c], k, acc);
      }
    }
    out[r] = have ? acc : Ops::zero();
  }
}

// out = mat . in
template <int R, int N>
inline __attribute__((always_inline)) void apply(const float (&mat)[R][N], const V* in, V* out) {
  combine<R, N>([&](int r, int c) { return mat[r][c]; }, in, out);
}

// out = mat^T . in (the weight gradient's transforms are the transposes of the forward's)
template <int R, int N>
inline __attribute__((always_inline)) void apply_t(const float (&mat)[N][R], const V* in,
                                                   V* out) {
  combine<R, N>([&](int r, int c) { return mat[c][r]; }, in, out);
}

// A software prefetch GCC cannot drop: it deletes loops whose only work is __builtin_prefetch.
inline void prefetch(const void* p) {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 0, 3);
#endif
}

struct TileCoord {
  int64_t n, ty, tx;
};
inline TileCoord tile_coord(const WinogradGeom& g, int64_t t) {
  const int64_t per_img = g.tiles_h() * g.tiles_w();
  const int64_t n = t / per_img, r = t - n * per_img;
  return {n, r / g.tiles_w(), r % g.tiles_w()};
}

// ---- operand stores: float32, or bf16 where the Ops' GEMM multiplies bf16 ---------------------
// U of one position (plane), input channel c, 16 output channels at column koff of the panel
// that starts at output channel kp0 and is `width` columns wide.
// (Templates so that the branch not taken is never instantiated.)
template <class O = Ops>
inline void store_u(float* plane, int64_t cpad, int64_t kp0, int64_t width, int64_t c,
                    int64_t koff, V v) {
  if constexpr (O::bf16_operands)
    O::store_u_bf16(plane, cpad, kp0, width, c, koff, v);
  else
    O::store(plane + kp0 * cpad + c * width + koff, v);
}

// V of one position (plane): 16 channels at element `offset` (tile * Cpad + channel).
template <class O = Ops>
inline void store_v(float* plane, int64_t offset, V v) {
  if constexpr (O::bf16_operands)
    O::store_bf16(reinterpret_cast<uint16_t*>(plane) + offset, v);
  else
    O::store(plane + offset, v);
}

// The weight gradient's operands (V of tiles, E of tiles): tile t (block-relative), 16 channels
// from c0, rows of ld channels. float32: row t. bf16 (the GEMM reduces over tiles, so tiles pair
// up): 32-bit word (t / 2, c) holds bf16(tile t even) | bf16(tile t odd) << 16.
template <class O = Ops>
inline void store_wgrad_operand(float* plane, int64_t t, int64_t c0, int64_t ld, V v) {
  if constexpr (O::bf16_operands)
    O::store_bf16_halves(reinterpret_cast<uint32_t*>(plane) + (t / 2) * ld + c0, (t & 1) != 0, v);
  else
    O::store(plane + t * ld + c0, v);
}

// ---- filter transform ------------------------------------------------------------------------
template <int M>
void filter_transform_t(const float* w, const WinogradGeom& g, bool flip, int panel, float* u,
                        int64_t c_begin, int64_t c_end) {
  constexpr int A = M + 2;
  const int64_t K = g.out_channels, C = g.channels, cpad = g.c_pad(), kpad = g.k_pad();
  alignas(64) float buf[9][16];
  for (int64_t c = c_begin; c < c_end; ++c) {
    for (int64_t k0 = 0; k0 < kpad; k0 += 16) {
      for (int kk = 0; kk < 16; ++kk) {
        const int64_t k = k0 + kk;
        const bool ok = k < K && c < C;
        for (int i = 0; i < 3; ++i)
          for (int l = 0; l < 3; ++l) {
            float v = 0.f;
            if (ok)
              v = flip ? w[((c * K + k) * 3 + (2 - i)) * 3 + (2 - l)]
                       : w[((k * C + c) * 3 + i) * 3 + l];
            buf[i * 3 + l][kk] = v;
          }
      }
      V t[A][3];
      for (int l = 0; l < 3; ++l) {
        V col[3] = {Ops::load(buf[l]), Ops::load(buf[3 + l]), Ops::load(buf[6 + l])};
        V o[A];
        apply(Mats<M>::g, col, o);
        for (int a = 0; a < A; ++a) t[a][l] = o[a];
      }
      const int64_t kp0 = k0 / panel * panel;
      const int64_t width = std::min<int64_t>(panel, kpad - kp0);
      for (int a = 0; a < A; ++a) {
        V o[A];
        apply(Mats<M>::g, t[a], o);
        for (int b = 0; b < A; ++b)
          store_u(u + (a * A + b) * cpad * kpad, cpad, kp0, width, c, k0 - kp0, o[b]);
      }
    }
  }
}

void filter_transform_entry(const float* w, const WinogradGeom& g, bool flip, int panel,
                            float* u, int64_t c_begin, int64_t c_end) {
  if (g.tile == 4)
    filter_transform_t<4>(w, g, flip, panel, u, c_begin, c_end);
  else
    filter_transform_t<2>(w, g, flip, panel, u, c_begin, c_end);
}

// ---- input packing: NCHW -> zero-padded, 16-channel blocks -------------------------------------
// src: x[n][c0][iy][ix] (channels c0 .. c0 + c_valid - 1 follow at `plane` floats),
// dst: width vectors of 16 channels (channels >= c_valid are zero).
inline void generic_pack_row(const float* src, int64_t plane, int c_valid, int64_t width,
                             float* dst) {
  for (int64_t x = 0; x < width; ++x)
    for (int c = 0; c < 16; ++c) dst[x * 16 + c] = c < c_valid ? src[c * plane + x] : 0.f;
}

// The alpha input rows and M*run + 2 columns under `run` tiles of tile row (n, ty) starting at
// tile column tx, every channel block: pack[cb][r][j][16] with row pitch `pitch` columns and
// alpha rows per block. Rows < alpha packs only the first Rows of them (the weight gradient's
// output gradient tiles are M rows high).
template <int M, int Rows = M + 2>
void pack_run(const float* x, const WinogradGeom& g, int64_t n, int64_t ty, int64_t tx,
              int64_t run, int64_t pitch, float* pack) {
  constexpr int A = M + 2;
  const int64_t C = g.channels, H = g.height, W = g.width, cbn = g.c_pad() / 16;
  const int64_t iy0 = M * ty - g.pad_h, ix0 = M * tx - g.pad_w, sw = M * run + 2;
  const int64_t xa = std::max<int64_t>(0, ix0), xb = std::min<int64_t>(W, ix0 + sw);
  const int64_t ya = std::max<int64_t>(0, iy0), yb = std::min<int64_t>(H, iy0 + Rows);
  // x is read in short row pieces (C x alpha of them, a few cache lines each) that the hardware
  // prefetchers do not foresee; without help the packing waits on memory latency. Each channel
  // block therefore requests the block `kAhead` ahead before packing its own.
  constexpr int64_t kAhead = 2;
  auto prefetch_block = [&](int64_t cb) {
    if (cb >= cbn || xa >= xb) return;
    const int64_t c_end = std::min<int64_t>(C, cb * 16 + 16);
    for (int64_t c = cb * 16; c < c_end; ++c)
      for (int64_t iy = ya; iy < yb; ++iy) {
        const char* row = reinterpret_cast<const char*>(x + ((n * C + c) * H + iy) * W);
        const char* end = row + xb * sizeof(float);
        for (const char* p = row + xa * sizeof(float); p < end; p += 64) prefetch(p);
        prefetch(end - 1);
      }
  };
  for (int64_t cb = 0; cb < kAhead; ++cb) prefetch_block(cb);
  for (int64_t cb = 0; cb < cbn; ++cb) {
    prefetch_block(cb + kAhead);
    const int c_valid = static_cast<int>(std::min<int64_t>(16, C - cb * 16));
    const float* src = x + (n * C + cb * 16) * H * W;
    for (int r = 0; r < Rows; ++r) {
      float* dst = pack + (cb * A + r) * pitch * 16;
      const int64_t iy = iy0 + r;
      if (iy < 0 || iy >= H || xa >= xb) {
        std::memset(dst, 0, sizeof(float) * sw * 16);
        continue;
      }
      std::memset(dst, 0, sizeof(float) * (xa - ix0) * 16);
      std::memset(dst + (xb - ix0) * 16, 0, sizeof(float) * (ix0 + sw - xb) * 16);
      if constexpr (Ops::fast_pack)
        Ops::pack_row(src + iy * W + xa, H * W, c_valid, xb - xa, dst + (xa - ix0) * 16);
      else
        generic_pack_row(src + iy * W + xa, H * W, c_valid, xb - xa, dst + (xa - ix0) * 16);
    }
  }
}

// ---- input transform: V[xi][tile][c] = (B^T d B)[xi] ------------------------------------------
// store(position, value) writes the tile's V at each of the alpha^2 positions.
template <int M, class Store>
inline __attribute__((always_inline)) void input_tile(const float* src, int64_t row,
                                                      const Store& store) {
  constexpr int A = M + 2;
  V t[A][A];
  for (int j = 0; j < A; ++j) {
    V col[A], o[A];
    for (int i = 0; i < A; ++i) col[i] = Ops::load(src + i * row + j * 16);
    apply(Mats<M>::bt, col, o);
    for (int a = 0; a < A; ++a) t[a][j] = o[a];
  }
  for (int a = 0; a < A; ++a) {
    V o[A];
    apply(Mats<M>::bt, t[a], o);
    for (int b = 0; b < A; ++b) store(a * A + b, o[b]);
  }
}

// Tiles [t0, t0 + count) of g run by run (consecutive tiles of one segment of a tile row): the
// segment's Rows rows of src (sized by gs) are packed into pack unless *pack_tag says they are
// there, then body(i, col, run) handles block tiles i .. i + run - 1, the first at packed
// column M * col.
template <int M, int Rows, class Body>
inline void for_each_packed_run(const float* src, const WinogradGeom& gs, const WinogradGeom& g,
                                int64_t t0, int64_t count, float* pack, int64_t* pack_tag,
                                const Body& body) {
  const int64_t tw = g.tiles_w();
  const int64_t seg = winograd_pack_tiles(g), nseg = (tw + seg - 1) / seg;
  for (int64_t i = 0; i < count;) {
    const TileCoord tc = tile_coord(g, t0 + i);
    const int64_t sx0 = tc.tx / seg * seg;
    const int64_t run = std::min(count - i, std::min(sx0 + seg, tw) - tc.tx);
    const int64_t tag = (tc.n * g.tiles_h() + tc.ty) * nseg + tc.tx / seg;
    if (*pack_tag != tag) {
      pack_run<M, Rows>(src, gs, tc.n, tc.ty, sx0, std::min(seg, tw - sx0),
                        winograd_pack_pitch(g), pack);
      *pack_tag = tag;
    }
    body(i, tc.tx - sx0, run);
    i += run;
  }
}

// wgrad: V in the weight gradient's operand layout (store_wgrad_operand) instead of the forward's.
template <int M, bool wgrad = false>
void input_transform(const float* x, const WinogradGeom& g, int64_t t0, int64_t count,
                     int64_t tb, const WinogradSlot& s) {
  constexpr int A = M + 2;
  const int64_t cpad = g.c_pad(), cbn = cpad / 16;
  const int64_t pitch = winograd_pack_pitch(g), vs = winograd_v_stride(g, tb);
  for_each_packed_run<M, A>(x, g, g, t0, count, s.pack, s.pack_tag,
                            [&](int64_t i, int64_t col, int64_t run) {
    for (int64_t q = 0; q < run; ++q)
      for (int64_t cb = 0; cb < cbn; ++cb) {
        const float* src = s.pack + (cb * A * pitch + M * (col + q)) * 16;
        const int64_t t = i + q;
        if constexpr (wgrad)
          input_tile<M>(src, pitch * 16, [&](int p, V v) {
            store_wgrad_operand(s.v + p * vs, t, cb * 16, cpad, v);
          });
        else
          input_tile<M>(src, pitch * 16, [&](int p, V v) {
            store_v(s.v + p * vs, t * cpad + cb * 16, v);
          });
      }
  });
}

// ---- output transform: y = A^T M A + bias, clipped, into NCHW --------------------------------
// y[M*M] holds output pixel (r, c) at r*M + c, lanes = 16 output channels. dst = &y[n][k0][oy][ox].
template <int M>
inline void generic_store_outputs(const V* y, float* dst, int64_t plane, int64_t ldq, int rows,
                                  int cols, int kv) {
  alignas(64) float buf[M * M][16];
  for (int p = 0; p < M * M; ++p) Ops::store(buf[p], y[p]);
  for (int kk = 0; kk < kv; ++kk) {
    float* yk = dst + kk * plane;
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) yk[r * ldq + c] = buf[r * M + c][kk];
  }
}

template <int M>
void output_transform(const float* m, const float* bias_pad, const WinogradGeom& g, int64_t t0,
                      int64_t count, int64_t tb, float* y) {
  constexpr int A = M + 2;
  const int64_t K = g.out_channels, kpad = g.k_pad(), P = g.out_h(), Q = g.out_w();
  const int64_t xs = winograd_m_stride(g, tb);
  // Output channels outer, tiles inner: the 16 channels x M rows of y that neighbouring tiles of
  // a tile row share stay in L1 until they are complete cache lines.
  for (int64_t k0 = 0; k0 < kpad; k0 += 16) {
    const V bv = Ops::load(bias_pad + k0);
    const bool relu = g.relu;
    const float slope = g.relu_slope;
    const int kv = static_cast<int>(std::min<int64_t>(16, K - k0));
    for (int64_t i = 0; i < count; ++i) {
      const TileCoord tc = tile_coord(g, t0 + i);
      const int64_t oy = M * tc.ty, ox = M * tc.tx;
      const int rows = static_cast<int>(std::min<int64_t>(M, P - oy));
      const int cols = static_cast<int>(std::min<int64_t>(M, Q - ox));
      const float* src = m + i * kpad + k0;
      V s[M][A];
      for (int b = 0; b < A; ++b) {
        V col[A], o[M];
        for (int a = 0; a < A; ++a) col[a] = Ops::load(src + (a * A + b) * xs);
        apply(Mats<M>::at, col, o);
        for (int r = 0; r < M; ++r) s[r][b] = o[r];
      }
      V out[M * M];
      for (int r = 0; r < M; ++r) {
        V o[M];
        apply(Mats<M>::at, s[r], o);
        for (int c = 0; c < M; ++c) out[r * M + c] = Ops::add(o[c], bv);
      }
      if (relu)
        for (int p = 0; p < M * M; ++p) out[p] = Ops::relu(out[p], slope);
      float* dst = y + ((tc.n * K + k0) * P + oy) * Q + ox;
      if constexpr (M == 4 && Ops::fast_store)
        Ops::store_outputs4(out, dst, P * Q, Q, rows, cols, kv);
      else
        generic_store_outputs<M>(out, dst, P * Q, Q, rows, cols, kv);
    }
  }
}

template <int M>
void block_t(const float* x, const float* u, const float* bias_pad, const WinogradGeom& g,
             int64_t t0, int64_t count, int64_t tb, const WinogradSlot& s, float* y) {
  constexpr int A = M + 2;
  const int64_t cpad = g.c_pad(), kpad = g.k_pad();
  const int64_t vs = winograd_v_stride(g, tb), ms = winograd_m_stride(g, tb);
  input_transform<M>(x, g, t0, count, tb, s);
  for (int xi = 0; xi < A * A; ++xi)
    Ops::gemm(s.v + xi * vs, cpad, u + xi * cpad * kpad, cpad, kpad, s.m + xi * ms, kpad, count);
  output_transform<M>(s.m, bias_pad, g, t0, count, tb, y);
}

void block_entry(const float* x, const float* u, const float* bias_pad, const WinogradGeom& g,
                 int64_t t0, int64_t count, int64_t tb, const WinogradSlot& s, float* y) {
  if (g.tile == 4)
    block_t<4>(x, u, bias_pad, g, t0, count, tb, s, y);
  else
    block_t<2>(x, u, bias_pad, g, t0, count, tb, s, y);
}

// ---- weight gradient --------------------------------------------------------------------------
// y_tile = A^T [U (.) V] A with U = G g G^T, so for one tile d(loss)/dU = (A dY A^T) (.) V and
// dg = G^T dU G: per position xi, dU[xi] (K x C) += E[xi]^T . V[xi] summed over every tile, with
// E = A dY A^T of the tile's M x M output gradient (zero beyond the output's edge). V is the
// forward's input transform; the sum over tiles runs in the slot's own dU (the driver adds the
// slots and applies G^T . G at the end: wgrad_finish). With bf16 operands V and E are rounded
// where they are stored, in tile pairs (store_wgrad_operand), since this GEMM reduces over tiles.

// E of tiles [t0, t0 + count) into s.m (alpha^2 planes of TB x Kpad) and the bias gradient's
// partial sums (the tiles partition the output) into s.db.
template <int M>
void grad_transform(const float* dy, const WinogradGeom& g, int64_t t0, int64_t count,
                    int64_t tb, const WinogradWgradSlot& s) {
  constexpr int A = M + 2;
  // dy as an "input" (K channels, P x Q, no padding), so pack_run packs its tile rows (M of
  // them: an output tile's).
  WinogradGeom gy = g;
  gy.channels = g.out_channels;
  gy.height = g.out_h();
  gy.width = g.out_w();
  gy.pad_h = gy.pad_w = 0;
  const int64_t kpad = g.k_pad(), kbn = kpad / 16;
  const int64_t pitch = winograd_pack_pitch(g), ms = winograd_m_stride(g, tb);
  for_each_packed_run<M, M>(dy, gy, g, t0, count, s.dy_pack, s.dy_tag,
                            [&](int64_t i, int64_t col, int64_t run) {
    for (int64_t q = 0; q < run; ++q)
      for (int64_t kb = 0; kb < kbn; ++kb) {
        const float* src = s.dy_pack + (kb * A * pitch + M * (col + q)) * 16;
        V sum = Ops::zero();
        V e[A][M];  // e[a][j] = (A d)[a][j]
        for (int j = 0; j < M; ++j) {
          V d[M], o[A];  // column j of the tile
          for (int r = 0; r < M; ++r) {
            d[r] = Ops::load(src + (r * pitch + j) * 16);
            sum = Ops::add(sum, d[r]);
          }
          apply_t(Mats<M>::at, d, o);
          for (int a = 0; a < A; ++a) e[a][j] = o[a];
        }
        for (int a = 0; a < A; ++a) {
          V o[A];
          apply_t(Mats<M>::at, e[a], o);
          for (int b = 0; b < A; ++b)
            store_wgrad_operand(s.fwd.m + (a * A + b) * ms, i + q, kb * 16, kpad, o[b]);
        }
        Ops::store(s.db + kb * 16, Ops::add(Ops::load(s.db + kb * 16), sum));
      }
  });
}

template <int M>
void wgrad_block_t(const float* x, const float* dy, const WinogradGeom& g, int64_t t0,
                   int64_t count, int64_t tb, const WinogradWgradSlot& s) {
  constexpr int A = M + 2;
  const int64_t cpad = g.c_pad(), kpad = g.k_pad();
  const int64_t vs = winograd_v_stride(g, tb), ms = winograd_m_stride(g, tb);
  input_transform<M, true>(x, g, t0, count, tb, s.fwd);
  grad_transform<M>(dy, g, t0, count, tb, s);
  if constexpr (Ops::bf16_operands) {
    // An odd count leaves the last pair's second tile unwritten: make it a zero tile.
    if (count & 1)
      for (int xi = 0; xi < A * A; ++xi) {
        for (int64_t c0 = 0; c0 < cpad; c0 += 16)
          store_wgrad_operand(s.fwd.v + xi * vs, count, c0, cpad, Ops::zero());
        for (int64_t k0 = 0; k0 < kpad; k0 += 16)
          store_wgrad_operand(s.fwd.m + xi * ms, count, k0, kpad, Ops::zero());
      }
  }
  for (int xi = 0; xi < A * A; ++xi)
    Ops::gemm_wgrad(s.fwd.m + xi * ms, kpad, s.fwd.v + xi * vs, cpad, s.du + xi * kpad * cpad,
                  count);
}

// dw[k][c] += G^T dU[k][c] G for output channels [k_begin, k_end), vectors over 16 channels.
template <int M>
void wgrad_finish_t(const float* du, const WinogradGeom& g, int64_t k_begin, int64_t k_end,
                    float* dw) {
  constexpr int A = M + 2;
  const int64_t C = g.channels, cpad = g.c_pad(), kpad = g.k_pad(), plane = kpad * cpad;
  alignas(64) float buf[9][16];
  for (int64_t k = k_begin; k < k_end; ++k)
    for (int64_t c0 = 0; c0 < cpad; c0 += 16) {
      V t[3][A];  // t[i][b] = (G^T dU)[i][b]
      for (int b = 0; b < A; ++b) {
        V col[A], o[3];
        for (int a = 0; a < A; ++a) col[a] = Ops::load(du + (a * A + b) * plane + k * cpad + c0);
        apply_t(Mats<M>::g, col, o);
        for (int i = 0; i < 3; ++i) t[i][b] = o[i];
      }
      for (int i = 0; i < 3; ++i) {
        V o[3];
        apply_t(Mats<M>::g, t[i], o);
        for (int j = 0; j < 3; ++j) Ops::store(buf[i * 3 + j], o[j]);
      }
      const int cv = static_cast<int>(std::min<int64_t>(16, C - c0));
      for (int cc = 0; cc < cv; ++cc) {
        float* d = dw + ((k * C + c0 + cc) * 3) * 3;
        for (int p = 0; p < 9; ++p) d[p] += buf[p][cc];
      }
    }
}

void wgrad_block_entry(const float* x, const float* dy, const WinogradGeom& g, int64_t t0,
                       int64_t count, int64_t tb, const WinogradWgradSlot& s) {
  if (g.tile == 4)
    wgrad_block_t<4>(x, dy, g, t0, count, tb, s);
  else
    wgrad_block_t<2>(x, dy, g, t0, count, tb, s);
}

void wgrad_finish_entry(const float* du, const WinogradGeom& g, int64_t k_begin, int64_t k_end,
                        float* dw) {
  if (g.tile == 4)
    wgrad_finish_t<4>(du, g, k_begin, k_end, dw);
  else
    wgrad_finish_t<2>(du, g, k_begin, k_end, dw);
}

}  // namespace

const WinogradOps winograd_ops = {Ops::panel,          Ops::bf16_operands, filter_transform_entry,
                                  block_entry,         wgrad_block_entry,  wgrad_finish_entry};

}  // namespace CREMA_WINOGRAD_NS
}  // namespace crema
