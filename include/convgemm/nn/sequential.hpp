// A Sequential model: a stack of layers, each fed by the one before, built in C++ with add() or from a short text
// spec, with a Keras-style summary(), forward over a batch and backward to every parameter's gradient.
//
// The spec grammar (whitespace around layers is ignored; names and options are lower case):
//   spec    = layer { "," layer }
//   layer   = name [ number ] { option number }      e.g. conv32k3, maxpool2s1, dropout0.5
//   conv<K>k<R>[s<S>][p<P>][d<D>][g<G>]         Conv2d: K filters of R x R, stride S (1), P zero rows/columns on
//                                              every side (0), dilation D (1), G groups (1); with a bias
//   deconv<K>k<R>[s<S>][p<P>][o<O>][d<D>][g<G>] ConvTranspose2d, O = output padding (0)
//   tconv<K>k<R>t<T>[s<S>][p<P>][d<D>][g<G>]    TiledConv2d with T x T kernel sets
//   local<K>k<R>[s<S>][p<P>][d<D>][g<G>]        locally connected: TiledConv2d with one kernel set per output pixel
//   maxpool<R>[s<S>][p<P>]                      MaxPool2d, R x R windows, stride S (R), padding P (0)
//   avgpool<R>[s<S>][p<P>]                      AvgPool2d, likewise
//   maxout<G>                                   ChannelMaxPool over groups of G channels
//   relu | sigmoid | tanh | flatten             the layers of those names
//   dropout<P>                                  Dropout with drop probability P, e.g. dropout0.5
//   dense<K>                                    Dense with K outputs and a bias
// Numbers are decimal integers (dropout's is a decimal fraction). A spec that does not parse, or a layer that does
// not fit its input, is a convgemm::Error whose parameter() is the offending token, e.g. "conv32x3".
#pragma once

#include <convgemm/export.hpp>

#include <convgemm/nn/init.hpp>
#include <convgemm/nn/layer.hpp>
#include <convgemm/nn/layers.hpp>
#include <convgemm/tensor.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace convgemm::nn {

class CONVGEMM_CXX_API Sequential {
 public:
  // An empty model for samples of input_shape {C, H, W}. With fuse_layers, add() folds each ReLU into the layers
  // around it where they support it (Layer::is_relu): same results, bit for bit, with fewer passes over memory.
  explicit Sequential(const SampleShape& input_shape, bool fuse_layers = true);
  // The model a spec describes (grammar above), for samples of input_shape. Not initialised: call initialize().
  static Sequential from_spec(std::string_view spec, const SampleShape& input_shape, bool fuse_layers = true);

  Sequential(Sequential&&) noexcept;
  Sequential& operator=(Sequential&&) noexcept;
  ~Sequential();

  // Appends a layer built from its configuration for the current output shape, e.g.
  // model.add(Conv2d{.out_channels = 32, .kernel = {3, 3}}).add(ReLU{}). Throws convgemm::Error (leaving the model
  // as it was) when the layer does not fit.
  template <class LayerConfig>
  Sequential& add(const LayerConfig& config) {
    return add(make_layer(config, output_shape()));
  }
  // Appends a layer built elsewhere; its input shape must be the current output shape.
  Sequential& add(std::unique_ptr<Layer> layer);

  int64_t size() const { return static_cast<int64_t>(layers_.size()); }
  Layer& layer(int64_t index) { return *layers_.at(static_cast<size_t>(index)); }
  const Layer& layer(int64_t index) const { return *layers_.at(static_cast<size_t>(index)); }
  const SampleShape& input_shape() const { return input_shape_; }
  // The last layer's output shape (the input shape while the model is empty).
  const SampleShape& output_shape() const;
  int64_t parameter_count() const;
  // Every parameter, layer by layer in order.
  std::vector<Parameter*> parameters();
  std::vector<const Parameter*> parameters() const;

  // One line per layer (index, description, output shape, parameter count) and the total, Keras-style:
  //   #   Layer                         Output shape          Params
  //   0   Conv2d(1->32, 3x3)            (N, 32, 26, 26)          320
  std::string summary() const;

  // Draws every weight from one std::mt19937_64 seeded with seed, layer by layer in order (see init.hpp), sets the
  // biases to zero and reseeds every random layer (Dropout) from the same generator: the same seed gives the same
  // model, bit for bit.
  void initialize(uint64_t seed, Initializer scheme = Initializer::he_normal);

  // Runs the layers on a batch {N, input_shape()}, N >= 1, and returns the output {N, output_shape()}, which the
  // model owns and keeps until the next forward. The input is read, not copied: after a training forward it must
  // stay unchanged until backward. Buffers are allocated for the largest batch seen and reused.
  ConstTensorView forward(ConstTensorView input, bool training = false);
  // From dL/d(output) of the last forward, which must have been a training one, back through every layer:
  // overwrites every parameter's grad.
  void backward(ConstTensorView output_grad);

  // Every layer's random_state(), in layer order (empty for deterministic layers), and its inverse, which checks
  // every layer's share first and changes nothing on error.
  std::vector<std::vector<uint64_t>> random_state() const;
  void set_random_state(const std::vector<std::vector<uint64_t>>& state);

 private:
  SampleShape input_shape_;
  std::vector<std::unique_ptr<Layer>> layers_;
  // activations_[i] holds layer i's output, gradients_[i] dL/d(layer i's output) for all but the last layer;
  // outputs_[i] is where layer i's output of the last forward is: its activations_, or a reshaping layer's input.
  std::vector<std::vector<float>> activations_;
  std::vector<const float*> outputs_;
  // Per layer: its forward / backward is done by a neighbour (a fused ReLU) or is a reshape (Flatten).
  struct Skipped {
    bool forward = false, backward = false;
  };
  std::vector<Skipped> skipped_;
  bool fuse_layers_ = true;
  std::vector<std::vector<float>> gradients_;
  ConstTensorView last_input_{};
  bool last_forward_trained_ = false;
};

}  // namespace convgemm::nn
