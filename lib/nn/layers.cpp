// The layers of layers.hpp: each validates its configuration against the input shape when built, owns its
// parameters, and runs forward / backward through the operator of the same name. Operators whose plan depends on
// the batch size are made once per batch size and kept, so a training loop allocates nothing after its first batches.
#include <convgemm/activation.hpp>
#include <convgemm/dense.hpp>
#include <convgemm/error.hpp>
#include <convgemm/nn/layers.hpp>
#include <convgemm/pool2d.hpp>
#include <convgemm/tiled_conv2d.hpp>

#include "tensor_checks.hpp"

#include <algorithm>
#include <map>
#include <string>
#include <utility>

namespace convgemm::nn {

// ---------------------------------------------------------------------------------------------------------------
// The Layer base

std::string to_string(const SampleShape& sample) {
  if (sample[1] == 1 && sample[2] == 1) return "(N, " + std::to_string(sample[0]) + ")";
  return "(N, " + std::to_string(sample[0]) + ", " + std::to_string(sample[1]) + ", " + std::to_string(sample[2]) + ")";
}

Parameter make_parameter(std::string name, std::vector<int64_t> shape, int64_t fan_in, int64_t fan_out) {
  int64_t size = 1;
  for (const int64_t extent : shape)
    size = checked_product({size, extent, int64_t{sizeof(float)}}, name + " size") / int64_t{sizeof(float)};
  return {.name = std::move(name),
          .shape = std::move(shape),
          .value = std::vector<float>(static_cast<size_t>(size), 0.0f),
          .grad = std::vector<float>(static_cast<size_t>(size), 0.0f),
          .fan_in = fan_in,
          .fan_out = fan_out};
}

Parameter make_bias(std::vector<int64_t> shape, int64_t fan_in, int64_t fan_out) {
  Parameter bias = make_parameter("bias", std::move(shape), fan_in, fan_out);
  bias.is_bias = true;
  return bias;
}

int64_t Layer::parameter_count() const {
  int64_t count = 0;
  for (const Parameter& parameter : parameters_) count += parameter.size();
  return count;
}

void Layer::set_random_state(std::span<const uint64_t> state) {
  if (!state.empty()) {
    throw Error(
        Status::invalid_argument, "random_state",
        type() + " draws nothing at random, but was given a state of " + std::to_string(state.size()) + " values");
  }
}

namespace {

// ---------------------------------------------------------------------------------------------------------------
// Shared pieces

// The operator (or plan) for each batch size seen so far, made on first use.
template <class Operator>
class PerBatchSize {
 public:
  template <class Make>
  const Operator& get(int64_t batch, const Make& make) {
    auto it = operators_.find(batch);
    if (it == operators_.end()) it = operators_.emplace(batch, make(batch)).first;
    return it->second;
  }

