// The Sequential model: the reference net's summary and the seeds' parameter counts, the spec grammar (every layer
// and option, and bad specs naming their token), add() and the spec giving the same model, whole-model gradients
// against finite differences, buffers reused across batches, and misuse.
#include "nn_test_helpers.hpp"
#include "require_error.hpp"

#include <convgemm/nn/sequential.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <string>
#include <vector>

using namespace convgemm;
using namespace convgemm::nn;
using convgemm::testing::check_float_gradient;
using convgemm::testing::dot_in_double;
using convgemm::testing::require_error;
using convgemm::testing::snapshot;
using convgemm::testing::spaced_floats;

namespace {

const char* const reference_spec =
    "conv32k3,relu,maxpool2,conv64k3,relu,maxpool2,flatten,dense128,relu,dropout0.5,dense10";

std::vector<float> random_batch(const Sequential& model, int64_t batch, std::mt19937_64& rng) {
  std::vector<float> x(static_cast<size_t>(batch * element_count(model.input_shape())));
  for (float& value : x) value = static_cast<float>(uniform_double(rng));
  return x;
}

}  // namespace

TEST_CASE("sequential: the reference net's summary shows the seeds' parameter counts", "[sequential]") {
  const Sequential model = Sequential::from_spec(reference_spec, {1, 28, 28});
  REQUIRE(model.size() == 11);
  CHECK(model.layer(0).parameter_count() == 320);
  CHECK(model.layer(3).parameter_count() == 18496);
  CHECK(model.layer(7).parameter_count() == 1600 * 128 + 128);
  CHECK(model.layer(10).parameter_count() == 128 * 10 + 10);
  CHECK(model.parameter_count() == 225034);
  CHECK(model.output_shape() == SampleShape{10, 1, 1});

  const std::string summary = model.summary();
  INFO(summary);
  for (const char* expected :
       {"Conv2d(1->32, 3x3)", "(N, 32, 26, 26)", "320", "MaxPool2d(2x2)", "(N, 32, 13, 13)", "Conv2d(32->64, 3x3)",
        "(N, 64, 11, 11)", "18,496", "(N, 64, 5, 5)", "Flatten", "(N, 1600)", "Dense(1600->128)", "204,928",
        "Dropout(0.5)", "Dense(128->10)", "1,290", "Total params: 225,034"}) {
    CHECK(summary.find(expected) != std::string::npos);
  }
  // One line per layer, plus the header, two rules, the input and the total.
  CHECK(std::count(summary.begin(), summary.end(), '\n') == 11 + 5);
}

TEST_CASE("sequential: add() and the spec build the same model", "[sequential]") {
  Sequential built({1, 12, 12});
  built.add(Conv2d{.out_channels = 6, .kernel = {3, 3}, .padding = Padding2d::symmetric(1, 1)})
      .add(ReLU{})
      .add(MaxPool2d{})
      .add(Flatten{})
      .add(Dropout{.probability = 0.25})
      .add(Dense{.out_features = 4});
  Sequential parsed = Sequential::from_spec(" conv6k3p1, relu ,maxpool2,flatten,dropout0.25,dense4 ", {1, 12, 12});
  REQUIRE(parsed.size() == built.size());
  for (int64_t i = 0; i < built.size(); ++i) CHECK(parsed.layer(i).describe() == built.layer(i).describe());
  built.initialize(7);
  parsed.initialize(7);
  CHECK(snapshot(built.parameters()) == snapshot(parsed.parameters()));

  std::mt19937_64 rng(1);
  const auto x = random_batch(built, 5, rng);
  const Shape4 shape = batch_shape(5, built.input_shape());
  const ConstTensorView a = built.forward({x.data(), shape}, true);
  const std::vector<float> from_built(a.data, a.data + a.size());
  const ConstTensorView b = parsed.forward({x.data(), shape}, true);
  CHECK(std::vector<float>(b.data, b.data + b.size()) == from_built);

  // Another seed gives other weights; the same seed again the same ones.
  parsed.initialize(8);
  CHECK(snapshot(built.parameters()) != snapshot(parsed.parameters()));
  parsed.initialize(7);
  CHECK(snapshot(built.parameters()) == snapshot(parsed.parameters()));
}

