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
#include <climits>

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

// A thread count per op, sized by its work: waking a thread and the barrier that ends a parallel
// region cost microseconds on an idle machine and a scheduler quantum when another process holds
// the core, so an op gets one thread per kWorkPerThread of work (rough element-operations, e.g.
// multiply-adds; about 10-20 us of vector work), at most `max_threads`. A tiny op (LeNet's
// 64 x 10 inner product, a small pooling) then runs on the calling thread alone, and two
// threads are never slower than one on a tiny net.
constexpr int64_t kWorkPerThread = int64_t{1} << 18;
inline int threads_for_work(int64_t work, int max_threads) {
  const int64_t t = work / kWorkPerThread;
  if (t <= 1 || max_threads <= 1) return 1;
  return t < max_threads ? static_cast<int>(t) : max_threads;
}
// n * work_per_item, saturated (the product only sizes the thread count).
inline int64_t total_work(int64_t n, int64_t work_per_item) {
  int64_t w;
  return __builtin_mul_overflow(n, work_per_item, &w) ? INT64_MAX : w;
}

// Runs body(i) for i in [0, n), split over up to num_threads() threads, as many as the total
// work (n * work_per_item, in rough element-operations) pays for (threads_for_work).
// Items must be independent (any thread may run any item).
template <class Body>
void parallel_for(int64_t n, int64_t work_per_item, Body&& body) {
#if defined(CREMA_HAVE_OPENMP)
  const int nt = threads_for_work(total_work(n, work_per_item), num_threads());
  const bool worth_it = nt > 1 && n > 1;
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
  const int nt = threads_for_work(total_work(n, work_per_item), threads > 0 ? threads : 1);
  const bool worth_it = nt > 1 && n > 1;
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
