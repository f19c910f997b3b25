// The direct convolution and the conventions both paths share: the output-size formula and 'same' padding,
// the seeds' hand-worked 3x3 example checked against its written formulas, and finite-difference gradient
// checks of the direct adjoints in double precision.
#include "conv2d_tester.hpp"

#include <functional>

using namespace convgemm;

TEST_CASE("conv2d: output-size formula and padding helpers", "[conv2d][shapes]") {
  struct Row {
    const char* name;
    int64_t input, kernel, stride, pad_before, pad_after, dilation, expected;
  };
  const Row table[] = {
      {"valid 320 with kernel 2", 320, 2, 1, 0, 0, 1, 319},
      {"valid 280 with kernel 1", 280, 1, 1, 0, 0, 1, 280},
      {"valid 28 with kernel 3", 28, 3, 1, 0, 0, 1, 26},
      {"same 28 with kernel 3", 28, 3, 1, 1, 1, 1, 28},
      {"stride 2, 5 with kernel 3", 5, 3, 2, 0, 0, 1, 2},
      {"stride 2, floor: 6 with kernel 3", 6, 3, 2, 0, 0, 1, 2},
      {"ResNet stem 224, kernel 7, stride 2, pad 3", 224, 7, 2, 3, 3, 1, 112},
      {"dilation 2, 10 with kernel 3", 10, 3, 1, 0, 0, 2, 6},
      {"asymmetric padding 4 with kernel 2", 4, 2, 1, 0, 1, 1, 4},
      {"stride 3 with padding", 19, 5, 3, 2, 1, 1, 6},
  };
  for (const Row& row : table) {
    INFO(row.name);
    CHECK(conv2d_output_size(row.input, row.kernel, row.stride, row.pad_before, row.pad_after, row.dilation) ==
          row.expected);
  }

  // The seeds' example: a 320x280 input with a 2x1 kernel gives a 319x280 output.
  const Conv2dShapes shapes = conv2d_shapes({.batch = 1,
                                             .in_channels = 1,
                                             .in_height = 320,
                                             .in_width = 280,
                                             .out_channels = 1,
                                             .kernel_height = 2,
                                             .kernel_width = 1});
  CHECK(shapes.output == Shape4{1, 1, 319, 280});

  // TensorFlow 'same': output = ceil(input / stride), odd total padding puts the extra pixel bottom/right.
  const Padding2d same3 = Padding2d::same(28, 28, 3, 3);
  CHECK((same3.top == 1 && same3.bottom == 1 && same3.left == 1 && same3.right == 1));
  const Padding2d same2 = Padding2d::same(5, 5, 2, 2);
  CHECK((same2.top == 0 && same2.bottom == 1 && same2.left == 0 && same2.right == 1));
  const Padding2d strided = Padding2d::same(224, 223, 3, 3, {2, 2});
  CHECK((strided.top == 0 && strided.bottom == 1 && strided.left == 1 && strided.right == 1));
  CHECK(conv2d_output_size(224, 3, 2, strided.top, strided.bottom, 1) == 112);
  CHECK(conv2d_output_size(223, 3, 2, strided.left, strided.right, 1) == 112);
  const Padding2d dilated = Padding2d::same(10, 10, 3, 3, {}, {2, 2});
  CHECK((dilated.top == 2 && dilated.bottom == 2));
  CHECK(Padding2d::valid().top + Padding2d::valid().bottom + Padding2d::valid().left + Padding2d::valid().right == 0);

  CHECK(conv2d_flops({.batch = 2,
                      .in_channels = 4,
                      .in_height = 5,
                      .in_width = 5,
                      .out_channels = 6,
                      .kernel_height = 3,
                      .kernel_width = 3,
                      .groups = 2}) == 2.0 * 2 * 6 * 2 * 9 * 3 * 3);
}

