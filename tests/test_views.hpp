// Small helpers every operator test uses: views over std::vector buffers, and a bitwise comparison for the
// determinism checks (== on floats would call -0 and +0 equal and NaN unequal to itself).
#pragma once

#include <convgemm/tensor.hpp>

#include <cstring>
#include <vector>

namespace convgemm::testing {

template <class T>
BasicTensorView<const T> in(const std::vector<T>& values, const Shape4& shape) {
  return {values.data(), shape};
}

template <class T>
BasicTensorView<T> out(std::vector<T>& values, const Shape4& shape) {
  return {values.data(), shape};
}

inline bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace convgemm::testing
