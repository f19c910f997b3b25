// The layers of layers.hpp: output shapes and parameter counts from the input shape (the seeds' counts among them),
// every layer's backward against float finite differences of its forward through the Layer interface, dropout's
// training and inference behaviour and random state, and configurations that do not fit their input.
#include "nn_test_helpers.hpp"
#include "require_error.hpp"

#include <convgemm/nn/init.hpp>
#include <convgemm/nn/layers.hpp>

#include <catch2/catch.hpp>

#include <functional>
#include <random>
#include <vector>

using namespace convgemm;
using namespace convgemm::nn;
using convgemm::testing::check_float_gradient;
using convgemm::testing::dot_in_double;
using convgemm::testing::require_error;
using convgemm::testing::spaced_floats;

namespace {

// Runs forward and backward once on a batch of 2, then checks dL/dx and every parameter's gradient against finite
// differences of L = <dy, layer(x)>.
void check_layer_gradients(Layer& layer, uint64_t seed) {
  INFO(layer.describe());
  std::mt19937_64 rng(seed);
  std::mt19937_64 init(seed + 1);
  for (Parameter& parameter : layer.parameters()) {
    initialize_parameter(parameter, Initializer::glorot_uniform, init);
    for (float& value : parameter.value) value += 0.1f * static_cast<float>(uniform_double(init));  // nonzero biases
  }
  const int64_t batch = 2;
  const Shape4 in_shape = batch_shape(batch, layer.input_shape()), out_shape = batch_shape(batch, layer.output_shape());
  std::vector<float> x = spaced_floats(static_cast<size_t>(convgemm::element_count(in_shape)), rng);
  std::vector<float> dy(static_cast<size_t>(convgemm::element_count(out_shape)));
  for (float& value : dy) value = static_cast<float>(2 * uniform_double(rng) - 1);
  std::vector<float> y(dy.size()), dx(x.size());
  layer.forward({x.data(), in_shape}, {y.data(), out_shape}, false);
  layer.backward({x.data(), in_shape}, {y.data(), out_shape}, {dy.data(), out_shape}, {dx.data(), in_shape});
  const auto loss = [&] {
    layer.forward({x.data(), in_shape}, {y.data(), out_shape}, false);
    return dot_in_double(dy, y);
  };
  check_float_gradient(x, loss, dx, "dL/dx");
  for (Parameter& parameter : layer.parameters()) {
    const std::vector<float> analytic = parameter.grad;
    check_float_gradient(parameter.value, loss, analytic, "dL/d" + parameter.name);
  }
}

}  // namespace

