// The training loop: a tiny CNN learns a synthetic task (which quadrant of a 12x12 image holds a bright blob) to
// more than 95% test accuracy in a few epochs, with softmax cross-entropy and with sigmoid binary cross-entropy;
// training is bitwise reproducible across thread counts; callbacks, evaluate() and the loss helper; bad input.
#include "nn_test_helpers.hpp"
#include "require_error.hpp"

#include <convgemm/nn/train.hpp>

#include <oneapi/tbb/task_arena.h>
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <random>
#include <vector>

using namespace convgemm;
using namespace convgemm::nn;
using convgemm::testing::require_error;
using convgemm::testing::snapshot;

namespace {

// count 1 x 12 x 12 images of dim noise in [0, 0.4) with a 3 x 3 blob of 1.0 somewhere inside one quadrant; the
// label is the quadrant (0 top left, 1 top right, 2 bottom left, 3 bottom right), or with two_classes the half
// (0 left, 1 right).
Dataset blobs(int64_t count, uint64_t seed, bool two_classes = false) {
  std::mt19937_64 rng(seed);
  Dataset data{.sample_shape = {1, 12, 12}, .images = {}, .labels = {}, .classes = two_classes ? 2 : 4};
  data.images.resize(static_cast<size_t>(count * 144));
  for (int64_t n = 0; n < count; ++n) {
    float* image = data.images.data() + n * 144;
    for (int i = 0; i < 144; ++i) image[i] = static_cast<float>(0.4 * uniform_double(rng));
    const auto quadrant = static_cast<int64_t>(uniform_below(rng, 4));
    const auto top = static_cast<int>(quadrant / 2 * 6 + uniform_below(rng, 4));
    const auto left = static_cast<int>(quadrant % 2 * 6 + uniform_below(rng, 4));
    for (int r = top; r < top + 3; ++r)
      for (int c = left; c < left + 3; ++c) image[r * 12 + c] = 1.0f;
    data.labels.push_back(two_classes ? quadrant % 2 : quadrant);
  }
  return data;
}

}  // namespace

TEST_CASE("training: a tiny CNN learns which quadrant holds a bright blob", "[training]") {
  const Dataset train = blobs(1024, 1), test = blobs(512, 2);
  Sequential model =
      Sequential::from_spec("conv8k3p1,relu,maxpool2,conv8k3p1,relu,maxpool2,flatten,dense4", train.sample_shape);
  model.initialize(3);
  Adam adam({.learning_rate = 0.01});
  Trainer trainer(model, adam, {.epochs = 4, .batch_size = 32, .seed = 4});
  std::vector<EpochMetrics> epochs;
  const auto start = std::chrono::steady_clock::now();
  trainer.fit(train, [&](const EpochMetrics& metrics) { epochs.push_back(metrics); });
  const Evaluation result = evaluate(model, test, 100);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (const EpochMetrics& e : epochs) {
    UNSCOPED_INFO("epoch " << e.epoch << ": loss " << e.loss << ", accuracy " << e.accuracy << ", " << e.seconds
                           << " s");
  }
  INFO("test: loss " << result.loss << ", accuracy " << result.accuracy << "; " << seconds << " s in all");
  REQUIRE(epochs.size() == 4);
  for (size_t i = 0; i < epochs.size(); ++i) {
    CHECK(epochs[i].epoch == static_cast<int64_t>(i) + 1);
    CHECK(epochs[i].samples == 1024);
  }
  CHECK(epochs.back().loss < epochs.front().loss);
  CHECK(result.samples == 512);
  CHECK(result.accuracy > 0.95);
  CHECK(trainer.progress().epoch == 4);
}

TEST_CASE("training: sigmoid + binary cross-entropy learns a two-class task", "[training]") {
  const Dataset train = blobs(512, 5, true), test = blobs(256, 6, true);
  Sequential model = Sequential::from_spec("conv4k3p1,tanh,avgpool2,flatten,dense1", train.sample_shape);
  model.initialize(7, Initializer::glorot_uniform);
  Sgd sgd({.learning_rate = 0.5, .momentum = 0.9});
  const TrainOptions options{.epochs = 6, .batch_size = 32, .seed = 8, .loss = Loss::sigmoid_binary_cross_entropy};
  Trainer(model, sgd, options).fit(train);
  const Evaluation result = evaluate(model, test, 64, Loss::sigmoid_binary_cross_entropy);
  INFO("test: loss " << result.loss << ", accuracy " << result.accuracy);
  CHECK(result.accuracy > 0.95);
}

