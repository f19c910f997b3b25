// Dense: the sgemm path against naive triple loops (under the same rigorous float error bound as the conv2d
// tests), finite-difference gradients of the double path, bitwise determinism over thread counts, and bad input.
#include "conv2d_tester.hpp"
#include "gradient_check.hpp"
#include "require_error.hpp"

#include <convgemm/dense.hpp>

#include <oneapi/tbb/task_arena.h>
#include <catch2/catch.hpp>

#include <random>
#include <vector>

using namespace convgemm;
using convgemm::testing::bitwise_equal;
using convgemm::testing::in;
using convgemm::testing::out;
using convgemm::testing::random_floats;
using convgemm::testing::require_error;
using convgemm::testing::require_within_bound;
using convgemm::testing::to_double;

namespace {

// The naive loops, in double, on values or (absolute = true) their magnitudes: the exact result and sum |terms|.
struct NaiveDense {
  int64_t N, C, K;
  std::vector<double> x, w, b, dy;

  NaiveDense(const DenseParams& p, const std::vector<float>& x_, const std::vector<float>& w_,
             const std::vector<float>& b_, const std::vector<float>& dy_, bool absolute)
      : N(p.batch),
        C(p.in_features),
        K(p.out_features),
        x(to_double(x_, absolute)),
        w(to_double(w_, absolute)),
        b(to_double(b_, absolute)),
        dy(to_double(dy_, absolute)) {}

  double at(const std::vector<double>& m, int64_t row, int64_t col, int64_t cols) const {
    return m[static_cast<size_t>(row * cols + col)];
  }
  std::vector<double> forward() const {  // y[n,k] = b[k] + sum_c x[n,c] w[k,c]
    std::vector<double> y;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) {
        double sum = b.empty() ? 0.0 : b[static_cast<size_t>(k)];
        for (int64_t c = 0; c < C; ++c) sum += at(x, n, c, C) * at(w, k, c, C);
        y.push_back(sum);
      }
    return y;
  }
  std::vector<double> input_grad() const {  // dx[n,c] = sum_k dy[n,k] w[k,c]
    std::vector<double> dx;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) {
        double sum = 0;
        for (int64_t k = 0; k < K; ++k) sum += at(dy, n, k, K) * at(w, k, c, C);
        dx.push_back(sum);
      }
    return dx;
  }
  std::vector<double> weights_grad() const {  // dw[k,c] = sum_n dy[n,k] x[n,c]
    std::vector<double> dw;
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < C; ++c) {
        double sum = 0;
        for (int64_t n = 0; n < N; ++n) sum += at(dy, n, k, K) * at(x, n, c, C);
        dw.push_back(sum);
      }
    return dw;
  }
  std::vector<double> bias_grad() const {  // db[k] = sum_n dy[n,k]
    std::vector<double> db;
    for (int64_t k = 0; k < K; ++k) {
      double sum = 0;
      for (int64_t n = 0; n < N; ++n) sum += at(dy, n, k, K);
      db.push_back(sum);
    }
    return db;
  }
};

}  // namespace

