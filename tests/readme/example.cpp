#include <convgemm/convgemm.hpp>
#include <cstdio>
#include <vector>

int main() {
  using namespace convgemm;
  const Conv2dParams params{.batch = 8, .in_channels = 3, .in_height = 32, .in_width = 32, .out_channels = 16,
                            .kernel_height = 3, .kernel_width = 3, .padding = Padding2d::same(32, 32, 3, 3),
                            .has_bias = true};
  const Conv2dPlan plan(params);  // validates once; fixes output shape, path and workspace size
  const Conv2dShapes& s = plan.shapes();
  std::vector<float> x(element_count(s.input), 1.0f), w(element_count(s.weights), 0.1f), b(s.bias, 0.5f);
  std::vector<float> y(element_count(s.output)), dy(y.size(), 1.0f), dx(x.size()), dw(w.size()), db(b.size());
  plan.forward({x.data(), s.input}, {w.data(), s.weights}, b, {y.data(), s.output});
  plan.backward_data({dy.data(), s.output}, {w.data(), s.weights}, {dx.data(), s.input});
  plan.backward_weights({x.data(), s.input}, {dy.data(), s.output}, {dw.data(), s.weights});
  plan.backward_bias({dy.data(), s.output}, db);
  std::printf("y = %.2f, dx = %.2f, db = %.0f\n", y[16 * 32 + 16], dx[16 * 32 + 16], db[0]);  // 3.20 14.40 8192
}
