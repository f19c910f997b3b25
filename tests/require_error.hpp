// require_error: the one check every bad-input test makes. The call must throw convgemm::Error with the expected
// status, naming the expected parameter both in parameter() and in the message a user reads.
#pragma once

#include <convgemm/error.hpp>

#include <catch2/catch.hpp>

#include <functional>
#include <string>

namespace convgemm::testing {

inline void require_error(const std::function<void()>& call, Status status, const std::string& parameter) {
  try {
    call();
  } catch (const Error& error) {
    INFO(error.what());
    CHECK(error.status() == status);
    CHECK(error.parameter() == parameter);
    CHECK(std::string(error.what()).find(parameter) != std::string::npos);
    return;
  }
  FAIL("no convgemm::Error thrown; expected one naming " << parameter);
}

}  // namespace convgemm::testing
