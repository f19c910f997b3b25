// ConvTranspose2d: a hand-worked example, random problems against a direct transposed-convolution loop written
// here from the scatter definition (under the rigorous float error bound of conv2d_tester.hpp), finite-difference
// gradients of the double path, bitwise determinism of the weight gradient, and bad input.
#include "conv2d_tester.hpp"
#include "gradient_check.hpp"
#include "require_error.hpp"

#include <convgemm/conv_transpose2d.hpp>

#include <oneapi/tbb/task_arena.h>
#include <catch2/catch.hpp>

#include <random>
#include <sstream>
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

std::string describe(const ConvTranspose2dParams& p) {
  std::ostringstream text;
  text << "N=" << p.batch << " C=" << p.in_channels << " H=" << p.in_height << " W=" << p.in_width
       << " K=" << p.out_channels << " R=" << p.kernel_height << " S=" << p.kernel_width
       << " stride=" << p.stride.height << "x" << p.stride.width << " pad(t,b,l,r)=" << p.padding.top << ","
       << p.padding.bottom << "," << p.padding.left << "," << p.padding.right
       << " output_padding=" << p.output_padding.height << "x" << p.output_padding.width
       << " dilation=" << p.dilation.height << "x" << p.dilation.width << " groups=" << p.groups
       << " bias=" << p.has_bias;
  return text.str();
}

// The definition, in double, on values or (absolute = true) their magnitudes: every input pixel scatters
// x[n,c,h,w] * W[c,k,r,s] onto y[n, g*K/G + k, h*sh - pt + r*dh, w*sw - pl + s*dw] when that lies in the output.
// The adjoints walk the same (input pixel, tap) pairs, so the three directions share one loop.
struct NaiveTransposed {
  ConvTranspose2dParams p;
  ConvTranspose2dShapes s;
  std::vector<double> x, w, b, dy;

  NaiveTransposed(const ConvTranspose2dParams& params, const std::vector<float>& x_, const std::vector<float>& w_,
                  const std::vector<float>& b_, const std::vector<float>& dy_, bool absolute)
      : p(params),
        s(conv_transpose2d_shapes(params)),
        x(to_double(x_, absolute)),
        w(to_double(w_, absolute)),
        b(to_double(b_, absolute)),
        dy(to_double(dy_, absolute)) {}

  // visit(input index, weight index, output index) for every pair that touches the output
  template <class Visit>
  void for_each_pair(const Visit& visit) const {
    const int64_t C = p.in_channels, K = p.out_channels, G = p.groups, Cg = C / G, Kg = K / G;
    const int64_t H = p.in_height, W = p.in_width, R = p.kernel_height, S = p.kernel_width;
    const int64_t P = s.output[2], Q = s.output[3];
    for (int64_t n = 0; n < p.batch; ++n)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t wi = 0; wi < W; ++wi)
            for (int64_t k = 0; k < Kg; ++k)
              for (int64_t r = 0; r < R; ++r)
                for (int64_t t = 0; t < S; ++t) {
                  const int64_t op = h * p.stride.height - p.padding.top + r * p.dilation.height;
                  const int64_t oq = wi * p.stride.width - p.padding.left + t * p.dilation.width;
                  if (op < 0 || op >= P || oq < 0 || oq >= Q) continue;
                  const int64_t out_channel = c / Cg * Kg + k;
                  visit(static_cast<size_t>(((n * C + c) * H + h) * W + wi),
                        static_cast<size_t>(((c * Kg + k) * R + r) * S + t),
                        static_cast<size_t>(((n * K + out_channel) * P + op) * Q + oq));
                }
  }
  std::vector<double> forward() const {
    std::vector<double> y(static_cast<size_t>(element_count(s.output)), 0.0);
    const int64_t planes = p.batch * p.out_channels, pixels = s.output[2] * s.output[3];
    if (!b.empty())
      for (int64_t plane = 0; plane < planes; ++plane)
        for (int64_t i = 0; i < pixels; ++i) y[static_cast<size_t>(plane * pixels + i)] = b[plane % p.out_channels];
    for_each_pair([&](size_t xi, size_t wi, size_t yi) { y[yi] += x[xi] * w[wi]; });
    return y;
  }
  std::vector<double> input_grad() const {
    std::vector<double> dx(x.size(), 0.0);
    for_each_pair([&](size_t xi, size_t wi, size_t yi) { dx[xi] += dy[yi] * w[wi]; });
    return dx;
  }
  std::vector<double> weights_grad() const {
    std::vector<double> dw(w.size(), 0.0);
    for_each_pair([&](size_t xi, size_t wi, size_t yi) { dw[wi] += dy[yi] * x[xi]; });
    return dw;
  }
  std::vector<double> bias_grad() const {
    std::vector<double> db(static_cast<size_t>(p.out_channels), 0.0);
    const int64_t pixels = s.output[2] * s.output[3];
    for (size_t i = 0; i < dy.size(); ++i) db[(i / static_cast<size_t>(pixels)) % db.size()] += dy[i];
    return db;
  }
};

