// MaxPool2d, AvgPool2d and ChannelMaxPool: hand-worked examples (the lecture's, ties, overlapping windows, padding),
// random problems against a padded-image oracle written here, finite-difference gradients, and bad input.
#include "gradient_check.hpp"
#include "require_error.hpp"
#include "test_views.hpp"

#include <convgemm/pool2d.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

using namespace convgemm;
using convgemm::testing::check_gradient;
using convgemm::testing::dot;
using convgemm::testing::in;
using convgemm::testing::out;
using convgemm::testing::require_error;

namespace {

// PyTorch's default stride (the kernel) and no padding.
Pool2dParams pool_params(int64_t height, int64_t width, int64_t kernel, int64_t stride, Padding2d padding = {}) {
  return {.in_height = height,
          .in_width = width,
          .kernel_height = kernel,
          .kernel_width = kernel,
          .stride = {stride, stride},
          .padding = padding};
}

// The oracle: copy each plane into an explicitly padded image (padding = `fill`), then reduce every window of the
// padded image with no bounds logic at all. Max: fill = -infinity; average: fill = 0 and divide by R*S.
enum class Reduce { max, mean };
std::vector<double> oracle_forward(const Pool2dParams& p, const std::vector<double>& x, Reduce reduce) {
  const PoolShapes shapes = pool2d_shapes(p);
  const int64_t P = shapes.output[2], Q = shapes.output[3];
  const int64_t padded_h = p.in_height + p.padding.top + p.padding.bottom;
  const int64_t padded_w = p.in_width + p.padding.left + p.padding.right;
  const double fill = reduce == Reduce::max ? -std::numeric_limits<double>::infinity() : 0.0;
  std::vector<double> y;
  for (int64_t plane = 0; plane < p.batch * p.channels; ++plane) {
    std::vector<double> padded(static_cast<size_t>(padded_h * padded_w), fill);
    for (int64_t h = 0; h < p.in_height; ++h)
      for (int64_t w = 0; w < p.in_width; ++w)
        padded[static_cast<size_t>((h + p.padding.top) * padded_w + w + p.padding.left)] =
            x[static_cast<size_t>((plane * p.in_height + h) * p.in_width + w)];
    for (int64_t oh = 0; oh < P; ++oh)
      for (int64_t ow = 0; ow < Q; ++ow) {
        double result = reduce == Reduce::max ? -std::numeric_limits<double>::infinity() : 0.0;
        for (int64_t r = 0; r < p.kernel_height; ++r)
          for (int64_t s = 0; s < p.kernel_width; ++s) {
            const double v =
                padded[static_cast<size_t>((oh * p.stride.height + r) * padded_w + ow * p.stride.width + s)];
            result = reduce == Reduce::max ? std::max(result, v) : result + v;
          }
        y.push_back(reduce == Reduce::max ? result : result / static_cast<double>(p.kernel_height * p.kernel_width));
      }
  }
  return y;
}

Pool2dParams random_pool_params(std::mt19937_64& rng) {
  const auto draw = [&](int64_t low, int64_t high) { return std::uniform_int_distribution<int64_t>(low, high)(rng); };
  for (;;) {
    Pool2dParams p{.batch = draw(1, 3),
                   .channels = draw(1, 4),
                   .in_height = draw(1, 9),
                   .in_width = draw(1, 9),
                   .kernel_height = draw(1, 4),
                   .kernel_width = draw(1, 4),
                   .stride = {draw(1, 3), draw(1, 3)}};
    p.padding = {draw(0, p.kernel_height - 1), draw(0, p.kernel_height - 1), draw(0, p.kernel_width - 1),
                 draw(0, p.kernel_width - 1)};
    if (p.kernel_height > p.in_height + p.padding.top + p.padding.bottom) continue;
    if (p.kernel_width > p.in_width + p.padding.left + p.padding.right) continue;
    return p;
  }
}

std::vector<float> to_float(const std::vector<double>& values) { return {values.begin(), values.end()}; }

}  // namespace

