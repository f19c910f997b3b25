// The suite's main: first make sure OpenBLAS runs its AVX-512 kernels where the CPU has them (this may re-execute
// the binary once), then Catch2. Each TEST_CASE is registered with ctest by catch_discover_tests.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <convgemm/runtime.hpp>

int main(int argc, char** argv) {
  convgemm::ensure_fast_blas_kernel(argc, argv);
  return Catch::Session().run(argc, argv);
}