TEST_CASE("sequential: every layer and option of the spec grammar", "[sequential][spec]") {
  const Sequential model = Sequential::from_spec(
      "conv8k3s1p1d1g1,tanh,deconv8k2s2o1p1g2,sigmoid,tconv4k3t2s1,maxout2,local2k3p1,avgpool2s1p1,maxpool3s2,"
      "relu,flatten,dropout0.1,dense3",
      {2, 6, 6});
  const std::vector<std::string> types = {
      "Conv2d",    "Tanh", "ConvTranspose2d", "Sigmoid", "TiledConv2d", "ChannelMaxPool", "TiledConv2d", "AvgPool2d",
      "MaxPool2d", "ReLU", "Flatten",         "Dropout", "Dense"};
  REQUIRE(model.size() == static_cast<int64_t>(types.size()));
  for (size_t i = 0; i < types.size(); ++i) CHECK(model.layer(static_cast<int64_t>(i)).type() == types[i]);
  CHECK(model.layer(0).output_shape() == SampleShape{8, 6, 6});
  // deconv: (6-1)*2 - 2 + 1 + 1 + 1 = 11
  CHECK(model.layer(2).output_shape() == SampleShape{8, 11, 11});
  CHECK(model.layer(2).parameters()[0].shape == std::vector<int64_t>{8, 4, 2, 2});
  CHECK(model.layer(4).output_shape() == SampleShape{4, 9, 9});
  CHECK(model.layer(4).parameters()[0].shape == std::vector<int64_t>{2, 2, 4, 8, 3, 3});
  CHECK(model.layer(5).output_shape() == SampleShape{2, 9, 9});
  CHECK(model.layer(6).parameters()[0].shape == std::vector<int64_t>{9, 9, 2, 2, 3, 3});  // one set per pixel
  CHECK(model.layer(7).output_shape() == SampleShape{2, 10, 10});
  CHECK(model.layer(8).output_shape() == SampleShape{2, 4, 4});
  CHECK(model.layer(10).output_shape() == SampleShape{32, 1, 1});
  CHECK(model.layer(11).describe() == "Dropout(0.1)");
  CHECK(model.output_shape() == SampleShape{3, 1, 1});
}

TEST_CASE("sequential: a bad spec is an error naming the offending token", "[sequential][spec][errors]") {
  const auto rejects = [](const std::string& spec, const std::string& token) {
    INFO("spec: " << spec);
    require_error([&] { Sequential::from_spec(spec, {1, 28, 28}); }, Status::invalid_argument, token);
  };
  rejects("conv32k3,relu,bogus7", "bogus7");                            // unknown layer
  rejects("conv32x3", "conv32x3");                                      // unknown option
  rejects("conv32", "conv32");                                          // missing kernel
  rejects("conv32k", "conv32k");                                        // option without a number
  rejects("conv32k3k3", "conv32k3k3");                                  // option given twice
  rejects("conv3.5k3", "conv3.5k3");                                    // fraction where an integer belongs
  rejects("conv99999999999999999999k3", "conv99999999999999999999k3");  // past 64 bits
  rejects("Conv32k3", "Conv32k3");                                      // upper case
  rejects("conv32k3-", "conv32k3-");                                    // stray character
  rejects("relu3", "relu3");                                            // a number where none belongs
  rejects("dense", "dense");                                            // a number missing
  rejects("conv32k3,,relu", "<empty>");                                 // empty token
  rejects("conv32k3,", "<empty>");
  rejects("dropout1.5", "dropout1.5");  // the layer's own error, re-thrown naming the token
  rejects("dropoutx", "dropoutx");
  rejects("conv32k30", "conv32k30");                // kernel larger than the image
  rejects("conv32k3,dense10", "dense10");           // dense on an unflattened input
  rejects("conv32k3,maxpool2,maxout5", "maxout5");  // 32 channels not divisible by 5
  rejects("tconv8k3", "tconv8k3");                  // tile missing
  rejects("deconv4k2s2o2", "deconv4k2s2o2");        // output padding not below the stride
  // The message says where and what.
  try {
    Sequential::from_spec("conv32k3,relu,bogus7", {1, 28, 28});
  } catch (const Error& error) {
    CHECK(std::string(error.what()).find("layer 2 of the model spec: unknown layer 'bogus'") != std::string::npos);
  }
}

