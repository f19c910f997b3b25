// The logistic function in the form that never overflows, shared by the sigmoid layer and the fused
// sigmoid + binary cross-entropy loss so that both compute exactly the same A = sigmoid(z).
#pragma once

#include <cmath>

namespace convgemm::kernels {

// 1 / (1 + e^-x) for x >= 0; e^x / (1 + e^x) for x < 0, where e^-x would overflow for large |x|.
template <class T>
T sigmoid(T x) {
  if (x >= 0) return T{1} / (T{1} + std::exp(-x));
  const T e = std::exp(x);
  return e / (T{1} + e);
}

}  // namespace convgemm::kernels
