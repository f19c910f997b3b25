// The training loop: a Trainer runs epochs of shuffled mini-batches through a Sequential model, a loss from
// loss.hpp and an optimiser, reporting each epoch's loss and accuracy through a callback; evaluate() measures a
// model on a data set.
//
// Reproducible: the only randomness is the trainer's std::mt19937_64 (shuffling, seeded with TrainOptions::seed) and
// the model's own (initialisation, dropout), and every operator gives the same bits for any thread count, so the same
// seeds give the same weights bit for bit, and a run resumed from a checkpoint continues exactly as if uninterrupted.
#pragma once

#include <convgemm/export.hpp>

#include <convgemm/nn/dataset.hpp>
#include <convgemm/nn/optimizer.hpp>
#include <convgemm/nn/schedule.hpp>
#include <convgemm/nn/sequential.hpp>
#include <convgemm/tensor.hpp>

#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <vector>

namespace convgemm::nn {

// The model's output are logits z, {N, K}:
enum class Loss {
  // softmax over the K classes + cross-entropy with the label; accuracy: argmax z == label
  softmax_cross_entropy,
  // sigmoid + binary cross-entropy of each output against the one-hot label (K = 1: the label itself, 0 or 1);
  // accuracy: argmax z == label (K = 1: z > 0 == label)
  sigmoid_binary_cross_entropy,
};

// The mean loss over a batch, dL/dz into logits_grad (when not empty), and how many samples the logits classify
// right. targets is scratch space for the binary cross-entropy's 0/1 targets (resized as needed).
struct CONVGEMM_CXX_API BatchResult {
  double loss = 0;
  int64_t correct = 0;
};
CONVGEMM_CXX_API BatchResult evaluate_loss(Loss loss, ConstTensorView logits, std::span<const int64_t> labels,
                                           TensorView logits_grad, std::vector<float>& targets);

struct CONVGEMM_CXX_API TrainOptions {
  int64_t epochs = 1;
  int64_t batch_size = 64;  // the last batch of an epoch takes what is left
  uint64_t seed = 0;        // seeds the shuffling generator
  bool shuffle = true;      // false: every epoch in data set order
  Loss loss = Loss::softmax_cross_entropy;
  // When set, fit() gives the optimiser this rate before every step (schedule.hpp); empty: the optimiser's own rate
  // throughout. A schedule that returns a rate <= 0 is an Error naming "learning_rate".
  LearningRateSchedule learning_rate_schedule = {};
};

// Where a run stands between epochs: what a checkpoint saves besides the model and the optimiser.
struct CONVGEMM_CXX_API TrainingProgress {
  int64_t epoch = 0;    // epochs completed
  std::mt19937_64 rng;  // the shuffling generator, as it stands after them
};

struct CONVGEMM_CXX_API EpochMetrics {
  int64_t epoch = 0;    // 1 for the first
  double loss = 0;      // mean over the epoch's samples, as each batch saw it (dropout on)
  double accuracy = 0;  // fraction of the epoch's samples classified right, likewise
  int64_t samples = 0;
  double seconds = 0;  // wall time of the epoch
};

struct CONVGEMM_CXX_API BatchMetrics {
  int64_t epoch = 0;    // 1 for the first
  int64_t batch = 0;    // 1 for the first of the epoch
  int64_t batches = 0;  // in this epoch
  int64_t samples = 0;  // seen so far in this epoch
  double loss = 0;      // running mean over those samples
  double accuracy = 0;  // running fraction right
  double seconds = 0;   // since the epoch began
};

struct CONVGEMM_CXX_API Evaluation {
  double loss = 0;
  double accuracy = 0;
  int64_t samples = 0;
};

class CONVGEMM_CXX_API Trainer {
 public:
  using EpochCallback = std::function<void(const EpochMetrics&)>;
  using BatchCallback = std::function<void(const BatchMetrics&)>;

  // Keeps references to the model (whose layers must not change afterwards) and the optimiser, which must outlive
  // it. Throws convgemm::Error naming the option for epochs < 0 or batch_size < 1.
  Trainer(Sequential& model, Optimizer& optimizer, const TrainOptions& options);

  // Trains from the epoch progress() stands at up to options.epochs: each epoch draws a permutation of the data
  // from the generator (unless shuffle is off) and runs one step per mini-batch, calling on_batch after each step
  // and on_epoch at the end of the epoch (either may be empty). progress() already counts the epoch when on_epoch
  // runs, so a checkpoint written there resumes with the next one. The data set is checked first (Error naming
  // "dataset"; also when its images do not fit the model's input, or its classes its output).
  void fit(const Dataset& data, const EpochCallback& on_epoch = {}, const BatchCallback& on_batch = {});

  // One optimisation step: training forward, loss and its gradient, backward, optimiser update.
  BatchResult train_step(ConstTensorView images, std::span<const int64_t> labels);

  const TrainingProgress& progress() const { return progress_; }
  // Continue from a checkpoint's progress.
  void set_progress(const TrainingProgress& progress) { progress_ = progress; }
  const TrainOptions& options() const { return options_; }

 private:
  Sequential& model_;
  Optimizer& optimizer_;
  TrainOptions options_;
  TrainingProgress progress_;
  std::vector<Parameter*> parameters_;
  // Reused across steps: the batch being assembled, its labels, dL/dlogits and the binary targets.
  std::vector<float> batch_images_;
  std::vector<int64_t> batch_labels_;
  std::vector<float> logits_grad_;
  std::vector<float> targets_;
};

// Inference over the whole data set in batches of batch_size (the data set's own memory, no copies): mean loss and
// accuracy.
CONVGEMM_CXX_API Evaluation evaluate(Sequential& model, const Dataset& data, int64_t batch_size,
                                     Loss loss = Loss::softmax_cross_entropy);

}  // namespace convgemm::nn
