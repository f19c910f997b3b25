// What convgemm's hand-written AVX-512 kernels (conv GEMMs, im2col rows, 2x2 max pooling) share: the target
// attribute that lets a function of a baseline x86-64 build use AVX-512 F intrinsics, the run-time choice to run
// them, and the lane mask of a partial vector.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#define CONVGEMM_HAVE_AVX512 1

#include <cpuid.h>
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#define CONVGEMM_AVX512 __attribute__((target("avx512f")))

namespace convgemm::kernels {

inline bool cpu_has_avx512f() { return __builtin_cpu_supports("avx512f") != 0; }

// Whether the hand-written AVX-512 kernels run: on CPUs with AVX-512 F, unless CONVGEMM_KERNELS=portable is set in
// the environment, which sends every operation to its portable path (OpenBLAS GEMMs, the compiler-vectorised
// loops) so that the tests cover both on one machine. Read once.
inline bool use_avx512_kernels() {
  static const bool chosen = [] {
    const char* forced = std::getenv("CONVGEMM_KERNELS");
    if (forced != nullptr && std::strcmp(forced, "portable") == 0) return false;
    return cpu_has_avx512f();
  }();
  return chosen;
}

// Whether this is an AMD Zen 5 (family 0x1A): where a tuning choice measured one way on Zen 5 and the other way on
// Zen 4 (the two CPUs seen here), the choice asks this. Read once.
inline bool cpu_is_amd_zen5() {
  static const bool zen5 = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (__get_cpuid(0, &eax, &ebx, &ecx, &edx) == 0) return false;
    const bool amd = ebx == 0x68747541 && edx == 0x69746e65 && ecx == 0x444d4163;  // "AuthenticAMD"
    if (!amd || __get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return false;
    const unsigned base_family = (eax >> 8) & 0xF;
    return base_family == 0xF && base_family + ((eax >> 20) & 0xFF) == 0x1A;
  }();
  return zen5;
}

// The first `count` of 16 lanes (none for count <= 0, all for count >= 16): a masked load or store of a row's
// last, partial vector.
CONVGEMM_AVX512 inline __mmask16 first_lanes(int64_t count) {
  return count <= 0 ? __mmask16(0) : count >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << count) - 1);
}

}  // namespace convgemm::kernels
#endif