// The seeds' worked example: 3x3 input X, 2x2 filter F, 2x2 output O. Small integers keep every product and
// sum exact in float, so both paths must match the formulas exactly.
TEST_CASE("conv2d: the hand-worked 3x3 example, element by element", "[conv2d][example]") {
  const float X11 = 1, X12 = 2, X13 = -1, X21 = 3, X22 = 0, X23 = 4, X31 = -2, X32 = 5, X33 = 1;
  const float F11 = 2, F12 = -1, F21 = 3, F22 = 1;
  const float dO11 = 1, dO12 = -2, dO21 = 3, dO22 = 2;
  const std::vector<float> x = {X11, X12, X13, X21, X22, X23, X31, X32, X33};
  const std::vector<float> f = {F11, F12, F21, F22};
  const std::vector<float> dO = {dO11, dO12, dO21, dO22};

  // Forward is a correlation: O_ij = sum_ab X_(i+a)(j+b) F_ab.
  const std::vector<float> expected_O = {
      X11 * F11 + X12 * F12 + X21 * F21 + X22 * F22, X12 * F11 + X13 * F12 + X22 * F21 + X23 * F22,
      X21 * F11 + X22 * F12 + X31 * F21 + X32 * F22, X22 * F11 + X23 * F12 + X32 * F21 + X33 * F22};
  // dL/dF = conv(X, dL/dO): the input correlated with the output gradient.
  const std::vector<float> expected_dF = {
      X11 * dO11 + X12 * dO12 + X21 * dO21 + X22 * dO22, X12 * dO11 + X13 * dO12 + X22 * dO21 + X23 * dO22,
      X21 * dO11 + X22 * dO12 + X31 * dO21 + X32 * dO22, X22 * dO11 + X23 * dO12 + X32 * dO21 + X33 * dO22};
  // dL/dX = full convolution of dL/dO with F rotated by 180 degrees.
  const std::vector<float> expected_dX = {
      dO11 * F11,                                         // dX11
      dO11 * F12 + dO12 * F11,                            // dX12
      dO12 * F12,                                         // dX13
      dO11 * F21 + dO21 * F11,                            // dX21
      dO11 * F22 + dO12 * F21 + dO21 * F12 + dO22 * F11,  // dX22
      dO12 * F22 + dO22 * F12,                            // dX23
      dO21 * F21,                                         // dX31
      dO21 * F22 + dO22 * F21,                            // dX32
      dO22 * F22,                                         // dX33
  };

  const Conv2dParams params{.batch = 1,
                            .in_channels = 1,
                            .in_height = 3,
                            .in_width = 3,
                            .out_channels = 1,
                            .kernel_height = 2,
                            .kernel_width = 2};
  const Shape4 x_shape{1, 1, 3, 3}, f_shape{1, 1, 2, 2}, o_shape{1, 1, 2, 2};
  const Conv2dPlan plan(params);
  std::vector<float> O(4), dF(4), dX(9);

  SECTION("im2col + GEMM") {
    plan.forward({x.data(), x_shape}, {f.data(), f_shape}, {}, {O.data(), o_shape});
    plan.backward_weights({x.data(), x_shape}, {dO.data(), o_shape}, {dF.data(), f_shape});
    plan.backward_data({dO.data(), o_shape}, {f.data(), f_shape}, {dX.data(), x_shape});
  }
  SECTION("direct") {
    direct_conv2d_forward(params, ConstTensorView{x.data(), x_shape}, ConstTensorView{f.data(), f_shape},
                          std::span<const float>{}, TensorView{O.data(), o_shape});
    direct_conv2d_backward_weights(params, ConstTensorView{x.data(), x_shape}, ConstTensorView{dO.data(), o_shape},
                                   TensorView{dF.data(), f_shape});
    direct_conv2d_backward_data(params, ConstTensorView{dO.data(), o_shape}, ConstTensorView{f.data(), f_shape},
                                TensorView{dX.data(), x_shape});
  }
  CHECK(O == expected_O);
  CHECK(dF == expected_dF);
  CHECK(dX == expected_dX);
}

