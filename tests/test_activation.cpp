// ReLU, sigmoid, tanh and dropout: values against the textbook formulas (extremes included), finite-difference
// gradients, in-place use, dropout's reproducibility across seeds, calls and thread counts, and bad input.
#include "gradient_check.hpp"
#include "require_error.hpp"
#include "test_views.hpp"

#include <convgemm/activation.hpp>

#include <oneapi/tbb/task_arena.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <vector>

using namespace convgemm;
using convgemm::testing::bitwise_equal;
using convgemm::testing::check_gradient;
using convgemm::testing::dot;
using convgemm::testing::require_error;

namespace {

using Forward = std::function<void(std::span<const double>, std::span<double>)>;
using Backward = std::function<void(std::span<const double>, std::span<const double>, std::span<double>)>;

struct Activation {
  const char* name;
  Forward forward;
  Backward backward;
};

const std::vector<Activation>& activations() {
  static const std::vector<Activation> all = {
      {"relu", [](auto x, auto y) { relu_forward(x, y); }, [](auto y, auto dy, auto dx) { relu_backward(y, dy, dx); }},
      {"sigmoid", [](auto x, auto y) { sigmoid_forward(x, y); },
       [](auto y, auto dy, auto dx) { sigmoid_backward(y, dy, dx); }},
      {"tanh", [](auto x, auto y) { tanh_forward(x, y); }, [](auto y, auto dy, auto dx) { tanh_backward(y, dy, dx); }},
  };
  return all;
}

}  // namespace

TEST_CASE("activation: forward values match the formulas, extremes included", "[activation]") {
  const std::vector<float> x = {-1000.0f, -80.0f, -3.5f, -1.0f, -0.25f, 0.0f, 0.25f, 1.0f, 3.5f, 80.0f, 1000.0f};
  std::vector<float> y(x.size());

  relu_forward(x, y);
  for (size_t i = 0; i < x.size(); ++i) CHECK(y[i] == (x[i] > 0 ? x[i] : 0.0f));

  sigmoid_forward(x, y);
  for (size_t i = 0; i < x.size(); ++i) {
    INFO("sigmoid(" << x[i] << ") = " << y[i]);
    REQUIRE(std::isfinite(y[i]));
    // 1 / (1 + e^-x) in long double: no overflow there even at x = -1000 (e^1000 < LDBL_MAX).
    const long double expected = 1.0L / (1.0L + std::exp(-static_cast<long double>(x[i])));
    CHECK(static_cast<double>(y[i]) == Approx(static_cast<double>(expected)).epsilon(1e-6).margin(1e-30));
  }
  CHECK(y.front() == 0.0f);  // e^-1000 is below float's smallest subnormal
  CHECK(y.back() == 1.0f);

  tanh_forward(x, y);
  for (size_t i = 0; i < x.size(); ++i) {
    // tanh x = (1 - e^-2|x|) / (1 + e^-2|x|) * sign(x)
    const double e = std::exp(-2.0 * std::fabs(static_cast<double>(x[i])));
    CHECK(y[i] == Approx(std::copysign((1 - e) / (1 + e), static_cast<double>(x[i]))).epsilon(1e-6).margin(1e-7));
  }
}

TEST_CASE("activation: backward values are dy times the derivative written from the output", "[activation]") {
  const std::vector<float> y = {0.0f, 0.1f, 0.5f, 0.9f, 2.0f};
  const std::vector<float> dy = {3.0f, -2.0f, 1.0f, 4.0f, 0.5f};
  std::vector<float> dx(y.size());
  relu_backward(y, dy, dx);
  CHECK(dx == std::vector<float>{0.0f, -2.0f, 1.0f, 4.0f, 0.5f});
  sigmoid_backward(std::span(y).first(4), std::span(dy).first(4), std::span(dx).first(4));
  CHECK(dx[0] == 0.0f);
  CHECK(dx[1] == Approx(-2.0 * 0.1 * 0.9));
  CHECK(dx[2] == Approx(0.25));
  CHECK(dx[3] == Approx(4.0 * 0.9 * 0.1));
  tanh_backward(std::span(y).first(4), std::span(dy).first(4), std::span(dx).first(4));
  CHECK(dx[0] == 3.0f);
  CHECK(dx[1] == Approx(-2.0 * 0.99));
  CHECK(dx[2] == Approx(0.75));
  CHECK(dx[3] == Approx(4.0 * 0.19));
}

