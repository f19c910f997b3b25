// Optimisers and initialisation: SGD (plain, momentum, Nesterov, weight decay) and Adam against the update rules
// as PyTorch documents them, written out here in double; their state; He / Glorot statistics and reproducibility;
// the bounded draws shuffling relies on; bad hyperparameters.
#include "require_error.hpp"

#include <convgemm/nn/init.hpp>
#include <convgemm/nn/optimizer.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <random>
#include <tuple>
#include <vector>

using namespace convgemm;
using namespace convgemm::nn;
using convgemm::testing::require_error;

namespace {

// Two parameters and a gradient that changes with each step (as a real one does): g_t[i] = sin(i + t) + 0.1 i.
struct Problem {
  std::vector<Parameter> parameters;
  Problem() {
    parameters.push_back(make_parameter("weight", {2, 3}, 3, 2));
    parameters.push_back(make_parameter("bias", {2}, 0, 0));
    for (Parameter& p : parameters)
      for (size_t i = 0; i < p.value.size(); ++i) p.value[i] = 0.5f - 0.2f * static_cast<float>(i);
  }
  std::vector<Parameter*> pointers() { return {&parameters[0], &parameters[1]}; }
  void set_gradients(int step) {
    for (Parameter& p : parameters)
      for (size_t i = 0; i < p.grad.size(); ++i)
        p.grad[i] = static_cast<float>(std::sin(static_cast<double>(i) + step) + 0.1 * static_cast<double>(i));
  }
};

// Runs `steps` steps of the optimiser and of `reference` (which updates doubles), and compares. Float and double
// differ by the float rounding of a handful of operations per step: 1e-5 relative covers it by far.
template <class Reference>
void compare(Optimizer& optimizer, int steps, Reference reference) {
  Problem problem;
  std::vector<std::vector<double>> expected;
  for (const Parameter& p : problem.parameters) expected.emplace_back(p.value.begin(), p.value.end());
  for (int t = 1; t <= steps; ++t) {
    problem.set_gradients(t);
    optimizer.step(problem.pointers());
    for (size_t k = 0; k < expected.size(); ++k) {
      const std::vector<double> grad(problem.parameters[k].grad.begin(), problem.parameters[k].grad.end());
      reference(t, k, expected[k], grad);
    }
  }
  CHECK(optimizer.state().steps == static_cast<uint64_t>(steps));
  for (size_t k = 0; k < expected.size(); ++k)
    for (size_t i = 0; i < expected[k].size(); ++i)
      CHECK(problem.parameters[k].value[i] == Approx(expected[k][i]).epsilon(1e-5).margin(1e-6));
}

}  // namespace

TEST_CASE("optimizer: SGD follows PyTorch's update rule", "[optimizer]") {
  SECTION("plain, with weight decay") {
    Sgd sgd({.learning_rate = 0.1, .weight_decay = 0.01});
    CHECK(sgd.slots_per_parameter() == 0);
    compare(sgd, 5, [](int, size_t, std::vector<double>& w, const std::vector<double>& g) {
      for (size_t i = 0; i < w.size(); ++i) w[i] -= 0.1 * (g[i] + 0.01 * w[i]);
    });
  }
  for (const bool nesterov : {false, true}) {
    SECTION(nesterov ? "Nesterov momentum and weight decay" : "momentum and weight decay") {
      Sgd sgd({.learning_rate = 0.05, .momentum = 0.9, .weight_decay = 1e-3, .nesterov = nesterov});
      CHECK(sgd.slots_per_parameter() == 1);
      std::vector<std::vector<double>> velocity(2);
      compare(sgd, 6, [&](int t, size_t k, std::vector<double>& w, const std::vector<double>& grad) {
        std::vector<double>& v = velocity[k];
        v.resize(w.size());
        for (size_t i = 0; i < w.size(); ++i) {
          const double g = grad[i] + 1e-3 * w[i];
          v[i] = t == 1 ? g : 0.9 * v[i] + g;  // torch: the buffer starts as the first gradient
          w[i] -= 0.05 * (nesterov ? g + 0.9 * v[i] : v[i]);
        }
      });
    }
  }
}

