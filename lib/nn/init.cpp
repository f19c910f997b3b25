// The draws of init.hpp, written out so that they are the same with every standard library, and He / Glorot
// initialisation on top of them.
#include <convgemm/error.hpp>
#include <convgemm/nn/init.hpp>

#include <cmath>
#include <numbers>

namespace convgemm::nn {

double uniform_double(std::mt19937_64& rng) { return std::ldexp(static_cast<double>(rng() >> 11), -53); }

double standard_normal(std::mt19937_64& rng) {
  // 1 - u1 is in (0, 1], so the logarithm is finite.
  const double u1 = uniform_double(rng), u2 = uniform_double(rng);
  return std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound) {
  // Rejecting the 2^64 mod bound smallest draws leaves a multiple of bound equally likely values, so the remainder
  // is uniform (OpenBSD's arc4random_uniform).
  const uint64_t threshold = (0 - bound) % bound;
  uint64_t draw = rng();
  while (draw < threshold) draw = rng();
  return draw % bound;
}

void initialize_parameter(Parameter& parameter, Initializer scheme, std::mt19937_64& rng) {
  if (parameter.is_bias && scheme != Initializer::torch_uniform) {
    std::fill(parameter.value.begin(), parameter.value.end(), 0.0f);
    return;
  }
  if (parameter.fan_in <= 0) {
    throw Error(Status::invalid_argument, "fan_in",
                "of parameter '" + parameter.name + "' is " + std::to_string(parameter.fan_in) +
                    ": initialisation scales by it, so it must be positive");
  }
  const auto fan_in = static_cast<double>(parameter.fan_in);
  const auto fan_sum = static_cast<double>(parameter.fan_in + parameter.fan_out);
  const bool normal = scheme == Initializer::he_normal || scheme == Initializer::glorot_normal;
  // The variance each scheme asks for; a uniform U(-a, a) has variance a^2 / 3.
  const double variance = scheme == Initializer::torch_uniform                                    ? 1.0 / (3.0 * fan_in)
                          : scheme == Initializer::he_normal || scheme == Initializer::he_uniform ? 2.0 / fan_in
                                                                                                  : 2.0 / fan_sum;
  const double scale = normal ? std::sqrt(variance) : std::sqrt(3.0 * variance);
  for (float& value : parameter.value) {
    value = static_cast<float>(normal ? scale * standard_normal(rng) : scale * (2.0 * uniform_double(rng) - 1.0));
  }
}

}  // namespace convgemm::nn
