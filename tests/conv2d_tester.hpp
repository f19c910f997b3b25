// Conv2dTester: builds one seeded random convolution problem, runs the im2col+GEMM plan and the direct oracle
// (in double precision) on it, and checks every element of every direction against a rigorous error bound.
//
// Why the bound is what it is: the oracle runs in double on the same float inputs, so it is exact to ~1e-16
// relative. The float result is a sum of n products computed in some order (GEMM blocking, FMA, col2im and
// chunked dW reductions only change the order), and for any order |float - exact| <= gamma(n) * sum|terms|,
// gamma(n) = n*u / (1 - n*u), u = 2^-24 (Higham, Accuracy and Stability of Numerical Algorithms, 3.1). The
// sum of |terms| is the direct convolution of the absolute values, computed by the oracle too. So a correct
// implementation can never fail the check, while any indexing error is off by O(sum|terms|), >> gamma(n) times it.
#pragma once

#include "test_views.hpp"

#include <convgemm/convgemm.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace convgemm::testing {

inline std::string describe(const Conv2dParams& p) {
  std::ostringstream text;
  text << "N=" << p.batch << " C=" << p.in_channels << " H=" << p.in_height << " W=" << p.in_width
       << " K=" << p.out_channels << " R=" << p.kernel_height << " S=" << p.kernel_width
       << " stride=" << p.stride.height << "x" << p.stride.width << " pad(t,b,l,r)=" << p.padding.top << ","
       << p.padding.bottom << "," << p.padding.left << "," << p.padding.right << " dilation=" << p.dilation.height
       << "x" << p.dilation.width << " groups=" << p.groups << " bias=" << p.has_bias;
  return text.str();
}

inline std::vector<float> random_floats(int64_t count, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> values(static_cast<size_t>(count));
  for (float& v : values) v = uniform(rng);
  return values;
}

inline std::vector<double> to_double(const std::vector<float>& values, bool absolute = false) {
  std::vector<double> result(values.size());
  for (size_t i = 0; i < values.size(); ++i) result[i] = absolute ? std::fabs(values[i]) : values[i];
  return result;
}

inline double gamma_bound(int64_t terms) {
  const double u = std::ldexp(1.0, -24);
  return static_cast<double>(terms) * u / (1.0 - static_cast<double>(terms) * u);
}

// Checks |actual - exact| <= gamma(terms) * magnitude element by element; reports the worst element on failure.
// A NaN (an element never written, or a wrong one) is the worst failure there is.
inline void require_within_bound(const std::vector<float>& actual, const std::vector<double>& exact,
                                 const std::vector<double>& magnitude, int64_t terms, const std::string& what) {
  REQUIRE(actual.size() == exact.size());
  const double gamma = gamma_bound(terms);
  size_t worst = 0;
  double worst_excess = -1.0;  // error minus bound; > 0 is a failure
  for (size_t i = 0; i < actual.size(); ++i) {
    const double error = std::fabs(actual[i] - exact[i]);
    const double excess = std::isnan(error) ? std::numeric_limits<double>::infinity() : error - gamma * magnitude[i];
    if (excess > worst_excess) {
      worst_excess = excess;
      worst = i;
    }
  }
  INFO(what << ": worst element " << worst << " = " << actual[worst] << ", exact " << exact[worst] << ", bound "
            << gamma * magnitude[worst]);
  REQUIRE(worst_excess <= 0.0);
}

