// Shape printing and overflow-checked size arithmetic, shared by all operators.
#include "tensor_checks.hpp"

namespace convgemm {

std::string to_string(const Shape4& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(shape[i]);
  }
  return text + "]";
}

void require_positive(int64_t value, const char* name) {
  if (value < 1) throw Error(Status::invalid_argument, name, "must be positive, got " + std::to_string(value));
}

void require_non_negative(int64_t value, const char* name) {
  if (value < 0) throw Error(Status::invalid_argument, name, "must not be negative, got " + std::to_string(value));
}

int64_t checked_product(std::initializer_list<int64_t> factors, const std::string& what) {
  int64_t product = 1;
  for (const int64_t factor : factors) {
    if (__builtin_mul_overflow(product, factor, &product)) {
      throw Error(Status::invalid_argument, what, "size overflows 64 bits");
    }
  }
  return product;
}

}  // namespace convgemm
