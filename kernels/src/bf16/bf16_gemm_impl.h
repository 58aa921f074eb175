// The bf16 GEMM driver (crema/bf16.h describes the algorithm), included by each ISA's unit
// inside its own namespace, in an unnamed namespace: every ISA gets its own copy, compiled with
// its own flags (no ODR merge of an AVX-512 copy into the path of an AVX2-only CPU).
// A micro-kernel type Mk provides MR, NR (register tile), KC (even), MC (multiple of MR), NC
// (multiple of NR) and
//   static void tile(int64_t kp, const uint32_t* pa, const uint32_t* pb, float* c, int64_t ldc,
//                    int mr, int nr, float alpha, float beta);
// which computes the MR x NR product of a packed A panel (kp k-pairs x MR words) and a packed B
// panel (kp x NR words) and writes c[i*ldc + j] = alpha*acc + beta*c (i < mr, j < nr; c is not
// read when beta == 0).
// Needs <algorithm>, <cstdint>, <cstdlib>, <cstring>, <memory>, <new>, crema/bf16.h and
// crema/threads.h included before it.

struct Bf16FreeDeleter {
  void operator()(uint32_t* p) const { std::free(p); }
};

// A grow-only, 64-byte-aligned buffer of packed words; one per thread and role.
struct Bf16Buffer {
  std::unique_ptr<uint32_t, Bf16FreeDeleter> data;
  int64_t capacity = 0;
  uint32_t* get(int64_t words) {
    if (words > capacity) {
      const int64_t bytes = ((words * 4 + 63) / 64) * 64;
      auto* p = static_cast<uint32_t*>(std::aligned_alloc(64, static_cast<size_t>(bytes)));
      if (p == nullptr) throw std::bad_alloc();
      data.reset(p);
      capacity = words;
    }
    return data.get();
  }
};

inline int64_t bf16_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline uint32_t bf16_pair(uint16_t k0, uint16_t k1) {
  return static_cast<uint32_t>(k0) | (static_cast<uint32_t>(k1) << 16);
}

// `lines` lines whose k runs along memory (line t starts at src + t*ld, k from p0): W-word
// panel rows d[kp*W + t], zero for lines >= `lines` and for an odd kc's missing k + 1.
template <int W>
void pack_k_along_line(const uint16_t* src, int64_t ld, int lines, int64_t kc, uint32_t* d) {
  const int64_t full = kc / 2, kp_n = bf16_ceil_div(kc, 2);
  for (int t = 0; t < lines; ++t) {
    const uint16_t* s = src + t * ld;
    for (int64_t kp = 0; kp < full; ++kp) {
      uint32_t w;
      std::memcpy(&w, s + 2 * kp, 4);  // little-endian: k in the low half
      d[kp * W + t] = w;
    }
    if (kc % 2) d[full * W + t] = s[2 * full];
  }
  for (int t = lines; t < W; ++t)
    for (int64_t kp = 0; kp < kp_n; ++kp) d[kp * W + t] = 0;
}

// Lines that run across memory (k is the row: element t of row k at src + k*ld + t).
template <int W>
void pack_k_across_rows(const uint16_t* src, int64_t ld, int lines, int64_t kc, uint32_t* d) {
  for (int64_t kp = 0; kp < bf16_ceil_div(kc, 2); ++kp) {
    const uint16_t* r0 = src + 2 * kp * ld;
    const bool has_k1 = 2 * kp + 1 < kc;
    uint32_t* o = d + kp * W;
    int t = 0;
    if (has_k1) {
      const uint16_t* r1 = r0 + ld;
      for (; t < lines; ++t) o[t] = bf16_pair(r0[t], r1[t]);
    } else {
      for (; t < lines; ++t) o[t] = r0[t];
    }
    for (; t < W; ++t) o[t] = 0;
  }
}

// op(A) rows [i0, i0 + mc), k in [p0, p0 + kc) into MR-row panels.
template <class Mk>
void bf16_pack_a(const crema::Bf16GemmArgs& g, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
                 uint32_t* dst) {
  constexpr int MR = Mk::MR;
  const int64_t kp_n = bf16_ceil_div(kc, 2);
  for (int64_t r = 0; r < mc; r += MR) {
    const int rows = static_cast<int>(std::min<int64_t>(MR, mc - r));
    uint32_t* d = dst + r * kp_n;
    if (g.trans_a)  // op(A)(i, p) = A[p*lda + i]
      pack_k_across_rows<MR>(g.a + p0 * g.lda + i0 + r, g.lda, rows, kc, d);
    else  // op(A)(i, p) = A[i*lda + p]
      pack_k_along_line<MR>(g.a + (i0 + r) * g.lda + p0, g.lda, rows, kc, d);
  }
}

