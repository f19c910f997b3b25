// Tiled convolution: a hand-worked example, t = 1 against the ordinary convolution, random tilings against an
// oracle that runs one direct convolution per kernel set on that set's pixels, the locally connected limit,
// finite-difference gradients and bad input.
#include "conv2d_tester.hpp"
#include "gradient_check.hpp"
#include "require_error.hpp"

#include <convgemm/direct_conv2d.hpp>
#include <convgemm/tiled_conv2d.hpp>

#include <catch2/catch.hpp>

#include <random>
#include <vector>

using namespace convgemm;
using convgemm::testing::describe;
using convgemm::testing::in;
using convgemm::testing::out;
using convgemm::testing::random_conv2d_params;
using convgemm::testing::random_doubles;
using convgemm::testing::random_floats;
using convgemm::testing::require_error;
using convgemm::testing::require_within_bound;
using convgemm::testing::to_double;

namespace {

// Every direction of a tiled convolution built from ordinary ones, in double: kernel set j is a convolution with
// w[j] and b[j] whose outputs are kept only at the pixels of set j (and whose output gradient is zero elsewhere).
struct PerSetOracle {
  TiledConv2dParams p;
  TiledConv2dShapes s;
  Conv2dShapes conv;
  std::vector<double> x, w, b, dy;

  PerSetOracle(const TiledConv2dParams& params, const std::vector<float>& x_, const std::vector<float>& w_,
               const std::vector<float>& b_, const std::vector<float>& dy_, bool absolute)
      : p(params),
        s(tiled_conv2d_shapes(params)),
        conv(conv2d_shapes(params.conv)),
        x(to_double(x_, absolute)),
        w(to_double(w_, absolute)),
        b(to_double(b_, absolute)),
        dy(to_double(dy_, absolute)) {}

  int64_t pixels() const { return s.output[2] * s.output[3]; }
  bool in_set(size_t output_index, int64_t j) const {
    const int64_t pixel = static_cast<int64_t>(output_index) % pixels();
    const int64_t row = pixel / s.output[3], column = pixel % s.output[3];
    return row % p.tile_height * p.tile_width + column % p.tile_width == j;
  }
  std::vector<double> set_weights(int64_t j) const {
    const auto size = static_cast<size_t>(element_count(conv.weights));
    return {w.begin() + static_cast<ptrdiff_t>(static_cast<size_t>(j) * size),
            w.begin() + static_cast<ptrdiff_t>(static_cast<size_t>(j + 1) * size)};
  }
  std::vector<double> set_bias(int64_t j) const {
    if (b.empty()) return {};
    const auto K = static_cast<ptrdiff_t>(p.conv.out_channels);
    return {b.begin() + j * K, b.begin() + (j + 1) * K};
  }
  std::vector<double> masked_output_grad(int64_t j) const {
    std::vector<double> masked = dy;
    for (size_t i = 0; i < masked.size(); ++i)
      if (!in_set(i, j)) masked[i] = 0;
    return masked;
  }

