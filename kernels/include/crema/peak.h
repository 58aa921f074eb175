// Measured single-thread FP32 multiply-add throughput of this CPU, per ISA: the ceiling the
// benchmarks compare kernels against.
//
// Each ISA runs a loop of independent multiply-add chains on the calling thread (16 zmm
// accumulators for AVX-512, 12 ymm for AVX2 -- enough to cover the FMA latency on two ports --
// and 12 scalar chains of a separate multiply and add for the portable build, which has no FMA).
// A lane's multiply-add counts 2 flops.
#pragma once
#include <cstdint>

#include "crema/isa.h"

// The probe loops keep their accumulators in registers even in sanitizer builds.
#if defined(__GNUC__) || defined(__clang__)
#define CREMA_PEAK_NO_ASAN __attribute__((no_sanitize("address")))
#else
#define CREMA_PEAK_NO_ASAN
#endif

namespace crema {

// GFLOP/s of `isa` over about `seconds` of timed work (after a short warm-up). The caller
// checks isa_usable(isa) first; the result for an unusable ISA is 0.
double peak_gflops(Isa isa, double seconds);

// Each runs `iters` iterations and returns the flops done; `sink` receives a value that depends
// on every accumulator (so the work cannot be optimized away).
namespace scalar_impl {
double fma_loop(int64_t iters, float* sink);
}
namespace avx2_impl {
double fma_loop(int64_t iters, float* sink);
}
namespace avx512_impl {
double fma_loop(int64_t iters, float* sink);
}

}  // namespace crema
