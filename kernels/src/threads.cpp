#include "crema/threads.h"

#include <atomic>

namespace crema {
namespace {

int initial_threads() {
#if defined(CREMA_HAVE_OPENMP)
  int n = omp_get_max_threads();  // OMP_NUM_THREADS, or the number of cores
  return n > 0 ? n : 1;
#else
  return 1;
#endif
}

std::atomic<int>& requested() {
  static std::atomic<int> value{initial_threads()};
  return value;
}

}  // namespace

bool openmp_enabled() {
#if defined(CREMA_HAVE_OPENMP)
  return true;
#else
  return false;
#endif
}

int num_threads() {
#if defined(CREMA_HAVE_OPENMP)
  return requested().load(std::memory_order_relaxed);
#else
  return 1;
#endif
}

int requested_num_threads() { return requested().load(std::memory_order_relaxed); }

void set_num_threads(int n) {
  if (n < 1) n = 1;
  requested().store(n, std::memory_order_relaxed);
#if defined(CREMA_HAVE_OPENMP)
  omp_set_num_threads(n);  // for any other OpenMP code run from this thread
#endif
}

}  // namespace crema
