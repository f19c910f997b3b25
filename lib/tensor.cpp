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
