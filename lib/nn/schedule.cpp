// Learning-rate schedules: cosine annealing with warm-up and step decay, each validated once and returned as a pure
// function of the epoch position (see schedule.hpp).
#include <convgemm/error.hpp>
#include <convgemm/nn/schedule.hpp>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

namespace convgemm::nn {
namespace {

void reject(const char* parameter, const std::string& why) { throw Error(Status::invalid_argument, parameter, why); }

}  // namespace

LearningRateSchedule cosine_schedule(double base_rate, int64_t epochs, double final_rate, double warmup_epochs) {
  if (!(base_rate > 0) || !std::isfinite(base_rate)) reject("base_rate", "must be positive and finite");
  if (!(final_rate >= 0 && final_rate < base_rate)) reject("final_rate", "must be in [0, base_rate)");
  if (epochs < 1) reject("epochs", "must be at least 1, got " + std::to_string(epochs));
  if (!(warmup_epochs >= 0 && warmup_epochs < static_cast<double>(epochs))) {
    reject("warmup_epochs", "must be in [0, epochs)");
  }
  const double span = static_cast<double>(epochs) - warmup_epochs;
  return [=](double t) {
    if (t < warmup_epochs) return base_rate * (0.1 + 0.9 * t / warmup_epochs);
    const double done = std::min(1.0, (t - warmup_epochs) / span);
    return final_rate + (base_rate - final_rate) * 0.5 * (1 + std::cos(std::numbers::pi * done));
  };
}

LearningRateSchedule step_schedule(double base_rate, int64_t step_epochs, double factor) {
  if (!(base_rate > 0) || !std::isfinite(base_rate)) reject("base_rate", "must be positive and finite");
  if (step_epochs < 1) reject("step_epochs", "must be at least 1, got " + std::to_string(step_epochs));
  if (!(factor > 0 && factor <= 1)) reject("factor", "must be in (0, 1]");
  return [=](double t) { return base_rate * std::pow(factor, std::floor(t / static_cast<double>(step_epochs))); };
}

}  // namespace convgemm::nn
