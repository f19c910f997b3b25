// The dense (fully connected) layer, PyTorch's Linear: y = x W^T + b, with its three gradients, each one GEMM
// through OpenBLAS's sgemm.
//
// Notation: N batch, C input features, K output features. A matrix is a tensor view of shape {rows, columns, 1, 1}:
// x is {N, C, 1, 1} (an NCHW activation {N, C', H, W} is the same memory viewed as {N, C'*H*W, 1, 1}: that is
// flattening), W is {K, C, 1, 1} (the weights of a 1x1 convolution, and PyTorch's Linear.weight), y is {N, K, 1, 1}.
#pragma once

#include <convgemm/export.hpp>

#include <convgemm/conv2d.hpp>
#include <convgemm/tensor.hpp>

#include <cstdint>
#include <span>

namespace convgemm {

struct DenseParams {
  int64_t batch = 1;         // N
  int64_t in_features = 1;   // C
  int64_t out_features = 1;  // K
  bool has_bias = false;
};

struct DenseShapes {
  Shape4 input;    // {N, C, 1, 1}
  Shape4 weights;  // {K, C, 1, 1}
  Shape4 output;   // {N, K, 1, 1}
  int64_t bias;    // K when has_bias, else 0
};

// Validates the params, throwing convgemm::Error naming the parameter: non-positive sizes, sizes overflowing 64
// bits (Status::invalid_argument), or a dimension past OpenBLAS's 32-bit integers (Status::unsupported).
CONVGEMM_CXX_API DenseShapes dense_shapes(const DenseParams& params);

// Calls check every argument before writing anything. Each GEMM is cut into row blocks whose size depends on the
// shape only, run in parallel in the caller's TBB arena with single-threaded BLAS, so every result is bitwise the
// same for any thread count. The double overloads run the same code with a plain-loop GEMM in place of sgemm
// (convgemm's only BLAS call stays sgemm); they exist for finite-difference checks.
class CONVGEMM_CXX_API Dense {
 public:
  explicit Dense(const DenseParams& params) : params_(params), shapes_(dense_shapes(params)) {}
  const DenseParams& params() const { return params_; }
  const DenseShapes& shapes() const { return shapes_; }

  // y = x W^T + b: y[n,k] = b[k] + sum_c x[n,c] * W[k,c]
  void forward(ConstTensorView input, ConstTensorView weights, std::span<const float> bias, TensorView output) const;
  void forward(ConstTensorViewF64 input, ConstTensorViewF64 weights, std::span<const double> bias,
               TensorViewF64 output) const;
  // dL/dx = dy W: dx[n,c] = sum_k dy[n,k] * W[k,c]. Overwrites dx.
  void backward_data(ConstTensorView output_grad, ConstTensorView weights, TensorView input_grad) const;
  void backward_data(ConstTensorViewF64 output_grad, ConstTensorViewF64 weights, TensorViewF64 input_grad) const;
  // dL/dW (+)= dy^T x: dW[k,c] = sum_n dy[n,k] * x[n,c]
  void backward_weights(ConstTensorView input, ConstTensorView output_grad, TensorView weights_grad,
                        GradientMode mode = GradientMode::overwrite) const;
  void backward_weights(ConstTensorViewF64 input, ConstTensorViewF64 output_grad, TensorViewF64 weights_grad,
                        GradientMode mode = GradientMode::overwrite) const;
  // dL/db (+)= the column sums of dy: db[k] = sum_n dy[n,k], each summed in order of n in double precision.
  void backward_bias(ConstTensorView output_grad, std::span<float> bias_grad,
                     GradientMode mode = GradientMode::overwrite) const;
  void backward_bias(ConstTensorViewF64 output_grad, std::span<double> bias_grad,
                     GradientMode mode = GradientMode::overwrite) const;

 private:
  DenseParams params_;
  DenseShapes shapes_;
};

}  // namespace convgemm