// op(B) k in [p0, p0 + kc), columns [j0, j0 + cols) into one NR-column panel.
template <class Mk>
void bf16_pack_b(const crema::Bf16GemmArgs& g, int64_t p0, int64_t kc, int64_t j0, int cols,
                 uint32_t* d) {
  if (g.trans_b)  // op(B)(p, j) = B[j*ldb + p]
    pack_k_along_line<Mk::NR>(g.b + j0 * g.ldb + p0, g.ldb, cols, kc, d);
  else  // op(B)(p, j) = B[p*ldb + j]
    pack_k_across_rows<Mk::NR>(g.b + p0 * g.ldb + j0, g.ldb, cols, kc, d);
}

inline void bf16_scale_c(const crema::Bf16GemmArgs& g) {
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
void bf16_gemm_run(const crema::Bf16GemmArgs& g) {
  constexpr int MR = Mk::MR, NR = Mk::NR;
  constexpr int64_t KC = Mk::KC, MC = Mk::MC, NC = Mk::NC;
  static_assert(KC % 2 == 0 && MC % MR == 0 && NC % NR == 0, "block sizes");
  if (g.m <= 0 || g.n <= 0) return;
  if (g.k <= 0 || g.alpha == 0.0f) {
    bf16_scale_c(g);
    return;
  }
  static thread_local Bf16Buffer b_buf, a_buf;
  const int threads = crema::num_threads();
  const int64_t m_step = std::min<int64_t>(MC * threads, bf16_ceil_div(g.m, MR) * MR);
  const int64_t kp_max = bf16_ceil_div(std::min<int64_t>(KC, g.k), 2);
  uint32_t* pb = b_buf.get(kp_max * std::min<int64_t>(NC, bf16_ceil_div(g.n, NR) * NR));
  uint32_t* pa = a_buf.get(kp_max * m_step);

  for (int64_t jc = 0; jc < g.n; jc += NC) {
    const int64_t nc = std::min<int64_t>(NC, g.n - jc);
    const int64_t n_panels = bf16_ceil_div(nc, NR);
    for (int64_t pc = 0; pc < g.k; pc += KC) {
      const int64_t kc = std::min<int64_t>(KC, g.k - pc), kp = bf16_ceil_div(kc, 2);
      const float beta = pc == 0 ? g.beta : 1.0f;
      crema::parallel_for(n_panels, kc * NR, [&](int64_t jp) {
        const int cols = static_cast<int>(std::min<int64_t>(NR, nc - jp * NR));
        bf16_pack_b<Mk>(g, pc, kc, jc + jp * NR, cols, pb + jp * NR * kp);
      });
      for (int64_t is = 0; is < g.m; is += m_step) {
        const int64_t ms = std::min<int64_t>(m_step, g.m - is);
        crema::parallel_for(bf16_ceil_div(ms, MR), kc * MR, [&](int64_t ip) {
          const int64_t rows = std::min<int64_t>(MR, ms - ip * MR);
          bf16_pack_a<Mk>(g, is + ip * MR, rows, pc, kc, pa + ip * MR * kp);
        });
        // Tasks: (MC block, group of B panels), more groups when M has fewer blocks than
        // there are threads (crema/gemm.h's scheme).
        const int64_t m_blocks = bf16_ceil_div(ms, MC);
        int64_t n_groups = 1;
        if (threads > 1)
          n_groups = std::min<int64_t>(n_panels, bf16_ceil_div(2 * threads, m_blocks));
        const int64_t per_group = bf16_ceil_div(n_panels, n_groups);
        n_groups = bf16_ceil_div(n_panels, per_group);
        crema::parallel_for(m_blocks * n_groups, MC * NR * kc * per_group, [&](int64_t task) {
          const int64_t mb = task / n_groups, ng = task % n_groups;
          const int64_t i0 = mb * MC, mc = std::min<int64_t>(MC, ms - i0);
          const int64_t jp_end = std::min<int64_t>(n_panels, (ng + 1) * per_group);
          for (int64_t jp = ng * per_group; jp < jp_end; ++jp) {
            const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jp * NR));
            for (int64_t ir = 0; ir < mc; ir += MR) {
              const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
              Mk::tile(kp, pa + (i0 + ir) * kp, pb + jp * NR * kp,
                       g.c + (is + i0 + ir) * g.ldc + jc + jp * NR, g.ldc, mr, nr, g.alpha,
                       beta);
            }
          }
        });
      }
    }
  }
}

// float32 -> bf16, round to nearest even, denormal inputs to signed zero, NaN kept quiet
// (VCVTNE2PS2BF16's rule). Branch-free so that the loops over it vectorize.
inline uint16_t bf16_round(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const uint32_t sign_zero = (u >> 16) & 0x8000u;
  const uint32_t quiet_nan = (u >> 16) | 0x0040u;
  const bool denormal = (u & 0x7F800000u) == 0;
  const bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  return static_cast<uint16_t>(nan ? quiet_nan : denormal ? sign_zero : rounded);
}
