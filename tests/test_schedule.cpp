// Learning-rate schedules: the cosine and step formulas at hand-computed points, their argument checks, and the
// Trainer applying one before every step, including after a resume (the schedule is a function of the epoch
// position, so a resumed run must see the same rates and reach the same weights bit for bit).
#include "nn_test_helpers.hpp"
#include "require_error.hpp"

#include <convgemm/nn/schedule.hpp>
#include <convgemm/nn/train.hpp>

#include <catch2/catch.hpp>

#include <random>
#include <vector>

using namespace convgemm;
using namespace convgemm::nn;
using convgemm::testing::require_error;
using convgemm::testing::snapshot;

TEST_CASE("schedule: cosine annealing with warm-up and step decay at hand-computed points", "[schedule]") {
  const LearningRateSchedule cosine = cosine_schedule(0.1, 10);
  CHECK(cosine(0) == Approx(0.1));
  CHECK(cosine(5) == Approx(0.05));                              // half way: (1 + cos(pi/2)) / 2
  CHECK(cosine(10) == Approx(0.0).margin(1e-15));                // the end
  CHECK(cosine(2.5) == Approx(0.1 * (1 + std::sqrt(0.5)) / 2));  // cos(pi/4)
  const LearningRateSchedule warm = cosine_schedule(0.1, 11, 0.01, 1);
  CHECK(warm(0) == Approx(0.01));  // warm-up starts at a tenth
  CHECK(warm(0.5) == Approx(0.055));
  CHECK(warm(1) == Approx(0.1));  // then anneals over the remaining 10 epochs down to final_rate
  CHECK(warm(6) == Approx(0.055));
  CHECK(warm(11) == Approx(0.01));
  const LearningRateSchedule step = step_schedule(0.1, 3, 0.5);
  CHECK(step(0) == Approx(0.1));
  CHECK(step(2.99) == Approx(0.1));
  CHECK(step(3) == Approx(0.05));
  CHECK(step(7.5) == Approx(0.025));
}

TEST_CASE("schedule: bad arguments name the parameter", "[schedule][errors]") {
  require_error([] { cosine_schedule(0, 10); }, Status::invalid_argument, "base_rate");
  require_error([] { cosine_schedule(0.1, 0); }, Status::invalid_argument, "epochs");
  require_error([] { cosine_schedule(0.1, 10, 0.2); }, Status::invalid_argument, "final_rate");
  require_error([] { cosine_schedule(0.1, 10, 0, 10); }, Status::invalid_argument, "warmup_epochs");
  require_error([] { step_schedule(0.1, 0, 0.5); }, Status::invalid_argument, "step_epochs");
  require_error([] { step_schedule(0.1, 2, 1.5); }, Status::invalid_argument, "factor");
}

namespace {

// 48 labelled random 1 x 5 x 5 images of three classes.
Dataset labelled_noise() {
  std::mt19937_64 rng(11);
  Dataset data{.sample_shape = {1, 5, 5}, .images = {}, .labels = {}, .classes = 3};
  for (int i = 0; i < 48; ++i) {
    for (int j = 0; j < 25; ++j) data.images.push_back(static_cast<float>(uniform_double(rng)));
    data.labels.push_back(static_cast<int64_t>(uniform_below(rng, 3)));
  }
  return data;
}

}  // namespace

TEST_CASE("schedule: the Trainer sets the scheduled rate before every step, resumed runs included", "[schedule]") {
  const Dataset data = labelled_noise();
  const LearningRateSchedule schedule = cosine_schedule(0.1, 3, 0, 0.5);
  const TrainOptions options{.epochs = 3, .batch_size = 16, .seed = 5, .learning_rate_schedule = schedule};

  Sequential model = Sequential::from_spec("conv3k3,relu,flatten,dense3", data.sample_shape);
  model.initialize(2);
  Sgd sgd({.learning_rate = 1, .momentum = 0.9});
  Trainer trainer(model, sgd, options);
  std::vector<double> rates;
  trainer.fit(data, {}, [&](const BatchMetrics&) { rates.push_back(sgd.learning_rate()); });
  // Three batches per epoch: the rate of step b of epoch e is schedule(e + b / 3).
  REQUIRE(rates.size() == 9);
  for (size_t i = 0; i < rates.size(); ++i) {
    CHECK(rates[i] == schedule(static_cast<double>(i / 3) + static_cast<double>(i % 3) / 3));
  }

  // Two epochs, then a fresh trainer that continues from their progress: the same weights as three in one go.
  Sequential resumed = Sequential::from_spec("conv3k3,relu,flatten,dense3", data.sample_shape);
  resumed.initialize(2);
  Sgd resumed_sgd({.learning_rate = 1, .momentum = 0.9});
  TrainOptions two = options;
  two.epochs = 2;
  Trainer first(resumed, resumed_sgd, two);
  first.fit(data);
  Trainer second(resumed, resumed_sgd, options);
  second.set_progress(first.progress());
  second.fit(data);
  CHECK(snapshot(resumed.parameters()) == snapshot(model.parameters()));
}
