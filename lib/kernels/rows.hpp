// Passes over float rows: sums in double, in a fixed order that does not depend on threads (the bias gradients'
// reduction), and ReLU in place (a convolution's fused post-op).
#pragma once

#include <cstdint>

namespace convgemm::kernels {

// x[0] + ... + x[n-1] in double: sixteen running lanes (lane j takes elements j, j+16, ...) added in lane order,
// then the n % 16 tail. Vectorises where a single running sum, which fixes every addition's order, cannot.
double sum_in_double(const float* x, int64_t n);

// x[i] = max(x[i], 0), 0 for NaN: relu_forward's definition.
void relu_in_place(float* x, int64_t n);

}  // namespace convgemm::kernels
