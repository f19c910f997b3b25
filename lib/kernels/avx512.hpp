// What convgemm's hand-written AVX-512 kernels (conv GEMM, 2x2 max pooling) share: the target attribute that lets
// a function of a baseline x86-64 build use AVX-512 F intrinsics, the run-time check that the CPU has them, and
// the lane mask of a partial vector.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#define CONVGEMM_HAVE_AVX512 1

#include <immintrin.h>

#include <cstdint>

#define CONVGEMM_AVX512 __attribute__((target("avx512f")))

namespace convgemm::kernels {

inline bool cpu_has_avx512f() { return __builtin_cpu_supports("avx512f") != 0; }

// The first `count` of 16 lanes (none for count <= 0, all for count >= 16): a masked load or store of a row's
// last, partial vector.
CONVGEMM_AVX512 inline __mmask16 first_lanes(int64_t count) {
  return count <= 0 ? __mmask16(0) : count >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << count) - 1);
}

}  // namespace convgemm::kernels
#endif
