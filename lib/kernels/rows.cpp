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

}  // namespace

void relu_in_place(float* x, int64_t n) { relu_in_place_cloned(x, n); }

double sum_in_double(const float* x, int64_t n) { return sum_in_double_cloned(x, n); }

}  // namespace convgemm::kernels
