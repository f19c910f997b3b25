// An installed convgemm, used from C++: a strided, padded, grouped convolution with bias through the plan,
// checked against the direct oracle, plus an error thrown inside the library and caught here by type.
#include <convgemm/version.h>
#include <convgemm/convgemm.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace {

// Deterministic values in [-1, 1) without <random>, so the C consumer can produce the same ones.
std::vector<float> pattern(int64_t count, uint32_t seed) {
  std::vector<float> values(static_cast<size_t>(count));
  for (float& v : values) {
    seed = seed * 1664525u + 1013904223u;
    v = static_cast<float>(seed >> 8) / 8388608.0f - 1.0f;
  }
  return values;
}

}  // namespace

int main() {
  using namespace convgemm;
  if (runtime_info().version != CONVGEMM_VERSION_STRING) {
    std::fprintf(stderr, "library %s, header %s\n", runtime_info().version.c_str(), CONVGEMM_VERSION_STRING);
    return 1;
  }
  const Conv2dParams params{.batch = 2,
                            .in_channels = 4,
                            .in_height = 9,
                            .in_width = 8,
                            .out_channels = 6,
                            .kernel_height = 3,
                            .kernel_width = 3,
                            .stride = {2, 1},
                            .padding = Padding2d::same(9, 8, 3, 3, {2, 1}),
                            .groups = 2,
                            .has_bias = true};
  const Conv2dPlan plan(params, {.threads = 2});
  const Conv2dShapes& s = plan.shapes();
  const std::vector<float> x = pattern(element_count(s.input), 1), w = pattern(element_count(s.weights), 2),
                           b = pattern(s.bias, 3);
  std::vector<float> y(static_cast<size_t>(element_count(s.output))), expected(y.size());
  plan.forward({x.data(), s.input}, {w.data(), s.weights}, b, {y.data(), s.output});
  direct_conv2d_forward(params, {x.data(), s.input}, {w.data(), s.weights}, b, {expected.data(), s.output});

  // Both are float sums of (C/G)*R*S = 18 products of values in [-1, 1] plus a bias; each is within
  // 19 * 2^-24 * 19 ~ 2e-5 of the exact sum whatever the order, so 1e-4 only fails on a wrong result.
  double worst = 0.0;
  for (size_t i = 0; i < y.size(); ++i) worst = std::fmax(worst, std::fabs(double{y[i]} - double{expected[i]}));
  std::printf("C++ consumer: %zu outputs, max |plan - direct| = %.3g\n", y.size(), worst);
  if (!(worst <= 1e-4)) return 1;

  // The exception's typeinfo is exported, so a catch here matches a throw inside libconvgemm.
  try {
    Conv2dParams bad = params;
    bad.groups = 3;
    const Conv2dPlan rejected(bad);
    std::fprintf(stderr, "groups = 3 was accepted\n");
    return 1;
  } catch (const Error& error) {
    if (error.parameter() != "in_channels") {
      std::fprintf(stderr, "unexpected error: %s\n", error.what());
      return 1;
    }
  }
  return 0;
}