 private:
  std::map<int64_t, Operator> operators_;
};

Shape4 to_shape4(const std::vector<int64_t>& shape) {
  Shape4 result{1, 1, 1, 1};
  std::copy(shape.begin(), shape.end(), result.begin());
  return result;
}

std::span<const float> values(const std::vector<Parameter>& parameters, size_t index) {
  return index < parameters.size() ? std::span<const float>(parameters[index].value) : std::span<const float>();
}
std::span<float> grads(std::vector<Parameter>& parameters, size_t index) {
  return index < parameters.size() ? std::span<float>(parameters[index].grad) : std::span<float>();
}

std::span<const float> flat(ConstTensorView view) { return {view.data, static_cast<size_t>(view.size())}; }
std::span<float> flat(TensorView view) { return {view.data, static_cast<size_t>(view.size())}; }

// Summary fragments that only appear when they differ from the default.
std::string size_text(int64_t height, int64_t width) { return std::to_string(height) + "x" + std::to_string(width); }
std::string window_text(const Stride2d& stride, const Padding2d& padding, const Dilation2d& dilation, int64_t groups) {
  std::string text;
  if (stride.height != 1 || stride.width != 1) text += ", stride " + size_text(stride.height, stride.width);
  if (padding.top != 0 || padding.bottom != 0 || padding.left != 0 || padding.right != 0) {
    text += ", padding " + std::to_string(padding.top) + "," + std::to_string(padding.bottom) + "," +
            std::to_string(padding.left) + "," + std::to_string(padding.right);
  }
  if (dilation.height != 1 || dilation.width != 1) text += ", dilation " + size_text(dilation.height, dilation.width);
  if (groups != 1) text += ", groups " + std::to_string(groups);
  return text;
}

SampleShape sample_of(const Shape4& shape) { return {shape[1], shape[2], shape[3]}; }

// ---------------------------------------------------------------------------------------------------------------
// Convolutions

Conv2dParams conv_params(const Conv2d& c, const SampleShape& input) {
  return {.batch = 1,
          .in_channels = input[0],
          .in_height = input[1],
          .in_width = input[2],
          .out_channels = c.out_channels,
          .kernel_height = c.kernel.height,
          .kernel_width = c.kernel.width,
          .stride = c.stride,
          .padding = c.padding,
          .dilation = c.dilation,
          .groups = c.groups,
          .has_bias = c.bias};
}

// The convolution and the transposed convolution as layers: one plan per batch size, made on first use; the
// weight gradient, the bias gradient, then (when asked for) the input gradient.
template <class Plan, class Params>
class PlannedConvolutionLayer : public Layer {
 public:
  PlannedConvolutionLayer(const Params& params, SampleShape input, SampleShape output, const Shape4& w,
                          int64_t bias_size)
      : Layer(input, output), params_(params) {
    // fan-in and fan-out per weight: what He/Glorot initialisation scale by.
    const int64_t area = w[2] * w[3];
    parameters_.push_back(make_parameter("weight", {w[0], w[1], w[2], w[3]}, w[1] * area, w[0] * area));
    if (params.has_bias) parameters_.push_back(make_bias({bias_size}, w[1] * area, w[0] * area));
  }

  void forward(ConstTensorView input, TensorView output, bool) override {
    if constexpr (std::is_same_v<Plan, Conv2dPlan>) {
      plan(input.shape[0])
          .forward(input, weights(), values(parameters_, 1), output, output_relu_ ? PostOp::relu : PostOp::none);
    } else {
      plan(input.shape[0]).forward(input, weights(), values(parameters_, 1), output);
    }
  }
  void backward(ConstTensorView input, ConstTensorView, ConstTensorView output_grad, TensorView input_grad) override {
    const Plan& p = plan(input.shape[0]);
    p.backward_weights(input, output_grad, {parameters_[0].grad.data(), weights().shape});
    p.backward_bias(output_grad, grads(parameters_, 1));
    if (input_grad.data != nullptr) p.backward_data(output_grad, weights(), input_grad);
  }

 protected:
  Params params_;
  bool output_relu_ = false;  // a fused ReLU (Conv2d only)

 private:
  ConstTensorView weights() const { return {parameters_[0].value.data(), to_shape4(parameters_[0].shape)}; }
  const Plan& plan(int64_t batch) {
    return plans_.get(batch, [&](int64_t n) {
      Params params = params_;
      params.batch = n;
      return Plan(params);
    });
  }

  PerBatchSize<Plan> plans_;
};

// y = W * im2col(x) + b
class Conv2dLayer final : public PlannedConvolutionLayer<Conv2dPlan, Conv2dParams> {
 public:
  Conv2dLayer(const Conv2dParams& params, const Conv2dShapes& shapes)
      : PlannedConvolutionLayer(params, sample_of(shapes.input), sample_of(shapes.output), shapes.weights,
                                params.out_channels) {}

  std::string type() const override { return "Conv2d"; }
  bool fuse_output_relu() override {
    output_relu_ = true;
    return true;
  }
  std::string describe() const override {
    return "Conv2d(" + std::to_string(params_.in_channels) + "->" + std::to_string(params_.out_channels) + ", " +
           size_text(params_.kernel_height, params_.kernel_width) +
           window_text(params_.stride, params_.padding, params_.dilation, params_.groups) + ")";
  }
};

// y = col2im(W^T * x) + b
class ConvTranspose2dLayer final : public PlannedConvolutionLayer<ConvTranspose2dPlan, ConvTranspose2dParams> {
 public:
  ConvTranspose2dLayer(const ConvTranspose2dParams& params, const ConvTranspose2dShapes& shapes)
      : PlannedConvolutionLayer(params, sample_of(shapes.input), sample_of(shapes.output), shapes.weights,
                                params.out_channels) {}