ConvTranspose2dParams random_params(std::mt19937_64& rng) {
  const auto draw = [&](int64_t low, int64_t high) { return std::uniform_int_distribution<int64_t>(low, high)(rng); };
  for (;;) {
    ConvTranspose2dParams p;
    p.batch = draw(1, 3);
    p.groups = draw(0, 2) == 0 ? draw(2, 3) : 1;
    p.in_channels = p.groups * draw(1, 4);
    p.out_channels = p.groups * draw(1, 4);
    p.in_height = draw(1, 7);
    p.in_width = draw(1, 7);
    p.kernel_height = draw(1, 4);
    p.kernel_width = draw(1, 4);
    p.stride = {draw(1, 3), draw(1, 3)};
    p.dilation = {draw(1, 2), draw(1, 2)};
    p.padding = {draw(0, 2), draw(0, 2), draw(0, 2), draw(0, 2)};
    p.output_padding = {draw(0, p.stride.height - 1), draw(0, p.stride.width - 1)};
    p.has_bias = draw(0, 1) == 1;
    const auto size = [](int64_t in, int64_t k, int64_t st, int64_t a, int64_t b, int64_t d, int64_t o) {
      return conv_transpose2d_output_size(in, k, st, a, b, d, o);
    };
    if (size(p.in_height, p.kernel_height, p.stride.height, p.padding.top, p.padding.bottom, p.dilation.height,
             p.output_padding.height) < 1)
      continue;
    if (size(p.in_width, p.kernel_width, p.stride.width, p.padding.left, p.padding.right, p.dilation.width,
             p.output_padding.width) < 1)
      continue;
    return p;
  }
}

}  // namespace