TEST_CASE("optimizer: Adam follows PyTorch's update rule", "[optimizer]") {
  Adam adam({.learning_rate = 0.01, .beta1 = 0.8, .beta2 = 0.99, .epsilon = 1e-7, .weight_decay = 0.05});
  std::vector<std::vector<double>> m(2), v(2);
  compare(adam, 7, [&](int t, size_t k, std::vector<double>& w, const std::vector<double>& grad) {
    m[k].resize(w.size());
    v[k].resize(w.size());
    for (size_t i = 0; i < w.size(); ++i) {
      const double g = grad[i] + 0.05 * w[i];
      m[k][i] = 0.8 * m[k][i] + 0.2 * g;
      v[k][i] = 0.99 * v[k][i] + 0.01 * g * g;
      const double m_hat = m[k][i] / (1 - std::pow(0.8, t)), v_hat = v[k][i] / (1 - std::pow(0.99, t));
      w[i] -= 0.01 * m_hat / (std::sqrt(v_hat) + 1e-7);
    }
  });

  // The first step moves every weight by the learning rate against the gradient's sign: m_hat / sqrt(v_hat) = g/|g|.
  Problem problem;
  const std::vector<float> before = problem.parameters[0].value;
  problem.set_gradients(1);
  Adam first({.learning_rate = 0.001});
  first.step(problem.pointers());
  for (size_t i = 0; i < before.size(); ++i) {
    const float g = problem.parameters[0].grad[i];
    CHECK(problem.parameters[0].value[i] - before[i] == Approx(g > 0 ? -0.001 : 0.001).epsilon(1e-3));
  }
}

TEST_CASE("optimizer: state, learning rate and bad hyperparameters", "[optimizer][errors]") {
  Problem problem;
  Adam adam({});
  problem.set_gradients(1);
  adam.step(problem.pointers());
  const OptimizerState state = adam.state();
  CHECK(state.steps == 1);
  CHECK(state.buffers.size() == 4);  // m and v for each of the two parameters

  // A state restored into a fresh optimiser continues identically.
  Problem twin;
  twin.parameters = problem.parameters;
  Adam restored({});
  const std::vector<const Parameter*> views = {&problem.parameters[0], &problem.parameters[1]};
  restored.set_state(state, views);
  problem.set_gradients(2);
  twin.set_gradients(2);
  adam.step(problem.pointers());
  restored.step(twin.pointers());
  CHECK(problem.parameters[0].value == twin.parameters[0].value);
  CHECK(problem.parameters[1].value == twin.parameters[1].value);

  OptimizerState wrong = state;
  wrong.buffers.pop_back();
  require_error([&] { restored.set_state(wrong, views); }, Status::invalid_argument, "optimizer state");
  wrong = state;
  wrong.buffers[1].push_back(0.0f);
  require_error([&] { restored.set_state(wrong, views); }, Status::invalid_argument, "optimizer state");
  CHECK(restored.state().steps == 2);  // unchanged by the failed calls

  // A step with other parameters than the state was made for.
  std::vector<Parameter*> fewer = {&problem.parameters[0]};
  require_error([&] { adam.step(fewer); }, Status::invalid_argument, "parameters");

  adam.set_learning_rate(0.5);
  CHECK(adam.learning_rate() == 0.5);
  const auto bad = Status::invalid_argument;
  require_error([&] { adam.set_learning_rate(0); }, bad, "learning_rate");
  require_error([] { Sgd sgd({.learning_rate = -1}); }, bad, "learning_rate");
  require_error([] { Sgd sgd({.learning_rate = NAN}); }, bad, "learning_rate");
  require_error([] { Sgd sgd({.momentum = 1.0}); }, bad, "momentum");
  require_error([] { Sgd sgd({.weight_decay = -0.1}); }, bad, "weight_decay");
  require_error([] { Sgd sgd({.nesterov = true}); }, bad, "nesterov");
  require_error([] { Adam a({.beta1 = 1.0}); }, bad, "beta1");
  require_error([] { Adam a({.beta2 = -0.1}); }, bad, "beta2");
  require_error([] { Adam a({.epsilon = 0}); }, bad, "epsilon");
  require_error([] { Adam a({.weight_decay = NAN}); }, bad, "weight_decay");
}