  std::string type() const override { return "ConvTranspose2d"; }
  std::string describe() const override {
    std::string text = "ConvTranspose2d(" + std::to_string(params_.in_channels) + "->" +
                       std::to_string(params_.out_channels) + ", " +
                       size_text(params_.kernel_height, params_.kernel_width) +
                       window_text(params_.stride, params_.padding, params_.dilation, params_.groups);
    if (params_.output_padding.height != 0 || params_.output_padding.width != 0) {
      text += ", output padding " + size_text(params_.output_padding.height, params_.output_padding.width);
    }
    return text + ")";
  }
};

// Kernel sets cycled over the output pixels, through the direct TiledConv2d operator.
class TiledConv2dLayer final : public Layer {
 public:
  TiledConv2dLayer(const TiledConv2dParams& params, const TiledConv2dShapes& shapes)
      : Layer(sample_of(shapes.input), sample_of(shapes.output)), params_(params), weights_shape_(shapes.weights) {
    const Shape4& w = shapes.weights;
    const int64_t K = params.conv.out_channels, area = w[2] * w[3];
    // Exported as (t_h, t_w, K, C/G, R, S): the kernel set's position in the tile is visible in the shape.
    parameters_.push_back(
        make_parameter("weight", {params.tile_height, params.tile_width, K, w[1], w[2], w[3]}, w[1] * area, K * area));
    if (params.conv.has_bias) {
      parameters_.push_back(make_bias({params.tile_height, params.tile_width, K}, w[1] * area, K * area));
    }
  }

  std::string type() const override { return "TiledConv2d"; }
  std::string describe() const override {
    const Conv2dParams& c = params_.conv;
    return "TiledConv2d(" + std::to_string(c.in_channels) + "->" + std::to_string(c.out_channels) + ", " +
           size_text(c.kernel_height, c.kernel_width) + window_text(c.stride, c.padding, c.dilation, c.groups) +
           ", tile " + size_text(params_.tile_height, params_.tile_width) + ")";
  }

  void forward(ConstTensorView input, TensorView output, bool) override {
    op(input.shape[0]).forward(input, weights(), values(parameters_, 1), output);
  }
  void backward(ConstTensorView input, ConstTensorView, ConstTensorView output_grad, TensorView input_grad) override {
    const convgemm::TiledConv2d& o = op(input.shape[0]);
    o.backward_weights(input, output_grad, {parameters_[0].grad.data(), weights_shape_});
    o.backward_bias(output_grad, grads(parameters_, 1));
    if (input_grad.data != nullptr) o.backward_data(output_grad, weights(), input_grad);
  }

 private:
  ConstTensorView weights() const { return {parameters_[0].value.data(), weights_shape_}; }
  const convgemm::TiledConv2d& op(int64_t batch) {
    return ops_.get(batch, [&](int64_t n) {
      TiledConv2dParams params = params_;
      params.conv.batch = n;
      return convgemm::TiledConv2d(params);
    });
  }

  TiledConv2dParams params_;
  Shape4 weights_shape_;
  PerBatchSize<convgemm::TiledConv2d> ops_;
};

// ---------------------------------------------------------------------------------------------------------------
// Pooling

Pool2dParams pool_params(const Size2d& kernel, const Stride2d& stride, const Padding2d& padding,
                         const SampleShape& input) {
  return {
      .batch = 1,
      .channels = input[0],
      .in_height = input[1],
      .in_width = input[2],
      .kernel_height = kernel.height,
      .kernel_width = kernel.width,
      .stride = {stride.height == 0 ? kernel.height : stride.height, stride.width == 0 ? kernel.width : stride.width},
      .padding = padding};
}

std::string pool_text(const char* type, const Pool2dParams& p) {
  return std::string(type) + "(" + size_text(p.kernel_height, p.kernel_width) +
         (p.stride.height != p.kernel_height || p.stride.width != p.kernel_width
              ? ", stride " + size_text(p.stride.height, p.stride.width)
              : "") +
         window_text({}, p.padding, {}, 1) + ")";
}

// Max or average pooling (Pool is convgemm::MaxPool2d or convgemm::AvgPool2d).
template <class Pool>
class Pool2dLayer final : public Layer {
 public:
  Pool2dLayer(const Pool2dParams& params, const PoolShapes& shapes, const char* type)
      : Layer(sample_of(shapes.input), sample_of(shapes.output)), params_(params), type_(type) {}

  std::string type() const override { return type_; }
  std::string describe() const override { return pool_text(type_, params_); }

