// ConvTranspose2d as the matching convolution's GEMM pair swapped: shape validation in this operator's own terms,
// then forward (conv backward-data + bias), backward-data (conv forward), backward-weights (conv weight gradient,
// roles swapped) and backward-bias, each a few lines over Conv2dPlan.
#include <convgemm/conv_transpose2d.hpp>
#include <convgemm/direct_conv2d.hpp>
#include <convgemm/error.hpp>

#include "ops/convolution_params.hpp"
#include "tensor_checks.hpp"

#include <oneapi/tbb/parallel_for.h>

#include <map>
#include <string>
#include <vector>

namespace convgemm {

// ---------------------------------------------------------------------------------------------------------------
// Parameters and shapes

int64_t conv_transpose2d_output_size(int64_t input, int64_t kernel, int64_t stride, int64_t pad_before,
                                     int64_t pad_after, int64_t dilation, int64_t output_padding) {
  return (input - 1) * stride - pad_before - pad_after + dilation * (kernel - 1) + output_padding + 1;
}

namespace {

void require_output_padding_below_stride(int64_t output_padding, int64_t stride, const char* name) {
  require_non_negative(output_padding, name);
  if (output_padding >= stride) {
    throw Error(Status::invalid_argument, name,
                std::to_string(output_padding) + " must be smaller than the stride " + std::to_string(stride) +
                    " (a larger one would add output rows or columns no input pixel reaches)");
  }
}

// One axis of the output size, overflow-checked, and positive or an Error naming the padding.
int64_t validated_transposed_size(int64_t input, int64_t kernel, int64_t stride, int64_t pad_before, int64_t pad_after,
                                  int64_t dilation, int64_t output_padding, const char* axis) {
  const std::string what = std::string("output ") + axis;
  int64_t full = 0, padding = 0;
  if (__builtin_add_overflow(checked_product({input - 1, stride}, what), checked_product({dilation, kernel - 1}, what),
                             &full) ||
      __builtin_add_overflow(full, output_padding + 1, &full)) {
    throw Error(Status::invalid_argument, what, "size overflows 64 bits");
  }
  if (__builtin_add_overflow(pad_before, pad_after, &padding)) {
    throw Error(Status::invalid_argument, std::string("padding (") + axis + ")", "overflows 64 bits");
  }
  const int64_t size = full - padding;
  if (size < 1) {
    throw Error(Status::invalid_argument, std::string("padding (") + axis + ")",
                std::to_string(padding) + " in all removes the whole output " + axis + " " + std::to_string(full));
  }
  return size;
}

}  // namespace

ConvTranspose2dShapes conv_transpose2d_shapes(const ConvTranspose2dParams& p) {
  check_convolution_params(p);
  require_output_padding_below_stride(p.output_padding.height, p.stride.height, "output_padding.height");
  require_output_padding_below_stride(p.output_padding.width, p.stride.width, "output_padding.width");
  const int64_t out_height =
      validated_transposed_size(p.in_height, p.kernel_height, p.stride.height, p.padding.top, p.padding.bottom,
                                p.dilation.height, p.output_padding.height, "height");
  const int64_t out_width =
      validated_transposed_size(p.in_width, p.kernel_width, p.stride.width, p.padding.left, p.padding.right,
                                p.dilation.width, p.output_padding.width, "width");
  // Every tensor's size in bytes must be representable, so that no later index computation can overflow.
  checked_product({p.batch, p.in_channels, p.in_height, p.in_width, int64_t{sizeof(double)}}, "input size");
  checked_product({p.in_channels, p.out_channels / p.groups, p.kernel_height, p.kernel_width, int64_t{sizeof(double)}},
                  "weights size");
  checked_product({p.batch, p.out_channels, out_height, out_width, int64_t{sizeof(double)}}, "output size");
  return {.input = {p.batch, p.in_channels, p.in_height, p.in_width},
          .weights = {p.in_channels, p.out_channels / p.groups, p.kernel_height, p.kernel_width},
          .output = {p.batch, p.out_channels, out_height, out_width},
          .bias = p.has_bias ? p.out_channels : 0};
}

Conv2dParams matching_conv2d_params(const ConvTranspose2dParams& p) {
  const ConvTranspose2dShapes shapes = conv_transpose2d_shapes(p);
  return {.batch = p.batch,
          .in_channels = p.out_channels,
          .in_height = shapes.output[2],
          .in_width = shapes.output[3],
          .out_channels = p.in_channels,
          .kernel_height = p.kernel_height,
          .kernel_width = p.kernel_width,
          .stride = p.stride,
          .padding = p.padding,
          .dilation = p.dilation,
          .groups = p.groups,
          .has_bias = false};
}

// ---------------------------------------------------------------------------------------------------------------
// The plan

namespace {

// Output padding < stride makes the matching convolution's output exactly H x W; with it validated, the only
// errors Conv2dPlan can still raise are its limits, whose parameter names are given in its own terms.
Conv2dPlan make_matching_plan(const ConvTranspose2dParams& params, const ExecutionOptions& options) {
  const Conv2dParams conv = matching_conv2d_params(params);
  try {
    return Conv2dPlan(conv, options);
  } catch (const Error& error) {
    static const std::map<std::string, std::string> renamed = {
        {"out_channels / groups", "in_channels / groups"},
        {"in_channels / groups * kernel_height * kernel_width", "out_channels / groups * kernel_height * kernel_width"},
        {"output_height * output_width", "in_height * in_width"},
    };
    const auto it = renamed.find(error.parameter());
    if (it == renamed.end()) throw;
    // what() is "convgemm: <parameter>: <message>" (error.hpp); keep the message, rename the parameter.
    const std::string message =
        std::string(error.what()).substr(std::string("convgemm: : ").size() + error.parameter().size());
    throw Error(error.status(), it->second, message);
  }
}

}  // namespace

ConvTranspose2dPlan::ConvTranspose2dPlan(const ConvTranspose2dParams& params, ExecutionOptions options)
    : params_(params), shapes_(conv_transpose2d_shapes(params)), conv_(make_matching_plan(params, options)) {}

size_t ConvTranspose2dPlan::workspace_bytes(Conv2dDirection direction) const {
  switch (direction) {
    case Conv2dDirection::forward: return conv_.workspace_bytes(Conv2dDirection::backward_data);
    case Conv2dDirection::backward_data: return conv_.workspace_bytes(Conv2dDirection::forward);
    case Conv2dDirection::backward_weights: return conv_.workspace_bytes(Conv2dDirection::backward_weights);
    case Conv2dDirection::backward_bias: return conv_.workspace_bytes(Conv2dDirection::backward_bias);
  }
  return 0;
}

namespace {

// y[n, k, :, :] += b[k] for every plane
template <class T>
void add_bias(BasicTensorView<T> y, std::span<const T> bias) {
  const int64_t channels = y.shape[1], pixels = y.shape[2] * y.shape[3];
  oneapi::tbb::parallel_for(int64_t{0}, y.shape[0] * channels, [&](int64_t plane) {
    const T b = bias[static_cast<size_t>(plane % channels)];
    T* row = y.data + plane * pixels;
    for (int64_t i = 0; i < pixels; ++i) row[i] += b;
  });
}

// db[k] (+)= sum over n, p, q of dy[n, k, p, q]; each channel summed in (n, p, q) order in double precision, so
// the result does not depend on the thread count.
template <class T>
void sum_bias_gradient(BasicTensorView<const T> dy, std::span<T> db, GradientMode mode) {
  const int64_t batch = dy.shape[0], channels = dy.shape[1], pixels = dy.shape[2] * dy.shape[3];
  oneapi::tbb::parallel_for(int64_t{0}, channels, [&](int64_t k) {
    double sum = mode == GradientMode::accumulate ? static_cast<double>(db[static_cast<size_t>(k)]) : 0.0;
    for (int64_t n = 0; n < batch; ++n) {
      const T* row = dy.data + (n * channels + k) * pixels;
      for (int64_t i = 0; i < pixels; ++i) sum += row[i];
    }
    db[static_cast<size_t>(k)] = static_cast<T>(sum);
  });
}

}  // namespace

// y = col2im(W^T * x) + b
void ConvTranspose2dPlan::forward(ConstTensorView input, ConstTensorView weights, std::span<const float> bias,
                                  TensorView output, std::span<std::byte> workspace) const {
  check_tensor(input, shapes_.input, "input");
  check_tensor(weights, shapes_.weights, "weights");
  check_optional_vector(bias, shapes_.bias, "bias", "params.has_bias is false");
  check_tensor(output, shapes_.output, "output");
  conv_.backward_data(input, weights, output, workspace);
  if (!bias.empty()) add_bias(output, bias);
}

// dx = W * im2col(dy)
void ConvTranspose2dPlan::backward_data(ConstTensorView output_grad, ConstTensorView weights, TensorView input_grad,
                                        std::span<std::byte> workspace) const {
  check_tensor(output_grad, shapes_.output, "output_grad");
  check_tensor(weights, shapes_.weights, "weights");
  check_tensor(input_grad, shapes_.input, "input_grad");
  conv_.forward(output_grad, weights, {}, input_grad, workspace);
}

// dW (+)= sum_n x_n * im2col(dy_n)^T: in the matching convolution dy is the input and x the output gradient.
void ConvTranspose2dPlan::backward_weights(ConstTensorView input, ConstTensorView output_grad, TensorView weights_grad,
                                           GradientMode mode, std::span<std::byte> workspace) const {
  check_tensor(input, shapes_.input, "input");
  check_tensor(output_grad, shapes_.output, "output_grad");
  check_tensor(weights_grad, shapes_.weights, "weights_grad");
  conv_.backward_weights(output_grad, input, weights_grad, mode, workspace);
}

// db (+)= sum over n, p, q of dy
void ConvTranspose2dPlan::backward_bias(ConstTensorView output_grad, std::span<float> bias_grad,
                                        GradientMode mode) const {
  check_tensor(output_grad, shapes_.output, "output_grad");
  check_optional_vector(bias_grad, shapes_.bias, "bias_grad", "params.has_bias is false");
  if (!bias_grad.empty()) sum_bias_gradient(output_grad, bias_grad, mode);
}

// The double-precision calls: the same role swap over the direct convolution's double loops.

void ConvTranspose2dPlan::forward(ConstTensorViewF64 input, ConstTensorViewF64 weights, std::span<const double> bias,
                                  TensorViewF64 output) const {
  check_tensor(input, shapes_.input, "input");
  check_tensor(weights, shapes_.weights, "weights");
  check_optional_vector(bias, shapes_.bias, "bias", "params.has_bias is false");
  check_tensor(output, shapes_.output, "output");
  direct_conv2d_backward_data(conv_.params(), input, weights, output);
  if (!bias.empty()) add_bias(output, bias);
}

void ConvTranspose2dPlan::backward_data(ConstTensorViewF64 output_grad, ConstTensorViewF64 weights,
                                        TensorViewF64 input_grad) const {
  check_tensor(output_grad, shapes_.output, "output_grad");
  check_tensor(weights, shapes_.weights, "weights");
  check_tensor(input_grad, shapes_.input, "input_grad");
  direct_conv2d_forward(conv_.params(), output_grad, weights, {}, input_grad);
}

void ConvTranspose2dPlan::backward_weights(ConstTensorViewF64 input, ConstTensorViewF64 output_grad,
                                           TensorViewF64 weights_grad, GradientMode mode) const {
  check_tensor(input, shapes_.input, "input");
  check_tensor(output_grad, shapes_.output, "output_grad");
  check_tensor(weights_grad, shapes_.weights, "weights_grad");
  if (mode == GradientMode::overwrite) {
    direct_conv2d_backward_weights(conv_.params(), output_grad, input, weights_grad);
    return;
  }
  // The direct loops only overwrite: sum into a temporary and add it on.
  std::vector<double> sum(static_cast<size_t>(weights_grad.size()));
  direct_conv2d_backward_weights(conv_.params(), output_grad, input, {sum.data(), shapes_.weights});
  for (size_t i = 0; i < sum.size(); ++i) weights_grad.data[i] += sum[i];
}

void ConvTranspose2dPlan::backward_bias(ConstTensorViewF64 output_grad, std::span<double> bias_grad,
                                        GradientMode mode) const {
  check_tensor(output_grad, shapes_.output, "output_grad");
  check_optional_vector(bias_grad, shapes_.bias, "bias_grad", "params.has_bias is false");
  if (!bias_grad.empty()) sum_bias_gradient(output_grad, bias_grad, mode);
}

}  // namespace convgemm
