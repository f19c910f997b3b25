// The Sequential model: building (add), the summary table, initialisation, and forward / backward through the
// layer stack over activation and gradient buffers that grow to the largest batch and are then reused.
#include <convgemm/error.hpp>
#include <convgemm/nn/sequential.hpp>

#include "tensor_checks.hpp"

#include <cstdio>
#include <random>
#include <string>
#include <utility>

namespace convgemm::nn {

Sequential::Sequential(const SampleShape& input_shape, bool fuse_layers)
    : input_shape_(input_shape), fuse_layers_(fuse_layers) {
  require_positive(input_shape[0], "input_shape channels");
  require_positive(input_shape[1], "input_shape height");
  require_positive(input_shape[2], "input_shape width");
}

Sequential::Sequential(Sequential&&) noexcept = default;
Sequential& Sequential::operator=(Sequential&&) noexcept = default;
Sequential::~Sequential() = default;

Sequential& Sequential::add(std::unique_ptr<Layer> layer) {
  if (layer == nullptr) throw Error(Status::invalid_argument, "layer", "is null");
  if (layer->input_shape() != output_shape()) {
    throw Error(Status::invalid_argument, "layer",
                layer->describe() + " was built for input " + to_string(layer->input_shape()) +
                    ", but the model's output is " + to_string(output_shape()));
  }
  layers_.push_back(std::move(layer));
  activations_.emplace_back();
  gradients_.emplace_back();
  outputs_.emplace_back();
  Layer& added = *layers_.back();
  skipped_.push_back({.forward = added.reshapes_only(), .backward = added.reshapes_only()});
  if (fuse_layers_ && layers_.size() >= 2) {
    const size_t i = layers_.size() - 1;
    Layer& previous = *layers_[i - 1];
    if (added.is_relu() && previous.fuse_output_relu()) skipped_[i].forward = true;
    if (previous.is_relu() && added.fuse_input_relu_gradient()) skipped_[i - 1].backward = true;
  }
  return *this;
}

const SampleShape& Sequential::output_shape() const {
  return layers_.empty() ? input_shape_ : layers_.back()->output_shape();
}

int64_t Sequential::parameter_count() const {
  int64_t count = 0;
  for (const auto& layer : layers_) count += layer->parameter_count();
  return count;
}

std::vector<Parameter*> Sequential::parameters() {
  std::vector<Parameter*> all;
  for (const auto& layer : layers_)
    for (Parameter& parameter : layer->parameters()) all.push_back(&parameter);
  return all;
}

std::vector<const Parameter*> Sequential::parameters() const {
  std::vector<const Parameter*> all;
  for (const auto& layer : layers_)
    for (const Parameter& parameter : std::as_const(*layer).parameters()) all.push_back(&parameter);
  return all;
}

namespace {

// 18496 -> "18,496", as Keras prints parameter counts.
std::string with_thousands(int64_t value) {
  const std::string digits = std::to_string(value);
  std::string text;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0 && digits[i - 1] != '-') text += ',';
    text += digits[i];
  }
  return text;
}

std::string row(const std::string& index, const std::string& layer, const std::string& shape,
                const std::string& params) {
  char line[256];
  std::snprintf(line, sizeof line, "%-4s%-40s %-20s %12s", index.c_str(), layer.c_str(), shape.c_str(), params.c_str());
  std::string text = line;
  text.erase(text.find_last_not_of(' ') + 1);
  return text + "\n";
}

}  // namespace

std::string Sequential::summary() const {
  std::string text = row("#", "Layer", "Output shape", "Params");
  const std::string rule(4 + 40 + 1 + 20 + 1 + 12, '=');
  text += rule + "\n";
  text += row("", "Input", to_string(input_shape_), "");
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& layer = *layers_[i];
    text += row(std::to_string(i), layer.describe(), to_string(layer.output_shape()),
                with_thousands(layer.parameter_count()));
  }
  text += rule + "\n";
  text += "Total params: " + with_thousands(parameter_count()) + "\n";
  return text;
}