TEST_CASE("conv_transpose2d: hand-worked examples (stride 1 and a stride-2 upsampling)", "[conv_transpose2d]") {
  SECTION("stride 1: each input pixel stamps the kernel at its position") {
    const ConvTranspose2dPlan plan({.in_height = 2, .in_width = 2, .kernel_height = 2, .kernel_width = 2});
    REQUIRE(plan.shapes().output == Shape4{1, 1, 3, 3});
    const std::vector<float> x = {1, 2,  //
                                  3, 4};
    const std::vector<float> w = {1, 0,  //
                                  0, 1};
    std::vector<float> y(9, -1.0f);
    plan.forward(in(x, plan.shapes().input), in(w, plan.shapes().weights), {}, out(y, plan.shapes().output));
    CHECK(y == std::vector<float>{1, 2, 0,  //
                                  3, 5, 2,  //
                                  0, 3, 4});
  }
  SECTION("stride 2, kernel 2: disjoint 2x2 stamps, one per input pixel, plus the bias") {
    const ConvTranspose2dPlan plan(
        {.in_height = 2, .in_width = 2, .kernel_height = 2, .kernel_width = 2, .stride = {2, 2}, .has_bias = true});
    REQUIRE(plan.shapes().output == Shape4{1, 1, 4, 4});
    const std::vector<float> x = {1, 2, 3, 4}, w = {1, 10, 100, 1000}, b = {0.5f};
    std::vector<float> y(16);
    plan.forward(in(x, plan.shapes().input), in(w, plan.shapes().weights), b, out(y, plan.shapes().output));
    CHECK(y == std::vector<float>{1.5f, 10.5f, 2.5f, 20.5f,          //
                                  100.5f, 1000.5f, 200.5f, 2000.5f,  //
                                  3.5f, 30.5f, 4.5f, 40.5f,          //
                                  300.5f, 3000.5f, 400.5f, 4000.5f});
  }
  SECTION("kernel 3, stride 2, padding 1, output_padding 1 exactly doubles the size, as in PyTorch") {
    const ConvTranspose2dPlan plan({.batch = 2,
                                    .in_channels = 4,
                                    .in_height = 7,
                                    .in_width = 5,
                                    .out_channels = 6,
                                    .kernel_height = 3,
                                    .kernel_width = 3,
                                    .stride = {2, 2},
                                    .padding = Padding2d::symmetric(1, 1),
                                    .output_padding = {1, 1},
                                    .groups = 2});
    CHECK(plan.shapes().output == Shape4{2, 6, 14, 10});
    CHECK(plan.shapes().weights == Shape4{4, 3, 3, 3});
    // The matching convolution maps the output back onto the input's size.
    CHECK(conv2d_shapes(plan.conv_plan().params()).output == Shape4{2, 4, 7, 5});
  }
}

TEST_CASE("conv_transpose2d: random problems against a direct transposed-convolution loop", "[conv_transpose2d]") {
  int strided = 0, grouped = 0, output_padded = 0;
  for (uint64_t seed = 1; seed <= 150; ++seed) {
    std::mt19937_64 rng(seed);
    const ConvTranspose2dParams params = random_params(rng);
    INFO("seed " << seed << ": " << describe(params));
    strided += params.stride.height > 1 || params.stride.width > 1;
    grouped += params.groups > 1;
    output_padded += params.output_padding.height + params.output_padding.width > 0;
    const ConvTranspose2dPlan plan(params);
    const ConvTranspose2dShapes& s = plan.shapes();
    const auto x = random_floats(element_count(s.input), rng);
    const auto w = random_floats(element_count(s.weights), rng);
    const auto b = random_floats(s.bias, rng);
    const auto dy = random_floats(element_count(s.output), rng);
    const NaiveTransposed exact(params, x, w, b, dy, false), magnitude(params, x, w, b, dy, true);
    const int64_t Cg = params.in_channels / params.groups, Kg = params.out_channels / params.groups;
    const int64_t taps = params.kernel_height * params.kernel_width;
    std::vector<std::byte> workspace(seed % 2 == 0 ? plan.workspace_bytes() : 0);

    std::vector<float> y(dy.size());
    plan.forward(in(x, s.input), in(w, s.weights), b, out(y, s.output), workspace);
    require_within_bound(y, exact.forward(), magnitude.forward(), Cg * taps + 1, "forward");

    std::vector<float> dx(x.size());
    plan.backward_data(in(dy, s.output), in(w, s.weights), out(dx, s.input), workspace);
    require_within_bound(dx, exact.input_grad(), magnitude.input_grad(), Kg * taps, "backward_data");

    std::vector<float> dw(w.size());
    plan.backward_weights(in(x, s.input), in(dy, s.output), out(dw, s.weights), GradientMode::overwrite, workspace);
    const int64_t pixels = params.batch * params.in_height * params.in_width;
    require_within_bound(dw, exact.weights_grad(), magnitude.weights_grad(), pixels, "backward_weights");

    // Accumulate mode adds onto what is there.
    std::vector<float> accumulated = w;
    plan.backward_weights(in(x, s.input), in(dy, s.output), out(accumulated, s.weights), GradientMode::accumulate);
    std::vector<double> exact_sum = exact.weights_grad(), magnitude_sum = magnitude.weights_grad();
    for (size_t i = 0; i < w.size(); ++i) {
      exact_sum[i] += w[i];
      magnitude_sum[i] += std::fabs(w[i]);
    }
    require_within_bound(accumulated, exact_sum, magnitude_sum, pixels + 1, "backward_weights (accumulate)");

    if (!params.has_bias) continue;
    std::vector<float> db(b.size());
    plan.backward_bias(in(dy, s.output), db);
    require_within_bound(db, exact.bias_grad(), magnitude.bias_grad(), element_count(s.output), "backward_bias");
  }
  CHECK(strided >= 80);
  CHECK(grouped >= 30);
  CHECK(output_padded >= 50);
}

