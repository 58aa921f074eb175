// Convolution through the SGEMM of this ISA (im2col / col2im), compiled per vector ISA like the
// direct kernels. Per group and chunk of nb images, with CRS = Cg*R*S and the chunk's columns
// J = nb*P*Q (image-major, then output pixel):
//   fwd:          col[CRS][J] = im2col(x);  yt[Kg][J] = W_g[Kg][CRS] * col;  y = yt + bias
//   bwd_data:     dyt[Kg][J] = dy;  col = W_g^T * dyt;  dx = col2im(col)
//   bwd_weights:  col = im2col(x);  dyt = dy;  dW_g[Kg][CRS] += dyt * col^T
// Every multiply-add is a real one: the direct kernels round channels up to whole vectors and
// the data gradient computes every tap over the flipped convolution's zero border, which for a
// large kernel on a small map (LeNet's conv2: 5x5 over 8x8, 2.25x the real taps) is most of the
// work. The rows' supports() rule (conv_gemm_preferred, conv_common.cpp) says where this wins.
// Threads: with at least two chunks per thread each thread takes whole chunks in its own slot of
// the workspace (one parallel region per call); else each op inside is threaded (the SGEMM
// shares its blocks out, im2col / col2im run over rows / planes).
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "crema/conv.h"
#include "crema/gemm.h"
#include "crema/simd.h"
#include "crema/threads.h"

