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
void relu_in_place_cloned(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

CONVGEMM_VECTOR_CLONES
void add_bias_cloned(const float* __restrict x, int64_t n, float bias, bool relu, float* __restrict y) {
  if (relu) {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] + bias > 0.0f ? x[i] + bias : 0.0f;
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] + bias;
  }
}

}  // namespace

void relu_in_place(float* x, int64_t n) { relu_in_place_cloned(x, n); }

void add_bias(const float* x, int64_t n, float bias, bool relu, float* y) { add_bias_cloned(x, n, bias, relu, y); }

double sum_in_double(const float* x, int64_t n) { return sum_in_double_cloned(x, n); }

}  // namespace convgemm::kernels
