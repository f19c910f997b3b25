// Non-owning views of dense 4-D tensors (NCHW activations, KCRS weights). The library never owns caller data:
// a view is a pointer plus the shape the caller claims, which each call checks against the shape it expects.
#pragma once

#include <convgemm/export.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <type_traits>

namespace convgemm {

// Dimensions outermost first: {N, C, H, W} for activations, {K, C/groups, R, S} for weights.
using Shape4 = std::array<int64_t, 4>;

inline int64_t element_count(const Shape4& shape) { return shape[0] * shape[1] * shape[2] * shape[3]; }

CONVGEMM_CXX_API std::string to_string(const Shape4& shape);

template <class T>
struct BasicTensorView {
  T* data = nullptr;
  Shape4 shape{};

  BasicTensorView() = default;
  BasicTensorView(T* data_, Shape4 shape_) : data(data_), shape(shape_) {}
  // A mutable view converts to a read-only one, as T* converts to const T*.
  template <class U>
  requires std::is_same_v<const U, T> &&(!std::is_same_v<U, T>)BasicTensorView(BasicTensorView<U> other)
      : data(other.data), shape(other.shape) {}

  int64_t size() const { return element_count(shape); }
};

using TensorView = BasicTensorView<float>;
using ConstTensorView = BasicTensorView<const float>;
// Double-precision views: the oracles and operators offer double overloads for finite-difference checks.
using TensorViewF64 = BasicTensorView<double>;
using ConstTensorViewF64 = BasicTensorView<const double>;

}  // namespace convgemm