  bool fuse_input_relu_gradient() override {
    after_relu_ = std::is_same_v<Pool, convgemm::MaxPool2d>;
    return after_relu_;
  }

  void forward(ConstTensorView input, TensorView output, bool) override { op(input.shape[0]).forward(input, output); }
  void backward(ConstTensorView input, ConstTensorView, ConstTensorView output_grad, TensorView input_grad) override {
    if (input_grad.data == nullptr) return;
    if constexpr (std::is_same_v<Pool, convgemm::MaxPool2d>) {
      if (after_relu_) {
        op(input.shape[0]).backward_after_relu(input, output_grad, input_grad);
      } else {
        op(input.shape[0]).backward(input, output_grad, input_grad);
      }
    } else {
      op(input.shape[0]).backward(output_grad, input_grad);
    }
  }

 private:
  const Pool& op(int64_t batch) {
    return ops_.get(batch, [&](int64_t n) {
      Pool2dParams params = params_;
      params.batch = n;
      return Pool(params);
    });
  }

  Pool2dParams params_;
  const char* type_;
  bool after_relu_ = false;  // a fused ReLU's derivative (MaxPool2d only)
  PerBatchSize<Pool> ops_;
};

class ChannelMaxPoolLayer final : public Layer {
 public:
  ChannelMaxPoolLayer(const ChannelMaxPoolParams& params, const PoolShapes& shapes)
      : Layer(sample_of(shapes.input), sample_of(shapes.output)), params_(params) {}

  std::string type() const override { return "ChannelMaxPool"; }
  std::string describe() const override {
    return "ChannelMaxPool(groups of " + std::to_string(params_.group_size) + ")";
  }

  void forward(ConstTensorView input, TensorView output, bool) override { op(input.shape[0]).forward(input, output); }
  void backward(ConstTensorView input, ConstTensorView, ConstTensorView output_grad, TensorView input_grad) override {
    if (input_grad.data != nullptr) op(input.shape[0]).backward(input, output_grad, input_grad);
  }

 private:
  const convgemm::ChannelMaxPool& op(int64_t batch) {
    return ops_.get(batch, [&](int64_t n) {
      ChannelMaxPoolParams params = params_;
      params.batch = n;
      return convgemm::ChannelMaxPool(params);
    });
  }

  ChannelMaxPoolParams params_;
  PerBatchSize<convgemm::ChannelMaxPool> ops_;
};

// ---------------------------------------------------------------------------------------------------------------
// Elementwise layers

// ReLU, sigmoid or tanh: forward(x, y) and backward(y, dy, dx) on flat spans.
class ActivationLayer final : public Layer {
 public:
  using Forward = void (*)(std::span<const float>, std::span<float>);
  using Backward = void (*)(std::span<const float>, std::span<const float>, std::span<float>);

  ActivationLayer(const SampleShape& input, const char* type, Forward forward_function, Backward backward_function)
      : Layer(input, input), type_(type), forward_(forward_function), backward_(backward_function) {}

  std::string type() const override { return type_; }
  bool is_relu() const override { return forward_ == Forward{relu_forward}; }
  void forward(ConstTensorView input, TensorView output, bool) override {
    check_tensor(output, input.shape, "output");
    forward_(flat(input), flat(output));
  }
  void backward(ConstTensorView, ConstTensorView output, ConstTensorView output_grad, TensorView input_grad) override {
    if (input_grad.data != nullptr) backward_(flat(output), flat(output_grad), flat(input_grad));
  }

 private:
  const char* type_;
  Forward forward_;
  Backward backward_;
};

// Inverted dropout: training forward number c draws mask c of the layer's stream (see activation.hpp), and
// backward applies the mask of the last training forward.
class DropoutLayer final : public Layer {
 public:
  DropoutLayer(const SampleShape& input, double probability)
      : Layer(input, input), op_({.probability = probability, .seed = 0}) {}

  std::string type() const override { return "Dropout"; }
  std::string describe() const override {
    std::string p = std::to_string(op_.params().probability);
    p.erase(p.find_last_not_of('0') + 1);  // "0.500000" -> "0.5"
    if (p.back() == '.') p.pop_back();
    return "Dropout(" + p + ")";
  }