TEST_CASE("pool2d: the lecture's max pooling example, forward and gradient routing", "[pool2d]") {
  const MaxPool2d pool(pool_params(4, 4, 2, 2));
  REQUIRE(pool.shapes().output == Shape4{1, 1, 2, 2});
  const std::vector<float> x = {1, 3, 2, 1,  //
                                2, 9, 1, 1,  //
                                1, 3, 2, 3,  //
                                5, 6, 1, 2};
  std::vector<float> y(4);
  pool.forward(in(x, pool.shapes().input), out(y, pool.shapes().output));
  CHECK(y == std::vector<float>{9, 2, 6, 3});

  // Distinct output gradients show where each one went: 9 at (1,1), 2 at (0,2), 6 at (3,1), 3 at (2,3).
  const std::vector<float> dy = {10, 20, 30, 40};
  std::vector<float> dx(16, -1.0f);
  pool.backward(in(x, pool.shapes().input), in(dy, pool.shapes().output), out(dx, pool.shapes().input));
  CHECK(dx == std::vector<float>{0, 0, 20, 0,  //
                                 0, 10, 0, 0,  //
                                 0, 0, 0, 40,  //
                                 0, 30, 0, 0});
}

TEST_CASE("pool2d: ties send the gradient to the first maximum in row-major window order", "[pool2d]") {
  const MaxPool2d pool(pool_params(2, 6, 2, 2));
  // Windows: four equal values; two 7s on the anti-diagonal; two 7s side by side in the bottom row.
  const std::vector<float> x = {5, 5, 1, 7, 2, 3,  //
                                5, 5, 7, 2, 7, 7};
  std::vector<float> y(3);
  pool.forward(in(x, pool.shapes().input), out(y, pool.shapes().output));
  CHECK(y == std::vector<float>{5, 7, 7});
  const std::vector<float> dy = {1, 2, 3};
  std::vector<float> dx(12);
  pool.backward(in(x, pool.shapes().input), in(dy, pool.shapes().output), out(dx, pool.shapes().input));
  CHECK(dx == std::vector<float>{1, 0, 0, 2, 0, 0,  //
                                 0, 0, 0, 0, 3, 0});
}

TEST_CASE("pool2d: overlapping windows (kernel 3, stride 1) accumulate the gradient", "[pool2d]") {
  const MaxPool2d pool(pool_params(4, 4, 3, 1));
  REQUIRE(pool.shapes().output == Shape4{1, 1, 2, 2});
  // The 9 at (2,1) lies in all four windows and wins three of them; the 10 at (3,3) wins the bottom-right one.
  const std::vector<float> x = {1, 2, 3, 0,  //
                                4, 5, 6, 1,  //
                                7, 9, 8, 2,  //
                                3, 1, 2, 10};
  std::vector<float> y(4);
  pool.forward(in(x, pool.shapes().input), out(y, pool.shapes().output));
  CHECK(y == std::vector<float>{9, 9, 9, 10});
  const std::vector<float> dy = {1, 2, 3, 4};
  std::vector<float> dx(16);
  pool.backward(in(x, pool.shapes().input), in(dy, pool.shapes().output), out(dx, pool.shapes().input));
  CHECK(dx == std::vector<float>{0, 0, 0, 0,  //
                                 0, 0, 0, 0,  //
                                 0, 6, 0, 0,  //
                                 0, 0, 0, 4});
}