TEST_CASE("init: He, Glorot and PyTorch's default draw the documented distributions, reproducibly", "[init]") {
  const auto draw = [](Initializer scheme, uint64_t seed) {
    Parameter p = make_parameter("weight", {200, 50, 3, 3}, 450, 1800);
    std::mt19937_64 rng(seed);
    initialize_parameter(p, scheme, rng);
    return p.value;
  };
  const auto moments = [](const std::vector<float>& values) {
    double sum = 0, squares = 0, largest = 0;
    for (const float v : values) {
      sum += v;
      squares += static_cast<double>(v) * v;
      largest = std::max(largest, std::fabs(static_cast<double>(v)));
    }
    const auto n = static_cast<double>(values.size());
    return std::array<double, 3>{sum / n, squares / n, largest};
  };
  // 90,000 draws: the sample variance is within 1.5% of the true one with overwhelming probability.
  const double he = 2.0 / 450, glorot = 2.0 / (450 + 1800), torch = 1.0 / (3 * 450);
  for (const auto& [scheme, variance, bound] : std::vector<std::tuple<Initializer, double, double>>{
           {Initializer::he_normal, he, 0},
           {Initializer::he_uniform, he, std::sqrt(3 * he)},
           {Initializer::glorot_normal, glorot, 0},
           {Initializer::glorot_uniform, glorot, std::sqrt(3 * glorot)},
           {Initializer::torch_uniform, torch, 1 / std::sqrt(450.0)}}) {
    const auto values = draw(scheme, 5);
    const auto [mean, mean_square, largest] = moments(values);
    INFO("scheme " << static_cast<int>(scheme));
    CHECK(std::fabs(mean) < 0.02 * std::sqrt(variance));
    CHECK(mean_square == Approx(variance).epsilon(0.015));
    if (bound > 0) CHECK(largest <= bound);
    CHECK(draw(scheme, 5) == values);  // same seed, same bits
    CHECK(draw(scheme, 6) != values);
  }
  // He and Glorot start biases at zero and draw nothing; PyTorch's default draws them from U(+-1/sqrt(fan_in)).
  Parameter bias = make_bias({1000}, 450, 1800);
  for (const Initializer scheme : {Initializer::he_normal, Initializer::glorot_uniform}) {
    bias.value.assign(1000, 3.0f);
    std::mt19937_64 rng(1), untouched(1);
    initialize_parameter(bias, scheme, rng);
    CHECK(bias.value == std::vector<float>(1000, 0.0f));
    CHECK(rng() == untouched());
  }
  std::mt19937_64 rng(1);
  initialize_parameter(bias, Initializer::torch_uniform, rng);
  const auto [mean, mean_square, largest] = moments(bias.value);
  CHECK(largest <= 1 / std::sqrt(450.0));
  CHECK(mean_square == Approx(torch).epsilon(0.1));  // 1,000 draws: within 10%
  // A weight without a fan-in has no scale to draw from.
  Parameter unscaled = make_parameter("weight", {4}, 0, 0);
  require_error([&] { initialize_parameter(unscaled, Initializer::he_normal, rng); }, Status::invalid_argument,
                "fan_in");
}

TEST_CASE("init: uniform, normal and bounded draws", "[init]") {
  std::mt19937_64 rng(9), copy(9);
  // uniform_double is the top 53 bits of one draw.
  CHECK(uniform_double(rng) == std::ldexp(static_cast<double>(copy() >> 11), -53));
  std::vector<int> counts(7, 0);
  double sum = 0, squares = 0;
  constexpr int draws = 70000;
  for (int i = 0; i < draws; ++i) {
    const uint64_t value = uniform_below(rng, 7);
    REQUIRE(value < 7);
    ++counts[value];
    const double z = standard_normal(rng);
    sum += z;
    squares += z * z;
  }
  for (const int count : counts) CHECK(count == Approx(draws / 7).epsilon(0.05));
  CHECK(std::fabs(sum / draws) < 0.02);
  CHECK(squares / draws == Approx(1.0).epsilon(0.02));
  CHECK(uniform_below(rng, 1) == 0);
}
