// Passes over float rows: sums in double, in a fixed order that does not depend on threads (the bias gradients'
// reduction), and bias addition with an optional ReLU (a convolution's epilogue, and ReLU itself with a zero bias).
// Built for each vector width.
#pragma once

#include <cstdint>

namespace convgemm::kernels {

// x[0] + ... + x[n-1] in double: sixteen running lanes (lane j takes elements j, j+16, ...) added in lane order,
// then the n % 16 tail. Vectorises where a single running sum, which fixes every addition's order, cannot.
double sum_in_double(const float* x, int64_t n);

// y[i] = x[i] + bias, or max(x[i] + bias, 0) with relu (0 for NaN, relu_forward's definition): a GEMM's output
// spread back to its tensor, or finished where it lies.
void add_bias(const float* x, int64_t n, float bias, bool relu, float* y);
void add_bias_in_place(float* y, int64_t n, float bias, bool relu);

}  // namespace convgemm::kernels
