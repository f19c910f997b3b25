// SGD and Adam: argument checks, the state bookkeeping shared by both (sizing, checking, restoring), and each one's
// elementwise update rule, written as PyTorch documents it.
#include <convgemm/error.hpp>
#include <convgemm/nn/optimizer.hpp>

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <cmath>
#include <string>

namespace convgemm::nn {
namespace {

// Elements per task: an update is a few flops per element, so blocks must be large to outweigh scheduling.
constexpr size_t elements_per_task = size_t{1} << 14;

template <class Body>
void parallel_elements(size_t count, const Body& body) {
  oneapi::tbb::parallel_for(oneapi::tbb::blocked_range<size_t>(0, count, elements_per_task),
                            [&](const oneapi::tbb::blocked_range<size_t>& range) {
                              for (size_t i = range.begin(); i < range.end(); ++i) body(i);
                            });
}

// Written so that NaN fails too.
void require_in(double value, double low, double high, bool high_included, const char* name) {
  const bool ok = value >= low && (high_included ? value <= high : value < high);
  if (!ok) {
    throw Error(Status::invalid_argument, name,
                std::to_string(value) + " is not in [" + std::to_string(low) + ", " + std::to_string(high) +
                    (high_included ? "]" : ")"));
  }
}
void require_positive_rate(double value, const char* name) {
  if (!(value > 0 && std::isfinite(value))) {
    throw Error(Status::invalid_argument, name, "must be positive and finite, got " + std::to_string(value));
  }
}

}  // namespace

Optimizer::Optimizer(double learning_rate) : learning_rate_(learning_rate) {
  require_positive_rate(learning_rate, "learning_rate");
}

void Optimizer::set_learning_rate(double learning_rate) {
  require_positive_rate(learning_rate, "learning_rate");
  learning_rate_ = learning_rate;
}

void Optimizer::step(std::span<Parameter* const> parameters) {
  const auto slots = static_cast<size_t>(slots_per_parameter());
  if (state_.steps == 0 && state_.buffers.empty()) {
    for (const Parameter* parameter : parameters)
      for (size_t s = 0; s < slots; ++s) state_.buffers.emplace_back(parameter->value.size(), 0.0f);
  }
  if (state_.buffers.size() != parameters.size() * slots) {
    throw Error(Status::invalid_argument, "parameters",
                std::to_string(parameters.size()) + " given, but the optimiser's state is for " +
                    std::to_string(slots == 0 ? 0 : state_.buffers.size() / slots));
  }
  for (size_t i = 0; i < parameters.size(); ++i) {
    const Parameter& parameter = *parameters[i];
    if (parameter.grad.size() != parameter.value.size() ||
        (slots > 0 && state_.buffers[i * slots].size() != parameter.value.size())) {
      throw Error(Status::invalid_argument, "parameters",
                  "parameter " + std::to_string(i) + " (" + parameter.name + ") does not match the optimiser's state");
    }
  }
  ++state_.steps;
  for (size_t i = 0; i < parameters.size(); ++i) {
    update(*parameters[i], std::span(state_.buffers).subspan(i * slots, slots));
  }
}

void Optimizer::check_state(const OptimizerState& state, std::span<const Parameter* const> parameters) const {
  const auto slots = static_cast<size_t>(slots_per_parameter());
  const auto reject = [](const std::string& why) { throw Error(Status::invalid_argument, "optimizer state", why); };
  if (state.buffers.empty()) {
    // Nothing is kept yet (no step taken, or SGD without momentum): the next step sizes the buffers.
  } else if (state.buffers.size() != parameters.size() * slots) {
    reject("has " + std::to_string(state.buffers.size()) + " buffers, " + type() + " keeps " + std::to_string(slots) +
           " for each of the " + std::to_string(parameters.size()) + " parameters");
  } else {
    for (size_t i = 0; i < state.buffers.size(); ++i) {
      const size_t expected = parameters[i / slots]->value.size();
      if (state.buffers[i].size() != expected) {
        reject("buffer " + std::to_string(i) + " has " + std::to_string(state.buffers[i].size()) +
               " elements, its parameter " + std::to_string(expected));
      }
    }
  }
  if (slots > 0 && state.steps > 0 && state.buffers.empty()) reject("has taken steps but keeps no buffers");
}

void Optimizer::set_state(OptimizerState state, std::span<const Parameter* const> parameters) {
  check_state(state, parameters);
  state_ = std::move(state);
}

// ---------------------------------------------------------------------------------------------------------------
// SGD

Sgd::Sgd(const SgdParams& params) : Optimizer(params.learning_rate), params_(params) {
  require_in(params.momentum, 0.0, 1.0, false, "momentum");
  require_in(params.weight_decay, 0.0, INFINITY, false, "weight_decay");
  if (params.nesterov && params.momentum == 0.0) {
    throw Error(Status::invalid_argument, "nesterov", "needs a momentum > 0");
  }
}

// g = dL/dw + lambda w;  v = mu v + g;  w -= lr * (nesterov ? g + mu v : v)
void Sgd::update(Parameter& parameter, std::span<std::vector<float>> slots) {
  const auto lr = static_cast<float>(learning_rate()), mu = static_cast<float>(params_.momentum);
  const auto decay = static_cast<float>(params_.weight_decay);
  float* w = parameter.value.data();
  const float* grad = parameter.grad.data();
  if (slots.empty()) {
    parallel_elements(parameter.value.size(), [&](size_t i) { w[i] -= lr * (grad[i] + decay * w[i]); });
    return;
  }
  float* v = slots[0].data();
  // PyTorch starts the velocity at the first gradient; with v = 0 before the first step, mu v + g is exactly that.
  const bool nesterov = params_.nesterov;
  parallel_elements(parameter.value.size(), [&](size_t i) {
    const float g = grad[i] + decay * w[i];
    v[i] = mu * v[i] + g;
    w[i] -= lr * (nesterov ? g + mu * v[i] : v[i]);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Adam

Adam::Adam(const AdamParams& params) : Optimizer(params.learning_rate), params_(params) {
  require_in(params.beta1, 0.0, 1.0, false, "beta1");
  require_in(params.beta2, 0.0, 1.0, false, "beta2");
  require_positive_rate(params.epsilon, "epsilon");
  require_in(params.weight_decay, 0.0, INFINITY, false, "weight_decay");
}

// m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
void Adam::update(Parameter& parameter, std::span<std::vector<float>> slots) {
  const auto t = static_cast<double>(state_.steps);
  const double correction1 = 1.0 - std::pow(params_.beta1, t), correction2 = 1.0 - std::pow(params_.beta2, t);
  const auto step_size = static_cast<float>(learning_rate() / correction1);
  const auto root_correction2 = static_cast<float>(std::sqrt(correction2));
  const auto b1 = static_cast<float>(params_.beta1), b2 = static_cast<float>(params_.beta2);
  const auto eps = static_cast<float>(params_.epsilon), decay = static_cast<float>(params_.weight_decay);
  float* w = parameter.value.data();
  const float* grad = parameter.grad.data();
  float* m = slots[0].data();
  float* v = slots[1].data();
  parallel_elements(parameter.value.size(), [&](size_t i) {
    const float g = grad[i] + decay * w[i];
    m[i] = b1 * m[i] + (1.0f - b1) * g;
    v[i] = b2 * v[i] + (1.0f - b2) * g * g;
    w[i] -= step_size * m[i] / (std::sqrt(v[i]) / root_correction2 + eps);
  });
}

}  // namespace convgemm::nn
