// Test helper for the BLAS kernel re-execution: on its first run it re-executes itself with the kernel set named
// by argv[1]; the second run (or a run where OPENBLAS_CORETYPE is already set) prints the kernel OpenBLAS loaded.
#include <convgemm/runtime.hpp>

#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  if (argc > 1 && std::getenv("OPENBLAS_CORETYPE") == nullptr) convgemm::reexecute_with_blas_coretype(argv, argv[1]);
  convgemm::ensure_fast_blas_kernel(argc, argv);  // must not re-execute: the variable is set now
  std::printf("kernel=%s override=%s\n", convgemm::runtime_info().blas_kernel.c_str(),
              convgemm::runtime_info().blas_coretype_override.c_str());
  return 0;
}