namespace crema {
namespace CREMA_ISA_NS {
namespace {

using V = simd::Vec<Isa::CREMA_UNIT_ISA>;
constexpr int L = V::L;

// Columns per chunk: the im2col matrix stays near 1 MB (L2) where an image allows.
constexpr int64_t kColFloats = int64_t{1} << 18;

int64_t round16(int64_t a) { return (a + 15) / 16 * 16; }

struct GemmPlan {
  int64_t CRS, PQ, nb;
  int64_t cols() const { return nb * PQ; }
  int64_t col_floats() const { return round16(CRS * cols()); }
};

GemmPlan gemm_plan(const ConvGeom& g) {
  GemmPlan p{g.Cg() * g.R * g.S, g.P() * g.Q(), 1};
  p.nb = std::max<int64_t>(1, std::min<int64_t>(g.N, kColFloats / (p.CRS * p.PQ)));
  return p;
}

// Output columns q whose input column q*sw - pw + s*dw lies in [0, W): [lo, hi).
void valid_cols(const ConvGeom& g, int64_t s, int64_t Q, int64_t* lo, int64_t* hi) {
  const int64_t off = s * g.dw - g.pw;  // input column of q = 0
  *lo = off >= 0 ? 0 : std::min<int64_t>(Q, (-off + g.sw - 1) / g.sw);
  *hi = off >= g.W ? 0 : std::min<int64_t>(Q, (g.W - off + g.sw - 1) / g.sw);
  *hi = std::max(*hi, *lo);
}

}  // namespace

// crema/conv.h: one input plane of the adjoint of im2col from output rows [p0, p0 + rows).
// With unit column stride each vector of a dx row gathers its taps' col segments in a register
// and is stored once: adding the taps into dx in place would reload vectors just stored by
// overlapping masked stores, which the CPU cannot forward (a stall per tap).
void col2im_rows(const float* cols, int64_t J, const ConvGeom& g, int64_t p0, int64_t rows,
                 bool add, float* plane) {
  const int64_t Q = g.Q(), pend = p0 + rows;
  if (g.sw != 1) {
    if (!add) std::memset(plane, 0, sizeof(float) * g.H * g.W);
    for (int64_t r = 0; r < g.R; ++r)
      for (int64_t s = 0; s < g.S; ++s) {
        int64_t qlo, qhi;
        valid_cols(g, s, Q, &qlo, &qhi);
        const float* in = cols + (r * g.S + s) * J;
        for (int64_t p = p0; p < pend; ++p, in += Q) {
          const int64_t h = p * g.sh - g.ph + r * g.dh;
          if (h < 0 || h >= g.H) continue;
          const int64_t at = h * g.W + s * g.dw - g.pw;  // + q * sw: dx column of q
          for (int64_t q = qlo; q < qhi; ++q) plane[at + q * g.sw] += in[q];
        }
      }
    return;
  }
  // Adding: only the dx rows these output rows reach. Writing: every row (the rest are 0).
  const int64_t hlo = add ? std::max<int64_t>(0, p0 * g.sh - g.ph) : 0;
  const int64_t hhi =
      add ? std::min<int64_t>(g.H, (pend - 1) * g.sh - g.ph + (g.R - 1) * g.dh + 1) : g.H;
  for (int64_t h = hlo; h < hhi; ++h)
    for (int64_t w0 = 0; w0 < g.W; w0 += L) {
      const int64_t n = std::min<int64_t>(L, g.W - w0);
      float* out = plane + h * g.W + w0;
      V::reg acc = !add ? V::zero() : n == L ? V::loadu(out) : V::maskz_loadu(out, n);
      for (int64_t r = 0; r < g.R; ++r) {
        const int64_t t = h + g.ph - r * g.dh;  // p * sh
        if (t < 0 || t % g.sh != 0 || t / g.sh < p0 || t / g.sh >= pend) continue;
        const float* in = cols + r * g.S * J + (t / g.sh - p0) * Q;
        for (int64_t s = 0; s < g.S; ++s, in += J) {
          const int64_t q0 = w0 + g.pw - s * g.dw;  // the column of lane 0
          const int64_t jlo = std::max<int64_t>(0, -q0), jhi = std::min<int64_t>(n, Q - q0);
          if (jlo >= jhi) continue;
          if (jlo == 0 && jhi == L) {
            acc = V::add(acc, V::loadu(in + q0));
          } else {
            const auto m = V::inside(V::isub(V::iramp(), V::iset1(jlo)), V::iset1(jhi - jlo));
            acc = V::add(acc, V::load_m(in + q0, m));
          }
        }
      }
      if (n == L)
        V::storeu(out, acc);
      else
        V::mask_storeu(out, acc, n);
    }
}

namespace {

// col[c*RS + r*S + s][nl*PQ + p*Q + q] = x[n0 + nl][g*Cg + c][p*sh - ph + r*dh][q*sw - pw + s*dw]
// (0 outside the image), for the images of one chunk and group gi.
void im2col_chunk(const ConvGeom& g, const GemmPlan& pl, const float* x, int64_t n0, int64_t nb,
                  int64_t gi, float* col) {
  const int64_t P = g.P(), Q = g.Q(), RS = g.R * g.S, J = nb * pl.PQ;
  parallel_for(pl.CRS, J, [&](int64_t row) {
    const int64_t c = row / RS, r = (row % RS) / g.S, s = row % g.S;
    int64_t qlo, qhi;
    valid_cols(g, s, Q, &qlo, &qhi);
    const int64_t off = s * g.dw - g.pw;
    for (int64_t nl = 0; nl < nb; ++nl) {
      const float* plane = x + ((n0 + nl) * g.C + gi * g.Cg() + c) * g.H * g.W;
      float* out = col + row * J + nl * pl.PQ;
      for (int64_t p = 0; p < P; ++p, out += Q) {
        const int64_t h = p * g.sh - g.ph + r * g.dh;
        if (h < 0 || h >= g.H || qlo >= qhi) {
          std::memset(out, 0, sizeof(float) * Q);
          continue;
        }
        const float* src = plane + h * g.W + off;
        std::memset(out, 0, sizeof(float) * qlo);
        if (g.sw == 1) {
          std::memcpy(out + qlo, src + qlo, sizeof(float) * (qhi - qlo));
        } else {
          for (int64_t q = qlo; q < qhi; ++q) out[q] = src[q * g.sw];
        }
        std::memset(out + qhi, 0, sizeof(float) * (Q - qhi));
      }
    }
  });
}

// dx[n0 + nl][g*Cg + c] = sum over taps of col (the adjoint of im2col_chunk), plane by plane.
void col2im_chunk(const ConvGeom& g, const GemmPlan& pl, const float* col, int64_t n0,
                  int64_t nb, int64_t gi, float* dx) {
  const int64_t J = nb * pl.PQ, Cg = g.Cg();
  parallel_for(nb * Cg, g.R * g.S * pl.PQ, [&](int64_t item) {
    const int64_t nl = item / Cg, c = item % Cg;
    col2im_rows(col + c * g.R * g.S * J + nl * pl.PQ, J, g, 0, g.P(), false,
                dx + ((n0 + nl) * g.C + gi * Cg + c) * g.H * g.W);
  });
}

// t[k][nl*PQ + i] = a[n0 + nl][g*Kg + k][i] (the chunk's slice of an N x K x PQ tensor).
void gather_chunk(const ConvGeom& g, const GemmPlan& pl, const float* a, int64_t n0, int64_t nb,
                  int64_t gi, float* t) {
  const int64_t Kg = g.Kg(), J = nb * pl.PQ;
  parallel_for(Kg * nb, pl.PQ, [&](int64_t item) {
    const int64_t k = item / nb, nl = item % nb;
    std::memcpy(t + k * J + nl * pl.PQ, a + ((n0 + nl) * g.K + gi * Kg + k) * pl.PQ,
                sizeof(float) * pl.PQ);
  });
}

// One thread's scratch: the im2col matrix, the gathered dy / y chunk and (weight gradient) a
// private dW that is summed into dw at the end.
struct Slot {
  float *col, *stage, *dw;
};

int64_t slot_floats(const ConvGeom& g, const GemmPlan& pl) {
  return pl.col_floats() + round16(g.Kg() * pl.cols()) + round16(g.K * pl.CRS);
}

Slot slot_at(const ConvGeom& g, const GemmPlan& pl, float* ws, int64_t t) {
  float* base = ws + t * slot_floats(g, pl);
  return {base, base + pl.col_floats(), base + pl.col_floats() + round16(g.Kg() * pl.cols())};
}

// Runs chunk(n0, nb, slot, one) over the chunks of images. With enough chunks each thread takes
// whole chunks (one parallel region per call; the SGEMM and the copies inside run on that
// thread alone, `one` true); else the chunks run in turn, each op threaded inside. Threads are
// limited by the slots the workspace holds (ConvScratch::ws_floats).
int64_t chunk_slots(const ConvGeom& g, const GemmPlan& pl, const ConvScratch& s) {
  const int64_t chunks = (g.N + pl.nb - 1) / pl.nb;
  const int64_t slots = std::min<int64_t>(
      {static_cast<int64_t>(num_threads()), s.ws_floats / slot_floats(g, pl), chunks / 2});
  return slots >= 2 ? slots : 1;
}

template <class Chunk>
int64_t for_chunks(const ConvGeom& g, const GemmPlan& pl, const ConvScratch& s, Chunk&& chunk) {
  const int64_t chunks = (g.N + pl.nb - 1) / pl.nb;
  const int64_t slots = chunk_slots(g, pl, s);
  if (slots >= 2) {
    const int64_t work = g.Kg() * pl.CRS * pl.cols() * g.G;  // multiply-adds per chunk
    parallel_for_indexed(chunks, work, static_cast<int>(slots), [&](int64_t c, int t) {
      const int64_t n0 = c * pl.nb;
      chunk(n0, std::min(pl.nb, g.N - n0), slot_at(g, pl, s.ws, t), true);
    });
    return slots;
  }
  for (int64_t n0 = 0; n0 < g.N; n0 += pl.nb)
    chunk(n0, std::min(pl.nb, g.N - n0), slot_at(g, pl, s.ws, 0), false);
  return 1;
}

}  // namespace

int64_t ws_conv_gemm(const ConvGeom& g) {
  return slot_floats(g, gemm_plan(g)) * num_threads();
}
int64_t min_ws_conv_gemm(const ConvGeom& g) { return slot_floats(g, gemm_plan(g)); }

void conv_fwd_gemm(const float* x, const float* w, const float* bias, float* y,
                   const ConvGeom& g, const ConvScratch& s, bool relu, float slope) {
  const GemmPlan pl = gemm_plan(g);
  const int64_t Kg = g.Kg();
  for_chunks(g, pl, s, [&](int64_t n0, int64_t nb, const Slot& sl, bool) {
    const int64_t J = nb * pl.PQ;
    for (int64_t gi = 0; gi < g.G; ++gi) {
      im2col_chunk(g, pl, x, n0, nb, gi, sl.col);
      sgemm({false, false, Kg, J, pl.CRS, 1.f, w + gi * Kg * pl.CRS, pl.CRS, sl.col, J, 0.f,
             sl.stage, J});
      parallel_for(Kg * nb, pl.PQ, [&](int64_t item) {
        const int64_t k = item / nb, nl = item % nb;
        const float* src = sl.stage + k * J + nl * pl.PQ;
        float* dst = y + ((n0 + nl) * g.K + gi * Kg + k) * pl.PQ;
        const V::reg b = V::set1(bias ? bias[gi * Kg + k] : 0.f), sv = V::set1(slope);
        int64_t i = 0;
        for (; i + L <= pl.PQ; i += L) {
          const V::reg v = V::add(V::loadu(src + i), b);
          V::storeu(dst + i, relu ? V::relu(v, sv) : v);
        }
        if (i < pl.PQ) {
          const int64_t m = pl.PQ - i;
          const V::reg v = V::add(V::maskz_loadu(src + i, m), b);
          V::mask_storeu(dst + i, relu ? V::relu(v, sv) : v, m);
        }
      });
    }
  });
}

void conv_bwd_data_gemm(const float* dy, const float* w, float* dx, const ConvGeom& g,
                        const ConvScratch& s) {
  const GemmPlan pl = gemm_plan(g);
  const int64_t Kg = g.Kg();
  for_chunks(g, pl, s, [&](int64_t n0, int64_t nb, const Slot& sl, bool) {
    const int64_t J = nb * pl.PQ;
    for (int64_t gi = 0; gi < g.G; ++gi) {
      gather_chunk(g, pl, dy, n0, nb, gi, sl.stage);
      sgemm({true, false, pl.CRS, J, Kg, 1.f, w + gi * Kg * pl.CRS, pl.CRS, sl.stage, J, 0.f,
             sl.col, J});
      col2im_chunk(g, pl, sl.col, n0, nb, gi, dx);
    }
  });
}

void conv_bwd_weights_gemm(const float* x, const float* dy, float* dw, float* db,
                           const ConvGeom& g, const ConvScratch& s) {
  const GemmPlan pl = gemm_plan(g);
  const int64_t Kg = g.Kg(), wn = g.K * pl.CRS;
  // Threads sharing out chunks each sum into their slot's dW (zeroed first); one thread at a
  // time sums straight into dw.
  const int64_t slots = chunk_slots(g, pl, s);
  for (int64_t t = 0; t < slots && slots >= 2; ++t)
    std::memset(slot_at(g, pl, s.ws, t).dw, 0, sizeof(float) * wn);
  const int64_t used = for_chunks(g, pl, s, [&](int64_t n0, int64_t nb, const Slot& sl, bool one) {
    const int64_t J = nb * pl.PQ;
    float* acc = one ? sl.dw : dw;
    for (int64_t gi = 0; gi < g.G; ++gi) {
      im2col_chunk(g, pl, x, n0, nb, gi, sl.col);
      gather_chunk(g, pl, dy, n0, nb, gi, sl.stage);
      sgemm({false, true, Kg, pl.CRS, J, 1.f, sl.stage, J, sl.col, J, 1.f,
             acc + gi * Kg * pl.CRS, pl.CRS});
    }
  });
  for (int64_t t = 0; t < used && used >= 2; ++t) {
    const float* part = slot_at(g, pl, s.ws, t).dw;
    parallel_for(wn, 1, [&](int64_t i) { dw[i] += part[i]; });
  }
  if (db) {
    parallel_for(g.K, g.N * pl.PQ, [&](int64_t k) {
      V::reg acc = V::zero();
      for (int64_t n = 0; n < g.N; ++n) {
        const float* p = dy + (n * g.K + k) * pl.PQ;
        int64_t i = 0;
        for (; i + L <= pl.PQ; i += L) acc = V::add(acc, V::loadu(p + i));
        if (i < pl.PQ) acc = V::add(acc, V::maskz_loadu(p + i, pl.PQ - i));
      }
      db[k] += V::hsum(acc);
    });
  }
}

}  // namespace CREMA_ISA_NS
}  // namespace crema
