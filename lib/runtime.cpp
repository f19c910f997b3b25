// Runtime facts for reports: which BLAS, which kernel it chose, which TBB.
#include <convgemm/runtime.hpp>
#include <convgemm/version.h>

#include "kernels/gemm.hpp"

#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/version.h>

namespace convgemm {

RuntimeInfo runtime_info() {
  return RuntimeInfo{
      .version = CONVGEMM_VERSION_STRING,
      .blas_vendor = "OpenBLAS",
      .blas_config = kernels::blas_config(),
      .blas_kernel = kernels::blas_kernel(),
      .tbb_version = TBB_runtime_version(),
      .default_threads = oneapi::tbb::this_task_arena::max_concurrency(),
  };
}

}  // namespace convgemm