TEST_CASE("layers: output shapes and parameter counts follow from the input shape", "[layers]") {
  // The seeds' counts: Conv2D(32, 3x3) on 1 channel = 32 * (1*3*3) + 32 = 320; Conv2D(64, 3x3) on 32 channels =
  // 64 * (32*3*3) + 64 = 18,496.
  const auto conv1 = make_layer(Conv2d{.out_channels = 32, .kernel = {3, 3}}, {1, 28, 28});
  CHECK(conv1->output_shape() == SampleShape{32, 26, 26});
  CHECK(conv1->parameter_count() == 320);
  const auto conv2 = make_layer(Conv2d{.out_channels = 64, .kernel = {3, 3}}, {32, 13, 13});
  CHECK(conv2->output_shape() == SampleShape{64, 11, 11});
  CHECK(conv2->parameter_count() == 18496);
  CHECK(conv2->parameters()[0].shape == std::vector<int64_t>{64, 32, 3, 3});
  CHECK(conv2->parameters()[1].shape == std::vector<int64_t>{64});

  const auto no_bias = make_layer(Conv2d{.out_channels = 8, .kernel = {3, 3}, .groups = 2, .bias = false}, {4, 5, 5});
  CHECK(no_bias->parameter_count() == 8 * 2 * 9);
  CHECK(no_bias->parameters().size() == 1);

  // Transposed: weights C x K/G x R x S; kernel 2, stride 2 doubles the size.
  const auto deconv = make_layer(ConvTranspose2d{.out_channels = 6, .kernel = {2, 2}, .stride = {2, 2}}, {4, 7, 5});
  CHECK(deconv->output_shape() == SampleShape{6, 14, 10});
  CHECK(deconv->parameters()[0].shape == std::vector<int64_t>{4, 6, 2, 2});
  CHECK(deconv->parameter_count() == 4 * 6 * 4 + 6);

  // Tiled: t_h*t_w kernel sets and biases; locally connected: one per output pixel.
  const auto tiled = make_layer(TiledConv2d{.out_channels = 3, .kernel = {3, 3}, .tile = {2, 2}}, {2, 6, 6});
  CHECK(tiled->output_shape() == SampleShape{3, 4, 4});
  CHECK(tiled->parameters()[0].shape == std::vector<int64_t>{2, 2, 3, 2, 3, 3});
  CHECK(tiled->parameter_count() == 4 * (3 * 2 * 9 + 3));
  const auto local = make_layer(TiledConv2d{.out_channels = 3, .kernel = {3, 3}, .locally_connected = true}, {2, 6, 6});
  CHECK(local->parameter_count() == 16 * (3 * 2 * 9 + 3));

  CHECK(make_layer(MaxPool2d{}, {32, 26, 26})->output_shape() == SampleShape{32, 13, 13});
  CHECK(make_layer(MaxPool2d{.kernel = {3, 3}, .stride = {1, 1}}, {2, 5, 5})->output_shape() == SampleShape{2, 3, 3});
  CHECK(make_layer(AvgPool2d{.kernel = {2, 2}, .padding = Padding2d::symmetric(1, 1)}, {2, 5, 5})->output_shape() ==
        SampleShape{2, 3, 3});
  CHECK(make_layer(ChannelMaxPool{.group_size = 3}, {12, 4, 4})->output_shape() == SampleShape{4, 4, 4});
  for (const auto& layer : {make_layer(ReLU{}, {3, 4, 5}), make_layer(Sigmoid{}, {3, 4, 5}),
                            make_layer(Tanh{}, {3, 4, 5}), make_layer(Dropout{}, {3, 4, 5})}) {
    CHECK(layer->output_shape() == SampleShape{3, 4, 5});
    CHECK(layer->parameter_count() == 0);
  }
  CHECK(make_layer(Flatten{}, {64, 5, 5})->output_shape() == SampleShape{1600, 1, 1});
  const auto dense = make_layer(Dense{.out_features = 128}, {1600, 1, 1});
  CHECK(dense->output_shape() == SampleShape{128, 1, 1});
  CHECK(dense->parameters()[0].shape == std::vector<int64_t>{128, 1600});  // PyTorch's Linear: K x C
  CHECK(dense->parameter_count() == 1600 * 128 + 128);
}

TEST_CASE("layers: every layer's backward matches finite differences of its forward", "[layers][gradient]") {
  uint64_t seed = 1;
  const auto check = [&](std::unique_ptr<Layer> layer) { check_layer_gradients(*layer, seed++); };
  check(make_layer(
      Conv2d{.out_channels = 3, .kernel = {3, 2}, .stride = {2, 1}, .padding = {1, 0, 1, 1}, .dilation = {1, 2}},
      {2, 5, 6}));
  check(make_layer(Conv2d{.out_channels = 4, .kernel = {3, 3}, .groups = 2}, {2, 4, 4}));
  check(make_layer(ConvTranspose2d{.out_channels = 3,
                                   .kernel = {3, 3},
                                   .stride = {2, 2},
                                   .padding = Padding2d::symmetric(1, 1),
                                   .output_padding = {1, 1}},
                   {2, 3, 3}));
  check(make_layer(TiledConv2d{.out_channels = 2, .kernel = {2, 2}, .tile = {2, 3}}, {2, 5, 5}));
  check(make_layer(TiledConv2d{.out_channels = 2, .kernel = {3, 3}, .locally_connected = true}, {1, 5, 4}));
  check(make_layer(MaxPool2d{.kernel = {2, 2}, .stride = {1, 1}}, {2, 4, 4}));
  check(make_layer(AvgPool2d{.kernel = {3, 3}, .stride = {2, 2}, .padding = Padding2d::symmetric(1, 1)}, {2, 5, 5}));
  check(make_layer(ChannelMaxPool{.group_size = 2}, {4, 3, 3}));
  check(make_layer(ReLU{}, {2, 3, 3}));
  check(make_layer(Sigmoid{}, {2, 3, 3}));
  check(make_layer(Tanh{}, {2, 3, 3}));
  check(make_layer(Flatten{}, {2, 3, 3}));
  check(make_layer(Dense{.out_features = 5}, {7, 1, 1}));
}