TEST_CASE("conv_transpose2d: gradients match finite differences", "[conv_transpose2d][gradient]") {
  std::mt19937_64 rng(99);
  for (int trial = 0; trial < 8; ++trial) {
    ConvTranspose2dParams params = random_params(rng);
    params.has_bias = true;
    INFO("trial " << trial << ": " << describe(params));
    const ConvTranspose2dPlan plan(params);
    convgemm::testing::check_weighted_operator_gradients(plan, plan.shapes(), rng);
  }
}

TEST_CASE("conv_transpose2d: gradients are bitwise identical for 1, 2 and 3 threads", "[conv_transpose2d]") {
  const ConvTranspose2dPlan plan({.batch = 7,
                                  .in_channels = 12,
                                  .in_height = 6,
                                  .in_width = 6,
                                  .out_channels = 8,
                                  .kernel_height = 3,
                                  .kernel_width = 3,
                                  .stride = {2, 2},
                                  .has_bias = true});
  const ConvTranspose2dShapes& s = plan.shapes();
  std::mt19937_64 rng(5);
  const auto x = random_floats(element_count(s.input), rng);
  const auto dy = random_floats(element_count(s.output), rng);
  const auto run = [&](int threads) {
    std::vector<float> dw(static_cast<size_t>(element_count(s.weights))), db(static_cast<size_t>(s.bias));
    oneapi::tbb::task_arena(threads).execute([&] {
      plan.backward_weights(in(x, s.input), in(dy, s.output), out(dw, s.weights));
      plan.backward_bias(in(dy, s.output), db);
    });
    return std::pair(dw, db);
  };
  const auto reference = run(1);
  for (const int threads : {2, 3}) {
    const auto result = run(threads);
    CHECK(bitwise_equal(result.first, reference.first));
    CHECK(bitwise_equal(result.second, reference.second));
  }
}