// Draws a problem in the ranges of the core issue: N 1..5, C and K 1..17, H and W 1..19, R and S 1..5,
// stride 1..3, padding 0..3 per side, dilation 1..3, groups 1, 2..4 or depthwise, bias or not.
inline Conv2dParams random_conv2d_params(std::mt19937_64& rng) {
  const auto draw = [&](int64_t low, int64_t high) { return std::uniform_int_distribution<int64_t>(low, high)(rng); };
  for (;;) {
    Conv2dParams p;
    p.batch = draw(1, 5);
    switch (draw(0, 3)) {
      case 0:
      case 1:
        p.groups = 1;
        p.in_channels = draw(1, 17);
        p.out_channels = draw(1, 17);
        break;
      case 2:
        p.groups = draw(2, 4);
        p.in_channels = p.groups * draw(1, 17 / p.groups);
        p.out_channels = p.groups * draw(1, 17 / p.groups);
        break;
      default:  // depthwise, with a channel multiplier of 1 or 2 (K stays <= 17)
        p.in_channels = draw(1, 17);
        p.groups = p.in_channels;
        p.out_channels = p.in_channels * (p.in_channels <= 8 ? draw(1, 2) : 1);
        break;
    }
    p.in_height = draw(1, 19);
    p.in_width = draw(1, 19);
    p.kernel_height = draw(1, 5);
    p.kernel_width = draw(1, 5);
    p.stride = {draw(1, 3), draw(1, 3)};
    p.padding = {draw(0, 3), draw(0, 3), draw(0, 3), draw(0, 3)};
    p.dilation = {draw(1, 3), draw(1, 3)};
    p.has_bias = draw(0, 1) == 1;
    if (p.dilation.height * (p.kernel_height - 1) + 1 > p.in_height + p.padding.top + p.padding.bottom) continue;
    if (p.dilation.width * (p.kernel_width - 1) + 1 > p.in_width + p.padding.left + p.padding.right) continue;
    return p;
  }
}

class Conv2dTester {
 public:
  Conv2dTester(const Conv2dParams& params, uint64_t seed) : params_(params), shapes_(conv2d_shapes(params)) {
    std::mt19937_64 rng(seed);
    input_ = random_floats(element_count(shapes_.input), rng);
    weights_ = random_floats(element_count(shapes_.weights), rng);
    bias_ = random_floats(shapes_.bias, rng);
    output_grad_ = random_floats(element_count(shapes_.output), rng);
  }

  // The three directions of some implementation of the convolution, on this problem's tensors.
  struct Implementation {
    std::function<void(ConstTensorView x, ConstTensorView w, std::span<const float> b, TensorView y)> forward;
    std::function<void(ConstTensorView dy, ConstTensorView w, TensorView dx)> backward_data;
    std::function<void(ConstTensorView x, ConstTensorView dy, TensorView dw)> backward_weights;
  };

  // Runs all four directions through `plan`, with the caller-supplied workspace when given.
  void check(const Conv2dPlan& plan, bool caller_workspace = false) const {
    INFO(describe(params_) << " | " << plan.describe());
    std::vector<std::byte> workspace(caller_workspace ? plan.workspace_bytes() : 0);
    check_directions({
        [&](auto x, auto w, auto b, auto y) { plan.forward(x, w, b, y, workspace); },
        [&](auto dy, auto w, auto dx) { plan.backward_data(dy, w, dx, workspace); },
        [&](auto x, auto dy, auto dw) { plan.backward_weights(x, dy, dw, GradientMode::overwrite, workspace); },
    });
    const int64_t pixels = shapes_.output[2] * shapes_.output[3];
    const auto exact_dw = exact_backward_weights(false);
    const auto magnitude_dw = exact_backward_weights(true);
    // Accumulate mode adds onto what is there: dW_acc = dW_before + dW.
    const std::vector<float> before = weights_;
    std::vector<float> accumulated = before;
    plan.backward_weights(in(input_, shapes_.input), in(output_grad_, shapes_.output),
                          out(accumulated, shapes_.weights), GradientMode::accumulate, workspace);
    std::vector<double> exact_sum(before.size()), magnitude_sum(before.size());
    for (size_t i = 0; i < before.size(); ++i) {
      exact_sum[i] = exact_dw[i] + before[i];
      magnitude_sum[i] = magnitude_dw[i] + std::fabs(before[i]);
    }
    require_within_bound(accumulated, exact_sum, magnitude_sum, params_.batch * pixels + 1,
                         "backward_weights (accumulate)");

    if (!params_.has_bias) return;
    std::vector<float> bias_grad(bias_.size());
    plan.backward_bias(in(output_grad_, shapes_.output), bias_grad);
    std::vector<double> exact_db(bias_.size()), magnitude_db(bias_.size());
    direct_conv2d_backward_bias(params_, in(to_double(output_grad_), shapes_.output), exact_db);
    direct_conv2d_backward_bias(params_, in(to_double(output_grad_, true), shapes_.output), magnitude_db);
    require_within_bound(bias_grad, exact_db, magnitude_db, params_.batch * pixels, "backward_bias");
  }

