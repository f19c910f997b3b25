// Bad input through the C++ API: every case throws convgemm::Error naming the offending parameter or tensor,
// with the right status, and leaves every output buffer exactly as it was.
#include "conv2d_tester.hpp"
#include "require_error.hpp"

#include <functional>

using namespace convgemm;
using convgemm::testing::require_error;

namespace {

const Conv2dParams valid_params{.batch = 2,
                                .in_channels = 4,
                                .in_height = 6,
                                .in_width = 5,
                                .out_channels = 6,
                                .kernel_height = 3,
                                .kernel_width = 3,
                                .padding = Padding2d::symmetric(1, 1),
                                .groups = 2,
                                .has_bias = true};

Conv2dParams with(std::function<void(Conv2dParams&)> change) {
  Conv2dParams params = valid_params;
  change(params);
  return params;
}

}  // namespace

TEST_CASE("errors: invalid params name the parameter", "[errors]") {
  struct Case {
    Conv2dParams params;
    Status status;
    std::string parameter;
  };
  const int64_t big = int64_t{1} << 32;
  const std::vector<Case> cases = {
      {with([](auto& p) { p.batch = 0; }), Status::invalid_argument, "batch"},
      {with([](auto& p) { p.in_channels = -4; }), Status::invalid_argument, "in_channels"},
      {with([](auto& p) { p.in_height = 0; }), Status::invalid_argument, "in_height"},
      {with([](auto& p) { p.in_width = -1; }), Status::invalid_argument, "in_width"},
      {with([](auto& p) { p.out_channels = 0; }), Status::invalid_argument, "out_channels"},
      {with([](auto& p) { p.kernel_height = 0; }), Status::invalid_argument, "kernel_height"},
      {with([](auto& p) { p.kernel_width = -3; }), Status::invalid_argument, "kernel_width"},
      {with([](auto& p) { p.stride.height = 0; }), Status::invalid_argument, "stride.height"},
      {with([](auto& p) { p.stride.width = -1; }), Status::invalid_argument, "stride.width"},
      {with([](auto& p) { p.dilation.height = 0; }), Status::invalid_argument, "dilation.height"},
      {with([](auto& p) { p.dilation.width = 0; }), Status::invalid_argument, "dilation.width"},
      {with([](auto& p) { p.groups = 0; }), Status::invalid_argument, "groups"},
      {with([](auto& p) { p.padding.top = -1; }), Status::invalid_argument, "padding.top"},
      {with([](auto& p) { p.padding.right = -2; }), Status::invalid_argument, "padding.right"},
      // kernel larger than the padded input (6 + 1 + 1 = 8 < 9), and a dilated kernel that no longer fits
      {with([](auto& p) { p.kernel_height = 9; }), Status::invalid_argument, "kernel_height"},
      {with([](auto& p) { p.dilation.width = 4; }), Status::invalid_argument, "kernel_width"},
      // channels not divisible by groups
      {with([](auto& p) {
         p.groups = 3;
         p.out_channels = 6;
       }),
       Status::invalid_argument, "in_channels"},
      {with([](auto& p) { p.out_channels = 5; }), Status::invalid_argument, "out_channels"},
      // products that overflow 64 bits
      {with([](auto& p) {
         p.in_height = big;
         p.in_width = big;
         p.kernel_height = p.kernel_width = 1;
         p.padding = {};
       }),
       Status::invalid_argument, "input size"},
      {with([](auto& p) { p.padding.top = INT64_MAX; }), Status::invalid_argument, "padding (height)"},
      // GEMM dimensions past OpenBLAS's 32-bit integers: P*Q = 70000^2 > 2^31 - 1; C*R*S = 2^31
      {{.in_height = 70000, .in_width = 70000}, Status::unsupported, "output_height * output_width"},
      {{.in_channels = int64_t{1} << 31}, Status::unsupported, "in_channels / groups * kernel_height * kernel_width"},
  };
  for (const Case& c : cases) {
    INFO(c.parameter);
    require_error([&] { Conv2dPlan plan(c.params); }, c.status, c.parameter);
  }
  require_error([] { Conv2dPlan plan(valid_params, {.threads = -1}); }, Status::invalid_argument, "threads");
}