TEST_CASE("pool2d: padding never wins a max and counts in an average", "[pool2d]") {
  // 2x2 input, kernel 2, stride 1, padding 1 on every side: a 3x3 output whose border windows hang over the edge.
  const Pool2dParams params = pool_params(2, 2, 2, 1, Padding2d::symmetric(1, 1));
  SECTION("max pooling of negative values: zeros in the padding would win, -infinity does not") {
    const MaxPool2d pool(params);
    const std::vector<float> x = {-4, -3,  //
                                  -2, -1};
    std::vector<float> y(9);
    pool.forward(in(x, pool.shapes().input), out(y, pool.shapes().output));
    CHECK(y == std::vector<float>{-4, -3, -3,  //
                                  -2, -1, -1,  //
                                  -2, -1, -1});
    std::vector<float> dx(4);
    const std::vector<float> dy(9, 1.0f);
    pool.backward(in(x, pool.shapes().input), in(dy, pool.shapes().output), out(dx, pool.shapes().input));
    CHECK(dx == std::vector<float>{1, 2, 2, 4});
  }
  SECTION("average pooling divides by the whole window, padded taps included (count_include_pad)") {
    const AvgPool2d pool(params);
    const std::vector<float> x = {1, 2,  //
                                  3, 4};
    std::vector<float> y(9);
    pool.forward(in(x, pool.shapes().input), out(y, pool.shapes().output));
    CHECK(y == std::vector<float>{0.25f, 0.75f, 0.5f,  //
                                  1.0f, 2.5f, 1.5f,    //
                                  0.75f, 1.75f, 1.0f});
    // Each input pixel lies in four windows and receives a quarter of each one's gradient.
    const std::vector<float> dy = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    std::vector<float> dx(4);
    pool.backward(in(dy, pool.shapes().output), out(dx, pool.shapes().input));
    CHECK(dx == std::vector<float>{(1 + 2 + 4 + 5) / 4.0f, (2 + 3 + 5 + 6) / 4.0f,  //
                                   (4 + 5 + 7 + 8) / 4.0f, (5 + 6 + 8 + 9) / 4.0f});
  }
}

TEST_CASE("pool2d: a NaN in a window propagates to the max", "[pool2d]") {
  const MaxPool2d pool(pool_params(2, 4, 2, 2));
  const std::vector<float> x = {1, 2, 3, std::nanf(""),  //
                                4, 5, 6, 7};
  std::vector<float> y(2);
  pool.forward(in(x, pool.shapes().input), out(y, pool.shapes().output));
  CHECK(y[0] == 5);
  CHECK(std::isnan(y[1]));
}

TEST_CASE("pool2d: the vectorised 2x2 stride-2 float path equals the generic path bit for bit", "[pool2d]") {
  // Float 2x2/2 unpadded pooling has its own kernels; double always takes the generic loops, and selecting a
  // maximum or routing a gradient is exact, so both must agree bit for bit: ties, signed zeros, NaNs (the first
  // of a window wins), odd heights and widths (their last row or column belongs to no window).
  std::mt19937_64 rng(77);
  const auto same_bits = [](float a, double b) {
    return std::isnan(a) ? std::isnan(b) : a == static_cast<float>(b) && std::signbit(a) == std::signbit(b);
  };
  for (int trial = 0; trial < 60; ++trial) {
    Pool2dParams params = pool_params(2 + trial % 9, 2 + trial / 9 % 7, 2, 2);
    params.batch = 1 + trial % 3;
    params.channels = 1 + trial % 4;
    const PoolShapes shapes = pool2d_shapes(params);
    std::vector<double> x(static_cast<size_t>(element_count(shapes.input)));
    std::uniform_int_distribution<int> pick(0, 9);
    for (double& v : x) {
      const int choice = pick(rng);
      v = choice == 0 ? std::nan("") : choice == 1 ? -0.0 : choice == 2 ? 0.0 : static_cast<double>(choice % 3);
    }
    std::vector<double> dy(static_cast<size_t>(element_count(shapes.output)));
    for (size_t i = 0; i < dy.size(); ++i) dy[i] = static_cast<double>(i + 1);
    const MaxPool2d pool(params);
    std::vector<double> y(dy.size()), dx(x.size());
    pool.forward(in(x, shapes.input), out(y, shapes.output));
    pool.backward(in(x, shapes.input), in(dy, shapes.output), out(dx, shapes.input));

    const std::vector<float> x_float = to_float(x), dy_float = to_float(dy);
    std::vector<float> y_float(y.size()), dx_float(dx.size(), -1.0f);
    pool.forward(in(x_float, shapes.input), out(y_float, shapes.output));
    pool.backward(in(x_float, shapes.input), in(dy_float, shapes.output), out(dx_float, shapes.input));
    INFO("trial " << trial << ": " << params.batch << "x" << params.channels << "x" << params.in_height << "x"
                  << params.in_width);
    for (size_t i = 0; i < y.size(); ++i) CHECK(same_bits(y_float[i], y[i]));
    for (size_t i = 0; i < dx.size(); ++i) CHECK(same_bits(dx_float[i], dx[i]));
  }
}

