// Runtime facts and the BLAS kernel policy: which kernel set to force, for which CPU and active kernel.
#include <catch2/catch.hpp>

#include <convgemm/runtime.hpp>

#include <cstdlib>
#include <string>

using convgemm::preferred_blas_coretype;

TEST_CASE("runtime: AVX-512 CPUs on pre-AVX-512 OpenBLAS kernels are moved to SkylakeX", "[runtime]") {
  // Zen 5 with Debian's OpenBLAS 0.3.21: Haswell kernels on an AVX-512 CPU.
  CHECK(preferred_blas_coretype(true, "Haswell") == "SkylakeX");
  CHECK(preferred_blas_coretype(true, "Zen") == "SkylakeX");
  CHECK(preferred_blas_coretype(true, "Sandybridge") == "SkylakeX");
  // Zen 4 gets Cooperlake by itself, Intel server parts SkylakeX or SapphireRapids: leave them alone.
  CHECK(preferred_blas_coretype(true, "Cooperlake").empty());
  CHECK(preferred_blas_coretype(true, "SkylakeX").empty());
  CHECK(preferred_blas_coretype(true, "skylakex").empty());
  CHECK(preferred_blas_coretype(true, "SapphireRapids").empty());
  // Without AVX-512 the AVX2 kernels are the right ones.
  CHECK(preferred_blas_coretype(false, "Haswell").empty());
}

TEST_CASE("runtime: runtime_info names the BLAS, its kernel and TBB", "[runtime]") {
  const convgemm::RuntimeInfo info = convgemm::runtime_info();
  CHECK(info.blas_vendor == "OpenBLAS");
  CHECK(info.blas_config.find("OpenBLAS") != std::string::npos);
  CHECK_FALSE(info.blas_kernel.empty());
  CHECK_FALSE(info.tbb_version.empty());
  CHECK(info.default_threads >= 1);
  // The suite's main() has already applied the policy: no AVX-512 CPU is left on a pre-AVX-512 kernel unless
  // the user chose it.
  if (info.blas_coretype_override.empty()) {
    CHECK(preferred_blas_coretype(info.cpu_has_avx512, info.blas_kernel).empty());
  }
  // The convolutions' GEMMs: convgemm's AVX-512 kernels where the CPU has AVX-512 F, unless
  // CONVGEMM_KERNELS=portable (ctest runs the kernel-dependent tests a second time so, as tests_with_portable_kernels).
  const char* forced = std::getenv("CONVGEMM_KERNELS");
  const bool openblas = (forced != nullptr && std::string(forced) == "portable") || !__builtin_cpu_supports("avx512f");
  CHECK(info.conv_gemm_kernel == (openblas ? "OpenBLAS" : "convgemm AVX-512"));
}