TEST_CASE("activation: gradients match finite differences", "[activation][gradient]") {
  std::mt19937_64 rng(5);
  // Spaced values never come within h of ReLU's kink at 0; the range covers sigmoid's and tanh's curved part.
  std::vector<double> x = convgemm::testing::spaced_doubles(200, rng, 3e-2);
  const std::vector<double> dy = convgemm::testing::random_doubles(x.size(), rng);
  std::vector<double> y(x.size()), dx(x.size());
  for (const Activation& activation : activations()) {
    activation.forward(x, y);
    activation.backward(y, dy, dx);
    check_gradient(
        x,
        [&] {
          activation.forward(x, y);
          return dot(dy, y);
        },
        dx, activation.name);
  }
}

TEST_CASE("activation: forward and backward run in place", "[activation]") {
  std::mt19937_64 rng(6);
  const std::vector<double> x = convgemm::testing::random_doubles(50000, rng, -4.0, 4.0);
  const std::vector<double> dy = convgemm::testing::random_doubles(x.size(), rng);
  for (const Activation& activation : activations()) {
    INFO(activation.name);
    std::vector<double> y(x.size()), dx(x.size());
    activation.forward(x, y);
    activation.backward(y, dy, dx);
    std::vector<double> in_place = x;
    activation.forward(in_place, in_place);
    CHECK(in_place == y);
    in_place = dy;
    activation.backward(y, in_place, in_place);
    CHECK(in_place == dx);
  }
}

TEST_CASE("dropout: the mask depends on seed and call only, and backward reuses it", "[activation][dropout]") {
  const Dropout dropout({.probability = 0.4, .seed = 99});
  std::mt19937_64 rng(8);
  const auto x = convgemm::testing::random_doubles(10000, rng, 1.0, 2.0);  // nonzero: a zero output means dropped
  const std::vector<float> x_float(x.begin(), x.end());
  const auto mask_of = [&](const Dropout& layer, uint64_t call) {
    std::vector<float> y(x_float.size());
    layer.forward(call, x_float, y);
    std::vector<bool> kept(y.size());
    for (size_t i = 0; i < y.size(); ++i) kept[i] = y[i] != 0.0f;
    return kept;
  };
  const auto mask = mask_of(dropout, 3);
  CHECK(mask_of(dropout, 3) == mask);
  CHECK(mask_of(Dropout({.probability = 0.4, .seed = 99}), 3) == mask);
  CHECK(mask_of(dropout, 4) != mask);
  CHECK(mask_of(Dropout({.probability = 0.4, .seed = 100}), 3) != mask);

  // Kept values are scaled by exactly 1 / (1 - p), and backward applies the same mask and scale to dy.
  std::vector<float> y(x_float.size()), dx(x_float.size());
  const std::vector<float> dy(x_float.size(), 1.0f);
  dropout.forward(3, x_float, y);
  dropout.backward(3, dy, dx);
  const float scale = static_cast<float>(1.0 / 0.6);
  for (size_t i = 0; i < y.size(); ++i) {
    CHECK(y[i] == (mask[i] ? x_float[i] * scale : 0.0f));
    CHECK(dx[i] == (mask[i] ? scale : 0.0f));
  }

  // p = 0 keeps everything and scales by 1: the identity.
  const Dropout none({.probability = 0.0, .seed = 1});
  none.forward(0, x_float, y);
  CHECK(y == x_float);
}