  // The optimised direct convolution (the benchmarks' baseline) on the same problem.
  void check_optimized_direct() const {
    INFO(describe(params_) << " | optimised direct");
    check_directions({
        [&](auto x, auto w, auto b, auto y) { direct_conv2d_forward_optimized(params_, x, w, b, y); },
        [&](auto dy, auto w, auto dx) { direct_conv2d_backward_data_optimized(params_, dy, w, dx); },
        [&](auto x, auto dy, auto dw) { direct_conv2d_backward_weights_optimized(params_, x, dy, dw); },
    });
  }

 private:
  // Checks forward, backward-data and backward-weights (overwrite) against the oracle.
  void check_directions(const Implementation& implementation) const {
    const int64_t Cg = params_.in_channels / params_.groups;
    const int64_t Kg = params_.out_channels / params_.groups;
    const int64_t taps = params_.kernel_height * params_.kernel_width;
    const int64_t pixels = shapes_.output[2] * shapes_.output[3];

    // The outputs start as NaN: every element must be written (backward-data zeroes dx before col2im adds into it,
    // row block by row block; backward-weights overwrites dW), none left as it was.
    constexpr float unwritten = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> output(static_cast<size_t>(element_count(shapes_.output)), unwritten);
    implementation.forward(in(input_, shapes_.input), in(weights_, shapes_.weights), bias_,
                           out(output, shapes_.output));
    require_within_bound(output, exact_forward(false), exact_forward(true), Cg * taps + 1, "forward");

    std::vector<float> input_grad(input_.size(), unwritten);
    implementation.backward_data(in(output_grad_, shapes_.output), in(weights_, shapes_.weights),
                                 out(input_grad, shapes_.input));
    require_within_bound(input_grad, exact_backward_data(false), exact_backward_data(true), Kg * taps, "backward_data");

    std::vector<float> weights_grad(weights_.size(), unwritten);
    implementation.backward_weights(in(input_, shapes_.input), in(output_grad_, shapes_.output),
                                    out(weights_grad, shapes_.weights));
    require_within_bound(weights_grad, exact_backward_weights(false), exact_backward_weights(true),
                         params_.batch * pixels, "backward_weights");
  }

  // The oracle on the float inputs (absolute = false), or on their absolute values: the sum of |terms|.
  std::vector<double> exact_forward(bool absolute) const {
    std::vector<double> y(static_cast<size_t>(element_count(shapes_.output)));
    const auto x = to_double(input_, absolute), w = to_double(weights_, absolute), b = to_double(bias_, absolute);
    direct_conv2d_forward(params_, in(x, shapes_.input), in(w, shapes_.weights), b, out(y, shapes_.output));
    return y;
  }
  std::vector<double> exact_backward_data(bool absolute) const {
    std::vector<double> dx(input_.size());
    const auto dy = to_double(output_grad_, absolute), w = to_double(weights_, absolute);
    direct_conv2d_backward_data(params_, in(dy, shapes_.output), in(w, shapes_.weights), out(dx, shapes_.input));
    return dx;
  }
  std::vector<double> exact_backward_weights(bool absolute) const {
    std::vector<double> dw(weights_.size());
    const auto x = to_double(input_, absolute), dy = to_double(output_grad_, absolute);
    direct_conv2d_backward_weights(params_, in(x, shapes_.input), in(dy, shapes_.output), out(dw, shapes_.weights));
    return dw;
  }

  Conv2dParams params_;
  Conv2dShapes shapes_;
  std::vector<float> input_, weights_, bias_, output_grad_;
};

}  // namespace convgemm::testing
