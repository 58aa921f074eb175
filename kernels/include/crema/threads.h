// Thread count for the native kernels and the one helper they parallelize with.
//
// With OpenMP (the build links it when CMake finds it) the count starts at omp_get_max_threads(),
// which honours OMP_NUM_THREADS, and set_num_threads() changes it for every later kernel call,
// from any calling thread (the kernels pass it to each parallel region explicitly, since
// omp_set_num_threads alone only affects the thread that calls it).
// Without OpenMP every kernel runs on the calling thread: num_threads() is 1, and
// set_num_threads() only records the request (requested_num_threads() returns it).
#pragma once
#include <cstdint>

#if defined(CREMA_HAVE_OPENMP)
#include <omp.h>
#endif

namespace crema {

bool openmp_enabled();
int num_threads();
// n >= 1 (the binding rejects anything else; here values below 1 are treated as 1).
void set_num_threads(int n);
int requested_num_threads();

// Items go out in chunks of about n / (8 * threads), first come first served: on a machine
// shared with other work a descheduled thread then delays the call by one chunk, not by a
// whole static share.
inline int64_t parallel_chunk(int64_t n, int nt) {
  const int64_t c = n / (int64_t{8} * nt);
  return c > 0 ? c : 1;
}

// Runs body(i) for i in [0, n), split over num_threads() threads when the total work
// (n * work_per_item, in rough element-operations) is large enough to pay for waking them.
// Items must be independent (any thread may run any item).
template <class Body>
void parallel_for(int64_t n, int64_t work_per_item, Body&& body) {
#if defined(CREMA_HAVE_OPENMP)
  const int nt = num_threads();
  const bool worth_it = nt > 1 && n > 1 && n * work_per_item >= (int64_t{1} << 15);
  const int64_t chunk = parallel_chunk(n, nt);
#pragma omp parallel for schedule(dynamic, chunk) num_threads(nt) if (worth_it)
  for (int64_t i = 0; i < n; ++i) body(i);
#else
  (void)work_per_item;
  for (int64_t i = 0; i < n; ++i) body(i);
#endif
}

// Like parallel_for on at most `threads` threads (a count the caller read once, e.g. to size
// per-thread scratch allocated before the call): body(i, t) with t in [0, threads) the index
// of the thread running item i.
template <class Body>
void parallel_for_indexed(int64_t n, int64_t work_per_item, int threads, Body&& body) {
#if defined(CREMA_HAVE_OPENMP)
  const int nt = threads > 0 ? threads : 1;
  const bool worth_it = nt > 1 && n > 1 && n * work_per_item >= (int64_t{1} << 15);
  const int64_t chunk = parallel_chunk(n, nt);
#pragma omp parallel for schedule(dynamic, chunk) num_threads(nt) if (worth_it)
  for (int64_t i = 0; i < n; ++i) body(i, omp_get_thread_num());
#else
  (void)work_per_item;
  (void)threads;
  for (int64_t i = 0; i < n; ++i) body(i, 0);
#endif
}

}  // namespace crema
