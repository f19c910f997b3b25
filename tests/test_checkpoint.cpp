// Checkpoints: round trip, resume (k steps, checkpoint, fresh model, m more steps) bitwise equal to k + m steps,
// the same at epoch granularity through Trainer::fit, atomic replacement, and truncated, corrupted or mismatched
// files rejected naming the file with the model and the optimiser untouched. Also the .npz writer's argument checks
// (numpy reads its files back in check_npz.py).
#include "nn_test_helpers.hpp"
#include "require_error.hpp"

#include <convgemm/io/checkpoint.hpp>
#include <convgemm/io/npz.hpp>
#include <convgemm/nn/train.hpp>

#include <catch2/catch.hpp>

#include <fstream>
#include <random>
#include <string>
#include <vector>

using namespace convgemm;
using namespace convgemm::nn;
using convgemm::testing::require_error;
using convgemm::testing::snapshot;
using convgemm::testing::TemporaryDirectory;

namespace {

// A model with every kind of state: weights, a dropout stream, and (with Adam) two moments per parameter.
const char* const spec = "conv4k3p1,relu,maxpool2,flatten,dropout0.3,dense3";
const SampleShape input{1, 6, 6};

// 40 labelled random images of three classes.
Dataset labelled_noise(uint64_t seed) {
  std::mt19937_64 rng(seed);
  Dataset data{.sample_shape = input, .images = {}, .labels = {}, .classes = 3};
  for (int i = 0; i < 40; ++i) {
    for (int j = 0; j < 36; ++j) data.images.push_back(static_cast<float>(uniform_double(rng)));
    data.labels.push_back(static_cast<int64_t>(uniform_below(rng, 3)));
  }
  return data;
}

// A fresh model and optimiser; init_seed makes them differ from the ones a checkpoint was written from.
struct Run {
  Sequential model;
  Adam optimizer;
  explicit Run(uint64_t init_seed)
      : model(Sequential::from_spec(spec, input)), optimizer(AdamParams{.learning_rate = 0.01, .weight_decay = 1e-4}) {
    model.initialize(init_seed);
  }

  // Steps over fixed batches of 8 (batch i % 5 of the data), one per call.
  void steps(const Dataset& data, int first, int count) {
    Trainer trainer(model, optimizer, {});
    for (int i = first; i < first + count; ++i) {
      const int64_t start = i % 5 * 8;
      trainer.train_step(data.batch_view(start, 8), std::span(data.labels).subspan(static_cast<size_t>(start), 8));
    }
  }
};

std::vector<std::byte> read_bytes(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(file)), {});
  std::vector<std::byte> bytes(chars.size());
  std::transform(chars.begin(), chars.end(), bytes.begin(), [](char c) { return static_cast<std::byte>(c); });
  return bytes;
}

void write_bytes(const std::filesystem::path& path, const std::vector<std::byte>& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

TEST_CASE("checkpoint: a round trip restores weights, optimiser state, epoch and random state", "[checkpoint]") {
  TemporaryDirectory directory;
  const Dataset data = labelled_noise(1);
  Run original(1);
  original.steps(data, 0, 3);
  TrainingProgress progress{.epoch = 7, .rng = std::mt19937_64(99)};
  progress.rng.discard(12345);
  io::save_checkpoint(directory / "run.ckpt", original.model, original.optimizer, progress);

  Run loaded(2);
  REQUIRE(snapshot(loaded.model.parameters()) != snapshot(original.model.parameters()));
  const TrainingProgress restored = io::load_checkpoint(directory / "run.ckpt", loaded.model, loaded.optimizer);
  CHECK(snapshot(loaded.model.parameters()) == snapshot(original.model.parameters()));
  CHECK(loaded.model.random_state() == original.model.random_state());
  CHECK(loaded.optimizer.state().steps == 3);
  CHECK(loaded.optimizer.state().buffers == original.optimizer.state().buffers);
  CHECK(restored.epoch == 7);
  CHECK(restored.rng == progress.rng);

  // Saving over an existing checkpoint replaces it and leaves no temporary file behind.
  original.steps(data, 3, 1);
  io::save_checkpoint(directory / "run.ckpt", original.model, original.optimizer, progress);
  io::load_checkpoint(directory / "run.ckpt", loaded.model, loaded.optimizer);
  CHECK(loaded.optimizer.state().steps == 4);
  int files = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(directory.path())) ++files;
  CHECK(files == 1);
}

