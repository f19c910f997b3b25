// What convgemm runs on: the BLAS library and the kernel it picked for this CPU, the TBB version, the
// default thread count. Printed by the tools so every reported figure says what produced it.
#pragma once

#include <convgemm/export.hpp>

#include <string>
#include <string_view>

namespace convgemm {

struct RuntimeInfo {
  std::string version;      // convgemm's own
  std::string blas_vendor;  // "OpenBLAS"
  std::string blas_config;  // openblas_get_config(): version and build options
  std::string blas_kernel;  // openblas_get_corename(): the CPU kernel set chosen at load time, e.g. "SkylakeX"
  std::string blas_coretype_override;  // OPENBLAS_CORETYPE as this process saw it ("" when unset)
  bool cpu_has_avx512 = false;         // F, CD, BW, DQ and VL: what OpenBLAS's SkylakeX kernels need
  // The convolutions' GEMMs: "convgemm AVX-512" (its own kernels, on CPUs with AVX-512 F) or "OpenBLAS" (other
  // CPUs, or CONVGEMM_KERNELS=portable in the environment). Dense always uses OpenBLAS.
  std::string conv_gemm_kernel;
  std::string tbb_version;
  int default_threads = 0;  // concurrency of the calling thread's TBB arena
};

CONVGEMM_CXX_API RuntimeInfo runtime_info();

// OpenBLAS picks its kernels once, when it loads, from the CPU it recognises. Debian's 0.3.21 does not know AMD
// Zen 5 and falls back to its AVX2 "Haswell" kernels: half the SGEMM speed of its AVX-512 "SkylakeX" kernels on
// that CPU. The choice can only be overridden by OPENBLAS_CORETYPE in the environment before OpenBLAS loads.
//
// The kernel set to ask for on a CPU with(out) AVX-512 when OpenBLAS chose `active_kernel`: "SkylakeX" when the
// CPU has AVX-512 and the active kernel predates it, "" when the active kernel is already the right one.
CONVGEMM_CXX_API std::string preferred_blas_coretype(bool cpu_has_avx512, std::string_view active_kernel);

// Call first thing in main(): when preferred_blas_coretype() asks for another kernel and the user has not set
// OPENBLAS_CORETYPE, re-executes the program (same arguments) with OPENBLAS_CORETYPE set, so that it runs on the
// AVX-512 kernels without the user doing anything. Returns normally when there is nothing to do (or the
// re-execution fails, in which case the program carries on with the kernels it has). Every convgemm executable
// calls it; programs that embed the library should set OPENBLAS_CORETYPE themselves (see the README).
CONVGEMM_CXX_API void ensure_fast_blas_kernel(int argc, char** argv);

// The mechanism behind ensure_fast_blas_kernel: re-executes this program with OPENBLAS_CORETYPE=coretype.
// Returns only if execv fails.
CONVGEMM_CXX_API void reexecute_with_blas_coretype(char** argv, const char* coretype);

}  // namespace convgemm
