// The one place convgemm calls BLAS. Row-major SGEMM with 64-bit sizes on our side; callers (the plans) have
// already checked that every dimension fits OpenBLAS's 32-bit integer interface.
#pragma once

#include <cstdint>
#include <string>

namespace convgemm::kernels {

enum class Transpose : bool { no = false, yes = true };

// C[m x n] = alpha * op(A)[m x k] * op(B)[k x n] + beta * C, all row-major.
void sgemm(Transpose transpose_a, Transpose transpose_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// Largest dimension or leading dimension OpenBLAS's LP64 interface takes.
inline constexpr int64_t max_blas_dimension = INT32_MAX;

// Throws convgemm::Error (Status::unsupported) naming `what` when value exceeds max_blas_dimension. Plans call it
// on every GEMM dimension when they are made, so that sgemm never sees one it cannot pass on.
void require_blas_dimension(int64_t value, const char* what);

// OpenBLAS has no TBB support: called from TBB tasks with its own thread pool it oversubscribes the cores.
// All of convgemm's parallelism comes from TBB, so BLAS runs one thread per call. Idempotent and cheap.
void use_single_threaded_blas();

std::string blas_config();
std::string blas_kernel();

}  // namespace convgemm::kernels