  std::vector<double> forward() const {
    std::vector<double> y(dy.size()), y_set(dy.size());
    for (int64_t j = 0; j < s.kernel_sets; ++j) {
      const auto wj = set_weights(j);
      direct_conv2d_forward(p.conv, in(x, conv.input), in(wj, conv.weights), set_bias(j), out(y_set, conv.output));
      for (size_t i = 0; i < y.size(); ++i)
        if (in_set(i, j)) y[i] = y_set[i];
    }
    return y;
  }
  std::vector<double> input_grad() const {
    std::vector<double> dx(x.size(), 0.0), dx_set(x.size());
    for (int64_t j = 0; j < s.kernel_sets; ++j) {
      const auto wj = set_weights(j);
      const auto dyj = masked_output_grad(j);
      direct_conv2d_backward_data(p.conv, in(dyj, conv.output), in(wj, conv.weights), out(dx_set, conv.input));
      for (size_t i = 0; i < dx.size(); ++i) dx[i] += dx_set[i];
    }
    return dx;
  }
  std::vector<double> weights_grad() const {
    std::vector<double> dw;
    std::vector<double> dw_set(static_cast<size_t>(element_count(conv.weights)));
    for (int64_t j = 0; j < s.kernel_sets; ++j) {
      const auto dyj = masked_output_grad(j);
      direct_conv2d_backward_weights(p.conv, in(x, conv.input), in(dyj, conv.output), out(dw_set, conv.weights));
      dw.insert(dw.end(), dw_set.begin(), dw_set.end());
    }
    return dw;
  }
  std::vector<double> bias_grad() const {
    std::vector<double> db;
    std::vector<double> db_set(static_cast<size_t>(p.conv.out_channels));
    for (int64_t j = 0; j < s.kernel_sets; ++j) {
      const auto dyj = masked_output_grad(j);
      direct_conv2d_backward_bias(p.conv, in(dyj, conv.output), db_set);
      db.insert(db.end(), db_set.begin(), db_set.end());
    }
    return db;
  }
};

// A random convolution of the conv2d tests (groups, stride, padding, dilation) with a random tiling of its output.
TiledConv2dParams random_tiled_params(std::mt19937_64& rng) {
  TiledConv2dParams params{.conv = random_conv2d_params(rng)};
  params.conv.batch = std::min<int64_t>(params.conv.batch, 3);
  const Conv2dShapes shapes = conv2d_shapes(params.conv);
  const auto draw = [&](int64_t low, int64_t high) { return std::uniform_int_distribution<int64_t>(low, high)(rng); };
  params.tile_height = draw(1, std::min<int64_t>(shapes.output[2], 4));
  params.tile_width = draw(1, std::min<int64_t>(shapes.output[3], 4));
  return params;
}

// A problem small enough for finite differences (every parameter and input is perturbed twice).
TiledConv2dParams small_tiled_params(std::mt19937_64& rng) {
  const auto draw = [&](int64_t low, int64_t high) { return std::uniform_int_distribution<int64_t>(low, high)(rng); };
  for (;;) {
    TiledConv2dParams params;
    Conv2dParams& c = params.conv;
    c.groups = draw(1, 2);
    c.in_channels = c.groups * draw(1, 2);
    c.out_channels = c.groups * draw(1, 2);
    c.in_height = draw(2, 7);
    c.in_width = draw(2, 7);
    c.kernel_height = draw(1, 3);
    c.kernel_width = draw(1, 3);
    c.stride = {draw(1, 2), draw(1, 2)};
    c.padding = {draw(0, 1), draw(0, 1), draw(0, 1), draw(0, 1)};
    c.dilation = {draw(1, 2), draw(1, 2)};
    c.has_bias = true;
    params.tile_height = draw(1, 3);
    params.tile_width = draw(1, 3);
    try {
      tiled_conv2d_shapes(params);
      return params;
    } catch (const Error&) {  // the kernel or the tile does not fit: draw again
    }
  }
}

// Checks every direction of the float path against the oracle under conv2d_tester.hpp's rigorous error bound.
void check_against_oracle(const TiledConv2dParams& params, std::mt19937_64& rng) {
  const TiledConv2d op(params);
  const TiledConv2dShapes& s = op.shapes();
  const auto x = random_floats(element_count(s.input), rng);
  const auto w = random_floats(element_count(s.weights), rng);
  const auto b = random_floats(s.bias, rng);
  const auto dy = random_floats(element_count(s.output), rng);
  const PerSetOracle exact(params, x, w, b, dy, false), magnitude(params, x, w, b, dy, true);
  const int64_t taps = params.conv.kernel_height * params.conv.kernel_width;
  const int64_t Cg = params.conv.in_channels / params.conv.groups, Kg = params.conv.out_channels / params.conv.groups;
  const int64_t batch_pixels = params.conv.batch * exact.pixels();

  std::vector<float> y(dy.size()), dx(x.size()), dw(w.size()), db(b.size());
  op.forward(in(x, s.input), in(w, s.weights), b, out(y, s.output));
  require_within_bound(y, exact.forward(), magnitude.forward(), Cg * taps + 1, "forward");
  op.backward_data(in(dy, s.output), in(w, s.weights), out(dx, s.input));
  require_within_bound(dx, exact.input_grad(), magnitude.input_grad(), Kg * taps, "backward_data");
  op.backward_weights(in(x, s.input), in(dy, s.output), out(dw, s.weights));
  require_within_bound(dw, exact.weights_grad(), magnitude.weights_grad(), batch_pixels, "backward_weights");
  if (params.conv.has_bias) {
    op.backward_bias(in(dy, s.output), db);
    require_within_bound(db, exact.bias_grad(), magnitude.bias_grad(), batch_pixels, "backward_bias");
  }
}

}  // namespace

