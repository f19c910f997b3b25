// Fused losses: softmax + cross-entropy and sigmoid + binary cross-entropy against the textbook (unfused) formulas,
// the seed-002 derivation dL/dZ = A - Y, stability at logits of +-1000, finite differences, thread-count
// independence, and bad input.
#include "gradient_check.hpp"
#include "require_error.hpp"

#include <convgemm/activation.hpp>
#include <convgemm/loss.hpp>

#include <oneapi/tbb/task_arena.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

using namespace convgemm;
using convgemm::testing::check_gradient;
using convgemm::testing::random_doubles;
using convgemm::testing::require_error;

namespace {

std::vector<int64_t> random_labels(size_t count, int64_t classes, std::mt19937_64& rng) {
  std::uniform_int_distribution<int64_t> draw(0, classes - 1);
  std::vector<int64_t> labels(count);
  for (int64_t& label : labels) label = draw(rng);
  return labels;
}

}  // namespace

TEST_CASE("loss: softmax cross-entropy matches the textbook formula", "[loss]") {
  const int64_t N = 5, K = 7;
  const Shape4 shape{N, K, 1, 1};
  std::mt19937_64 rng(21);
  const auto values = random_doubles(N * K, rng, -4.0, 4.0);
  const std::vector<float> z(values.begin(), values.end());
  const auto labels = random_labels(N, K, rng);
  std::vector<float> dz(z.size());
  const double loss = softmax_cross_entropy({z.data(), shape}, labels, {dz.data(), shape});

  // Unstabilised, straight from the definition: p = e^z / sum e^z, L = -mean log p[label], dL/dz = (p - onehot) / N.
  double expected_loss = 0;
  for (int64_t n = 0; n < N; ++n) {
    double sum = 0;
    for (int64_t j = 0; j < K; ++j) sum += std::exp(static_cast<double>(z[n * K + j]));
    for (int64_t j = 0; j < K; ++j) {
      const double p = std::exp(static_cast<double>(z[n * K + j])) / sum;
      const bool is_label = j == labels[n];
      if (is_label) expected_loss -= std::log(p) / N;
      CHECK(dz[n * K + j] == Approx((p - (is_label ? 1.0 : 0.0)) / N).margin(1e-7));
    }
  }
  CHECK(loss == Approx(expected_loss).epsilon(1e-12));
  // Without a gradient buffer: the same loss.
  CHECK(softmax_cross_entropy({z.data(), shape}, labels) == loss);
}

TEST_CASE("loss: softmax cross-entropy stays finite and exact for logits of +-1000", "[loss]") {
  const Shape4 shape{3, 3, 1, 1};
  const std::vector<float> z = {1000,  -1000, 0,       // label 0: probability 1, loss 0
                                1000,  -1000, 0,       // label 1: loss 1000 - (-1000) = 2000
                                -1000, -1000, -1000};  // uniform: loss log 3
  const std::vector<int64_t> labels = {0, 1, 2};
  std::vector<float> dz(9);
  const double loss = softmax_cross_entropy({z.data(), shape}, labels, {dz.data(), shape});
  REQUIRE(std::isfinite(loss));
  CHECK(loss == Approx((0 + 2000 + std::log(3.0)) / 3).epsilon(1e-12));
  const float third = 1.0f / 3.0f;
  const std::vector<float> expected = {0,         0,         0,  //
                                       third,     -third,    0,  //
                                       third / 3, third / 3, -2 * third / 3};
  for (size_t i = 0; i < dz.size(); ++i) {
    REQUIRE(std::isfinite(dz[i]));
    CHECK(dz[i] == Approx(expected[i]).margin(1e-7));
  }
}