TEST_CASE("layers: dropout drops and scales in training, is the identity in inference, and replays its masks",
          "[layers][dropout]") {
  const auto layer = make_layer(Dropout{.probability = 0.25}, {4, 8, 8});
  layer->reseed(123);
  const Shape4 shape = batch_shape(3, layer->input_shape());
  const std::vector<float> x(static_cast<size_t>(convgemm::element_count(shape)), 2.0f);
  std::vector<float> y(x.size()), dx(x.size());
  const std::vector<float> dy(x.size(), 1.0f);

  layer->forward({x.data(), shape}, {y.data(), shape}, false);
  CHECK(y == x);

  const std::vector<uint64_t> before = layer->random_state();
  layer->forward({x.data(), shape}, {y.data(), shape}, true);
  layer->backward({x.data(), shape}, {y.data(), shape}, {dy.data(), shape}, {dx.data(), shape});
  size_t dropped = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    REQUIRE((y[i] == 0.0f || y[i] == 2.0f / 0.75f));
    // The gradient flows exactly where the value did, with the same scale.
    REQUIRE(dx[i] == (y[i] == 0.0f ? 0.0f : 1.0f / 0.75f));
    dropped += y[i] == 0.0f;
  }
  CHECK(static_cast<double>(dropped) / static_cast<double>(y.size()) == Approx(0.25).margin(0.05));

  // The next training forward draws a new mask; restoring the random state replays the first one.
  const std::vector<float> first = y;
  layer->forward({x.data(), shape}, {y.data(), shape}, true);
  CHECK(y != first);
  layer->set_random_state(before);
  layer->forward({x.data(), shape}, {y.data(), shape}, true);
  CHECK(y == first);
  require_error([&] { layer->set_random_state(std::vector<uint64_t>{1}); }, Status::invalid_argument, "random_state");
  require_error(
      [&] {
        make_layer(ReLU{}, {1, 1, 1})->set_random_state(std::vector<uint64_t>{1, 2});
      },
      Status::invalid_argument, "random_state");
}

TEST_CASE("layers: configurations that do not fit the input name the parameter", "[layers][errors]") {
  const auto bad = Status::invalid_argument;
  require_error([] { make_layer(Conv2d{.out_channels = 8, .kernel = {5, 5}}, {1, 4, 4}); }, bad, "kernel_height");
  require_error([] { make_layer(Conv2d{.out_channels = 0, .kernel = {3, 3}}, {1, 4, 4}); }, bad, "out_channels");
  require_error([] { make_layer(Conv2d{.out_channels = 6, .groups = 4}, {4, 4, 4}); }, bad, "out_channels");
  require_error(
      [] {
        make_layer(ConvTranspose2d{.out_channels = 2, .kernel = {2, 2}, .output_padding = {1, 0}}, {1, 2, 2});
      },
      bad, "output_padding.height");
  require_error(
      [] {
        make_layer(TiledConv2d{.out_channels = 2, .kernel = {3, 3}, .tile = {5, 1}}, {1, 6, 6});
      },
      bad, "tile_height");
  require_error([] { make_layer(MaxPool2d{.kernel = {3, 3}}, {1, 2, 2}); }, bad, "kernel_height");
  require_error([] { make_layer(ChannelMaxPool{.group_size = 3}, {4, 2, 2}); }, bad, "channels");
  require_error([] { make_layer(Dropout{.probability = 1.0}, {1, 2, 2}); }, bad, "probability");
  require_error([] { make_layer(Dense{.out_features = 10}, {8, 2, 2}); }, bad, "input shape");
  require_error([] { make_layer(Dense{.out_features = 0}, {8, 1, 1}); }, bad, "out_features");
  require_error([] { make_layer(ReLU{}, {0, 2, 2}); }, bad, "channels");
}