TEST_CASE("tiled conv2d: two kernel sets alternate along each row", "[tiled_conv2d]") {
  // 1x1 kernels, t = 1 x 2: even columns use set 0 (weight 1, bias 0), odd columns set 1 (weight 10, bias 0.5).
  const TiledConv2d op({.conv = {.in_height = 2, .in_width = 4, .has_bias = true}, .tile_width = 2});
  REQUIRE(op.shapes().weights == Shape4{2, 1, 1, 1});
  REQUIRE(op.shapes().bias == 2);
  const std::vector<float> x = {1, 2, 3, 4,  //
                                5, 6, 7, 8};
  const std::vector<float> w = {1, 10}, b = {0, 0.5f};
  std::vector<float> y(8);
  op.forward(in(x, op.shapes().input), in(w, op.shapes().weights), b, out(y, op.shapes().output));
  CHECK(y == std::vector<float>{1, 20.5f, 3, 40.5f,  //
                                5, 60.5f, 7, 80.5f});
  // Each set's gradient sums over its own pixels only.
  const std::vector<float> dy(8, 1.0f);
  std::vector<float> dw(2), db(2);
  op.backward_weights(in(x, op.shapes().input), in(dy, op.shapes().output), out(dw, op.shapes().weights));
  op.backward_bias(in(dy, op.shapes().output), db);
  CHECK(dw == std::vector<float>{1 + 3 + 5 + 7, 2 + 4 + 6 + 8});
  CHECK(db == std::vector<float>{4, 4});
}

TEST_CASE("tiled conv2d: t = 1 is the ordinary convolution", "[tiled_conv2d]") {
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    std::mt19937_64 rng(seed);
    Conv2dParams conv = random_conv2d_params(rng);
    conv.batch = std::min<int64_t>(conv.batch, 3);
    INFO("seed " << seed << ": " << describe(conv));
    const TiledConv2d tiled({.conv = conv});
    const Conv2dShapes s = conv2d_shapes(conv);
    REQUIRE(tiled.shapes().weights == s.weights);
    REQUIRE(tiled.shapes().bias == s.bias);
    const auto x = random_doubles(static_cast<size_t>(element_count(s.input)), rng);
    const auto w = random_doubles(static_cast<size_t>(element_count(s.weights)), rng);
    const auto b = random_doubles(static_cast<size_t>(s.bias), rng);
    const auto dy = random_doubles(static_cast<size_t>(element_count(s.output)), rng);
    std::vector<double> tiled_result(dy.size()), conv_result(dy.size());
    // Both run in double, summing the same terms in other orders: agreement to 1e-12 is all rounding allows.
    const auto same = [](const std::vector<double>& a, const std::vector<double>& b_) {
      for (size_t i = 0; i < a.size(); ++i) REQUIRE(a[i] == Approx(b_[i]).margin(1e-12));
    };
    tiled.forward(in(x, s.input), in(w, s.weights), b, out(tiled_result, s.output));
    direct_conv2d_forward(conv, in(x, s.input), in(w, s.weights), b, out(conv_result, s.output));
    same(tiled_result, conv_result);
    std::vector<double> tiled_dx(x.size()), conv_dx(x.size()), tiled_dw(w.size()), conv_dw(w.size());
    tiled.backward_data(in(dy, s.output), in(w, s.weights), out(tiled_dx, s.input));
    direct_conv2d_backward_data(conv, in(dy, s.output), in(w, s.weights), out(conv_dx, s.input));
    same(tiled_dx, conv_dx);
    tiled.backward_weights(in(x, s.input), in(dy, s.output), out(tiled_dw, s.weights));
    direct_conv2d_backward_weights(conv, in(x, s.input), in(dy, s.output), out(conv_dw, s.weights));
    same(tiled_dw, conv_dw);
    std::vector<double> tiled_db(b.size()), conv_db(b.size());
    tiled.backward_bias(in(dy, s.output), tiled_db);
    direct_conv2d_backward_bias(conv, in(dy, s.output), conv_db);
    same(tiled_db, conv_db);
  }
}

TEST_CASE("tiled conv2d: random tilings against one convolution per kernel set", "[tiled_conv2d]") {
  for (uint64_t seed = 1; seed <= 60; ++seed) {
    std::mt19937_64 rng(1000 + seed);
    const TiledConv2dParams params = random_tiled_params(rng);
    INFO("seed " << seed << ": " << describe(params.conv) << " tile=" << params.tile_height << "x"
                 << params.tile_width);
    check_against_oracle(params, rng);
  }
}

