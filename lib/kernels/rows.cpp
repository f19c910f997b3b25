#include "kernels/rows.hpp"
#include "kernels/vector_clones.hpp"

namespace convgemm::kernels {
namespace {

constexpr int lanes = 16;

CONVGEMM_VECTOR_CLONES
double sum_in_double_cloned(const float* x, int64_t n) {
  double lane_sums[lanes] = {};
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes)
    for (int j = 0; j < lanes; ++j) lane_sums[j] += static_cast<double>(x[i + j]);
  double total = 0.0;
  for (const double lane_sum : lane_sums) total += lane_sum;
  for (; i < n; ++i) total += static_cast<double>(x[i]);
  return total;
}

CONVGEMM_VECTOR_CLONES
void add_bias_cloned(const float* x, int64_t n, float bias, bool relu, float* y) {
  if (relu) {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] + bias > 0.0f ? x[i] + bias : 0.0f;
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] + bias;
  }
}

}  // namespace

double sum_in_double(const float* x, int64_t n) { return sum_in_double_cloned(x, n); }

void add_bias(const float* x, int64_t n, float bias, bool relu, float* y) { add_bias_cloned(x, n, bias, relu, y); }
void add_bias_in_place(float* y, int64_t n, float bias, bool relu) { add_bias_cloned(y, n, bias, relu, y); }

}  // namespace convgemm::kernels