TEST_CASE("checkpoint: k steps, checkpoint, load into a fresh model, m more = k + m steps, bit for bit",
          "[checkpoint][resume]") {
  TemporaryDirectory directory;
  const Dataset data = labelled_noise(2);
  Run uninterrupted(3);
  uninterrupted.steps(data, 0, 7);

  Run first(3);
  first.steps(data, 0, 3);
  io::save_checkpoint(directory / "k.ckpt", first.model, first.optimizer, {});
  Run resumed(4);  // other initial weights and a fresh dropout stream, all overwritten by the checkpoint
  io::load_checkpoint(directory / "k.ckpt", resumed.model, resumed.optimizer);
  resumed.steps(data, 3, 4);
  CHECK(snapshot(resumed.model.parameters()) == snapshot(uninterrupted.model.parameters()));
  CHECK(resumed.model.random_state() == uninterrupted.model.random_state());
}

TEST_CASE("checkpoint: resuming Trainer::fit between epochs gives the uninterrupted weights", "[checkpoint][resume]") {
  TemporaryDirectory directory;
  const Dataset data = labelled_noise(3);
  const TrainOptions options{.epochs = 3, .batch_size = 16, .seed = 21};  // 40 images: batches of 16, 16 and 8

  Run uninterrupted(5);
  Trainer(uninterrupted.model, uninterrupted.optimizer, options).fit(data);

  Run interrupted(5);
  Trainer first(interrupted.model, interrupted.optimizer, options);
  first.fit(data, [&](const EpochMetrics& metrics) {
    if (metrics.epoch == 1)
      io::save_checkpoint(directory / "epoch.ckpt", interrupted.model, interrupted.optimizer, first.progress());
  });
  Run resumed(6);
  Trainer second(resumed.model, resumed.optimizer, options);
  second.set_progress(io::load_checkpoint(directory / "epoch.ckpt", resumed.model, resumed.optimizer));
  CHECK(second.progress().epoch == 1);
  std::vector<int64_t> epochs;
  second.fit(data, [&](const EpochMetrics& metrics) { epochs.push_back(metrics.epoch); });
  CHECK(epochs == std::vector<int64_t>{2, 3});
  CHECK(snapshot(resumed.model.parameters()) == snapshot(uninterrupted.model.parameters()));
}