TEST_CASE("errors: bad tensors and workspaces name the argument and leave outputs untouched", "[errors]") {
  const Conv2dPlan plan(valid_params);
  const Conv2dShapes& s = plan.shapes();
  std::mt19937_64 rng(1);
  const auto x = convgemm::testing::random_floats(element_count(s.input), rng);
  const auto w = convgemm::testing::random_floats(element_count(s.weights), rng);
  const auto b = convgemm::testing::random_floats(s.bias, rng);
  const auto dy = convgemm::testing::random_floats(element_count(s.output), rng);
  constexpr float sentinel = 42.0f;
  std::vector<float> y(dy.size(), sentinel), dx(x.size(), sentinel), dw(w.size(), sentinel), db(b.size(), sentinel);
  const std::vector<float> y0 = y, dx0 = dx, dw0 = dw, db0 = db;

  const Shape4 wrong_input{2, 4, 6, 6};
  // One byte short of what each direction needs, and a misaligned one of the right size.
  std::vector<std::byte> workspace(plan.workspace_bytes() + 1);
  const auto too_small = [&](Conv2dDirection direction) {
    return std::span(workspace).first(plan.workspace_bytes(direction) - 1);
  };
  const std::span<std::byte> misaligned(workspace.data() + 1, plan.workspace_bytes());

  const auto bad = Status::invalid_argument;
  require_error(
      [&] {
        plan.forward({nullptr, s.input}, {w.data(), s.weights}, b, {y.data(), s.output});
      },
      bad, "input");
  require_error(
      [&] {
        plan.forward({x.data(), wrong_input}, {w.data(), s.weights}, b, {y.data(), s.output});
      },
      bad, "input");
  require_error(
      [&] {
        plan.forward({x.data(), s.input}, {w.data(), s.input}, b, {y.data(), s.output});
      },
      bad, "weights");
  require_error(
      [&] {
        plan.forward({x.data(), s.input}, {w.data(), s.weights}, {}, {y.data(), s.output});
      },
      bad, "bias");
  require_error(
      [&] {
        plan.forward({x.data(), s.input}, {w.data(), s.weights}, std::span(b).first(2), {y.data(), s.output});
      },
      bad, "bias");
  require_error(
      [&] {
        plan.forward({x.data(), s.input}, {w.data(), s.weights}, b, {y.data(), s.input});
      },
      bad, "output");
  require_error(
      [&] {
        plan.forward({x.data(), s.input}, {w.data(), s.weights}, b, {nullptr, s.output});
      },
      bad, "output");
  require_error(
      [&] {
        plan.forward({x.data(), s.input}, {w.data(), s.weights}, b, {y.data(), s.output},
                     too_small(Conv2dDirection::forward));
      },
      bad, "workspace");
  require_error(
      [&] {
        plan.forward({x.data(), s.input}, {w.data(), s.weights}, b, {y.data(), s.output}, misaligned);
      },
      bad, "workspace");

  require_error(
      [&] {
        plan.backward_data({dy.data(), s.input}, {w.data(), s.weights}, {dx.data(), s.input});
      },
      bad, "output_grad");
  require_error(
      [&] {
        plan.backward_data({dy.data(), s.output}, {nullptr, s.weights}, {dx.data(), s.input});
      },
      bad, "weights");
  require_error(
      [&] {
        plan.backward_data({dy.data(), s.output}, {w.data(), s.weights}, {dx.data(), wrong_input});
      },
      bad, "input_grad");
  require_error(
      [&] {
        plan.backward_data({dy.data(), s.output}, {w.data(), s.weights}, {dx.data(), s.input},
                           too_small(Conv2dDirection::backward_data));
      },
      bad, "workspace");

  require_error(
      [&] {
        plan.backward_weights({x.data(), wrong_input}, {dy.data(), s.output}, {dw.data(), s.weights});
      },
      bad, "input");
  require_error(
      [&] {
        plan.backward_weights({x.data(), s.input}, {dy.data(), s.output}, {dw.data(), s.output});
      },
      bad, "weights_grad");
  require_error(
      [&] {
        plan.backward_weights({x.data(), s.input}, {dy.data(), s.output}, {dw.data(), s.weights},
                              GradientMode::accumulate, too_small(Conv2dDirection::backward_weights));
      },
      bad, "workspace");

  require_error([&] { plan.backward_bias({dy.data(), s.output}, std::span(db).first(3)); }, bad, "bias_grad");
  require_error([&] { plan.backward_bias({dy.data(), s.input}, db); }, bad, "output_grad");
  const Conv2dPlan no_bias(with([](auto& p) { p.has_bias = false; }));
  require_error([&] { no_bias.backward_bias({dy.data(), s.output}, db); }, bad, "bias_grad");
  require_error(
      [&] {
        no_bias.forward({x.data(), s.input}, {w.data(), s.weights}, b, {y.data(), s.output});
      },
      bad, "bias");

  // The direct convolution validates the same way.
  require_error(
      [&] {
        direct_conv2d_forward(valid_params, ConstTensorView{x.data(), s.input}, ConstTensorView{w.data(), s.weights}, b,
                              TensorView{y.data(), wrong_input});
      },
      bad, "output");
  require_error(
      [&] {
        direct_conv2d_backward_weights(with([](auto& p) { p.groups = 5; }), ConstTensorView{x.data(), s.input},
                                       ConstTensorView{dy.data(), s.output}, TensorView{dw.data(), s.weights});
      },
      bad, "in_channels");

  CHECK(y == y0);
  CHECK(dx == dx0);
  CHECK(dw == dw0);
  CHECK(db == db0);
}
