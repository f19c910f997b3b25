// Elementwise layers: ReLU, sigmoid and tanh, and inverted dropout, each with its forward and backward, on flat
// buffers: a layer passes its tensor's data, whatever its shape, as one span.
//
// Conventions for every call here: all spans have the same length (checked before anything is written); an
// output may be the very same buffer as an input (in place), but must not partly overlap it; the work runs in
// parallel over blocks of elements in the caller's TBB arena, and the result does not depend on the thread count.
// Float and double overloads; the double ones drive the finite-difference checks.
#pragma once

#include <convgemm/export.hpp>

#include <cstdint>
#include <span>

namespace convgemm {

// The activations' backward takes the forward's output y, not its input x, as frameworks do: each derivative is a
// function of y, so a layer keeps only y and its forward may run in place.

// y = max(x, 0)
CONVGEMM_CXX_API void relu_forward(std::span<const float> input, std::span<float> output);
CONVGEMM_CXX_API void relu_forward(std::span<const double> input, std::span<double> output);
// dx = dy * [y > 0]; at x = 0 the derivative is taken as 0, as in PyTorch.
CONVGEMM_CXX_API void relu_backward(std::span<const float> output, std::span<const float> output_grad,
                                    std::span<float> input_grad);
CONVGEMM_CXX_API void relu_backward(std::span<const double> output, std::span<const double> output_grad,
                                    std::span<double> input_grad);

// y = 1 / (1 + e^-x), evaluated as e^x / (1 + e^x) for x < 0 so that no exponential overflows.
CONVGEMM_CXX_API void sigmoid_forward(std::span<const float> input, std::span<float> output);
CONVGEMM_CXX_API void sigmoid_forward(std::span<const double> input, std::span<double> output);
// dx = dy * y * (1 - y)
CONVGEMM_CXX_API void sigmoid_backward(std::span<const float> output, std::span<const float> output_grad,
                                       std::span<float> input_grad);
CONVGEMM_CXX_API void sigmoid_backward(std::span<const double> output, std::span<const double> output_grad,
                                       std::span<double> input_grad);

// y = tanh(x)
CONVGEMM_CXX_API void tanh_forward(std::span<const float> input, std::span<float> output);
CONVGEMM_CXX_API void tanh_forward(std::span<const double> input, std::span<double> output);
// dx = dy * (1 - y^2)
CONVGEMM_CXX_API void tanh_backward(std::span<const float> output, std::span<const float> output_grad,
                                    std::span<float> input_grad);
CONVGEMM_CXX_API void tanh_backward(std::span<const double> output, std::span<const double> output_grad,
                                    std::span<double> input_grad);

struct DropoutParams {
  double probability = 0.5;  // p: the chance that an element is dropped, in [0, 1)
  uint64_t seed = 0;
};

// Inverted dropout: during training each element is kept with probability 1 - p and scaled by 1 / (1 - p), so the
// expected output is the input and inference needs no dropout call at all (the layer is the identity there).
//
// The mask is a pure function of (seed, call, element index): element i of call c is dropped when u < p, where u in
// [0, 1) is the SplitMix64 hash of i in a stream keyed by (seed, c). So the mask is the same for any thread count,
// backward needs nothing from forward but the same call number, and a checkpoint resumes dropout exactly by saving
// the call counter. The caller numbers its training forward calls (0, 1, 2, ...): each number gives a fresh mask.
class CONVGEMM_CXX_API Dropout {
 public:
  // Throws convgemm::Error naming "probability" unless 0 <= p < 1.
  explicit Dropout(const DropoutParams& params);
  const DropoutParams& params() const { return params_; }

  // y[i] = x[i] / (1 - p) where element i is kept in this call, else 0
  void forward(uint64_t call, std::span<const float> input, std::span<float> output) const;
  void forward(uint64_t call, std::span<const double> input, std::span<double> output) const;
  // dx[i] = dy[i] / (1 - p) where element i was kept by forward(call, ...), else 0
  void backward(uint64_t call, std::span<const float> output_grad, std::span<float> input_grad) const;
  void backward(uint64_t call, std::span<const double> output_grad, std::span<double> input_grad) const;

 private:
  DropoutParams params_;
};

}  // namespace convgemm