TEST_CASE("dense: forward and all three gradients against naive triple loops", "[dense]") {
  std::mt19937_64 rng(17);
  const auto draw = [&](int64_t low, int64_t high) { return std::uniform_int_distribution<int64_t>(low, high)(rng); };
  for (int trial = 0; trial < 60; ++trial) {
    // Batches and feature counts on both sides of the 32-row parallel blocks.
    const DenseParams params{
        .batch = draw(1, 70), .in_features = draw(1, 40), .out_features = draw(1, 70), .has_bias = draw(0, 1) == 1};
    INFO("trial " << trial << ": N=" << params.batch << " C=" << params.in_features << " K=" << params.out_features
                  << " bias=" << params.has_bias);
    const Dense dense(params);
    const DenseShapes& s = dense.shapes();
    const auto x = random_floats(element_count(s.input), rng);
    const auto w = random_floats(element_count(s.weights), rng);
    const auto b = random_floats(s.bias, rng);
    const auto dy = random_floats(element_count(s.output), rng);
    const NaiveDense exact(params, x, w, b, dy, false), magnitude(params, x, w, b, dy, true);
    const int64_t N = params.batch, C = params.in_features, K = params.out_features;

    std::vector<float> y(dy.size());
    dense.forward(in(x, s.input), in(w, s.weights), b, out(y, s.output));
    require_within_bound(y, exact.forward(), magnitude.forward(), C + 1, "forward");

    std::vector<float> dx(x.size());
    dense.backward_data(in(dy, s.output), in(w, s.weights), out(dx, s.input));
    require_within_bound(dx, exact.input_grad(), magnitude.input_grad(), K, "backward_data");

    std::vector<float> dw(w.size());
    dense.backward_weights(in(x, s.input), in(dy, s.output), out(dw, s.weights));
    const auto exact_dw = exact.weights_grad(), magnitude_dw = magnitude.weights_grad();
    require_within_bound(dw, exact_dw, magnitude_dw, N, "backward_weights");

    // Accumulate mode: dW_after = dW_before + dy^T x
    std::vector<float> accumulated = w;
    dense.backward_weights(in(x, s.input), in(dy, s.output), out(accumulated, s.weights), GradientMode::accumulate);
    std::vector<double> exact_sum(w.size()), magnitude_sum(w.size());
    for (size_t i = 0; i < w.size(); ++i) {
      exact_sum[i] = exact_dw[i] + w[i];
      magnitude_sum[i] = magnitude_dw[i] + std::fabs(w[i]);
    }
    require_within_bound(accumulated, exact_sum, magnitude_sum, N + 1, "backward_weights (accumulate)");

    if (!params.has_bias) continue;
    std::vector<float> db(b.size());
    dense.backward_bias(in(dy, s.output), db);
    require_within_bound(db, exact.bias_grad(), magnitude.bias_grad(), N, "backward_bias");
    std::vector<float> db_accumulated = b;
    dense.backward_bias(in(dy, s.output), db_accumulated, GradientMode::accumulate);
    std::vector<double> exact_db_sum = exact.bias_grad(), magnitude_db_sum = magnitude.bias_grad();
    for (size_t k = 0; k < b.size(); ++k) {
      exact_db_sum[k] += b[k];
      magnitude_db_sum[k] += std::fabs(b[k]);
    }
    require_within_bound(db_accumulated, exact_db_sum, magnitude_db_sum, N + 1, "backward_bias (accumulate)");
  }
}

TEST_CASE("dense: gradients match finite differences", "[dense][gradient]") {
  const Dense dense({.batch = 37, .in_features = 6, .out_features = 5, .has_bias = true});
  std::mt19937_64 rng(18);
  convgemm::testing::check_weighted_operator_gradients(dense, dense.shapes(), rng);
}

TEST_CASE("dense: results are bitwise identical for 1, 2, 3 and 8 threads", "[dense][determinism]") {
  const Dense dense({.batch = 150, .in_features = 90, .out_features = 100, .has_bias = true});
  const DenseShapes& s = dense.shapes();
  std::mt19937_64 rng(19);
  const auto x = random_floats(element_count(s.input), rng);
  const auto w = random_floats(element_count(s.weights), rng);
  const auto b = random_floats(s.bias, rng);
  const auto dy = random_floats(element_count(s.output), rng);
  const auto run = [&](int threads) {
    std::vector<float> y(dy.size()), dx(x.size()), dw(w.size()), db(b.size());
    oneapi::tbb::task_arena(threads).execute([&] {
      dense.forward(in(x, s.input), in(w, s.weights), b, out(y, s.output));
      dense.backward_data(in(dy, s.output), in(w, s.weights), out(dx, s.input));
      dense.backward_weights(in(x, s.input), in(dy, s.output), out(dw, s.weights));
      dense.backward_bias(in(dy, s.output), db);
    });
    return std::vector<std::vector<float>>{y, dx, dw, db};
  };
  const auto reference = run(1);
  for (const int threads : {2, 3, 8}) {
    INFO(threads << " threads");
    const auto result = run(threads);
    for (size_t i = 0; i < result.size(); ++i) CHECK(bitwise_equal(result[i], reference[i]));
  }
}