TEST_CASE("conv_transpose2d: bad params and tensors name the parameter and leave outputs untouched",
          "[conv_transpose2d][errors]") {
  const auto bad = Status::invalid_argument;
  const ConvTranspose2dParams valid{.batch = 2,
                                    .in_channels = 4,
                                    .in_height = 5,
                                    .in_width = 4,
                                    .out_channels = 6,
                                    .kernel_height = 3,
                                    .kernel_width = 3,
                                    .stride = {2, 2},
                                    .padding = Padding2d::symmetric(1, 1),
                                    .output_padding = {1, 0},
                                    .groups = 2,
                                    .has_bias = true};
  const auto rejects = [&](auto change, const std::string& parameter, Status status = Status::invalid_argument) {
    ConvTranspose2dParams params = valid;
    change(params);
    require_error([&] { ConvTranspose2dPlan plan(params); }, status, parameter);
  };
  rejects([](auto& p) { p.batch = 0; }, "batch");
  rejects([](auto& p) { p.in_channels = -1; }, "in_channels");
  rejects([](auto& p) { p.in_height = 0; }, "in_height");
  rejects([](auto& p) { p.in_width = 0; }, "in_width");
  rejects([](auto& p) { p.out_channels = 0; }, "out_channels");
  rejects([](auto& p) { p.kernel_height = 0; }, "kernel_height");
  rejects([](auto& p) { p.kernel_width = -1; }, "kernel_width");
  rejects([](auto& p) { p.stride.height = 0; }, "stride.height");
  rejects([](auto& p) { p.stride.width = 0; }, "stride.width");
  rejects([](auto& p) { p.dilation.height = 0; }, "dilation.height");
  rejects([](auto& p) { p.dilation.width = 0; }, "dilation.width");
  rejects([](auto& p) { p.groups = 0; }, "groups");
  rejects([](auto& p) { p.padding.top = -1; }, "padding.top");
  rejects([](auto& p) { p.padding.right = -1; }, "padding.right");
  rejects([](auto& p) { p.output_padding.height = 2; }, "output_padding.height");  // not below the stride
  rejects([](auto& p) { p.output_padding.width = -1; }, "output_padding.width");
  rejects([](auto& p) { p.groups = 3; }, "in_channels");
  rejects([](auto& p) { p.out_channels = 5; }, "out_channels");
  // Full output height (5-1)*2 + 2 + 1 + 1 = 12; padding 6 + 6 leaves nothing.
  rejects([](auto& p) { p.padding.top = p.padding.bottom = 6; }, "padding (height)");
  rejects([](auto& p) { p.in_height = p.in_width = int64_t{1} << 32; }, "input size");
  // A GEMM dimension of the matching convolution past 32 bits is named in this operator's terms.
  rejects(
      [](auto& p) {
        p.in_height = p.in_width = 50000;
        p.batch = 1;
      },
      "in_height * in_width", Status::unsupported);

  const ConvTranspose2dPlan plan(valid);
  const ConvTranspose2dShapes& s = plan.shapes();
  const size_t largest = static_cast<size_t>(element_count(s.output));
  const std::vector<float> x(largest, 1.0f), w(largest, 1.0f), b(6, 1.0f), dy(largest, 1.0f);
  std::vector<float> y(largest, 42.0f), dx(largest, 42.0f), dw(largest, 42.0f), db(6, 42.0f);
  const std::vector<float> y0 = y, dx0 = dx, dw0 = dw, db0 = db;
  require_error(
      [&] {
        plan.forward({x.data(), s.output}, {w.data(), s.weights}, b, {y.data(), s.output});
      },
      bad, "input");
  require_error(
      [&] {
        plan.forward({x.data(), s.input}, {w.data(), {6, 2, 3, 3}}, b, {y.data(), s.output});
      },
      bad, "weights");
  require_error(
      [&] {
        plan.forward({x.data(), s.input}, {w.data(), s.weights}, {}, {y.data(), s.output});
      },
      bad, "bias");
  require_error(
      [&] {
        plan.forward({x.data(), s.input}, {w.data(), s.weights}, b, {y.data(), s.input});
      },
      bad, "output");
  require_error(
      [&] {
        plan.backward_data({dy.data(), s.input}, {w.data(), s.weights}, {dx.data(), s.input});
      },
      bad, "output_grad");
  require_error(
      [&] {
        plan.backward_data({dy.data(), s.output}, {w.data(), s.weights}, {nullptr, s.input});
      },
      bad, "input_grad");
  require_error(
      [&] {
        plan.backward_weights({x.data(), s.input}, {dy.data(), s.output}, {dw.data(), s.input});
      },
      bad, "weights_grad");
  require_error([&] { plan.backward_bias({dy.data(), s.output}, std::span(db).first(5)); }, bad, "bias_grad");
  std::vector<std::byte> small(8);
  if (plan.workspace_bytes(Conv2dDirection::forward) > small.size()) {
    require_error(
        [&] {
          plan.forward({x.data(), s.input}, {w.data(), s.weights}, b, {y.data(), s.output}, small);
        },
        bad, "workspace");
  }
  CHECK(y == y0);
  CHECK(dx == dx0);
  CHECK(dw == dw0);
  CHECK(db == db0);
}
