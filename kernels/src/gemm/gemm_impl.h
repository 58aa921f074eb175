// The SGEMM driver shared by the ISA files (crema/gemm.h describes the algorithm). Each ISA file
// defines CREMA_GEMM_NS to its own namespace name before including this, so the copies compiled
// with different ISA flags are distinct functions (no ODR merge of an AVX-512 copy into the
// scalar path). A micro-kernel type Mk provides:
//   MR, NR (register tile), KC, MC (multiple of MR), NC (multiple of NR) block sizes, and
//   static void tile(int64_t kc, const float* pa, const float* pb, float* c, int64_t ldc,
//                    int mr, int nr, float alpha, float beta);
// tile() computes the MR x NR product of one packed A panel (kc x MR, MR floats per k) and one
// packed B panel (kc x NR, NR per k) and writes c[i*ldc + j] = alpha*acc + beta*c for i < mr,
// j < nr, never reading c when beta == 0. kT8 says whether
//   static void t8(const float* s, int64_t ld, float* d, int64_t dld)
// exists: d[k*dld + i] = s[i*ld + k] for i, k < 8 (a SIMD 8 x 8 transpose for the packings).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

#include "crema/gemm.h"
#include "crema/threads.h"

namespace CREMA_GEMM_NS {

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};

// A grow-only, 64-byte-aligned buffer; one per thread and role (see gemm.h: Workspace).
struct Buffer {
  std::unique_ptr<float, FreeDeleter> data;
  int64_t capacity = 0;
  float* get(int64_t floats) {
    if (floats > capacity) {
      const int64_t bytes = ((floats * int64_t(sizeof(float)) + 63) / 64) * 64;
      float* p = static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(bytes)));
      if (p == nullptr) throw std::bad_alloc();
      data.reset(p);
      capacity = floats;
    }
    return data.get();
  }
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// d[p*W + j] = src[j*ld + p] for j < cols, p < kc, and 0 for cols <= j < W: the transposing
// copy of both packings. Full 8 x 8 blocks go through Mk::t8 when the kernel has one
// (Mk::kT8: an AVX shuffle transpose); the rest walks p in 16-float (one cache line) steps so
// that each source row is read a line at a time while the destination block stays in L1.
template <class Mk, int W>
void transpose_into(const float* src, int64_t ld, int cols, int64_t kc, float* d) {
  constexpr int64_t PB = 16;
  int j8 = 0;
  int64_t p8 = 0;
  if constexpr (Mk::kT8) {
    j8 = cols / 8 * 8;
    p8 = kc / 8 * 8;
    for (int64_t p = 0; p < p8; p += 8)
      for (int j = 0; j < j8; j += 8) Mk::t8(src + j * ld + p, ld, d + p * W + j, W);
  }
  for (int64_t p0 = 0; p0 < kc; p0 += PB) {
    const int64_t pn = std::min<int64_t>(PB, kc - p0);
    for (int j = 0; j < cols; ++j) {
      const float* s = src + j * ld + p0;
      // rows j < j8 have their p < p8 part done by t8
      const int64_t from = j < j8 ? std::max<int64_t>(0, std::min<int64_t>(pn, p8 - p0)) : 0;
      for (int64_t p = from; p < pn; ++p) d[(p0 + p) * W + j] = s[p];
    }
    for (int j = cols; j < W; ++j)
      for (int64_t p = 0; p < pn; ++p) d[(p0 + p) * W + j] = 0.0f;
  }
}

// op(A) rows [i0, i0+mc), columns [p0, p0+kc) into MR-tall panels: panel r holds, for each p,
// MR consecutive floats (rows i0 + r*MR .. +MR, zero past mc).
template <class Mk, int MR = Mk::MR>
void pack_a(const crema::GemmArgs& g, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
            float* dst) {
  for (int64_t r = 0; r < mc; r += MR) {
    const int rows = static_cast<int>(std::min<int64_t>(MR, mc - r));
    float* d = dst + r * kc;
    if (g.trans_a) {  // op(A)(i, p) = A[p*lda + i]: rows contiguous
      for (int64_t p = 0; p < kc; ++p) {
        const float* s = g.a + (p0 + p) * g.lda + i0 + r;
        int i = 0;
        for (; i < rows; ++i) d[p * MR + i] = s[i];
        for (; i < MR; ++i) d[p * MR + i] = 0.0f;
      }
    } else {  // op(A)(i, p) = A[i*lda + p]
      transpose_into<Mk, MR>(g.a + (i0 + r) * g.lda + p0, g.lda, rows, kc, d);
    }
  }
}

