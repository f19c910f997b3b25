// ReLU, sigmoid, tanh and dropout: argument checks, then one parallel loop over blocks of elements per call, with
// forward and backward of each layer side by side. Templated once over the element type (float, double).
#include <convgemm/activation.hpp>
#include <convgemm/error.hpp>

#include "kernels/rows.hpp"
#include "kernels/sigmoid.hpp"
#include "kernels/vector_clones.hpp"
#include "tensor_checks.hpp"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <cmath>
#include <string>

namespace convgemm {
namespace {

// Elements per task: enough work to outweigh scheduling (an exp or a hash is a few nanoseconds each).
constexpr size_t elements_per_task = size_t{1} << 14;

// out[i] = function(i) for every i, in parallel over blocks. Writing element i only from i is what makes the
// result independent of the thread count and lets out alias the inputs function reads.
template <class T, class Function>
void elementwise(std::span<T> out, const Function& function) {
  oneapi::tbb::parallel_for(oneapi::tbb::blocked_range<size_t>(0, out.size(), elements_per_task),
                            [&](const oneapi::tbb::blocked_range<size_t>& range) {
                              for (size_t i = range.begin(); i < range.end(); ++i) out[i] = function(i);
                            });
}

template <class T, class Function>
void forward(std::span<const T> x, std::span<T> y, const Function& activation) {
  check_vector(y, static_cast<int64_t>(x.size()), "output");
  elementwise(y, [&](size_t i) { return activation(x[i]); });
}

// dx = dy * f'(x), with f'(x) given as a function of y = f(x)
template <class T, class Derivative>
void backward(std::span<const T> y, std::span<const T> dy, std::span<T> dx, const Derivative& derivative) {
  check_vector(dy, static_cast<int64_t>(y.size()), "output_grad");
  check_vector(dx, static_cast<int64_t>(y.size()), "input_grad");
  elementwise(dx, [&](size_t i) { return dy[i] * derivative(y[i]); });
}

// y = max(x, 0); dx = dy where y > 0, else 0 (so an infinite or NaN dy does not leak through a dead unit, as in
// PyTorch). The float kernels work on raw blocks, built for each vector width (ReLU runs twice per layer per step
// in training and is pure memory traffic): forward is the convolution epilogue's bias-and-ReLU row pass with a zero
// bias (x + 0 = x wherever x > 0). Double goes through the generic loop.
template <class T>
T relu(T x) {
  return x > T{0} ? x : T{0};
}

CONVGEMM_VECTOR_CLONES
void relu_backward_block(const float* y, const float* dy, float* dx, size_t count) {
  for (size_t i = 0; i < count; ++i) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

// Runs block(begin, count) over [0, size) in parallel blocks.
template <class Block>
void parallel_blocks(size_t size, const Block& block) {
  oneapi::tbb::parallel_for(
      oneapi::tbb::blocked_range<size_t>(0, size, elements_per_task),
      [&](const oneapi::tbb::blocked_range<size_t>& range) { block(range.begin(), range.end() - range.begin()); });
}

// y = sigmoid(x); dx = dy * y * (1 - y)
template <class T>
T sigmoid_derivative(T y) {
  return y * (T{1} - y);
}

// y = tanh(x); dx = dy * (1 - y^2)
template <class T>
T tanh_derivative(T y) {
  return T{1} - y * y;
}

// ---------------------------------------------------------------------------------------------------------------
// Dropout's mask

// SplitMix64's output function (Steele, Lea, Flood: "Fast splittable pseudorandom number generators", 2014): the
// i-th number of the stream that starts at state s is mix(s + (i + 1) * golden). Statistically strong (it passes
// BigCrush) and needs no state, which is what lets any thread compute any element's draw.
constexpr uint64_t golden_gamma = 0x9E3779B97F4A7C15ull;
uint64_t splitmix64(uint64_t state) {
  uint64_t z = state + golden_gamma;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Each call draws from its own stream, whose start mixes the seed and the call number.
uint64_t stream_start(uint64_t seed, uint64_t call) { return splitmix64(splitmix64(seed) ^ call); }

// Element i is kept when u = (its 53 top bits) / 2^53, uniform in [0, 1), is not below p. Comparing exactly in
// double keeps the probability 1 - p to 2^-53.
bool kept(uint64_t stream, size_t index, double probability) {
  const uint64_t bits = splitmix64(stream + static_cast<uint64_t>(index) * golden_gamma);
  return std::ldexp(static_cast<double>(bits >> 11), -53) >= probability;
}

// out[i] = in[i] / (1 - p) where kept, else 0: forward (in = x, out = y) and backward (in = dy, out = dx) alike.
template <class T>
void apply_dropout(const DropoutParams& params, uint64_t call, std::span<const T> in, std::span<T> out,
                   const char* out_name) {
  check_vector(out, static_cast<int64_t>(in.size()), out_name);
  const uint64_t stream = stream_start(params.seed, call);
  const T scale = static_cast<T>(1.0 / (1.0 - params.probability));
  elementwise(out, [&](size_t i) { return kept(stream, i, params.probability) ? in[i] * scale : T{0}; });
}

}  // namespace

void relu_forward(std::span<const float> input, std::span<float> output) {
  check_vector(output, static_cast<int64_t>(input.size()), "output");
  parallel_blocks(input.size(), [&](size_t begin, size_t count) {
    kernels::add_bias(input.data() + begin, static_cast<int64_t>(count), 0.0f, /*relu=*/true, output.data() + begin);
  });
}
void relu_forward(std::span<const double> input, std::span<double> output) {
  forward(input, output, [](double x) { return relu(x); });
}
void relu_backward(std::span<const float> output, std::span<const float> output_grad, std::span<float> input_grad) {
  check_vector(output_grad, static_cast<int64_t>(output.size()), "output_grad");
  check_vector(input_grad, static_cast<int64_t>(output.size()), "input_grad");
  parallel_blocks(output.size(), [&](size_t begin, size_t count) {
    relu_backward_block(output.data() + begin, output_grad.data() + begin, input_grad.data() + begin, count);
  });
}
void relu_backward(std::span<const double> output, std::span<const double> output_grad, std::span<double> input_grad) {
  check_vector(output_grad, static_cast<int64_t>(output.size()), "output_grad");
  check_vector(input_grad, static_cast<int64_t>(output.size()), "input_grad");
  elementwise(input_grad, [&](size_t i) { return output[i] > 0.0 ? output_grad[i] : 0.0; });
}

void sigmoid_forward(std::span<const float> input, std::span<float> output) {
  forward(input, output, [](float x) { return kernels::sigmoid(x); });
}
void sigmoid_forward(std::span<const double> input, std::span<double> output) {
  forward(input, output, [](double x) { return kernels::sigmoid(x); });
}
void sigmoid_backward(std::span<const float> output, std::span<const float> output_grad, std::span<float> input_grad) {
  backward(output, output_grad, input_grad, [](float y) { return sigmoid_derivative(y); });
}
void sigmoid_backward(std::span<const double> output, std::span<const double> output_grad,
                      std::span<double> input_grad) {
  backward(output, output_grad, input_grad, [](double y) { return sigmoid_derivative(y); });
}

void tanh_forward(std::span<const float> input, std::span<float> output) {
  forward(input, output, [](float x) { return std::tanh(x); });
}
void tanh_forward(std::span<const double> input, std::span<double> output) {
  forward(input, output, [](double x) { return std::tanh(x); });
}
void tanh_backward(std::span<const float> output, std::span<const float> output_grad, std::span<float> input_grad) {
  backward(output, output_grad, input_grad, [](float y) { return tanh_derivative(y); });
}
void tanh_backward(std::span<const double> output, std::span<const double> output_grad, std::span<double> input_grad) {
  backward(output, output_grad, input_grad, [](double y) { return tanh_derivative(y); });
}

Dropout::Dropout(const DropoutParams& params) : params_(params) {
  // Written so that NaN fails too.
  if (!(params.probability >= 0.0 && params.probability < 1.0)) {
    throw Error(Status::invalid_argument, "probability",
                "must be in [0, 1), got " + std::to_string(params.probability));
  }
}

void Dropout::forward(uint64_t call, std::span<const float> input, std::span<float> output) const {
  apply_dropout(params_, call, input, output, "output");
}
void Dropout::forward(uint64_t call, std::span<const double> input, std::span<double> output) const {
  apply_dropout(params_, call, input, output, "output");
}
void Dropout::backward(uint64_t call, std::span<const float> output_grad, std::span<float> input_grad) const {
  apply_dropout(params_, call, output_grad, input_grad, "input_grad");
}
void Dropout::backward(uint64_t call, std::span<const double> output_grad, std::span<double> input_grad) const {
  apply_dropout(params_, call, output_grad, input_grad, "input_grad");
}

}  // namespace convgemm
