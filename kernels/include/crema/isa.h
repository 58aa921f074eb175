// CPU and instruction-set detection. Detection runs once (cpuid + OS state via xgetbv).
// The ISA cap (what the kernel tables may choose) starts as CREMA_MAX_ISA=avx512|avx2|scalar,
// read once at the first dispatch (unset or unknown: no cap); set_max_isa() changes it for the
// whole process (tests use it to run every ISA in one process).
// avx512_bf16 (AVX512-BF16: VCVTNE2PS2BF16, VDPBF16PS) is an extension of avx512, not a vector
// width of its own: the cap avx512 allows it, avx2 and scalar do not. Only the bf16 tables
// (crema/bf16.h) have rows of it; built_isas()/active_isa() list the vector ISAs only.
#pragma once
#include <string>
#include <vector>

namespace crema {

enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2, avx512_bf16 = 3 };

struct CpuInfo {
  std::string vendor;
  std::string model;
  int logical_cores = 1;
  bool cpu_avx2 = false;     // AVX2 + FMA, usable by the OS
  bool cpu_avx512 = false;   // AVX-512 F/BW/VL/DQ, usable by the OS
  bool cpu_avx512_bf16 = false;
  bool cpu_avx512_vnni = false;
};

const CpuInfo& cpu_info();
// ISAs compiled into this build, best first (always ends with scalar).
std::vector<Isa> built_isas();
// The best ISA that the CPU has, the build has, and the cap allows.
Isa active_isa();
const char* isa_name(Isa isa);
bool isa_runnable(Isa isa);  // CPU + build have it (whatever the cap)
bool isa_usable(Isa isa);    // isa_runnable and the cap allows it
Isa max_isa();               // the cap
void set_max_isa(Isa cap);

}  // namespace crema