TEST_CASE("loss: softmax cross-entropy gradient matches finite differences", "[loss][gradient]") {
  const int64_t N = 6, K = 5;
  const Shape4 shape{N, K, 1, 1};
  std::mt19937_64 rng(22);
  std::vector<double> z = random_doubles(N * K, rng, -3.0, 3.0);
  const auto labels = random_labels(N, K, rng);
  std::vector<double> dz(z.size());
  softmax_cross_entropy(ConstTensorViewF64{z.data(), shape}, labels, TensorViewF64{dz.data(), shape});
  check_gradient(
      z,
      [&] {
        return softmax_cross_entropy(ConstTensorViewF64{z.data(), shape}, labels);
      },
      dz, "softmax cross-entropy dL/dz");
}

TEST_CASE("loss: seed 002, the fused sigmoid + BCE gradient is (A - Y) / N", "[loss][seed-002]") {
  // One output per sample, as in the seeds' binary classifier: M = N.
  const int64_t N = 8;
  const Shape4 shape{N, 1, 1, 1};
  std::mt19937_64 rng(23);
  const auto values = random_doubles(N, rng, -5.0, 5.0);
  const std::vector<float> z(values.begin(), values.end());
  const std::vector<float> y = {1, 0, 0, 1, 1, 0, 0.25f, 0.75f};  // hard labels and two soft ones
  std::vector<float> dz(N);
  const double loss = sigmoid_binary_cross_entropy({z.data(), shape}, {y.data(), shape}, {dz.data(), shape});

  // A from the library's own sigmoid layer: the fused gradient is exactly what the unfused chain would give.
  std::vector<float> a(N);
  sigmoid_forward(z, a);
  double expected_loss = 0;
  for (int64_t i = 0; i < N; ++i) {
    INFO("z = " << z[i] << ", y = " << y[i]);
    CHECK(dz[i] == Approx((a[i] - y[i]) / N).epsilon(1e-6).margin(1e-9));
    // The derivation, step by step in double: dL/dA = (-y/A + (1-y)/(1-A)) / N, dA/dZ = A (1 - A).
    const double A = 1 / (1 + std::exp(-static_cast<double>(z[i]))), Y = y[i];
    const double dL_dA = (-Y / A + (1 - Y) / (1 - A)) / N;
    CHECK(dz[i] == Approx(dL_dA * A * (1 - A)).epsilon(1e-5).margin(1e-9));
    expected_loss -= (Y * std::log(A) + (1 - Y) * std::log(1 - A)) / N;
  }
  CHECK(loss == Approx(expected_loss).epsilon(1e-6));
  CHECK(sigmoid_binary_cross_entropy({z.data(), shape}, {y.data(), shape}) == loss);
}

TEST_CASE("loss: sigmoid + BCE stays finite and exact for logits of +-1000", "[loss]") {
  const Shape4 shape{4, 1, 1, 1};
  // Confidently right (loss 0) and confidently wrong (loss |z| = 1000), in both directions.
  const std::vector<float> z = {1000, -1000, 1000, -1000}, y = {1, 1, 0, 0};
  std::vector<float> dz(4);
  const double loss = sigmoid_binary_cross_entropy({z.data(), shape}, {y.data(), shape}, {dz.data(), shape});
  REQUIRE(std::isfinite(loss));
  CHECK(loss == Approx((0 + 1000 + 1000 + 0) / 4.0).epsilon(1e-12));
  CHECK(dz == std::vector<float>{0, -0.25f, 0.25f, 0});
}

TEST_CASE("loss: sigmoid + BCE gradient matches finite differences", "[loss][gradient]") {
  const Shape4 shape{4, 3, 2, 1};  // multi-output: the mean runs over all 24 elements
  std::mt19937_64 rng(24);
  std::vector<double> z = random_doubles(24, rng, -6.0, 6.0);
  const auto y = random_doubles(24, rng, 0.0, 1.0);
  std::vector<double> dz(z.size());
  sigmoid_binary_cross_entropy(ConstTensorViewF64{z.data(), shape}, ConstTensorViewF64{y.data(), shape},
                               TensorViewF64{dz.data(), shape});
  check_gradient(
      z,
      [&] {
        return sigmoid_binary_cross_entropy(ConstTensorViewF64{z.data(), shape}, ConstTensorViewF64{y.data(), shape});
      },
      dz, "sigmoid BCE dL/dz");
}

