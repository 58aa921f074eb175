#include "crema/isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <thread>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <cpuid.h>
#define CREMA_X86 1
#endif

namespace crema {
namespace {

#ifdef CREMA_X86
void cpuid(unsigned leaf, unsigned sub, unsigned r[4]) {
  __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}
unsigned long long xgetbv0() {
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<unsigned long long>(hi) << 32) | lo;
}
#endif

CpuInfo detect() {
  CpuInfo info;
  info.logical_cores = static_cast<int>(std::thread::hardware_concurrency());
  if (info.logical_cores <= 0) info.logical_cores = 1;
#ifdef CREMA_X86
  unsigned r[4];
  cpuid(0, 0, r);
  unsigned max_leaf = r[0];
  char vendor[13];
  std::memcpy(vendor, &r[1], 4);
  std::memcpy(vendor + 4, &r[3], 4);
  std::memcpy(vendor + 8, &r[2], 4);
  vendor[12] = 0;
  info.vendor = vendor;

  cpuid(0x80000000u, 0, r);
  if (r[0] >= 0x80000004u) {
    char brand[49] = {0};
    for (unsigned i = 0; i < 3; ++i) {
      cpuid(0x80000002u + i, 0, r);
      std::memcpy(brand + 16 * i, r, 16);
    }
    std::string s(brand);
    size_t b = s.find_first_not_of(' ');
    size_t e = s.find_last_not_of(' ');
    info.model = (b == std::string::npos) ? "" : s.substr(b, e - b + 1);
  }
  if (max_leaf < 7) return info;
  cpuid(1, 0, r);
  bool osxsave = (r[2] >> 27) & 1;
  bool fma = (r[2] >> 12) & 1;
  bool avx = (r[2] >> 28) & 1;
  if (!osxsave || !avx) return info;
  unsigned long long xcr0 = xgetbv0();
  bool os_ymm = (xcr0 & 0x6) == 0x6;          // XMM + YMM state
  bool os_zmm = (xcr0 & 0xE6) == 0xE6;        // + opmask, ZMM_Hi256, Hi16_ZMM
  cpuid(7, 0, r);
  bool avx2 = (r[1] >> 5) & 1;
  bool f = (r[1] >> 16) & 1, dq = (r[1] >> 17) & 1, bw = (r[1] >> 30) & 1, vl = (r[1] >> 31) & 1;
  info.cpu_avx2 = os_ymm && avx2 && fma;
  info.cpu_avx512 = info.cpu_avx2 && os_zmm && f && dq && bw && vl;
  info.cpu_avx512_vnni = info.cpu_avx512 && ((r[2] >> 11) & 1);
  cpuid(7, 1, r);
  info.cpu_avx512_bf16 = info.cpu_avx512 && ((r[0] >> 5) & 1);
#else
  info.vendor = "unknown";
#endif
  return info;
}

Isa cap_from_env() {
  const char* v = std::getenv("CREMA_MAX_ISA");
  if (!v) return Isa::avx512;
  if (std::strcmp(v, "scalar") == 0) return Isa::scalar;
  if (std::strcmp(v, "avx2") == 0) return Isa::avx2;
  return Isa::avx512;  // engine.kernels warns about unknown values
}

// Read from the environment once; every dispatch then loads one atomic.
std::atomic<int>& cap() {
  static std::atomic<int> value{static_cast<int>(cap_from_env())};
  return value;
}

}  // namespace

const CpuInfo& cpu_info() {
  static const CpuInfo info = detect();
  return info;
}

std::vector<Isa> built_isas() {
  std::vector<Isa> v;
#ifdef CREMA_BUILD_AVX512
  v.push_back(Isa::avx512);
#endif
#ifdef CREMA_BUILD_AVX2
  v.push_back(Isa::avx2);
#endif
  v.push_back(Isa::scalar);
  return v;
}

Isa max_isa() { return static_cast<Isa>(cap().load(std::memory_order_relaxed)); }

void set_max_isa(Isa isa) { cap().store(static_cast<int>(isa), std::memory_order_relaxed); }

bool isa_usable(Isa isa) {
  const Isa width = isa == Isa::avx512_bf16 ? Isa::avx512 : isa;  // the cap is on vector widths
  return static_cast<int>(width) <= static_cast<int>(max_isa()) && isa_runnable(isa);
}

bool isa_runnable(Isa isa) {
  const CpuInfo& c = cpu_info();
  switch (isa) {
    case Isa::scalar: return true;
    case Isa::avx2:
#ifdef CREMA_BUILD_AVX2
      return c.cpu_avx2;
#else
      return false;
#endif
    case Isa::avx512:
#ifdef CREMA_BUILD_AVX512
      return c.cpu_avx512;
#else
      return false;
#endif
    case Isa::avx512_bf16:
#ifdef CREMA_BUILD_AVX512_BF16
      return c.cpu_avx512_bf16;
#else
      return false;
#endif
  }
  return false;
}

Isa active_isa() {
  for (Isa isa : built_isas())
    if (isa_usable(isa)) return isa;
  return Isa::scalar;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512_bf16: return "avx512_bf16";
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "scalar";
  }
}

}  // namespace crema