TEST_CASE("pool2d: backward_after_relu is backward times [input > 0]", "[pool2d]") {
  // 2x2/2 (the vectorised path) and 3x3/1 (generic, overlapping windows) on ReLU outputs with ties at zero.
  std::mt19937_64 rng(5);
  std::uniform_int_distribution<int> small(-2, 2);
  for (const int64_t kernel : {2, 3}) {
    const Pool2dParams params{.batch = 2,
                              .channels = 3,
                              .in_height = 9,
                              .in_width = 20,
                              .kernel_height = kernel,
                              .kernel_width = kernel,
                              .stride = {4 - kernel, 4 - kernel}};
    const MaxPool2d pool(params);
    std::vector<float> x(static_cast<size_t>(element_count(pool.shapes().input)));
    for (float& value : x) value = std::max(0.0f, static_cast<float>(small(rng)));
    std::vector<float> dy(static_cast<size_t>(element_count(pool.shapes().output)));
    for (float& value : dy) value = static_cast<float>(small(rng));
    std::vector<float> expected(x.size()), fused(x.size(), -1.0f);
    pool.backward({x.data(), pool.shapes().input}, {dy.data(), pool.shapes().output},
                  {expected.data(), pool.shapes().input});
    for (size_t i = 0; i < x.size(); ++i) expected[i] = x[i] > 0 ? expected[i] : 0.0f;
    pool.backward_after_relu({x.data(), pool.shapes().input}, {dy.data(), pool.shapes().output},
                             {fused.data(), pool.shapes().input});
    INFO("kernel " << kernel);
    CHECK(fused == expected);
  }
}

TEST_CASE("pool2d: random problems against the padded-image oracle", "[pool2d]") {
  std::mt19937_64 rng(2024);
  for (int trial = 0; trial < 200; ++trial) {
    const Pool2dParams params = random_pool_params(rng);
    INFO("trial " << trial << ": N=" << params.batch << " C=" << params.channels << " H=" << params.in_height
                  << " W=" << params.in_width << " R=" << params.kernel_height << " S=" << params.kernel_width
                  << " stride=" << params.stride.height << "x" << params.stride.width << " pad=" << params.padding.top
                  << "," << params.padding.bottom << "," << params.padding.left << "," << params.padding.right);
    const PoolShapes shapes = pool2d_shapes(params);
    // Small integers make ties common and keep the float sums exact.
    std::uniform_int_distribution<int> small(-3, 3);
    std::vector<float> x(static_cast<size_t>(element_count(shapes.input)));
    for (float& v : x) v = static_cast<float>(small(rng));
    const std::vector<double> x_double(x.begin(), x.end());

    std::vector<float> y(static_cast<size_t>(element_count(shapes.output)));
    MaxPool2d(params).forward(in(x, shapes.input), out(y, shapes.output));
    CHECK(y == to_float(oracle_forward(params, x_double, Reduce::max)));

    AvgPool2d(params).forward(in(x, shapes.input), out(y, shapes.output));
    const auto mean = oracle_forward(params, x_double, Reduce::mean);
    for (size_t i = 0; i < y.size(); ++i) CHECK(y[i] == Approx(mean[i]).margin(1e-6));
  }
}

