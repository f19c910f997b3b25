// Argument checks shared by every operator's entry points: a tensor view must have data and exactly the shape
// the operator expects; sizes multiply without overflowing. Each check throws convgemm::Error naming the argument.
#pragma once

#include <convgemm/error.hpp>
#include <convgemm/tensor.hpp>

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>

namespace convgemm {

void require_positive(int64_t value, const char* name);
void require_non_negative(int64_t value, const char* name);

template <class T>
void check_tensor(BasicTensorView<T> view, const Shape4& expected, const char* name) {
  if (view.data == nullptr) throw Error(Status::invalid_argument, name, "data pointer is null");
  if (view.shape != expected) {
    throw Error(Status::invalid_argument, name,
                "shape " + to_string(view.shape) + " does not match the expected " + to_string(expected));
  }
}

// An optional vector (a bias or its gradient): empty exactly when expected_size is 0.
template <class T>
void check_optional_vector(std::span<T> vector, int64_t expected_size, const char* name, const char* why_empty) {
  if (expected_size == 0) {
    if (!vector.empty()) throw Error(Status::invalid_argument, name, std::string("given, but ") + why_empty);
    return;
  }
  if (vector.data() == nullptr) throw Error(Status::invalid_argument, name, "data pointer is null");
  if (static_cast<int64_t>(vector.size()) != expected_size) {
    throw Error(Status::invalid_argument, name,
                "has " + std::to_string(vector.size()) + " elements, expected " + std::to_string(expected_size));
  }
}

// A flat buffer of exactly expected_size elements (an elementwise operator's input or output). A span's data
// pointer needs no check: a span over a null pointer with a nonzero size cannot be made without undefined behaviour.
template <class T>
void check_vector(std::span<T> vector, int64_t expected_size, const char* name) {
  if (static_cast<int64_t>(vector.size()) != expected_size) {
    throw Error(Status::invalid_argument, name,
                "has " + std::to_string(vector.size()) + " elements, expected " + std::to_string(expected_size));
  }
}

// The product of factors, or an Error naming `what` when it does not fit in int64_t.
int64_t checked_product(std::initializer_list<int64_t> factors, const std::string& what);

// conv2d_output_size along one axis of a sliding window (a convolution's or a pooling's), after checking that
// the dilated kernel fits in the padded input; throws naming kernel_name, or "padding (<axis>)" on overflow.
int64_t validated_output_size(int64_t input, int64_t kernel, int64_t stride, int64_t pad_before, int64_t pad_after,
                              int64_t dilation, const char* kernel_name, const char* axis);

}  // namespace convgemm
