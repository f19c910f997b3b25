// Runtime facts for reports: which BLAS, which kernel it chose, which TBB.
#include <convgemm/version.h>
#include <convgemm/runtime.hpp>

#include "kernels/conv_gemm.hpp"
#include "kernels/gemm.hpp"

#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/version.h>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>

namespace convgemm {
namespace {

bool cpu_has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}

std::string environment(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

}  // namespace

std::string preferred_blas_coretype(bool has_avx512, std::string_view active_kernel) {
  // OpenBLAS 0.3.21's AVX-512 kernel sets, by the names openblas_get_corename() reports.
  constexpr std::array<std::string_view, 3> avx512_kernels = {"SkylakeX", "Cooperlake", "SapphireRapids"};
  if (!has_avx512) return "";
  for (const std::string_view kernel : avx512_kernels) {
    if (active_kernel.size() == kernel.size() &&
        std::equal(kernel.begin(), kernel.end(), active_kernel.begin(),
                   [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
      return "";
    }
  }
  return "SkylakeX";
}

void reexecute_with_blas_coretype(char** argv, const char* coretype) {
  if (setenv("OPENBLAS_CORETYPE", coretype, 1) != 0) return;
  execv("/proc/self/exe", argv);
  unsetenv("OPENBLAS_CORETYPE");  // execv failed: carry on as before
}

void ensure_fast_blas_kernel(int argc, char** argv) {
  if (argc < 1 || argv == nullptr || !environment("OPENBLAS_CORETYPE").empty()) return;
  const std::string coretype = preferred_blas_coretype(cpu_has_avx512(), kernels::blas_kernel());
  if (!coretype.empty()) reexecute_with_blas_coretype(argv, coretype.c_str());
}

RuntimeInfo runtime_info() {
  return RuntimeInfo{
      .version = CONVGEMM_VERSION_STRING,
      .blas_vendor = "OpenBLAS",
      .blas_config = kernels::blas_config(),
      .blas_kernel = kernels::blas_kernel(),
      .blas_coretype_override = environment("OPENBLAS_CORETYPE"),
      .cpu_has_avx512 = cpu_has_avx512(),
      .conv_gemm_kernel = kernels::conv_gemm_kernel(),
      .tbb_version = TBB_runtime_version(),
      .default_threads = oneapi::tbb::this_task_arena::max_concurrency(),
  };
}

}  // namespace convgemm
