// The Layer interface every building block of a Sequential model implements, and what a layer is made of:
// per-sample shapes, and parameters that carry their own gradients.
//
// A layer is built for the shape of one sample (Keras' "build"): its constructor validates its configuration against
// that input shape, fixes the output shape and allocates its parameters. Batches of any size then flow through it
// as NCHW tensors {N, C, H, W}. Layers keep per-batch-size state (convolution plans and their workspaces) and are
// therefore not safe to call from several threads at once; each call itself runs in parallel in the caller's TBB arena.
#pragma once

#include <convgemm/export.hpp>

#include <convgemm/tensor.hpp>

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace convgemm::nn {

// The shape of one sample, {C, H, W}; a flat feature vector of K values is {K, 1, 1}.
using SampleShape = std::array<int64_t, 3>;

// {N, C, H, W}
inline Shape4 batch_shape(int64_t batch, const SampleShape& sample) { return {batch, sample[0], sample[1], sample[2]}; }
inline int64_t element_count(const SampleShape& sample) { return sample[0] * sample[1] * sample[2]; }
// "(N, 32, 26, 26)", or "(N, 128)" for a flat shape, as a summary prints it.
CONVGEMM_CXX_API std::string to_string(const SampleShape& sample);

// A trainable tensor and the gradient of the loss with respect to it, owned by its layer. The shape is the one
// PyTorch gives the same tensor (convolution weights K x C/G x R x S, Dense weights K x C, biases K), and weight
// export writes it so.
struct CONVGEMM_CXX_API Parameter {
  std::string name;  // "weight" or "bias", as in PyTorch's state_dict
  std::vector<int64_t> shape;
  std::vector<float> value;
  std::vector<float> grad;  // dL/dvalue, overwritten by every backward
  // Fan-in and fan-out of the layer's weight, for initialisation (PyTorch's convention: weights.shape[1] and
  // weights.shape[0], each times the kernel's area). A bias carries its weight's fans: PyTorch's default scheme
  // draws biases from them, He and Glorot set biases to zero.
  int64_t fan_in = 0;
  int64_t fan_out = 0;
  bool is_bias = false;

  int64_t size() const { return static_cast<int64_t>(value.size()); }
};

// Makes a parameter of the given shape, zero-filled, with its gradient buffer.
CONVGEMM_CXX_API Parameter make_parameter(std::string name, std::vector<int64_t> shape, int64_t fan_in,
                                          int64_t fan_out);
// The same for a bias ("bias", is_bias set) of a weight with the given fans.
CONVGEMM_CXX_API Parameter make_bias(std::vector<int64_t> shape, int64_t fan_in, int64_t fan_out);

class CONVGEMM_CXX_API Layer {
 public:
  virtual ~Layer() = default;
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  // The layer's kind ("Conv2d", "ReLU", ...) and a one-line description of its configuration for summaries,
  // e.g. "Conv2d(1->32, 3x3)".
  virtual std::string type() const = 0;
  virtual std::string describe() const { return type(); }

  const SampleShape& input_shape() const { return input_shape_; }
  // The output shape for input_shape(), fixed when the layer was built.
  const SampleShape& output_shape() const { return output_shape_; }

  std::span<Parameter> parameters() { return parameters_; }
  std::span<const Parameter> parameters() const { return parameters_; }
  int64_t parameter_count() const;

  // output = f(input) for a batch: input {N, input_shape()}, output {N, output_shape()}, N >= 1. Training mode
  // matters to Dropout only (inference is the identity there).
  virtual void forward(ConstTensorView input, TensorView output, bool training) = 0;
  // From dL/d(output) of the last forward on this input and output: overwrites every parameter's grad and, unless
  // input_grad.data is null (the first layer of a model), writes dL/d(input).
  virtual void backward(ConstTensorView input, ConstTensorView output, ConstTensorView output_grad,
                        TensorView input_grad) = 0;
  // True when output is input's memory under another shape (Flatten): a Sequential then hands the buffer through
  // instead of calling forward and backward, which copy.
  virtual bool reshapes_only() const { return false; }

  // Fusion inside a Sequential; a layer used on its own is never fused. A ReLU (is_relu()) is folded into its
  // neighbours where they allow it: fuse_output_relu() asks the layer before it to write max(output, 0) from then on
  // (Conv2d: a post-op on each tile while it is in cache), fuse_input_relu_gradient() asks the layer after it to
  // write its input gradient times [input > 0] from then on (MaxPool2d: while routing). Each returns whether the
  // layer did so; the Sequential then skips the ReLU's forward or backward pass over the whole activation.
  virtual bool is_relu() const { return false; }
  virtual bool fuse_output_relu() { return false; }
  virtual bool fuse_input_relu_gradient() { return false; }

  // What a random layer draws from (Dropout: its seed and its call counter), so that a checkpoint can resume the
  // same random sequence. Empty for deterministic layers. set_random_state() takes what random_state() returned and
  // throws convgemm::Error naming "random_state" for anything else, changing nothing.
  virtual std::vector<uint64_t> random_state() const { return {}; }
  virtual void set_random_state(std::span<const uint64_t> state);
  // Seeds whatever the layer draws at random during training from `seed` (called by Sequential::initialize).
  virtual void reseed(uint64_t seed) { static_cast<void>(seed); }

 protected:
  Layer(const SampleShape& input_shape, const SampleShape& output_shape)
      : input_shape_(input_shape), output_shape_(output_shape) {}

  std::vector<Parameter> parameters_;

 private:
  SampleShape input_shape_;
  SampleShape output_shape_;
};

}  // namespace convgemm::nn