TEST_CASE("pool2d: max and average pooling gradients match finite differences", "[pool2d][gradient]") {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    const Pool2dParams params = random_pool_params(rng);
    const PoolShapes shapes = pool2d_shapes(params);
    const auto count = static_cast<size_t>(element_count(shapes.input));
    std::vector<double> x = convgemm::testing::spaced_doubles(count, rng);
    const std::vector<double> dy =
        convgemm::testing::random_doubles(static_cast<size_t>(element_count(shapes.output)), rng);
    std::vector<double> y(dy.size()), dx(count);
    INFO("trial " << trial);

    const MaxPool2d max_pool(params);
    max_pool.backward(in(x, shapes.input), in(dy, shapes.output), out(dx, shapes.input));
    check_gradient(
        x,
        [&] {
          max_pool.forward(in(x, shapes.input), out(y, shapes.output));
          return dot(dy, y);
        },
        dx, "max pool dL/dx");

    const AvgPool2d avg_pool(params);
    avg_pool.backward(in(dy, shapes.output), out(dx, shapes.input));
    check_gradient(
        x,
        [&] {
          avg_pool.forward(in(x, shapes.input), out(y, shapes.output));
          return dot(dy, y);
        },
        dx, "average pool dL/dx");
  }
}

TEST_CASE("channel max pool: maxout over groups of channels, ties to the first channel", "[pool2d][maxout]") {
  const ChannelMaxPool pool({.channels = 4, .width = 3, .group_size = 2});
  REQUIRE(pool.shapes().output == Shape4{1, 2, 1, 3});
  const std::vector<float> x = {1,  5, 2,   // channel 0
                                3,  5, -1,  // channel 1: ties channel 0 at pixel 1
                                0,  0, 0,   // channel 2
                                -1, 2, 0};  // channel 3: ties channel 2 at pixel 2
  std::vector<float> y(6);
  pool.forward(in(x, pool.shapes().input), out(y, pool.shapes().output));
  CHECK(y == std::vector<float>{3, 5, 2, 0, 2, 0});
  const std::vector<float> dy = {10, 20, 30, 40, 50, 60};
  std::vector<float> dx(12, -1.0f);
  pool.backward(in(x, pool.shapes().input), in(dy, pool.shapes().output), out(dx, pool.shapes().input));
  CHECK(dx == std::vector<float>{0, 20, 30,  //
                                 10, 0, 0,   //
                                 40, 0, 60,  //
                                 0, 50, 0});
}

TEST_CASE("channel max pool: gradient matches finite differences", "[pool2d][maxout][gradient]") {
  const ChannelMaxPool pool({.batch = 2, .channels = 6, .height = 3, .width = 4, .group_size = 3});
  const PoolShapes& shapes = pool.shapes();
  std::mt19937_64 rng(11);
  std::vector<double> x = convgemm::testing::spaced_doubles(static_cast<size_t>(element_count(shapes.input)), rng);
  const auto dy = convgemm::testing::random_doubles(static_cast<size_t>(element_count(shapes.output)), rng);
  std::vector<double> y(dy.size()), dx(x.size());
  pool.backward(in(x, shapes.input), in(dy, shapes.output), out(dx, shapes.input));
  check_gradient(
      x,
      [&] {
        pool.forward(in(x, shapes.input), out(y, shapes.output));
        return dot(dy, y);
      },
      dx, "maxout dL/dx");
}

