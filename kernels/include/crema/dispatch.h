// The one kernel-table type. Every op (pool, ReLU, SGEMM, convolution forward / backward-data /
// backward-weights with its direct and Winograd rows) has one ordered list of rows
//   {name, isa, supports(geometry), fn [, workspace(geometry)]}
// best first, the portable reference last (its supports() accepts every valid geometry).
// choose(g) returns the first row whose ISA is usable (CPU, build and the ISA cap, crema/isa.h)
// and that supports g. Rows are chosen by rules only (no timing), so every process with the same
// CPU, build, cap and geometry runs the same kernel.
//
// Adding an op: its header declares Geom and Fn, one *.isa.cpp written against crema/simd.h
// holds the kernel, and a KernelRow<Geom, Fn> per ISA goes into the op's table (see
// kernels/README.md).
#pragma once
#include <cstddef>
#include <cstdint>

#include "crema/isa.h"

namespace crema {

template <class Geom, class Fn>
struct KernelRow {
  const char* name;
  Isa isa;
  bool (*supports)(const Geom& g);
  Fn fn;
  // Floats of caller-owned scratch the row wants for g (nullptr: none).
  int64_t (*workspace)(const Geom& g) = nullptr;
  // Floats of the caller-owned per-layer cache the row keeps between calls (nullptr: none).
  int64_t (*cache)(const Geom& g) = nullptr;
  // The least scratch the row runs with (nullptr: workspace(g)): rows that keep one slot per
  // thread run on fewer threads when given less than workspace(g).
  int64_t (*min_workspace)(const Geom& g) = nullptr;

  int64_t needed_workspace(const Geom& g) const {
    if (min_workspace) return min_workspace(g);
    return workspace ? workspace(g) : 0;
  }
};

template <class Geom, class Fn>
class KernelTable {
 public:
  using Row = KernelRow<Geom, Fn>;

  template <size_t N>
  constexpr KernelTable(const Row (&rows)[N]) : rows_(rows), size_(N) {}  // NOLINT: implicit

  const Row* begin() const { return rows_; }
  const Row* end() const { return rows_ + size_; }

  const Row& choose(const Geom& g) const {
    for (const Row& r : *this)
      if (isa_usable(r.isa) && r.supports(g)) return r;
    return rows_[size_ - 1];
  }

  // The most scratch any row may need for g whatever cap is set later: the maximum over the
  // rows this CPU and build can run (isa_runnable) that support g.
  int64_t max_workspace(const Geom& g) const { return max_over(g, &Row::workspace); }
  // The same for the per-layer cache.
  int64_t max_cache(const Geom& g) const { return max_over(g, &Row::cache); }

 private:
  int64_t max_over(const Geom& g, int64_t (*Row::*size)(const Geom&)) const {
    int64_t m = 0;
    for (const Row& r : *this)
      if (r.*size && isa_runnable(r.isa) && r.supports(g)) {
        const int64_t v = (r.*size)(g);
        if (v > m) m = v;
      }
    return m;
  }

  const Row* rows_;
  size_t size_;
};

// supports() of rows that take every valid geometry.
template <class Geom>
bool any_geometry(const Geom&) {
  return true;
}

}  // namespace crema