TEST_CASE("tiled conv2d: the locally connected limit has one kernel set per output pixel", "[tiled_conv2d]") {
  const Conv2dParams conv{.batch = 2,
                          .in_channels = 3,
                          .in_height = 6,
                          .in_width = 5,
                          .out_channels = 4,
                          .kernel_height = 3,
                          .kernel_width = 2,
                          .has_bias = true};
  const TiledConv2dParams params = locally_connected2d_params(conv);
  CHECK(params.tile_height == 4);
  CHECK(params.tile_width == 4);
  const TiledConv2d op(params);
  CHECK(op.shapes().kernel_sets == 16);
  CHECK(op.shapes().weights == Shape4{16 * 4, 3, 3, 2});  // P*Q*K filters of C*R*S: untied weights
  CHECK(op.shapes().bias == 16 * 4);                      // and untied biases
  std::mt19937_64 rng(3);
  check_against_oracle(params, rng);
}

TEST_CASE("tiled conv2d: gradients match finite differences", "[tiled_conv2d][gradient]") {
  std::mt19937_64 rng(21);
  for (int trial = 0; trial < 6; ++trial) {
    const TiledConv2dParams params = small_tiled_params(rng);
    INFO("trial " << trial << ": " << describe(params.conv) << " tile=" << params.tile_height << "x"
                  << params.tile_width);
    const TiledConv2d op(params);
    const TiledConv2dShapes& s = op.shapes();
    const auto [x, dy, dw, db] = convgemm::testing::check_weighted_operator_gradients(op, s, rng);
    // Accumulate mode adds onto what is there.
    std::vector<double> accumulated(dw.size(), 1.0), accumulated_bias(db.size(), 1.0);
    op.backward_weights(in(x, s.input), in(dy, s.output), out(accumulated, s.weights), GradientMode::accumulate);
    op.backward_bias(in(dy, s.output), accumulated_bias, GradientMode::accumulate);
    for (size_t i = 0; i < dw.size(); ++i) CHECK(accumulated[i] == Approx(dw[i] + 1.0).margin(1e-12));
    for (size_t i = 0; i < db.size(); ++i) CHECK(accumulated_bias[i] == Approx(db[i] + 1.0).margin(1e-12));
  }
}

TEST_CASE("tiled conv2d: bad params and tensors name the parameter and leave outputs untouched",
          "[tiled_conv2d][errors]") {
  const auto bad = Status::invalid_argument;
  // Output 4 x 3.
  const Conv2dParams conv{.in_channels = 2,
                          .in_height = 6,
                          .in_width = 5,
                          .out_channels = 2,
                          .kernel_height = 3,
                          .kernel_width = 3,
                          .has_bias = true};
  require_error([&] { TiledConv2d op({.conv = conv, .tile_height = 0}); }, bad, "tile_height");
  require_error([&] { TiledConv2d op({.conv = conv, .tile_height = 5}); }, bad, "tile_height");
  require_error([&] { TiledConv2d op({.conv = conv, .tile_width = 4}); }, bad, "tile_width");
  require_error([&] { TiledConv2d op({.conv = conv, .tile_width = -1}); }, bad, "tile_width");
  Conv2dParams bad_conv = conv;
  bad_conv.groups = 3;
  require_error([&] { TiledConv2d op({.conv = bad_conv}); }, bad, "in_channels");

  const TiledConv2d op({.conv = conv, .tile_height = 2, .tile_width = 3});
  const TiledConv2dShapes& s = op.shapes();
  REQUIRE(s.weights == Shape4{12, 2, 3, 3});
  const std::vector<float> x(300, 1.0f), w(300, 1.0f), b(12, 1.0f), dy(300, 1.0f);
  std::vector<float> y(300, 42.0f), dx(300, 42.0f), dw(300, 42.0f), db(12, 42.0f);
  const std::vector<float> y0 = y, dx0 = dx, dw0 = dw, db0 = db;
  require_error(
      [&] {
        op.forward({x.data(), s.input}, {w.data(), {2, 2, 3, 3}}, b, {y.data(), s.output});
      },
      bad, "weights");
  require_error(
      [&] {
        op.forward({x.data(), s.input}, {w.data(), s.weights}, std::span(b).first(2), {y.data(), s.output});
      },
      bad, "bias");
  require_error(
      [&] {
        op.backward_data({dy.data(), s.output}, {w.data(), s.weights}, {dx.data(), s.output});
      },
      bad, "input_grad");
  require_error(
      [&] {
        op.backward_weights({x.data(), s.input}, {nullptr, s.output}, {dw.data(), s.weights});
      },
      bad, "output_grad");
  require_error([&] { op.backward_bias({dy.data(), s.output}, std::span(db).first(2)); }, bad, "bias_grad");
  CHECK(y == y0);
  CHECK(dx == dx0);
  CHECK(dw == dw0);
  CHECK(db == db0);
}