TEST_CASE("training: the same seeds give the same weights, bit for bit, for 1, 2 and 3 threads", "[training]") {
  const Dataset train = blobs(200, 9);
  const auto run = [&](int threads) {
    Sequential model = Sequential::from_spec("conv6k3,relu,maxpool2,flatten,dropout0.2,dense4", train.sample_shape);
    Sgd sgd({.learning_rate = 0.05, .momentum = 0.9, .weight_decay = 1e-4});
    oneapi::tbb::task_arena(threads).execute([&] {
      model.initialize(10);
      Trainer(model, sgd, {.epochs = 2, .batch_size = 24, .seed = 11}).fit(train);
    });
    return snapshot(model.parameters());
  };
  const std::vector<float> reference = run(1);
  CHECK(run(2) == reference);
  CHECK(run(3) == reference);
}

TEST_CASE("training: batch callbacks, evaluate() and the loss helper", "[training]") {
  const Dataset data = blobs(70, 12);
  Sequential model = Sequential::from_spec("conv2k3,relu,flatten,dense4", data.sample_shape);
  model.initialize(13);
  Adam adam({});
  std::vector<BatchMetrics> batches;
  Trainer(model, adam, {.epochs = 1, .batch_size = 32, .shuffle = false})
      .fit(data, {}, [&](const BatchMetrics& metrics) { batches.push_back(metrics); });
  REQUIRE(batches.size() == 3);  // 32 + 32 + 6
  CHECK(batches[2].batches == 3);
  CHECK(batches[0].samples == 32);
  CHECK(batches[2].samples == 70);

  // Any batch size evaluates the same samples: the accuracy is exact, the mean loss equal up to summation order.
  const Evaluation whole = evaluate(model, data, 70), pieces = evaluate(model, data, 9);
  CHECK(pieces.accuracy == whole.accuracy);
  CHECK(pieces.loss == Approx(whole.loss).epsilon(1e-6));

  // Binary cross-entropy against one-hot targets: dL/dz = (sigmoid(z) - onehot) / (N K).
  const std::vector<float> logits = {0.5f, -1.0f, 2.0f, 0.0f, 1.0f, -2.0f};
  const std::vector<int64_t> labels = {2, 0};
  std::vector<float> grad(6), targets;
  const BatchResult result = evaluate_loss(Loss::sigmoid_binary_cross_entropy, {logits.data(), {2, 3, 1, 1}}, labels,
                                           {grad.data(), {2, 3, 1, 1}}, targets);
  CHECK(result.correct == 1);  // argmax of row 0 is 2 (right), of row 1 is 1 (wrong)
  for (size_t i = 0; i < 6; ++i) {
    const double target = (i == 2 || i == 3) ? 1.0 : 0.0;
    CHECK(grad[i] == Approx((1 / (1 + std::exp(-static_cast<double>(logits[i]))) - target) / 6).margin(1e-7));
  }
}

TEST_CASE("training: a data set that does not fit the model, or bad options, name the problem", "[training][errors]") {
  const auto bad = Status::invalid_argument;
  Sequential model = Sequential::from_spec("conv2k3,relu,flatten,dense4", {1, 12, 12});
  model.initialize(1);
  Adam adam({});
  Trainer trainer(model, adam, {});
  Dataset data = blobs(10, 1);
  data.sample_shape = {1, 6, 24};
  require_error([&] { trainer.fit(data); }, bad, "dataset");
  data = blobs(10, 1, true);  // 2 classes, 4 outputs
  require_error([&] { trainer.fit(data); }, bad, "dataset");
  require_error([&] { evaluate(model, data, 5); }, bad, "dataset");
  data = blobs(10, 1);
  data.labels[3] = 4;
  require_error([&] { trainer.fit(data); }, bad, "dataset");
  require_error([&] { Trainer t(model, adam, {.batch_size = 0}); }, bad, "batch_size");
  require_error([&] { Trainer t(model, adam, {.epochs = -1}); }, bad, "epochs");
  require_error([&] { evaluate(model, blobs(10, 1), 0); }, bad, "batch_size");
  Sequential unflat = Sequential::from_spec("conv4k3", {1, 12, 12});
  require_error([&] { evaluate(unflat, blobs(10, 1), 5); }, bad, "dataset");
}
