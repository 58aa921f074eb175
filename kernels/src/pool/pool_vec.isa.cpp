// Pooling written once against simd::Vec (crema/simd.h) and compiled per vector ISA (this file
// is a *.isa.cpp: CMakeLists.txt builds it once per ISA with that ISA's flags). The portable
// kernels in pool.cpp are the truth these must match bit for bit.
//
// One plane at a time (planes spread over threads), L adjacent outputs of a row per vector:
// lane l holds output px0 + l, whose window column for kernel offset j is
// c = (px0 + l) * stride_w - pad_w + j. Columns outside [0, W) are masked off, and masked
// loads/stores/gathers never touch those addresses. The input columns of the lanes are one
// load for stride 1, two loads and an even-lane shuffle for stride 2, a gather otherwise
// (unmasked where the whole block is inside the row). Each lane walks its window in row-major
// order, so MAX keeps the first maximum and AVE sums in the reference's order.
// No std:: containers here: their inline code would be compiled with this unit's ISA flags and
// could be picked by the linker for the portable files too.
#include <algorithm>
#include <cfloat>
#include <cstring>

#include "crema/pool.h"
#include "crema/simd.h"
#include "crema/threads.h"

namespace crema {
namespace CREMA_ISA_NS {
namespace {

using V = simd::Vec<Isa::CREMA_UNIT_ISA>;
using reg = V::reg;
using ireg = V::ireg;
using mask = V::mask;
constexpr int L = V::L;

struct Cols {
  ireg lane_stride;  // l * stride_w
  ireg width;
  int64_t W, sw;
};

Cols make_cols(const PoolGeom& g) {
  return {V::imullo(V::iramp(), V::iset1(g.stride_w)), V::iset1(g.width), g.width, g.stride_w};
}

// row[c] for the lanes' columns c (first column c0, lane step sw), 0 where !valid.
inline reg load_cols(const Cols& k, const float* row, int64_t c0, ireg c, mask valid) {
  if (k.sw == 1) return V::load_m(row + c0, valid);
  if (k.sw == 2) {
    // The 2L consecutive columns c0 .. c0 + 2L - 1 (in-image ones only), then the even ones.
    const ireg lo = V::iadd(V::iset1(c0), V::iramp());
    const mask in_lo = V::inside(lo, k.width);
    const mask in_hi = V::inside(V::iadd(lo, V::iset1(L)), k.width);
    const reg v = V::even(V::load_m(row + c0, in_lo), V::load_m(row + c0 + L, in_hi));
    return V::select(valid, v, V::zero());
  }
  return V::gather(row, c, valid);
}

// The same for a block whose every lane column (and every column the loads span) is inside.
inline reg load_cols_inside(const Cols& k, const float* row, int64_t c0, ireg c) {
  if (k.sw == 1) return V::loadu(row + c0);
  if (k.sw == 2) return V::even(V::loadu(row + c0), V::loadu(row + c0 + L));
  return V::gather_all(row, c);
}

// Whether the block of lanes starting at column c0 reads only inside the row, for every kernel
// offset: then no lane needs a mask.
inline bool block_inside(const Cols& k, const PoolGeom& g, int64_t c0) {
  const int64_t span = k.sw == 2 ? 2 * L : (L - 1) * k.sw + 1;
  return c0 >= 0 && c0 + g.kernel_w - 1 + span <= k.W;
}

// Divisor of each lane's window (padding counts), as float; 0 for an empty window.
inline reg ave_divisor(const PoolGeom& g, ireg cbase, int64_t hsize) {
  const ireg wend = V::imin(V::iadd(cbase, V::iset1(g.kernel_w)), V::iset1(g.width + g.pad_w));
  const ireg wsize = V::imax(V::isub(wend, cbase), V::iset1(0));
  return V::to_float(V::imullo(wsize, V::iset1(hsize)));
}

// sum / size where size > 0, else 0.
inline reg divide_nonempty(reg sum, reg size) {
  return V::select(V::gt(size, V::zero()), V::div(sum, V::max(size, V::set1(1.f))), V::zero());
}

// Scratch memory with internal linkage (see the note at the top).
struct Scratch {
  explicit Scratch(size_t n) : p(new float[n]) {}
  ~Scratch() { delete[] p; }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* p;
};

// Rows are streamed one at a time: the running maximum and argmax of an output row live in y
// and the mask (or `args`) and each input row is read start to end. (Walking all window rows
// per block of outputs reads kernel_h rows in an interleaved pattern that the prefetchers of
// some cores follow poorly: 3-4x slower on 224-wide planes here.) Each lane still sees its
// window in row-major order.
void max_plane(const Cols& k, const float* xp, const PoolGeom& g, float* yp, int32_t* mp,
               int32_t* args) {
  const int64_t H = g.height, W = g.width, OH = g.pooled_h, OW = g.pooled_w;
  const reg lowest = V::set1(-FLT_MAX);
  const ireg none = V::iset1(-1);
  for (int64_t py = 0; py < OH; ++py) {
    int64_t hs = py * g.stride_h - g.pad_h;
    const int64_t he = std::min(hs + g.kernel_h, H);
    hs = std::max<int64_t>(hs, 0);
    float* yrow = yp + py * OW;
    int32_t* arow = mp ? mp + py * OW : args;
    if (hs >= he) {
      for (int64_t px0 = 0; px0 < OW; px0 += L) {
        V::store_m(yrow + px0, V::tail(OW - px0), lowest);
        V::istore_m(arow + px0, V::tail(OW - px0), none);
      }
      continue;
    }
    for (int64_t h = hs; h < he; ++h) {
      const float* row = xp + h * W;
      const ireg hw = V::iset1(h * W);
      for (int64_t px0 = 0; px0 < OW; px0 += L) {
        const mask st = V::tail(OW - px0);
        const int64_t c0 = px0 * g.stride_w - g.pad_w;
        const ireg cbase = V::iadd(V::iset1(c0), k.lane_stride);
        reg best = h == hs ? lowest : V::load_m(yrow + px0, st);
        ireg arg = h == hs ? none : V::iload_m(arow + px0, st);
        const bool all_inside = block_inside(k, g, c0);
        for (int64_t j = 0; j < g.kernel_w; ++j) {
          const ireg c = V::iadd(cbase, V::iset1(j));
          mask better;
          reg v;
          if (all_inside) {
            v = load_cols_inside(k, row, c0 + j, c);
            better = V::gt(v, best);
          } else {
            const mask valid = V::inside(c, k.width);
            v = load_cols(k, row, c0 + j, c, valid);
            better = V::m_and(valid, V::gt(v, best));
          }
          best = V::select(better, v, best);
          arg = V::iselect(better, V::iadd(c, hw), arg);
        }
        V::store_m(yrow + px0, st, best);
        V::istore_m(arow + px0, st, arg);
      }
    }
  }
}

// Streams the rows like max_plane: y holds the running float32 sums (the same values a register
// would hold) until the last window row, which divides. Masked-off lanes load +0, and adding +0
// leaves a sum that started at +0 unchanged (it is never -0), so the sums match the reference's.
void ave_plane(const Cols& k, const float* xp, const PoolGeom& g, float* yp) {
  const int64_t H = g.height, W = g.width, OH = g.pooled_h, OW = g.pooled_w;
  for (int64_t py = 0; py < OH; ++py) {
    int64_t hs = py * g.stride_h - g.pad_h;
    int64_t he = std::min(hs + g.kernel_h, H + g.pad_h);
    const int64_t hsize = he - hs;
    hs = std::max<int64_t>(hs, 0);
    he = std::min(he, H);
    float* yrow = yp + py * OW;
    if (hs >= he) {  // the window rows lie in the padding (or past it): 0, like an empty sum
      std::memset(yrow, 0, sizeof(float) * static_cast<size_t>(OW));
      continue;
    }
    for (int64_t h = hs; h < he; ++h) {
      const float* row = xp + h * W;
      for (int64_t px0 = 0; px0 < OW; px0 += L) {
        const mask st = V::tail(OW - px0);
        const int64_t c0 = px0 * g.stride_w - g.pad_w;
        const ireg cbase = V::iadd(V::iset1(c0), k.lane_stride);
        reg sum = h == hs ? V::zero() : V::load_m(yrow + px0, st);
        const bool all_inside = block_inside(k, g, c0);
        for (int64_t j = 0; j < g.kernel_w; ++j) {
          const ireg c = V::iadd(cbase, V::iset1(j));
          sum = V::add(sum, all_inside ? load_cols_inside(k, row, c0 + j, c)
                                       : load_cols(k, row, c0 + j, c, V::inside(c, k.width)));
        }
        if (h + 1 == he) sum = divide_nonempty(sum, ave_divisor(g, cbase, hsize));
        V::store_m(yrow + px0, st, sum);
      }
    }
  }
}

// AVE backward, gathered per input element instead of scattered per window: for each window
// row (py, h), input column w receives grad[px] for the windows px that hold it, in increasing
// order (PoolColumnWindows), so each element of dx is read and written once per (py, h) and
// gets its additions in the reference's order (py, then px).
// grad: scratch of pooled_w + 2L floats for one output row of dy / divisor (zero padded, so a
// block may read grad[base, base + 2L) whole).
void ave_bwd_plane(const Cols& k, const PoolColumnWindows& cw, const float* dyp,
                   const PoolGeom& g, float* dxp, float* grad) {
  const int64_t H = g.height, W = g.width, OH = g.pooled_h, OW = g.pooled_w;
  const int64_t most = cw.most();
  std::memset(dxp, 0, sizeof(float) * static_cast<size_t>(g.in_plane()));
  std::memset(grad, 0, sizeof(float) * static_cast<size_t>(OW + 2 * L));
  for (int64_t py = 0; py < OH; ++py) {
    int64_t hs = py * g.stride_h - g.pad_h;
    int64_t he = std::min(hs + g.kernel_h, H + g.pad_h);
    const int64_t hsize = he - hs;
    hs = std::max<int64_t>(hs, 0);
    he = std::min(he, H);
    if (hs >= he) continue;
    for (int64_t px0 = 0; px0 < OW; px0 += L) {
      const mask st = V::tail(OW - px0);
      const ireg cbase = V::iadd(V::iset1(px0 * g.stride_w - g.pad_w), k.lane_stride);
      // 0 for an empty window (it holds no column anyway)
      V::store_m(grad + px0, st, divide_nonempty(V::load_m(dyp + py * OW + px0, st),
                                                 ave_divisor(g, cbase, hsize)));
    }
    for (int64_t h = hs; h < he; ++h) {
      float* row = dxp + h * W;
      for (int64_t w0 = 0; w0 < W; w0 += L) {
        const mask st = V::tail(W - w0);
        const ireg first = V::iloadu(cw.first() + w0);  // tables padded by 16 >= L entries
        const ireg count = V::iloadu(cw.count() + w0);
        reg acc = V::load_m(row + w0, st);
        const int64_t base = cw.first()[w0];
        const int64_t last = cw.first()[std::min<int64_t>(w0 + L - 1, W - 1)];
        if (last + most - 1 - base < 2 * L) {
          // every window of the block lies in grad[base, base + 2L): two loads and permutes
          const reg g_lo = V::loadu(grad + base);
          const reg g_hi = V::loadu(grad + base + L);
          const ireg rel = V::isub(first, V::iset1(base));
          for (int64_t t = 0; t < most; ++t) {
            const ireg tv = V::iset1(t);
            const mask m = V::m_and(st, V::igt(count, tv));
            acc = V::select(m, V::add(acc, V::permute2(g_lo, V::iadd(rel, tv), g_hi)), acc);
          }
        } else {  // wide windows at stride 1: gather from the (cached) grad row
          for (int64_t t = 0; t < most; ++t) {
            const ireg tv = V::iset1(t);
            const mask m = V::m_and(st, V::igt(count, tv));
            acc = V::select(m, V::add(acc, V::gather(grad, V::iadd(first, tv), m)), acc);
          }
        }
        V::store_m(row + w0, st, acc);
      }
    }
  }
}

}  // namespace

void max_pool_fwd(const float* x, const PoolGeom& g, float* y, int32_t* mask) {
  const Cols k = make_cols(g);
  // Without a mask output the running argmax of a row needs a row of scratch per thread
  // (allocated here, outside the parallel region, so a failure raises instead of aborting).
  const int threads = num_threads();
  const int64_t row = mask ? 0 : g.pooled_w;
  Scratch args(static_cast<size_t>(row * threads));
  parallel_for_indexed(g.planes(), g.out_plane() * g.kernel_h * g.kernel_w, threads,
                       [&](int64_t p, int t) {
    max_plane(k, x + p * g.in_plane(), g, y + p * g.out_plane(),
              mask ? mask + p * g.out_plane() : nullptr,
              reinterpret_cast<int32_t*>(args.p + t * row));
  });
}

void ave_pool_fwd(const float* x, const PoolGeom& g, float* y) {
  const Cols k = make_cols(g);
  parallel_for(g.planes(), g.out_plane() * g.kernel_h * g.kernel_w, [&](int64_t p) {
    ave_plane(k, x + p * g.in_plane(), g, y + p * g.out_plane());
  });
}

void ave_pool_bwd(const float* dy, const PoolGeom& g, float* dx) {
  const Cols k = make_cols(g);
  const PoolColumnWindows cw(g);
  const int threads = num_threads();
  const int64_t row = g.pooled_w + 2 * L;
  Scratch grad(static_cast<size_t>(row * threads));
  parallel_for_indexed(g.planes(), g.in_plane() + g.out_plane() * g.kernel_h * g.kernel_w,
                       threads, [&](int64_t p, int t) {
    ave_bwd_plane(k, cw, dy + p * g.out_plane(), g, dx + p * g.in_plane(), grad.p + t * row);
  });
}

#if defined(__AVX512F__)
// Disjoint windows only (the table checks): each image element receives at most one gradient,
// so a gather-add-scatter of L argmaxes never has two lanes on one element. Masks outside
// [0, H*W) are skipped. AVX-512 only: AVX2 has no scatter, and lane-by-lane stores measured no
// faster than the scalar kernel (memory bound: 7.7 ms both for 8x64x112x112, 2x2 stride 2).
void max_pool_bwd_disjoint(const float* dy, const int32_t* mask, const PoolGeom& g, float* dx,
                           const float* relu_y, float relu_slope) {
  const int64_t in = g.in_plane(), out = g.out_plane();
  const reg slope = V::set1(relu_slope);
  parallel_for(g.planes(), in + out, [&](int64_t p) {
    float* dxp = dx + p * in;
    const float* dyp = dy + p * out;
    const float* yp = relu_y != nullptr ? relu_y + p * out : nullptr;
    const int32_t* mp = mask + p * out;
    std::memset(dxp, 0, sizeof(float) * static_cast<size_t>(in));
    const ireg limit = V::iset1(in);
    for (int64_t i = 0; i < out; i += L) {
      const auto st = V::tail(out - i);
      const ireg m = V::iload_m(mp + i, st);
      const auto valid = V::m_and(st, V::inside(m, limit));
      if (!V::any(valid)) continue;
      reg d = V::load_m(dyp + i, st);
      if (yp != nullptr)  // the ReLU's backward at the argmax (see pool.h)
        d = V::select(V::gt(V::load_m(yp + i, st), V::zero()), d, V::mul(slope, d));
      V::scatter(dxp, m, valid, V::add(V::gather(dxp, m, valid), d));
    }
  });
}
#endif

}  // namespace CREMA_ISA_NS
}  // namespace crema
