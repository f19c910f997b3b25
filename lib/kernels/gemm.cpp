// The OpenBLAS binding: the only translation unit that includes cblas.h.
#include "kernels/gemm.hpp"

#include <convgemm/error.hpp>

#include <cassert>

#include <cblas.h>

namespace convgemm::kernels {

void sgemm(Transpose transpose_a, Transpose transpose_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  assert(m <= max_blas_dimension && n <= max_blas_dimension && k <= max_blas_dimension);
  assert(lda <= max_blas_dimension && ldb <= max_blas_dimension && ldc <= max_blas_dimension);
  cblas_sgemm(CblasRowMajor, transpose_a == Transpose::yes ? CblasTrans : CblasNoTrans,
              transpose_b == Transpose::yes ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), alpha, a, static_cast<blasint>(lda), b,
              static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

void require_blas_dimension(int64_t value, const char* what) {
  if (value > max_blas_dimension) {
    throw Error(Status::unsupported, what,
                std::to_string(value) + " exceeds the largest GEMM dimension of OpenBLAS's 32-bit interface (" +
                    std::to_string(max_blas_dimension) + ")");
  }
}

void use_single_threaded_blas() {
  if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

std::string blas_config() { return openblas_get_config(); }

std::string blas_kernel() { return openblas_get_corename(); }

}  // namespace convgemm::kernels
