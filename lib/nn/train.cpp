// The training loop and evaluation: per-batch loss, gradient and accuracy through the fused losses of loss.hpp,
// epochs of shuffled mini-batches, and inference over a data set in place.
#include <convgemm/error.hpp>
#include <convgemm/loss.hpp>
#include <convgemm/nn/train.hpp>

#include "tensor_checks.hpp"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <string>

namespace convgemm::nn {
namespace {

// Index of the largest of the row's values, the first among equals.
int64_t argmax(const float* row, int64_t count) { return std::max_element(row, row + count) - row; }

// The model must end in flat logits, one per class (or a single one for a two-class binary cross-entropy).
void check_fits(const Sequential& model, const Dataset& data, Loss loss) {
  const auto reject = [](const std::string& why) { throw Error(Status::invalid_argument, "dataset", why); };
  data.validate();
  if (data.size() == 0) reject("is empty");
  if (data.sample_shape != model.input_shape()) {
    reject("images are " + to_string(data.sample_shape) + ", the model takes " + to_string(model.input_shape()));
  }
  const SampleShape& out = model.output_shape();
  if (out[1] != 1 || out[2] != 1) reject("the model's output " + to_string(out) + " is not flat logits (N, K)");
  const bool binary = loss == Loss::sigmoid_binary_cross_entropy && out[0] == 1 && data.classes <= 2;
  if (out[0] != data.classes && !binary) {
    reject("has " + std::to_string(data.classes) + " classes, the model " + std::to_string(out[0]) + " outputs");
  }
}

}  // namespace

BatchResult evaluate_loss(Loss loss, ConstTensorView logits, std::span<const int64_t> labels, TensorView logits_grad,
                          std::vector<float>& targets) {
  const int64_t N = logits.shape[0], K = logits.shape[1];
  BatchResult result;
  if (loss == Loss::softmax_cross_entropy) {
    result.loss = softmax_cross_entropy(logits, labels, logits_grad);
  } else {
    // One-hot targets (K = 1: the label itself), checked by the loss like any targets.
    check_vector(labels, N, "labels");
    targets.assign(static_cast<size_t>(logits.size()), 0.0f);
    for (int64_t n = 0; n < N; ++n) {
      const int64_t label = labels[static_cast<size_t>(n)];
      if (K == 1) {
        targets[static_cast<size_t>(n)] = static_cast<float>(label);
      } else if (label >= 0 && label < K) {
        targets[static_cast<size_t>(n * K + label)] = 1.0f;
      } else {
        throw Error(Status::invalid_argument, "labels",
                    "labels[" + std::to_string(n) + "] = " + std::to_string(label) + " is not a class in [0, " +
                        std::to_string(K) + ")");
      }
    }
    result.loss = sigmoid_binary_cross_entropy(logits, {targets.data(), logits.shape}, logits_grad);
  }
  for (int64_t n = 0; n < N; ++n) {
    const float* row = logits.data + n * K;
    const int64_t predicted = K == 1 ? (row[0] > 0 ? 1 : 0) : argmax(row, K);
    result.correct += predicted == labels[static_cast<size_t>(n)] ? 1 : 0;
  }
  return result;
}

Trainer::Trainer(Sequential& model, Optimizer& optimizer, const TrainOptions& options)
    : model_(model), optimizer_(optimizer), options_(options), parameters_(model.parameters()) {
  require_non_negative(options.epochs, "epochs");
  require_positive(options.batch_size, "batch_size");
  progress_.rng.seed(options.seed);
}

BatchResult Trainer::train_step(ConstTensorView images, std::span<const int64_t> labels) {
  const ConstTensorView logits = model_.forward(images, true);
  logits_grad_.resize(static_cast<size_t>(logits.size()));
  const TensorView logits_grad{logits_grad_.data(), logits.shape};
  const BatchResult result = evaluate_loss(options_.loss, logits, labels, logits_grad, targets_);
  model_.backward(logits_grad);
  optimizer_.step(parameters_);
  return result;
}

void Trainer::fit(const Dataset& data, const EpochCallback& on_epoch, const BatchCallback& on_batch) {
  check_fits(model_, data, options_.loss);
  using Clock = std::chrono::steady_clock;
  const int64_t count = data.size(), batch_size = std::min(options_.batch_size, count);
  const int64_t batches = (count + batch_size - 1) / batch_size;
  const int64_t image_size = element_count(data.sample_shape);
  batch_images_.resize(static_cast<size_t>(batch_size * image_size));
  batch_labels_.resize(static_cast<size_t>(batch_size));

  while (progress_.epoch < options_.epochs) {
    const auto start = Clock::now();
    std::vector<int64_t> order(static_cast<size_t>(count));
    if (options_.shuffle) {
      order = shuffled_indices(count, progress_.rng);
    } else {
      std::iota(order.begin(), order.end(), int64_t{0});
    }
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    for (int64_t b = 0; b < batches; ++b) {
      const int64_t first = b * batch_size, size = std::min(batch_size, count - first);
      const std::span<const int64_t> indices(order.data() + first, static_cast<size_t>(size));
      const TensorView images{batch_images_.data(), batch_shape(size, data.sample_shape)};
      const std::span<int64_t> labels(batch_labels_.data(), static_cast<size_t>(size));
      gather_batch(data, indices, images, labels);
      if (options_.learning_rate_schedule) {
        const double position =
            static_cast<double>(progress_.epoch) + static_cast<double>(b) / static_cast<double>(batches);
        optimizer_.set_learning_rate(options_.learning_rate_schedule(position));
      }
      const BatchResult result = train_step(images, labels);
      loss_sum += result.loss * static_cast<double>(size);
      correct += result.correct;
      seen += size;
      if (on_batch) {
        on_batch({.epoch = progress_.epoch + 1,
                  .batch = b + 1,
                  .batches = batches,
                  .samples = seen,
                  .loss = loss_sum / static_cast<double>(seen),
                  .accuracy = static_cast<double>(correct) / static_cast<double>(seen),
                  .seconds = std::chrono::duration<double>(Clock::now() - start).count()});
      }
    }
    ++progress_.epoch;  // before the callback, so that a checkpoint written there resumes at the next epoch
    if (on_epoch) {
      on_epoch({.epoch = progress_.epoch,
                .loss = loss_sum / static_cast<double>(seen),
                .accuracy = static_cast<double>(correct) / static_cast<double>(seen),
                .samples = seen,
                .seconds = std::chrono::duration<double>(Clock::now() - start).count()});
    }
  }
}

Evaluation evaluate(Sequential& model, const Dataset& data, int64_t batch_size, Loss loss) {
  require_positive(batch_size, "batch_size");
  check_fits(model, data, loss);
  std::vector<float> targets;
  double loss_sum = 0;
  int64_t correct = 0;
  for (int64_t first = 0; first < data.size(); first += batch_size) {
    const int64_t size = std::min(batch_size, data.size() - first);
    const ConstTensorView logits = model.forward(data.batch_view(first, size), false);
    const BatchResult result = evaluate_loss(
        loss, logits, std::span(data.labels).subspan(static_cast<size_t>(first), static_cast<size_t>(size)), {},
        targets);
    loss_sum += result.loss * static_cast<double>(size);
    correct += result.correct;
  }
  const auto samples = static_cast<double>(data.size());
  return {.loss = loss_sum / samples, .accuracy = static_cast<double>(correct) / samples, .samples = data.size()};
}

}  // namespace convgemm::nn
