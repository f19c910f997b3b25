// What convgemm runs on: the BLAS library and the kernel it picked for this CPU, the TBB version, the
// default thread count. Printed by the tools so every reported figure says what produced it.
#pragma once

#include <convgemm/export.hpp>

#include <string>

namespace convgemm {

struct RuntimeInfo {
  std::string version;       // convgemm's own
  std::string blas_vendor;   // "OpenBLAS"
  std::string blas_config;   // openblas_get_config(): version and build options
  std::string blas_kernel;   // openblas_get_corename(): the CPU kernel set chosen at load time, e.g. "SkylakeX"
  std::string tbb_version;
  int default_threads = 0;   // concurrency of the calling thread's TBB arena
};

CONVGEMM_CXX_API RuntimeInfo runtime_info();

}  // namespace convgemm