// op(B) rows [p0, p0+kc), columns [j0 + panel*NR, +NR) into one NR-wide panel (zero past n).
template <class Mk, int NR = Mk::NR>
void pack_b_panel(const crema::GemmArgs& g, int64_t p0, int64_t kc, int64_t j0, int cols,
                  float* d) {
  if (!g.trans_b) {  // op(B)(p, j) = B[p*ldb + j]
    for (int64_t p = 0; p < kc; ++p) {
      const float* s = g.b + (p0 + p) * g.ldb + j0;
      int j = 0;
      for (; j < cols; ++j) d[p * NR + j] = s[j];
      for (; j < NR; ++j) d[p * NR + j] = 0.0f;
    }
  } else {  // op(B)(p, j) = B[j*ldb + p]
    transpose_into<Mk, NR>(g.b + j0 * g.ldb + p0, g.ldb, cols, kc, d);
  }
}

// C = beta * C (beta == 0 writes zeros without reading C): the K == 0 / alpha == 0 cases.
inline void scale_c(const crema::GemmArgs& g) {
  crema::parallel_for(g.m, g.n, [&](int64_t i) {
    float* row = g.c + i * g.ldc;
    if (g.beta == 0.0f) {
      for (int64_t j = 0; j < g.n; ++j) row[j] = 0.0f;
    } else if (g.beta != 1.0f) {
      for (int64_t j = 0; j < g.n; ++j) row[j] *= g.beta;
    }
  });
}

template <class Mk>
void run(const crema::GemmArgs& g) {
  constexpr int MR = Mk::MR, NR = Mk::NR;
  constexpr int64_t KC = Mk::KC, MC = Mk::MC, NC = Mk::NC;
  static_assert(MC % MR == 0 && NC % NR == 0, "block sizes must be multiples of the tile");
  if (g.m <= 0 || g.n <= 0) return;
  if (g.k <= 0 || g.alpha == 0.0f) {
    scale_c(g);
    return;
  }
  static thread_local Buffer b_buf, a_buf;
  const int threads = crema::num_threads();
  // Rows packed per step: MC per thread (one MC block each when M is large enough).
  const int64_t m_step = std::min<int64_t>(MC * threads, ceil_div(g.m, MR) * MR);
  const int64_t kc_max = std::min<int64_t>(KC, g.k);
  float* pb = b_buf.get(kc_max * std::min<int64_t>(NC, ceil_div(g.n, NR) * NR));
  float* pa = a_buf.get(kc_max * m_step);

  for (int64_t jc = 0; jc < g.n; jc += NC) {
    const int64_t nc = std::min<int64_t>(NC, g.n - jc);
    const int64_t n_panels = ceil_div(nc, NR);
    for (int64_t pc = 0; pc < g.k; pc += KC) {
      const int64_t kc = std::min<int64_t>(KC, g.k - pc);
      const float beta = pc == 0 ? g.beta : 1.0f;
      crema::parallel_for(n_panels, kc * NR, [&](int64_t jp) {
        const int cols = static_cast<int>(std::min<int64_t>(NR, nc - jp * NR));
        pack_b_panel<Mk>(g, pc, kc, jc + jp * NR, cols, pb + jp * NR * kc);
      });
      for (int64_t is = 0; is < g.m; is += m_step) {
        const int64_t ms = std::min<int64_t>(m_step, g.m - is);
        const int64_t m_panels = ceil_div(ms, MR);
        crema::parallel_for(m_panels, kc * MR, [&](int64_t ip) {
          const int64_t rows = std::min<int64_t>(MR, ms - ip * MR);
          pack_a<Mk>(g, is + ip * MR, rows, pc, kc, pa + ip * MR * kc);
        });
        // Tasks: (MC block, group of B panels); more column groups when there are fewer MC
        // blocks than threads, so small-M products (a batch of 64) still use every thread.
        const int64_t m_blocks = ceil_div(ms, MC);
        int64_t n_groups = 1;
        if (threads > 1) n_groups = std::min<int64_t>(n_panels, ceil_div(2 * threads, m_blocks));
        const int64_t panels_per_group = ceil_div(n_panels, n_groups);
        n_groups = ceil_div(n_panels, panels_per_group);
        crema::parallel_for(m_blocks * n_groups, MC * NR * kc * panels_per_group,
                            [&](int64_t task) {
          const int64_t mb = task / n_groups, ng = task % n_groups;
          const int64_t i0 = mb * MC, mc = std::min<int64_t>(MC, ms - i0);
          const int64_t jp_end = std::min<int64_t>(n_panels, (ng + 1) * panels_per_group);
          for (int64_t jp = ng * panels_per_group; jp < jp_end; ++jp) {
            const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jp * NR));
            const float* bp = pb + jp * NR * kc;
            for (int64_t ir = 0; ir < mc; ir += MR) {
              const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
              Mk::tile(kc, pa + (i0 + ir) * kc, bp,
                       g.c + (is + i0 + ir) * g.ldc + jc + jp * NR, g.ldc, mr, nr, g.alpha,
                       beta);
            }
          }
        });
      }
    }
  }
}

}  // namespace CREMA_GEMM_NS