TEST_CASE("sequential: whole-model gradients match finite differences", "[sequential][gradient]") {
  // Smooth layers (no kinks near the inputs), every kind of parameterised layer, batch of 3.
  Sequential model =
      Sequential::from_spec("conv3k3p1,tanh,deconv2k2s2,avgpool2,tconv2k2t2,sigmoid,flatten,dense4", {2, 5, 5});
  model.initialize(11, Initializer::glorot_uniform);
  std::mt19937_64 rng(12);
  const Shape4 in_shape = batch_shape(3, model.input_shape());
  const Shape4 out_shape = batch_shape(3, model.output_shape());
  std::vector<float> x = spaced_floats(static_cast<size_t>(convgemm::element_count(in_shape)), rng);
  std::vector<float> dy(static_cast<size_t>(convgemm::element_count(out_shape)));
  for (float& value : dy) value = static_cast<float>(2 * uniform_double(rng) - 1);
  model.forward({x.data(), in_shape}, true);
  model.backward({dy.data(), out_shape});
  const auto loss = [&] {
    const ConstTensorView y = model.forward({x.data(), in_shape}, false);
    return dot_in_double(dy, std::vector<float>(y.data, y.data + y.size()));
  };
  for (Parameter* parameter : model.parameters()) {
    const std::vector<float> analytic = parameter->grad;
    check_float_gradient(parameter->value, loss, analytic, parameter->name);
  }
}

TEST_CASE("sequential: fused ReLUs give the unfused model's outputs and gradients bit for bit", "[sequential]") {
  // conv -> relu -> maxpool2 fuses both ways (the conv's post-op, the pooling's masked routing); depthwise conv ->
  // relu -> maxpool3s2 does too, on the depthwise and generic pooling paths; relu after dense, and relu before
  // flatten, stay layers of their own. Inputs and weights include exact zeros and NaN-free ties: integers.
  const char* spec = "conv6k3p1,relu,maxpool2,conv6k3g6,relu,maxpool3s2,conv4k1,relu,flatten,dense5,relu,dense3";
  Sequential fused = Sequential::from_spec(spec, {2, 13, 13});
  Sequential unfused = Sequential::from_spec(spec, {2, 13, 13}, /*fuse_layers=*/false);
  fused.initialize(3);
  unfused.initialize(3);
  std::mt19937_64 rng(4);
  std::uniform_int_distribution<int> small(-2, 2);
  for (Parameter* parameter : fused.parameters())
    for (float& value : parameter->value) value = static_cast<float>(small(rng)) / 4;
  const auto fused_parameters = fused.parameters();
  const auto unfused_parameters = unfused.parameters();
  for (size_t i = 0; i < fused_parameters.size(); ++i) unfused_parameters[i]->value = fused_parameters[i]->value;

  const Shape4 in_shape = batch_shape(3, fused.input_shape());
  const Shape4 out_shape = batch_shape(3, fused.output_shape());
  std::vector<float> x(static_cast<size_t>(convgemm::element_count(in_shape)));
  for (float& value : x) value = static_cast<float>(small(rng));
  std::vector<float> dy(static_cast<size_t>(convgemm::element_count(out_shape)));
  for (float& value : dy) value = static_cast<float>(small(rng));

  const ConstTensorView y_fused = fused.forward({x.data(), in_shape}, true);
  const ConstTensorView y_unfused = unfused.forward({x.data(), in_shape}, true);
  CHECK(std::vector<float>(y_fused.data, y_fused.data + y_fused.size()) ==
        std::vector<float>(y_unfused.data, y_unfused.data + y_unfused.size()));
  fused.backward({dy.data(), out_shape});
  unfused.backward({dy.data(), out_shape});
  for (size_t i = 0; i < fused_parameters.size(); ++i) {
    INFO("parameter " << i);
    CHECK(fused_parameters[i]->grad == unfused_parameters[i]->grad);
  }
  // The gradients are not all zero: the comparison has something to compare.
  double magnitude = 0;
  for (const Parameter* parameter : fused_parameters)
    for (const float g : parameter->grad) magnitude += std::fabs(g);
  CHECK(magnitude > 1);
}

