// The checks that convolution and transposed convolution parameters share (sizes, strides, dilations, padding,
// groups), written once for both params structs, which name those fields alike.
#pragma once

#include "tensor_checks.hpp"

#include <string>

namespace convgemm {

template <class Params>
void check_convolution_params(const Params& p) {
  require_positive(p.batch, "batch");
  require_positive(p.in_channels, "in_channels");
  require_positive(p.in_height, "in_height");
  require_positive(p.in_width, "in_width");
  require_positive(p.out_channels, "out_channels");
  require_positive(p.kernel_height, "kernel_height");
  require_positive(p.kernel_width, "kernel_width");
  require_positive(p.stride.height, "stride.height");
  require_positive(p.stride.width, "stride.width");
  require_positive(p.dilation.height, "dilation.height");
  require_positive(p.dilation.width, "dilation.width");
  require_positive(p.groups, "groups");
  require_non_negative(p.padding.top, "padding.top");
  require_non_negative(p.padding.bottom, "padding.bottom");
  require_non_negative(p.padding.left, "padding.left");
  require_non_negative(p.padding.right, "padding.right");
  if (p.in_channels % p.groups != 0) {
    throw Error(Status::invalid_argument, "in_channels",
                std::to_string(p.in_channels) + " is not divisible by groups " + std::to_string(p.groups));
  }
  if (p.out_channels % p.groups != 0) {
    throw Error(Status::invalid_argument, "out_channels",
                std::to_string(p.out_channels) + " is not divisible by groups " + std::to_string(p.groups));
  }
}

}  // namespace convgemm