TEST_CASE("loss: the loss is bitwise the same for 1, 2, 3 and 8 threads", "[loss][determinism]") {
  const int64_t N = 5000, K = 10;
  const Shape4 shape{N, K, 1, 1};
  std::mt19937_64 rng(25);
  const auto values = random_doubles(N * K, rng, -10.0, 10.0);
  const std::vector<float> z(values.begin(), values.end());
  const auto labels = random_labels(N, K, rng);
  const auto targets_double = random_doubles(N * K, rng, 0.0, 1.0);
  const std::vector<float> targets(targets_double.begin(), targets_double.end());
  const auto losses = [&](int threads) {
    std::vector<double> result;
    oneapi::tbb::task_arena(threads).execute([&] {
      result.push_back(softmax_cross_entropy({z.data(), shape}, labels));
      result.push_back(sigmoid_binary_cross_entropy({z.data(), shape}, {targets.data(), shape}));
    });
    return result;
  };
  const auto reference = losses(1);
  for (const int threads : {2, 3, 8}) {
    INFO(threads << " threads");
    CHECK(losses(threads) == reference);  // exact comparison of doubles: bitwise
  }
}

TEST_CASE("loss: bad input names the argument and leaves the gradient untouched", "[loss][errors]") {
  const auto bad = Status::invalid_argument;
  const Shape4 shape{2, 3, 1, 1};
  const std::vector<float> z(6, 0.5f), y(6, 1.0f);
  std::vector<float> dz(6, 42.0f);
  const std::vector<float> dz0 = dz;
  const std::vector<int64_t> labels = {0, 2};

  require_error([&] { softmax_cross_entropy({nullptr, shape}, labels, {dz.data(), shape}); }, bad, "logits");
  require_error([&] { softmax_cross_entropy({z.data(), {2, 3, 1, 0}}, labels); }, bad, "logits");
  require_error([&] { softmax_cross_entropy({z.data(), {1, 3, 2, 1}}, labels, {dz.data(), shape}); }, bad, "logits");
  require_error(
      [&] {
        softmax_cross_entropy({z.data(), shape}, std::vector<int64_t>{0}, {dz.data(), shape});
      },
      bad, "labels");
  require_error(
      [&] {
        softmax_cross_entropy({z.data(), shape}, std::vector<int64_t>{0, 3}, {dz.data(), shape});
      },
      bad, "labels");
  require_error(
      [&] {
        softmax_cross_entropy({z.data(), shape}, std::vector<int64_t>{-1, 0}, {dz.data(), shape});
      },
      bad, "labels");
  require_error(
      [&] {
        softmax_cross_entropy({z.data(), shape}, labels, {dz.data(), {3, 2, 1, 1}});
      },
      bad, "logits_grad");
  require_error([&] { softmax_cross_entropy({z.data(), shape}, labels, {nullptr, shape}); }, bad, "logits_grad");

  require_error(
      [&] {
        sigmoid_binary_cross_entropy({z.data(), shape}, {y.data(), {3, 2, 1, 1}}, {dz.data(), shape});
      },
      bad, "targets");
  require_error(
      [&] {
        sigmoid_binary_cross_entropy({z.data(), {0, 3, 1, 1}}, {y.data(), {0, 3, 1, 1}});
      },
      bad, "logits");
  for (const float target : {-0.5f, 1.5f, std::nanf("")}) {
    std::vector<float> wrong = y;
    wrong[4] = target;
    INFO("target " << target);
    require_error(
        [&] {
          sigmoid_binary_cross_entropy({z.data(), shape}, {wrong.data(), shape}, {dz.data(), shape});
        },
        bad, "targets");
  }
  require_error(
      [&] {
        sigmoid_binary_cross_entropy({z.data(), shape}, {y.data(), shape}, {dz.data(), {6, 1, 1, 1}});
      },
      bad, "logits_grad");
  CHECK(dz == dz0);
}