TEST_CASE("sequential: buffers grow to the largest batch and are reused", "[sequential]") {
  Sequential model = Sequential::from_spec("conv4k3,relu,maxpool2,flatten,dense3", {1, 8, 8});
  model.initialize(1);
  std::mt19937_64 rng(2);
  const auto x = random_batch(model, 16, rng);
  const auto run = [&](int64_t batch) {
    const ConstTensorView y = model.forward({x.data(), batch_shape(batch, model.input_shape())}, true);
    std::vector<float> dy(static_cast<size_t>(y.size()), 1.0f);
    model.backward({dy.data(), y.shape});
    return y;
  };
  const ConstTensorView full = run(16);
  CHECK(full.shape == Shape4{16, 3, 1, 1});
  const float* buffer = full.data;
  // A smaller last batch, then full batches again: the same memory every time.
  CHECK(run(5).data == buffer);
  CHECK(run(16).data == buffer);
  // The first rows of a batch do not depend on the rest of it.
  const std::vector<float> first_five(full.data, full.data + 15);
  const ConstTensorView five = model.forward({x.data(), batch_shape(5, model.input_shape())}, false);
  const ConstTensorView sixteen = model.forward({x.data(), batch_shape(16, model.input_shape())}, false);
  CHECK(std::vector<float>(five.data, five.data + 15) == std::vector<float>(sixteen.data, sixteen.data + 15));
}

TEST_CASE("sequential: misuse names the argument", "[sequential][errors]") {
  const auto bad = Status::invalid_argument;
  Sequential model = Sequential::from_spec("conv4k3,relu,flatten,dense3", {1, 6, 6});
  model.initialize(3);
  const std::vector<float> x(2 * 36, 0.5f), dy(2 * 3, 1.0f);
  require_error([&] { model.forward({x.data(), {2, 1, 6, 5}}); }, bad, "input");
  require_error([&] { model.forward({x.data(), {0, 1, 6, 6}}); }, bad, "input");
  require_error([&] { model.forward({nullptr, {2, 1, 6, 6}}); }, bad, "input");
  model.forward({x.data(), {2, 1, 6, 6}}, false);
  require_error([&] { model.backward({dy.data(), {2, 3, 1, 1}}); }, bad, "output_grad");  // not a training forward
  model.forward({x.data(), {2, 1, 6, 6}}, true);
  require_error([&] { model.backward({dy.data(), {1, 3, 1, 1}}); }, bad, "output_grad");
  require_error([&] { model.add(make_layer(ReLU{}, {4, 1, 1})); }, bad, "layer");
  require_error([&] { model.add(std::unique_ptr<Layer>()); }, bad, "layer");
  const int64_t layers = model.size();
  require_error([&] { model.add(Dense{.out_features = 0}); }, bad, "out_features");
  CHECK(model.size() == layers);  // a failed add leaves the model as it was
  require_error([] { Sequential empty({0, 1, 1}); }, bad, "input_shape channels");
  require_error([&] { model.set_random_state({}); }, bad, "random_state");
}
