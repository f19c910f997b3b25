// Helpers for the tests of the training layer: float finite differences through the Layer interface, parameter
// snapshots for bitwise comparisons, and a private temporary directory for tests that write files.
//
// Why the finite-difference tolerance is what it is: layers run in float, so L = <dy, f(x)> (a sum of ~100 terms
// of size ~1) carries a rounding error of about 1e-6; the central difference with h = 1e-2 divides that by 2h, giving
// ~1e-4, and its truncation error h^2 f''' / 6 is below 1e-4 for the smooth layers here (and zero for the linear
// ones). 2e-3 * (1 + |g|) is well above both, while a wrong index or a missing factor is off by O(|g|) or more.
// Inputs are spaced at least 0.05 apart (and 0.025 from zero), so no max or ReLU kink lies within h of them.
#pragma once

#include "gradient_check.hpp"

#include <convgemm/nn/layer.hpp>

#include <catch2/catch.hpp>

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace convgemm::testing {

inline std::vector<float> spaced_floats(size_t count, std::mt19937_64& rng, double gap = 0.05) {
  const std::vector<double> values = spaced_doubles(count, rng, gap);
  return {values.begin(), values.end()};
}

inline double dot_in_double(const std::vector<float>& a, const std::vector<float>& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += static_cast<double>(a[i]) * b[i];
  return sum;
}

// Checks analytic[i] against the central difference of loss() at point[i] for every i (point is perturbed in place
// and restored).
template <class Loss>
void check_float_gradient(std::vector<float>& point, const Loss& loss, const std::vector<float>& analytic,
                          const std::string& what) {
  REQUIRE(point.size() == analytic.size());
  constexpr float h = 1e-2f;
  size_t failures = 0;
  for (size_t i = 0; i < point.size(); ++i) {
    const float saved = point[i];
    point[i] = saved + h;
    const double above = loss();
    point[i] = saved - h;
    const double below = loss();
    point[i] = saved;
    const double numeric = (above - below) / (2.0 * h);
    if (std::fabs(numeric - analytic[i]) > 2e-3 * (1 + std::fabs(analytic[i]))) {
      if (++failures <= 5) UNSCOPED_INFO(what << "[" << i << "]: analytic " << analytic[i] << ", numeric " << numeric);
    }
  }
  INFO(what << ": " << failures << " of " << point.size() << " partial derivatives disagree");
  CHECK(failures == 0);
}

// All parameter values of a list of parameters, concatenated: for bitwise comparisons of whole models.
template <class Parameters>
std::vector<float> snapshot(const Parameters& parameters) {
  std::vector<float> all;
  for (const auto* parameter : parameters) all.insert(all.end(), parameter->value.begin(), parameter->value.end());
  return all;
}

// A directory of its own under the system's temporary directory (TMPDIR), named by process id and a counter so that
// concurrent test processes never share it, removed with everything in it when the test ends.
class TemporaryDirectory {
 public:
  TemporaryDirectory() {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("convgemm-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TemporaryDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TemporaryDirectory(const TemporaryDirectory&) = delete;
  TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace convgemm::testing