TEST_CASE("dense: bad params and tensors name the parameter and leave outputs untouched", "[dense][errors]") {
  const auto bad = Status::invalid_argument;
  require_error([] { Dense dense({.batch = 0}); }, bad, "batch");
  require_error([] { Dense dense({.in_features = -1}); }, bad, "in_features");
  require_error([] { Dense dense({.out_features = 0}); }, bad, "out_features");
  const int64_t big = int64_t{1} << 31;
  require_error([&] { Dense dense({.batch = big * big}); }, bad, "input size");
  require_error([&] { Dense dense({.in_features = big}); }, Status::unsupported, "in_features");
  require_error([&] { Dense dense({.batch = big}); }, Status::unsupported, "batch");
  require_error([&] { Dense dense({.out_features = big}); }, Status::unsupported, "out_features");

  const Dense dense({.batch = 3, .in_features = 4, .out_features = 5, .has_bias = true});
  const Dense no_bias({.batch = 3, .in_features = 4, .out_features = 5});
  const DenseShapes& s = dense.shapes();
  const std::vector<float> x(12, 1.0f), w(20, 1.0f), b(5, 1.0f), dy(15, 1.0f);
  std::vector<float> y(15, 42.0f), dx(12, 42.0f), dw(20, 42.0f), db(5, 42.0f);
  const std::vector<float> y0 = y, dx0 = dx, dw0 = dw, db0 = db;
  const Shape4 transposed{4, 3, 1, 1};

  require_error(
      [&] {
        dense.forward({x.data(), transposed}, {w.data(), s.weights}, b, {y.data(), s.output});
      },
      bad, "input");
  require_error(
      [&] {
        dense.forward({x.data(), s.input}, {nullptr, s.weights}, b, {y.data(), s.output});
      },
      bad, "weights");
  require_error(
      [&] {
        dense.forward({x.data(), s.input}, {w.data(), s.weights}, {}, {y.data(), s.output});
      },
      bad, "bias");
  require_error(
      [&] {
        no_bias.forward({x.data(), s.input}, {w.data(), s.weights}, b, {y.data(), s.output});
      },
      bad, "bias");
  require_error(
      [&] {
        dense.forward({x.data(), s.input}, {w.data(), s.weights}, b, {y.data(), s.input});
      },
      bad, "output");
  require_error(
      [&] {
        dense.backward_data({dy.data(), s.input}, {w.data(), s.weights}, {dx.data(), s.input});
      },
      bad, "output_grad");
  require_error(
      [&] {
        dense.backward_data({dy.data(), s.output}, {w.data(), s.weights}, {dx.data(), transposed});
      },
      bad, "input_grad");
  require_error(
      [&] {
        dense.backward_weights({x.data(), s.input}, {dy.data(), s.output}, {dw.data(), s.output});
      },
      bad, "weights_grad");
  require_error(
      [&] {
        dense.backward_weights({nullptr, s.input}, {dy.data(), s.output}, {dw.data(), s.weights});
      },
      bad, "input");
  require_error([&] { dense.backward_bias({dy.data(), s.output}, std::span(db).first(4)); }, bad, "bias_grad");
  require_error([&] { no_bias.backward_bias({dy.data(), s.output}, db); }, bad, "bias_grad");
  CHECK(y == y0);
  CHECK(dx == dx0);
  CHECK(dw == dw0);
  CHECK(db == db0);
}