TEST_CASE("checkpoint: truncated, corrupted or mismatched files are rejected naming the file, loading nothing",
          "[checkpoint][errors]") {
  TemporaryDirectory directory;
  const Dataset data = labelled_noise(4);
  Run source(7);
  source.steps(data, 0, 2);
  const auto path = directory / "good.ckpt";
  io::save_checkpoint(path, source.model, source.optimizer, {.epoch = 1, .rng = std::mt19937_64(1)});
  const std::vector<std::byte> good = read_bytes(path);

  Run target(8);
  target.steps(data, 0, 1);
  const std::vector<float> weights = snapshot(target.model.parameters());
  const auto random_state = target.model.random_state();
  const OptimizerState optimizer_state = target.optimizer.state();
  const auto untouched = [&] {
    CHECK(snapshot(target.model.parameters()) == weights);
    CHECK(target.model.random_state() == random_state);
    CHECK(target.optimizer.state().steps == optimizer_state.steps);
    CHECK(target.optimizer.state().buffers == optimizer_state.buffers);
  };
  const auto rejects = [&](const std::filesystem::path& file, const std::string& why) {
    INFO(file << ": " << why);
    require_error([&] { io::load_checkpoint(file, target.model, target.optimizer); }, Status::invalid_argument,
                  file.string());
    try {
      io::load_checkpoint(file, target.model, target.optimizer);
    } catch (const Error& error) {
      CHECK(std::string(error.what()).find(why) != std::string::npos);
    }
    untouched();
  };

  // Cut anywhere: in the header, in the payload, in the checksum.
  for (const size_t length : {size_t{0}, size_t{5}, size_t{23}, good.size() / 3, good.size() / 2, good.size() - 1}) {
    const auto file = directory / ("cut-" + std::to_string(length) + ".ckpt");
    write_bytes(file, std::vector<std::byte>(good.begin(), good.begin() + static_cast<ptrdiff_t>(length)));
    rejects(file, "truncated");
  }
  // One flipped bit anywhere in the payload, and in the stored checksum.
  for (const size_t position : {size_t{30}, good.size() / 2, good.size() - 10, good.size() - 2}) {
    std::vector<std::byte> flipped = good;
    flipped[position] ^= std::byte{0x10};
    const auto file = directory / ("flipped-" + std::to_string(position) + ".ckpt");
    write_bytes(file, flipped);
    rejects(file, "corrupted");
  }
  std::vector<std::byte> longer = good;
  longer.push_back(std::byte{0});
  write_bytes(directory / "longer.ckpt", longer);
  rejects(directory / "longer.ckpt", "corrupted");
  std::vector<std::byte> other_magic = good;
  other_magic[0] = std::byte{'X'};
  write_bytes(directory / "magic.ckpt", other_magic);
  rejects(directory / "magic.ckpt", "not a convgemm checkpoint");
  rejects(directory / "missing.ckpt", "cannot open");

  // Another architecture, and another optimiser type.
  Sequential other = Sequential::from_spec("conv4k3p1,relu,maxpool2,flatten,dropout0.3,dense4", input);
  other.initialize(1);
  io::save_checkpoint(directory / "other-model.ckpt", other, source.optimizer, {});
  rejects(directory / "other-model.ckpt", "parameter 0 is weight (4, 36) there, weight (3, 36) here");
  Sequential fewer = Sequential::from_spec("conv4k3p1,relu,maxpool2,flatten,dense3", input);
  io::save_checkpoint(directory / "fewer.ckpt", fewer, source.optimizer, {});
  rejects(directory / "fewer.ckpt", "holds a model of 5 layers, this one has 6");
  Sgd sgd({.momentum = 0.9});
  io::save_checkpoint(directory / "sgd.ckpt", source.model, sgd, {});
  rejects(directory / "sgd.ckpt", "holds the state of a sgd optimiser, not adam");

  // A directory that does not exist cannot be written to, and nothing is created.
  require_error([&] { io::save_checkpoint(directory / "no" / "such.ckpt", source.model, source.optimizer, {}); },
                Status::invalid_argument, (directory / "no" / "such.ckpt").string());
  CHECK_FALSE(std::filesystem::exists(directory / "no"));
}

TEST_CASE("npz: bad arrays are rejected before anything is written", "[npz][errors]") {
  TemporaryDirectory directory;
  const std::vector<float> values(6, 1.0f);
  const std::vector<io::NpyArray> mismatch = {{"a", {2, 2}, values}};
  require_error([&] { io::write_npz(directory / "a.npz", mismatch); }, Status::invalid_argument, "arrays");
  const std::vector<io::NpyArray> repeated = {{"a", {6}, values}, {"a", {2, 3}, values}};
  require_error([&] { io::write_npz(directory / "a.npz", repeated); }, Status::invalid_argument, "arrays");
  const std::vector<io::NpyArray> unnamed = {{"", {6}, values}};
  require_error([&] { io::write_npz(directory / "a.npz", unnamed); }, Status::invalid_argument, "arrays");
  CHECK_FALSE(std::filesystem::exists(directory / "a.npz"));
}
