// Central finite differences in double precision: the check every layer's and loss's backward must pass.
// A layer y = f(x) is reduced to the scalar L(x) = <dy, f(x)> for a random dy, whose gradient is backward(dy).
//
// Why the tolerance is what it is: the central difference (L(x + h e_i) - L(x - h e_i)) / 2h differs from dL/dx_i
// by h^2 * L''' / 6 (truncation) plus about eps * |L| / h (rounding in double). With h = 1e-6 and the O(1..100)
// values these tests use, both are below 1e-8, so 1e-6 * (1 + |dL/dx_i|) cannot fail a correct gradient, while a
// wrong index or a missing factor is off by O(|dL/dx_i|). Functions with kinks (max, ReLU) are evaluated where no
// input is within h of a kink: the tests space their inputs apart to make sure of that.
#pragma once

#include "test_views.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace convgemm::testing {

inline std::vector<double> random_doubles(size_t count, std::mt19937_64& rng, double low = -1.0, double high = 1.0) {
  std::uniform_real_distribution<double> uniform(low, high);
  std::vector<double> values(count);
  for (double& v : values) v = uniform(rng);
  return values;
}

// count values in random order, any two at least `gap` apart: no max, arg-max or ReLU kink lies within h of them.
inline std::vector<double> spaced_doubles(size_t count, std::mt19937_64& rng, double gap = 1e-2) {
  std::vector<double> values(count);
  for (size_t i = 0; i < count; ++i) values[i] = (static_cast<double>(i) - static_cast<double>(count) / 2 + 0.5) * gap;
  std::shuffle(values.begin(), values.end(), rng);
  return values;
}

inline double dot(std::span<const double> a, std::span<const double> b) {
  return std::inner_product(a.begin(), a.end(), b.begin(), 0.0);
}

// Checks analytic[i] against the central difference of loss() in point[i] for every i. loss() must read point,
// which is perturbed in place and restored.
inline void check_gradient(std::vector<double>& point, const std::function<double()>& loss,
                           const std::vector<double>& analytic, const std::string& what) {
  REQUIRE(point.size() == analytic.size());
  constexpr double h = 1e-6;
  constexpr double tolerance = 1e-6;
  size_t failures = 0;
  for (size_t i = 0; i < point.size(); ++i) {
    const double saved = point[i];
    point[i] = saved + h;
    const double above = loss();
    point[i] = saved - h;
    const double below = loss();
    point[i] = saved;
    const double numeric = (above - below) / (2 * h);
    if (std::fabs(numeric - analytic[i]) > tolerance * (1 + std::fabs(analytic[i]))) {
      if (++failures <= 5) UNSCOPED_INFO(what << "[" << i << "]: analytic " << analytic[i] << ", numeric " << numeric);
    }
  }
  INFO(what << ": " << failures << " of " << point.size() << " partial derivatives disagree");
  CHECK(failures == 0);
}

// The whole check for an operator with weights and a bias, in double precision: forward(x, W, b, y),
// backward_data(dy, W, dx), backward_weights(x, dy, dW) and backward_bias(dy, db) on random tensors of the shapes
// `s` gives (input, weights, output, bias). Returns x, dy and the checked dW and db, for callers that go on to check
// accumulate mode.
struct CheckedGradients {
  std::vector<double> input, output_grad, weights_grad, bias_grad;
};
template <class Operator, class Shapes>
CheckedGradients check_weighted_operator_gradients(const Operator& op, const Shapes& s, std::mt19937_64& rng) {
  std::vector<double> x = random_doubles(static_cast<size_t>(element_count(s.input)), rng);
  std::vector<double> w = random_doubles(static_cast<size_t>(element_count(s.weights)), rng);
  std::vector<double> b = random_doubles(static_cast<size_t>(s.bias), rng);
  const std::vector<double> dy = random_doubles(static_cast<size_t>(element_count(s.output)), rng);
  std::vector<double> y(dy.size()), dx(x.size()), dw(w.size()), db(b.size());
  const auto loss = [&] {
    op.forward(in(x, s.input), in(w, s.weights), b, out(y, s.output));
    return dot(dy, y);
  };
  op.backward_data(in(dy, s.output), in(w, s.weights), out(dx, s.input));
  op.backward_weights(in(x, s.input), in(dy, s.output), out(dw, s.weights));
  op.backward_bias(in(dy, s.output), db);
  check_gradient(x, loss, dx, "dL/dx");
  check_gradient(w, loss, dw, "dL/dW");
  check_gradient(b, loss, db, "dL/db");
  return {x, dy, dw, db};
}

}  // namespace convgemm::testing