void Sequential::initialize(uint64_t seed, Initializer scheme) {
  std::mt19937_64 rng(seed);
  for (const auto& layer : layers_) {
    for (Parameter& parameter : layer->parameters()) initialize_parameter(parameter, scheme, rng);
    if (!layer->random_state().empty()) layer->reseed(rng());
  }
}

ConstTensorView Sequential::forward(ConstTensorView input, bool training) {
  if (input.data == nullptr) throw Error(Status::invalid_argument, "input", "data pointer is null");
  const int64_t batch = input.shape[0];
  if (batch < 1 || input.shape != batch_shape(batch, input_shape_)) {
    throw Error(Status::invalid_argument, "input",
                "shape " + convgemm::to_string(input.shape) + " is not a batch of the model's input " +
                    to_string(input_shape_));
  }
  last_forward_trained_ = false;
  ConstTensorView current = input;
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& layer = *layers_[i];
    const Shape4 shape = batch_shape(batch, layer.output_shape());
    if (skipped_[i].forward) {  // the buffer passes through: reshaped, or already ReLU'd by the layer before
      outputs_[i] = current.data;
      current = {current.data, shape};
      continue;
    }
    // resize() keeps the capacity, so a smaller last batch and the next full one allocate nothing.
    activations_[i].resize(static_cast<size_t>(convgemm::element_count(shape)));
    const TensorView output{activations_[i].data(), shape};
    layer.forward(current, output, training);
    outputs_[i] = output.data;
    current = output;
  }
  last_input_ = input;
  last_forward_trained_ = training;
  return current;
}

void Sequential::backward(ConstTensorView output_grad) {
  if (!last_forward_trained_) {
    throw Error(Status::invalid_argument, "output_grad",
                "backward needs a training forward first (forward(input, true)) to differentiate");
  }
  const int64_t batch = last_input_.shape[0];
  check_tensor(output_grad, batch_shape(batch, output_shape()), "output_grad");
  ConstTensorView current_grad = output_grad;
  for (size_t i = layers_.size(); i-- > 0;) {
    Layer& layer = *layers_[i];
    const ConstTensorView input =
        i == 0 ? last_input_ : ConstTensorView{outputs_[i - 1], batch_shape(batch, layer.input_shape())};
    if (skipped_[i].backward) {  // reshaped, or the layer after already applied the ReLU's derivative
      current_grad = {current_grad.data, input.shape};
      continue;
    }
    const ConstTensorView output{outputs_[i], batch_shape(batch, layer.output_shape())};
    TensorView input_grad{};  // the first layer's input needs no gradient
    if (i > 0) {
      gradients_[i - 1].resize(static_cast<size_t>(input.size()));
      input_grad = {gradients_[i - 1].data(), input.shape};
    }
    layer.backward(input, output, current_grad, input_grad);
    current_grad = input_grad;
  }
}

std::vector<std::vector<uint64_t>> Sequential::random_state() const {
  std::vector<std::vector<uint64_t>> state;
  for (const auto& layer : layers_) state.push_back(layer->random_state());
  return state;
}

void Sequential::set_random_state(const std::vector<std::vector<uint64_t>>& state) {
  if (state.size() != layers_.size()) {
    throw Error(Status::invalid_argument, "random_state",
                "has " + std::to_string(state.size()) + " layers, the model " + std::to_string(layers_.size()));
  }
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (state[i].size() != layers_[i]->random_state().size()) {
      throw Error(Status::invalid_argument, "random_state",
                  "layer " + std::to_string(i) + " (" + layers_[i]->type() + ") keeps " +
                      std::to_string(layers_[i]->random_state().size()) + " values, given " +
                      std::to_string(state[i].size()));
    }
  }
  for (size_t i = 0; i < layers_.size(); ++i) layers_[i]->set_random_state(state[i]);
}

}  // namespace convgemm::nn
