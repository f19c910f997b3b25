// Builds a function for AVX-512 (x86-64-v4), AVX2 + FMA (x86-64-v3) and baseline x86-64, and picks the best the
// CPU has when the library loads (GCC's target_clones, an ifunc). The library itself is compiled for baseline
// x86-64 so that it runs anywhere; only the loops that vectorise are multiplied.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// GCC 12 exports the ifunc symbol of a cloned function with external linkage whatever -fvisibility says, so
// cloned functions have internal linkage (an anonymous namespace) and an ordinary function calls them
// (tests/check_exports.cmake keeps the kernels out of the exported symbols).
#define CONVGEMM_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CONVGEMM_VECTOR_CLONES
#endif

// Only the cloned function itself is multiplied: a template it instantiates or a lambda it calls is a function of
// its own, compiled for baseline x86-64 (SSE2), unless it is inlined into each clone. Helpers and lambdas of cloned
// functions therefore carry CONVGEMM_CLONE_INLINE (after a lambda's parameter list).
#if defined(__GNUC__)
#define CONVGEMM_CLONE_INLINE __attribute__((always_inline))
#else
#define CONVGEMM_CLONE_INLINE
#endif