  void forward(ConstTensorView input, TensorView output, bool training) override {
    check_tensor(output, input.shape, "output");
    if (!training) {
      std::copy(input.data, input.data + input.size(), output.data);
      return;
    }
    op_.forward(calls_, flat(input), flat(output));
    last_call_ = calls_++;
  }
  void backward(ConstTensorView, ConstTensorView, ConstTensorView output_grad, TensorView input_grad) override {
    if (input_grad.data != nullptr) op_.backward(last_call_, flat(output_grad), flat(input_grad));
  }

  std::vector<uint64_t> random_state() const override { return {op_.params().seed, calls_}; }
  void set_random_state(std::span<const uint64_t> state) override {
    if (state.size() != 2) {
      throw Error(Status::invalid_argument, "random_state",
                  "Dropout keeps 2 values (seed, calls), given " + std::to_string(state.size()));
    }
    op_ = convgemm::Dropout({.probability = op_.params().probability, .seed = state[0]});
    calls_ = state[1];
  }
  void reseed(uint64_t seed) override { set_random_state(std::vector<uint64_t>{seed, 0}); }

 private:
  convgemm::Dropout op_;
  uint64_t calls_ = 0;      // training forwards so far: the next one draws mask number calls_
  uint64_t last_call_ = 0;  // the mask backward applies
};

class FlattenLayer final : public Layer {
 public:
  explicit FlattenLayer(const SampleShape& input) : Layer(input, {element_count(input), 1, 1}) {}

  std::string type() const override { return "Flatten"; }
  // NCHW is already sample-major, so flattening is a new shape: a copy when called on its own, nothing at all in a
  // Sequential.
  bool reshapes_only() const override { return true; }
  void forward(ConstTensorView input, TensorView output, bool) override {
    check_vector(flat(output), input.size(), "output");
    std::copy(input.data, input.data + input.size(), output.data);
  }
  void backward(ConstTensorView, ConstTensorView, ConstTensorView output_grad, TensorView input_grad) override {
    if (input_grad.data == nullptr) return;
    check_vector(flat(input_grad), output_grad.size(), "input_grad");
    std::copy(output_grad.data, output_grad.data + output_grad.size(), input_grad.data);
  }
};

// ---------------------------------------------------------------------------------------------------------------
// Dense

class DenseLayer final : public Layer {
 public:
  DenseLayer(const DenseParams& params)
      : Layer({params.in_features, 1, 1}, {params.out_features, 1, 1}), params_(params) {
    parameters_.push_back(
        make_parameter("weight", {params.out_features, params.in_features}, params.in_features, params.out_features));
    if (params.has_bias)
      parameters_.push_back(make_bias({params.out_features}, params.in_features, params.out_features));
  }

  std::string type() const override { return "Dense"; }
  std::string describe() const override {
    return "Dense(" + std::to_string(params_.in_features) + "->" + std::to_string(params_.out_features) + ")";
  }

  void forward(ConstTensorView input, TensorView output, bool) override {
    op(input.shape[0]).forward(input, weights(), values(parameters_, 1), output);
  }
  void backward(ConstTensorView input, ConstTensorView, ConstTensorView output_grad, TensorView input_grad) override {
    const convgemm::Dense& d = op(input.shape[0]);
    d.backward_weights(input, output_grad, {parameters_[0].grad.data(), weights().shape});
    d.backward_bias(output_grad, grads(parameters_, 1));
    if (input_grad.data != nullptr) d.backward_data(output_grad, weights(), input_grad);
  }

 private:
  ConstTensorView weights() const { return {parameters_[0].value.data(), to_shape4(parameters_[0].shape)}; }
  const convgemm::Dense& op(int64_t batch) {
    return ops_.get(batch, [&](int64_t n) {
      DenseParams params = params_;
      params.batch = n;
      return convgemm::Dense(params);
    });
  }