TEST_CASE("dropout: identical output for 1, 2, 3 and 8 threads", "[activation][dropout][determinism]") {
  const Dropout dropout({.probability = 0.5, .seed = 1234});
  std::mt19937_64 rng(9);
  // Several parallel blocks' worth of elements, and a length that is not a multiple of the block size.
  const auto values = convgemm::testing::random_doubles(300001, rng);
  const std::vector<float> x(values.begin(), values.end());
  std::vector<float> reference(x.size());
  oneapi::tbb::task_arena(1).execute([&] { dropout.forward(7, x, reference); });
  for (const int threads : {2, 3, 8}) {
    INFO(threads << " threads");
    std::vector<float> y(x.size()), dx(x.size());
    oneapi::tbb::task_arena(threads).execute([&] {
      dropout.forward(7, x, y);
      dropout.backward(7, x, dx);
    });
    CHECK(bitwise_equal(y, reference));
    CHECK(bitwise_equal(dx, reference));
  }
}

TEST_CASE("dropout: the kept fraction is 1 - p on a large tensor", "[activation][dropout]") {
  const std::vector<float> x(size_t{1} << 20, 1.0f);
  std::vector<float> y(x.size());
  for (const double p : {0.1, 0.5, 0.8}) {
    Dropout({.probability = p, .seed = 42}).forward(0, x, y);
    const auto kept = static_cast<double>(std::count_if(y.begin(), y.end(), [](float v) { return v != 0.0f; }));
    const double fraction = kept / static_cast<double>(y.size());
    // Binomial: the standard deviation of the fraction is sqrt(p (1 - p) / n) <= 0.0005; allow 6 of them.
    INFO("p = " << p << ": kept " << fraction);
    CHECK(std::fabs(fraction - (1 - p)) < 6 * std::sqrt(p * (1 - p) / static_cast<double>(y.size())));
  }
}

TEST_CASE("dropout: gradient matches finite differences", "[activation][dropout][gradient]") {
  const Dropout dropout({.probability = 0.3, .seed = 5});
  std::mt19937_64 rng(10);
  std::vector<double> x = convgemm::testing::random_doubles(300, rng);
  const auto dy = convgemm::testing::random_doubles(x.size(), rng);
  std::vector<double> y(x.size()), dx(x.size());
  dropout.backward(11, dy, dx);
  check_gradient(
      x,
      [&] {
        dropout.forward(11, x, y);
        return dot(dy, y);
      },
      dx, "dropout dL/dx");
}

TEST_CASE("activation: bad input names the argument and leaves outputs untouched", "[activation][errors]") {
  const auto bad = Status::invalid_argument;
  const std::vector<float> x(8, 1.0f), dy(8, 1.0f);
  std::vector<float> y(8, 42.0f), dx(8, 42.0f);
  const std::vector<float> y0 = y, dx0 = dx;
  const std::span<float> short_y = std::span(y).first(7), short_dx = std::span(dx).first(7);
  require_error([&] { relu_forward(x, short_y); }, bad, "output");
  require_error([&] { sigmoid_forward(x, short_y); }, bad, "output");
  require_error([&] { tanh_forward(std::span(x).first(7), y); }, bad, "output");
  require_error([&] { relu_backward(x, std::span(dy).first(7), dx); }, bad, "output_grad");
  require_error([&] { sigmoid_backward(x, dy, short_dx); }, bad, "input_grad");
  require_error([&] { tanh_backward(std::span(x).first(7), dy, short_dx); }, bad, "output_grad");

  for (const double p : {1.0, -0.1, 1.5, std::nan("")}) {
    INFO("p = " << p);
    require_error([&] { Dropout dropout({.probability = p}); }, bad, "probability");
  }
  const Dropout dropout({.probability = 0.5});
  require_error([&] { dropout.forward(0, x, short_y); }, bad, "output");
  require_error([&] { dropout.backward(0, std::span(dy).first(7), dx); }, bad, "input_grad");
  CHECK(y == y0);
  CHECK(dx == dx0);
}
