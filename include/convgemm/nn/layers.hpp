// The layers a Sequential model is built from, each described by a plain configuration struct and built for an
// input shape by make_layer(): convolutions (ordinary, transposed, tiled / locally connected), pooling (max, average,
// cross-channel max), activations, dropout, flatten and dense. Each wraps the operator of the same name.
//
// Channel counts on the input side are never given: they come from the input shape, as in Keras. Every make_layer()
// validates the configuration against the input shape and throws convgemm::Error naming the offending parameter.
#pragma once

#include <convgemm/export.hpp>

#include <convgemm/conv2d.hpp>
#include <convgemm/conv_transpose2d.hpp>
#include <convgemm/nn/layer.hpp>

#include <cstdint>
#include <memory>

namespace convgemm::nn {

struct CONVGEMM_CXX_API Size2d {
  int64_t height = 1;
  int64_t width = 1;
};

// A convolution with out_channels filters of kernel.height x kernel.width over all (or, with groups, a 1/groups
// share of the) input channels; weights K x C/G x R x S, bias K.
struct CONVGEMM_CXX_API Conv2d {
  int64_t out_channels = 1;
  Size2d kernel{};
  Stride2d stride{};
  Padding2d padding{};
  Dilation2d dilation{};
  int64_t groups = 1;
  bool bias = true;
};

// A transposed convolution ("deconvolution"); weights C x K/G x R x S, bias K. See conv_transpose2d.hpp.
struct CONVGEMM_CXX_API ConvTranspose2d {
  int64_t out_channels = 1;
  Size2d kernel{};
  Stride2d stride{};
  Padding2d padding{};
  OutputPadding2d output_padding{};
  Dilation2d dilation{};
  int64_t groups = 1;
  bool bias = true;
};

// A tiled convolution with tile.height x tile.width kernel sets cycled over the output pixels; with
// locally_connected the tile is the whole output (one kernel set per pixel), whatever `tile` says. Weights
// (t_h*t_w*K) x C/G x R x S, bias t_h*t_w*K. See tiled_conv2d.hpp.
struct CONVGEMM_CXX_API TiledConv2d {
  int64_t out_channels = 1;
  Size2d kernel{};
  Stride2d stride{};
  Padding2d padding{};
  Dilation2d dilation{};
  int64_t groups = 1;
  Size2d tile{};
  bool locally_connected = false;
  bool bias = true;
};

// Max and average pooling over kernel windows of each channel. A stride of 0 means "the kernel" (PyTorch's
// default), so MaxPool2d{.kernel = {2, 2}} halves the image.
struct CONVGEMM_CXX_API MaxPool2d {
  Size2d kernel{2, 2};
  Stride2d stride{0, 0};
  Padding2d padding{};
};
struct CONVGEMM_CXX_API AvgPool2d {
  Size2d kernel{2, 2};
  Stride2d stride{0, 0};
  Padding2d padding{};
};

// Cross-channel max pooling (maxout): the maximum over each group of group_size consecutive channels.
struct CONVGEMM_CXX_API ChannelMaxPool {
  int64_t group_size = 2;
};

struct CONVGEMM_CXX_API ReLU {};
struct CONVGEMM_CXX_API Sigmoid {};
struct CONVGEMM_CXX_API Tanh {};

// Inverted dropout with drop probability p during training, the identity in inference. Its random stream is seeded
// by Sequential::initialize() (or reseed()) and advances once per training forward.
struct CONVGEMM_CXX_API Dropout {
  double probability = 0.5;
};

// {C, H, W} -> {C*H*W, 1, 1}, in NCHW order (as PyTorch's flatten).
struct CONVGEMM_CXX_API Flatten {};

// A fully connected layer over a flat input {C, 1, 1}; weights K x C (PyTorch's Linear), bias K.
struct CONVGEMM_CXX_API Dense {
  int64_t out_features = 1;
  bool bias = true;
};

CONVGEMM_CXX_API std::unique_ptr<Layer> make_layer(const Conv2d& config, const SampleShape& input);
CONVGEMM_CXX_API std::unique_ptr<Layer> make_layer(const ConvTranspose2d& config, const SampleShape& input);
CONVGEMM_CXX_API std::unique_ptr<Layer> make_layer(const TiledConv2d& config, const SampleShape& input);
CONVGEMM_CXX_API std::unique_ptr<Layer> make_layer(const MaxPool2d& config, const SampleShape& input);
CONVGEMM_CXX_API std::unique_ptr<Layer> make_layer(const AvgPool2d& config, const SampleShape& input);
CONVGEMM_CXX_API std::unique_ptr<Layer> make_layer(const ChannelMaxPool& config, const SampleShape& input);
CONVGEMM_CXX_API std::unique_ptr<Layer> make_layer(const ReLU& config, const SampleShape& input);
CONVGEMM_CXX_API std::unique_ptr<Layer> make_layer(const Sigmoid& config, const SampleShape& input);
CONVGEMM_CXX_API std::unique_ptr<Layer> make_layer(const Tanh& config, const SampleShape& input);
CONVGEMM_CXX_API std::unique_ptr<Layer> make_layer(const Dropout& config, const SampleShape& input);
CONVGEMM_CXX_API std::unique_ptr<Layer> make_layer(const Flatten& config, const SampleShape& input);
CONVGEMM_CXX_API std::unique_ptr<Layer> make_layer(const Dense& config, const SampleShape& input);

}  // namespace convgemm::nn
