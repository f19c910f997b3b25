// Dense: shape validation, then forward, backward-data, backward-weights and backward-bias, each naming the one
// GEMM it performs (row-major; x is N x C, W is K x C, y and dy are N x K):
//   forward           y  = x · W^T + b     (N x K, inner C)
//   backward-data     dx = dy · W          (N x C, inner K)
//   backward-weights  dW = dy^T · x        (K x C, inner N)
#include <convgemm/dense.hpp>
#include <convgemm/error.hpp>

#include "kernels/gemm.hpp"
#include "tensor_checks.hpp"

#include <oneapi/tbb/parallel_for.h>

#include <algorithm>

namespace convgemm {

using kernels::Transpose;

DenseShapes dense_shapes(const DenseParams& p) {
  require_positive(p.batch, "batch");
  require_positive(p.in_features, "in_features");
  require_positive(p.out_features, "out_features");
  // Every tensor's size in bytes must be representable, so that no later index computation can overflow.
  checked_product({p.batch, p.in_features, int64_t{sizeof(double)}}, "input size");
  checked_product({p.out_features, p.in_features, int64_t{sizeof(double)}}, "weights size");
  checked_product({p.batch, p.out_features, int64_t{sizeof(double)}}, "output size");
  // Each size is a GEMM dimension or leading dimension in some direction.
  kernels::require_blas_dimension(p.batch, "batch");
  kernels::require_blas_dimension(p.in_features, "in_features");
  kernels::require_blas_dimension(p.out_features, "out_features");
  return {.input = {p.batch, p.in_features, 1, 1},
          .weights = {p.out_features, p.in_features, 1, 1},
          .output = {p.batch, p.out_features, 1, 1},
          .bias = p.has_bias ? p.out_features : 0};
}

namespace {

// Rows of the GEMM result per parallel task. Fixed, so the blocks (and thus every rounding) depend on the shape
// only; 32 rows keep the GEMMs efficient while a batch of 64 still gives two cores a block each.
constexpr int64_t rows_per_task = 32;

// The GEMM of each element type: sgemm for float; for double, the plain loops that the finite-difference checks
// need (convgemm links no double-precision BLAS path). Same contract: row-major, C = alpha·op(A)·op(B) + beta·C,
// C not read when beta is 0.
void gemm(Transpose transpose_a, Transpose transpose_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  kernels::sgemm(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void gemm(Transpose transpose_a, Transpose transpose_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
          int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  const auto a_at = [&](int64_t i, int64_t l) {
    return transpose_a == Transpose::yes ? a[l * lda + i] : a[i * lda + l];
  };
  const auto b_at = [&](int64_t l, int64_t j) {
    return transpose_b == Transpose::yes ? b[j * ldb + l] : b[l * ldb + j];
  };
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0;
      for (int64_t l = 0; l < k; ++l) sum += a_at(i, l) * b_at(l, j);
      c[i * ldc + j] = beta == 0 ? alpha * sum : alpha * sum + beta * c[i * ldc + j];
    }
}

// Runs body(row_begin, row_end) on consecutive blocks of rows_per_task rows of [0, rows), in parallel.
template <class Body>
void parallel_over_row_blocks(int64_t rows, const Body& body) {
  kernels::use_single_threaded_blas();
  const int64_t blocks = (rows + rows_per_task - 1) / rows_per_task;
  oneapi::tbb::parallel_for(int64_t{0}, blocks, [&](int64_t block) {
    body(block * rows_per_task, std::min(rows, (block + 1) * rows_per_task));
  });
}

// y = x · W^T + b
template <class T>
void dense_forward(const Dense& dense, BasicTensorView<const T> x, BasicTensorView<const T> weights,
                   std::span<const T> bias, BasicTensorView<T> y) {
  const DenseShapes& s = dense.shapes();
  check_tensor(x, s.input, "input");
  check_tensor(weights, s.weights, "weights");
  check_optional_vector(bias, s.bias, "bias", "params.has_bias is false");
  check_tensor(y, s.output, "output");
  const int64_t C = dense.params().in_features, K = dense.params().out_features;
  parallel_over_row_blocks(dense.params().batch, [&](int64_t n_begin, int64_t n_end) {
    gemm(Transpose::no, Transpose::yes, n_end - n_begin, K, C, T{1}, x.data + n_begin * C, C, weights.data, C, T{0},
         y.data + n_begin * K, K);
    if (bias.empty()) return;
    for (int64_t n = n_begin; n < n_end; ++n)
      for (int64_t k = 0; k < K; ++k) y.data[n * K + k] += bias[static_cast<size_t>(k)];
  });
}

// dx = dy · W
template <class T>
void dense_backward_data(const Dense& dense, BasicTensorView<const T> dy, BasicTensorView<const T> weights,
                         BasicTensorView<T> dx) {
  const DenseShapes& s = dense.shapes();
  check_tensor(dy, s.output, "output_grad");
  check_tensor(weights, s.weights, "weights");
  check_tensor(dx, s.input, "input_grad");
  const int64_t C = dense.params().in_features, K = dense.params().out_features;
  parallel_over_row_blocks(dense.params().batch, [&](int64_t n_begin, int64_t n_end) {
    gemm(Transpose::no, Transpose::no, n_end - n_begin, C, K, T{1}, dy.data + n_begin * K, K, weights.data, C, T{0},
         dx.data + n_begin * C, C);
  });
}

// dW (+)= dy^T · x, in blocks of rows of dW (output features); each block sums over the whole batch in one GEMM.
template <class T>
void dense_backward_weights(const Dense& dense, BasicTensorView<const T> x, BasicTensorView<const T> dy,
                            BasicTensorView<T> dweights, GradientMode mode) {
  const DenseShapes& s = dense.shapes();
  check_tensor(x, s.input, "input");
  check_tensor(dy, s.output, "output_grad");
  check_tensor(dweights, s.weights, "weights_grad");
  const int64_t N = dense.params().batch, C = dense.params().in_features, K = dense.params().out_features;
  const T beta = mode == GradientMode::accumulate ? T{1} : T{0};
  parallel_over_row_blocks(K, [&](int64_t k_begin, int64_t k_end) {
    gemm(Transpose::yes, Transpose::no, k_end - k_begin, C, N, T{1}, dy.data + k_begin, K, x.data, C, beta,
         dweights.data + k_begin * C, C);
  });
}

// db[k] (+)= sum_n dy[n, k]
template <class T>
void dense_backward_bias(const Dense& dense, BasicTensorView<const T> dy, std::span<T> dbias, GradientMode mode) {
  const DenseShapes& s = dense.shapes();
  check_tensor(dy, s.output, "output_grad");
  check_optional_vector(dbias, s.bias, "bias_grad", "params.has_bias is false");
  const int64_t N = dense.params().batch, K = dense.params().out_features;
  oneapi::tbb::parallel_for(int64_t{0}, static_cast<int64_t>(dbias.size()), [&](int64_t k) {
    double sum = mode == GradientMode::accumulate ? dbias[static_cast<size_t>(k)] : 0.0;
    for (int64_t n = 0; n < N; ++n) sum += dy.data[n * K + k];
    dbias[static_cast<size_t>(k)] = static_cast<T>(sum);
  });
}

}  // namespace

void Dense::forward(ConstTensorView input, ConstTensorView weights, std::span<const float> bias,
                    TensorView output) const {
  dense_forward<float>(*this, input, weights, bias, output);
}
void Dense::forward(ConstTensorViewF64 input, ConstTensorViewF64 weights, std::span<const double> bias,
                    TensorViewF64 output) const {
  dense_forward<double>(*this, input, weights, bias, output);
}
void Dense::backward_data(ConstTensorView output_grad, ConstTensorView weights, TensorView input_grad) const {
  dense_backward_data<float>(*this, output_grad, weights, input_grad);
}
void Dense::backward_data(ConstTensorViewF64 output_grad, ConstTensorViewF64 weights, TensorViewF64 input_grad) const {
  dense_backward_data<double>(*this, output_grad, weights, input_grad);
}
void Dense::backward_weights(ConstTensorView input, ConstTensorView output_grad, TensorView weights_grad,
                             GradientMode mode) const {
  dense_backward_weights<float>(*this, input, output_grad, weights_grad, mode);
}
void Dense::backward_weights(ConstTensorViewF64 input, ConstTensorViewF64 output_grad, TensorViewF64 weights_grad,
                             GradientMode mode) const {
  dense_backward_weights<double>(*this, input, output_grad, weights_grad, mode);
}
void Dense::backward_bias(ConstTensorView output_grad, std::span<float> bias_grad, GradientMode mode) const {
  dense_backward_bias<float>(*this, output_grad, bias_grad, mode);
}
void Dense::backward_bias(ConstTensorViewF64 output_grad, std::span<double> bias_grad, GradientMode mode) const {
  dense_backward_bias<double>(*this, output_grad, bias_grad, mode);
}

}  // namespace convgemm
