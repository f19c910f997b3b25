// The one exception type of convgemm's C++ API. Every error names the parameter (or tensor, or file) at fault,
// and carries the status the C ABI returns for it, so both APIs report the same thing.
#pragma once

#include <convgemm/export.hpp>

#include <stdexcept>
#include <string>

namespace convgemm {

// Values match convgemm_status in convgemm.h.
enum class Status : int {
  success = 0,
  invalid_argument = 1,  // a parameter or tensor is wrong; the message names it
  unsupported = 2,       // valid, but beyond a limit (e.g. OpenBLAS's 32-bit GEMM dimensions)
  out_of_memory = 3,
  internal_error = 4,
};

class CONVGEMM_CXX_API Error : public std::runtime_error {
 public:
  Error(Status status, std::string parameter, const std::string& message)
      : std::runtime_error("convgemm: " + parameter + ": " + message),
        status_(status),
        parameter_(std::move(parameter)) {}

  Status status() const noexcept { return status_; }
  // The offending parameter, tensor or file, e.g. "kernel_height" or "weights".
  const std::string& parameter() const noexcept { return parameter_; }

 private:
  Status status_;
  std::string parameter_;
};

}  // namespace convgemm