namespace {

// L = <conv(x, w) + b, g> for a fixed random g, in double. dL/dx, dL/dw, dL/db are the direct adjoints applied
// to g; the central difference of L (linear in each argument) must match them to rounding.
double loss(const Conv2dParams& params, const std::vector<double>& x, const std::vector<double>& w,
            const std::vector<double>& b, const std::vector<double>& g) {
  const Conv2dShapes shapes = conv2d_shapes(params);
  std::vector<double> y(g.size());
  direct_conv2d_forward(params, ConstTensorViewF64{x.data(), shapes.input},
                        ConstTensorViewF64{w.data(), shapes.weights}, b, TensorViewF64{y.data(), shapes.output});
  double sum = 0;
  for (size_t i = 0; i < y.size(); ++i) sum += y[i] * g[i];
  return sum;
}

// point[i] is perturbed in place (and restored); loss() must read it.
void check_against_central_difference(std::vector<double>& point, const std::vector<double>& analytic,
                                      const std::function<double()>& loss, const char* what) {
  constexpr double h = 1e-3;
  for (size_t i = 0; i < analytic.size(); ++i) {
    const double saved = point[i];
    point[i] = saved + h;
    const double above = loss();
    point[i] = saved - h;
    const double below = loss();
    point[i] = saved;
    const double numeric = (above - below) / (2 * h);
    INFO(what << "[" << i << "]: analytic " << analytic[i] << ", numeric " << numeric);
    REQUIRE(std::fabs(numeric - analytic[i]) <= 1e-9 * (1 + std::fabs(analytic[i])));
  }
}

}  // namespace

TEST_CASE("conv2d: finite-difference gradient checks of the direct adjoints (double)", "[conv2d][gradcheck]") {
  const std::vector<Conv2dParams> problems = {
      {.batch = 2,
       .in_channels = 3,
       .in_height = 6,
       .in_width = 5,
       .out_channels = 4,
       .kernel_height = 3,
       .kernel_width = 2,
       .padding = {1, 0, 2, 1},
       .has_bias = true},
      {.batch = 1,
       .in_channels = 4,
       .in_height = 9,
       .in_width = 8,
       .out_channels = 6,
       .kernel_height = 3,
       .kernel_width = 3,
       .stride = {2, 3},
       .padding = {1, 2, 0, 1},
       .dilation = {2, 1},
       .groups = 2,
       .has_bias = true},
      {.batch = 2,
       .in_channels = 3,
       .in_height = 7,
       .in_width = 7,
       .out_channels = 3,
       .kernel_height = 2,
       .kernel_width = 3,
       .stride = {1, 2},
       .padding = {0, 1, 1, 0},
       .dilation = {1, 2},
       .groups = 3},
  };
  for (const Conv2dParams& params : problems) {
    INFO(convgemm::testing::describe(params));
    const Conv2dShapes shapes = conv2d_shapes(params);
    std::mt19937_64 rng(11);
    auto x = convgemm::testing::to_double(convgemm::testing::random_floats(element_count(shapes.input), rng));
    auto w = convgemm::testing::to_double(convgemm::testing::random_floats(element_count(shapes.weights), rng));
    auto b = convgemm::testing::to_double(convgemm::testing::random_floats(shapes.bias, rng));
    const auto g = convgemm::testing::to_double(convgemm::testing::random_floats(element_count(shapes.output), rng));

    std::vector<double> dx(x.size()), dw(w.size()), db(b.size());
    direct_conv2d_backward_data(params, ConstTensorViewF64{g.data(), shapes.output},
                                ConstTensorViewF64{w.data(), shapes.weights}, TensorViewF64{dx.data(), shapes.input});
    direct_conv2d_backward_weights(params, ConstTensorViewF64{x.data(), shapes.input},
                                   ConstTensorViewF64{g.data(), shapes.output},
                                   TensorViewF64{dw.data(), shapes.weights});
    direct_conv2d_backward_bias(params, ConstTensorViewF64{g.data(), shapes.output}, std::span<double>(db));

    const auto current_loss = [&] { return loss(params, x, w, b, g); };
    check_against_central_difference(x, dx, current_loss, "dx");
    check_against_central_difference(w, dw, current_loss, "dw");
    check_against_central_difference(b, db, current_loss, "db");
  }
}