TEST_CASE("pool2d: bad params and tensors name the parameter and leave outputs untouched", "[pool2d][errors]") {
  const auto bad = Status::invalid_argument;
  const Pool2dParams valid = pool_params(6, 5, 3, 2, Padding2d::symmetric(1, 1));
  const auto with = [&](auto change) {
    Pool2dParams params = valid;
    change(params);
    return params;
  };
  const auto rejects = [&](const Pool2dParams& params, const std::string& parameter) {
    require_error([&] { MaxPool2d pool(params); }, bad, parameter);
    require_error([&] { AvgPool2d pool(params); }, bad, parameter);
  };
  rejects(with([](auto& p) { p.batch = 0; }), "batch");
  rejects(with([](auto& p) { p.channels = -1; }), "channels");
  rejects(with([](auto& p) { p.in_height = 0; }), "in_height");
  rejects(with([](auto& p) { p.in_width = 0; }), "in_width");
  rejects(with([](auto& p) { p.kernel_height = 0; }), "kernel_height");
  rejects(with([](auto& p) { p.kernel_width = -2; }), "kernel_width");
  rejects(with([](auto& p) { p.stride.height = 0; }), "stride.height");
  rejects(with([](auto& p) { p.stride.width = 0; }), "stride.width");
  rejects(with([](auto& p) { p.padding.top = -1; }), "padding.top");
  rejects(with([](auto& p) { p.padding.bottom = 3; }), "padding.bottom");  // a whole kernel of padding
  rejects(with([](auto& p) { p.padding.left = 3; }), "padding.left");
  rejects(with([](auto& p) { p.padding.right = 5; }), "padding.right");
  rejects(with([](auto& p) {
            p.kernel_height = 9;
            p.padding = {};
          }),
          "kernel_height");  // larger than the input
  rejects(with([](auto& p) {
            p.kernel_width = 6;
            p.padding = {};
          }),
          "kernel_width");
  rejects(with([](auto& p) { p.in_height = p.in_width = int64_t{1} << 32; }), "input size");

  const auto channel_rejects = [&](ChannelMaxPoolParams params, const std::string& parameter) {
    require_error([&] { ChannelMaxPool pool(params); }, bad, parameter);
  };
  channel_rejects({.channels = 6, .group_size = 4}, "channels");
  channel_rejects({.channels = 6, .group_size = 0}, "group_size");
  channel_rejects({.batch = 0}, "batch");
  channel_rejects({.height = -1}, "height");
  channel_rejects({.width = 0}, "width");

  const MaxPool2d max_pool(valid);
  const AvgPool2d avg_pool(valid);
  const ChannelMaxPool channel_pool({.batch = 1, .channels = 4, .height = 6, .width = 5, .group_size = 2});
  const PoolShapes& s = max_pool.shapes();
  // Buffers large enough for every shape below, so that only the claimed shapes are wrong.
  const size_t largest = static_cast<size_t>(element_count(channel_pool.shapes().input));
  const std::vector<float> x(largest, 1.0f), dy(largest, 1.0f);
  std::vector<float> y(largest, 42.0f), dx(largest, 42.0f);
  const std::vector<float> y0 = y, dx0 = dx;
  const Shape4 wrong{1, 1, 6, 6};

  require_error([&] { max_pool.forward({x.data(), wrong}, {y.data(), s.output}); }, bad, "input");
  require_error([&] { max_pool.forward({x.data(), s.input}, {nullptr, s.output}); }, bad, "output");
  require_error([&] { max_pool.forward({x.data(), s.input}, {y.data(), s.input}); }, bad, "output");
  require_error(
      [&] {
        max_pool.backward({x.data(), s.input}, {dy.data(), wrong}, {dx.data(), s.input});
      },
      bad, "output_grad");
  require_error(
      [&] {
        max_pool.backward({nullptr, s.input}, {dy.data(), s.output}, {dx.data(), s.input});
      },
      bad, "input");
  require_error(
      [&] {
        max_pool.backward({x.data(), s.input}, {dy.data(), s.output}, {dx.data(), wrong});
      },
      bad, "input_grad");
  require_error([&] { avg_pool.forward({x.data(), s.output}, {y.data(), s.output}); }, bad, "input");
  require_error([&] { avg_pool.backward({dy.data(), s.output}, {dx.data(), s.output}); }, bad, "input_grad");
  require_error([&] { avg_pool.backward({dy.data(), s.input}, {dx.data(), s.input}); }, bad, "output_grad");
  const PoolShapes& c = channel_pool.shapes();
  require_error([&] { channel_pool.forward({x.data(), c.input}, {y.data(), c.input}); }, bad, "output");
  require_error(
      [&] {
        channel_pool.backward({x.data(), c.output}, {dy.data(), c.output}, {dx.data(), c.input});
      },
      bad, "input");
  require_error(
      [&] {
        channel_pool.backward({x.data(), c.input}, {dy.data(), c.output}, {dx.data(), c.output});
      },
      bad, "input_grad");
  CHECK(y == y0);
  CHECK(dx == dx0);
}
