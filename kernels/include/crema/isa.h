// CPU and instruction-set detection. Detection runs once (cpuid + OS state via xgetbv);
// CREMA_MAX_ISA=avx512|avx2|scalar caps what the dispatcher may choose.
#pragma once
#include <string>
#include <vector>

namespace crema {

enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2 };

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
// The best ISA that the CPU has, the build has, and CREMA_MAX_ISA allows.
Isa active_isa();
const char* isa_name(Isa isa);
bool isa_usable(Isa isa);  // CPU + build + cap all allow it

}  // namespace crema
