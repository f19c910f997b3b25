// Seeded, reproducible random numbers for training: weight initialisation (He, Glorot), and the uniform, normal and
// bounded-integer draws that initialisation and shuffling are built from.
//
// Everything draws from std::mt19937_64, whose output sequence the C++ standard fixes for a given seed. The standard
// library's distributions are not fixed (each implementation has its own algorithm), so none is used: a uniform
// double is the generator's top 53 bits / 2^53, a normal one the Box-Muller transform of two uniforms, an integer
// below n the remainder of a draw after rejecting the few draws that would bias it. The same seed therefore gives
// the same weights and the same shuffles with any compiler, standard library or thread count.
#pragma once

#include <convgemm/export.hpp>

#include <convgemm/nn/layer.hpp>

#include <cstdint>
#include <random>

namespace convgemm::nn {

// Uniform in [0, 1): the top 53 bits of one draw.
CONVGEMM_CXX_API double uniform_double(std::mt19937_64& rng);
// Standard normal: sqrt(-2 ln(1 - u1)) * cos(2 pi u2) from two uniform draws (the sine half is not kept, so every
// call consumes exactly two draws).
CONVGEMM_CXX_API double standard_normal(std::mt19937_64& rng);
// Uniform in [0, bound), unbiased; bound >= 1.
CONVGEMM_CXX_API uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound);

// Weight initialisation schemes. n_in and n_out are a parameter's fan_in and fan_out.
enum class Initializer {
  he_normal,       // N(0, 2 / n_in): for layers followed by ReLU (He et al. 2015)
  he_uniform,      // U(-a, a), a = sqrt(6 / n_in): the same variance
  glorot_normal,   // N(0, 2 / (n_in + n_out)): for tanh / sigmoid (Glorot and Bengio 2010)
  glorot_uniform,  // U(-a, a), a = sqrt(6 / (n_in + n_out))
  // PyTorch's default for Conv2d and Linear (kaiming_uniform with a = sqrt(5)): U(-a, a), a = 1 / sqrt(n_in), for
  // weights and biases alike. A third of He's variance; recipes tuned on PyTorch expect it.
  torch_uniform,
};

// Fills a parameter from the scheme, element by element in order, drawing from rng. He and Glorot set biases to
// zero without drawing; torch_uniform draws them too.
CONVGEMM_CXX_API void initialize_parameter(Parameter& parameter, Initializer scheme, std::mt19937_64& rng);

}  // namespace convgemm::nn