  DenseParams params_;
  PerBatchSize<convgemm::Dense> ops_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// make_layer: validate against the input shape, then build

std::unique_ptr<Layer> make_layer(const Conv2d& config, const SampleShape& input) {
  const Conv2dParams params = conv_params(config, input);
  return std::make_unique<Conv2dLayer>(params, conv2d_shapes(params));
}

std::unique_ptr<Layer> make_layer(const ConvTranspose2d& c, const SampleShape& input) {
  const ConvTranspose2dParams params{.batch = 1,
                                     .in_channels = input[0],
                                     .in_height = input[1],
                                     .in_width = input[2],
                                     .out_channels = c.out_channels,
                                     .kernel_height = c.kernel.height,
                                     .kernel_width = c.kernel.width,
                                     .stride = c.stride,
                                     .padding = c.padding,
                                     .output_padding = c.output_padding,
                                     .dilation = c.dilation,
                                     .groups = c.groups,
                                     .has_bias = c.bias};
  return std::make_unique<ConvTranspose2dLayer>(params, conv_transpose2d_shapes(params));
}

std::unique_ptr<Layer> make_layer(const TiledConv2d& c, const SampleShape& input) {
  const Conv2dParams conv = conv_params({.out_channels = c.out_channels,
                                         .kernel = c.kernel,
                                         .stride = c.stride,
                                         .padding = c.padding,
                                         .dilation = c.dilation,
                                         .groups = c.groups,
                                         .bias = c.bias},
                                        input);
  const TiledConv2dParams params =
      c.locally_connected ? locally_connected2d_params(conv)
                          : TiledConv2dParams{.conv = conv, .tile_height = c.tile.height, .tile_width = c.tile.width};
  return std::make_unique<TiledConv2dLayer>(params, tiled_conv2d_shapes(params));
}

std::unique_ptr<Layer> make_layer(const MaxPool2d& c, const SampleShape& input) {
  const Pool2dParams params = pool_params(c.kernel, c.stride, c.padding, input);
  return std::make_unique<Pool2dLayer<convgemm::MaxPool2d>>(params, pool2d_shapes(params), "MaxPool2d");
}

std::unique_ptr<Layer> make_layer(const AvgPool2d& c, const SampleShape& input) {
  const Pool2dParams params = pool_params(c.kernel, c.stride, c.padding, input);
  return std::make_unique<Pool2dLayer<convgemm::AvgPool2d>>(params, pool2d_shapes(params), "AvgPool2d");
}

std::unique_ptr<Layer> make_layer(const ChannelMaxPool& c, const SampleShape& input) {
  const ChannelMaxPoolParams params{
      .batch = 1, .channels = input[0], .height = input[1], .width = input[2], .group_size = c.group_size};
  return std::make_unique<ChannelMaxPoolLayer>(params, channel_max_pool_shapes(params));
}

namespace {
void require_valid_shape(const SampleShape& input) {
  require_positive(input[0], "channels");
  require_positive(input[1], "height");
  require_positive(input[2], "width");
  checked_product({input[0], input[1], input[2], int64_t{sizeof(double)}}, "sample size");
}
}  // namespace

std::unique_ptr<Layer> make_layer(const ReLU&, const SampleShape& input) {
  require_valid_shape(input);
  return std::make_unique<ActivationLayer>(input, "ReLU", ActivationLayer::Forward{relu_forward},
                                           ActivationLayer::Backward{relu_backward});
}
std::unique_ptr<Layer> make_layer(const Sigmoid&, const SampleShape& input) {
  require_valid_shape(input);
  return std::make_unique<ActivationLayer>(input, "Sigmoid", ActivationLayer::Forward{sigmoid_forward},
                                           ActivationLayer::Backward{sigmoid_backward});
}
std::unique_ptr<Layer> make_layer(const Tanh&, const SampleShape& input) {
  require_valid_shape(input);
  return std::make_unique<ActivationLayer>(input, "Tanh", ActivationLayer::Forward{tanh_forward},
                                           ActivationLayer::Backward{tanh_backward});
}

std::unique_ptr<Layer> make_layer(const Dropout& c, const SampleShape& input) {
  require_valid_shape(input);
  return std::make_unique<DropoutLayer>(input, c.probability);
}

std::unique_ptr<Layer> make_layer(const Flatten&, const SampleShape& input) {
  require_valid_shape(input);
  return std::make_unique<FlattenLayer>(input);
}

std::unique_ptr<Layer> make_layer(const Dense& c, const SampleShape& input) {
  require_valid_shape(input);
  if (input[1] != 1 || input[2] != 1) {
    throw Error(Status::invalid_argument, "input shape",
                "Dense needs a flat input (C, 1, 1), got " + to_string(input) + "; put a Flatten before it");
  }
  const DenseParams params{.batch = 1, .in_features = input[0], .out_features = c.out_features, .has_bias = c.bias};
  dense_shapes(params);  // validates
  return std::make_unique<DenseLayer>(params);
}

}  // namespace convgemm::nn
