// Optimisers: SGD with momentum and weight decay, and Adam, each updating a model's parameters from their gradients
// exactly as PyTorch's torch.optim.SGD and torch.optim.Adam do, with their state exposed for checkpoints.
//
// Both apply weight decay as PyTorch does, by adding lambda * w to the gradient (L2 regularisation; for Adam that
// is not AdamW's decoupled decay). Updates are elementwise, run in parallel over blocks of each parameter in the
// caller's TBB arena, and give the same bits for any thread count.
#pragma once

#include <convgemm/export.hpp>

#include <convgemm/nn/layer.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace convgemm::nn {

// What a checkpoint saves of an optimiser: how many steps it took and its per-parameter buffers, slots_per_parameter
// of them for each parameter in order (for parameter i, slot s is buffers[i * slots_per_parameter + s]). Empty
// buffers before the first step.
struct CONVGEMM_CXX_API OptimizerState {
  uint64_t steps = 0;
  std::vector<std::vector<float>> buffers;
};

class CONVGEMM_CXX_API Optimizer {
 public:
  virtual ~Optimizer() = default;

  // "sgd" or "adam": a checkpoint only loads into an optimiser of the type that wrote it.
  virtual std::string type() const = 0;
  // Buffers kept per parameter: 1 for SGD with momentum (the velocity), 0 without, 2 for Adam (both moments).
  virtual int64_t slots_per_parameter() const = 0;

  // One update of every parameter from its grad. The first step sizes the state to the parameters; every later step
  // must pass the same parameters (their sizes are checked, throwing convgemm::Error naming "parameters").
  void step(std::span<Parameter* const> parameters);

  double learning_rate() const { return learning_rate_; }
  // For schedules: the next steps use this rate. Throws convgemm::Error naming "learning_rate" unless > 0.
  void set_learning_rate(double learning_rate);

  const OptimizerState& state() const { return state_; }
  // Throws convgemm::Error naming "optimizer state" unless `state` is one this optimiser could have for these
  // parameters (buffer count and sizes).
  void check_state(const OptimizerState& state, std::span<const Parameter* const> parameters) const;
  // Restores a state() of the same type for these parameters: check_state(), then nothing can fail.
  void set_state(OptimizerState state, std::span<const Parameter* const> parameters);

 protected:
  explicit Optimizer(double learning_rate);
  // Updates one parameter (values, gradient, its slots) for step number state_.steps (1 on the first step).
  virtual void update(Parameter& parameter, std::span<std::vector<float>> slots) = 0;

  OptimizerState state_;

 private:
  double learning_rate_;
};

struct CONVGEMM_CXX_API SgdParams {
  double learning_rate = 0.01;
  double momentum = 0.0;      // mu in [0, 1)
  double weight_decay = 0.0;  // lambda >= 0
  bool nesterov = false;      // Nesterov momentum (needs momentum > 0)
};

// g = dL/dw + lambda w;  v = mu v + g (v = g on the first step);  w -= lr * (nesterov ? g + mu v : v)
class CONVGEMM_CXX_API Sgd final : public Optimizer {
 public:
  // Throws convgemm::Error naming the parameter for a non-positive rate, momentum outside [0, 1), negative decay,
  // or nesterov without momentum.
  explicit Sgd(const SgdParams& params);
  const SgdParams& params() const { return params_; }
  std::string type() const override { return "sgd"; }
  int64_t slots_per_parameter() const override { return params_.momentum > 0 ? 1 : 0; }

 private:
  void update(Parameter& parameter, std::span<std::vector<float>> slots) override;
  SgdParams params_;
};

struct CONVGEMM_CXX_API AdamParams {
  double learning_rate = 1e-3;
  double beta1 = 0.9;    // in [0, 1)
  double beta2 = 0.999;  // in [0, 1)
  double epsilon = 1e-8;
  double weight_decay = 0.0;
};

// g = dL/dw + lambda w;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
// w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)   at step t = 1, 2, ...
class CONVGEMM_CXX_API Adam final : public Optimizer {
 public:
  // Throws convgemm::Error naming the parameter for a non-positive rate or epsilon, betas outside [0, 1), or
  // negative decay.
  explicit Adam(const AdamParams& params);
  const AdamParams& params() const { return params_; }
  std::string type() const override { return "adam"; }
  int64_t slots_per_parameter() const override { return 2; }

 private:
  void update(Parameter& parameter, std::span<std::vector<float>> slots) override;
  AdamParams params_;
};

}  // namespace convgemm::nn
