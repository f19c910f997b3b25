// Losses fused with the activation in front of them: softmax + cross-entropy (classification over K classes) and
// sigmoid + binary cross-entropy (one or more yes/no outputs). Each returns the mean loss and writes dL/dlogits.
//
// Fusing is what makes them exact and stable: the gradient of the pair collapses to (probabilities - targets) / count,
// and the loss is computed from the logits by forms that never overflow or take log(0), however large the logits.
// Each call checks every argument (labels and targets included) before writing anything; the loss is summed in
// double over fixed blocks in a fixed order (oneTBB's deterministic reduce), so it is bitwise the same for any
// thread count. Float and double overloads; the double ones drive the finite-difference checks.
#pragma once

#include <convgemm/export.hpp>

#include <convgemm/tensor.hpp>

#include <cstdint>
#include <span>

namespace convgemm {

// logits: {N, K, 1, 1} (Dense's output), one row of K class scores z per sample; labels: N class indices in [0, K).
//   L = (1/N) sum_n [ log sum_j exp(z[n,j]) - z[n, label_n] ],  the log-sum-exp taken as m + log sum_j exp(z - m)
//       with m = max_j z[n,j], so that no exponential overflows;
//   dL/dz[n,j] = (softmax(z[n])_j - [j == label_n]) / N.
// Returns L and, when logits_grad is given (it may be left empty), writes dL/dz there.
CONVGEMM_CXX_API double softmax_cross_entropy(ConstTensorView logits, std::span<const int64_t> labels,
                                              TensorView logits_grad = {});
CONVGEMM_CXX_API double softmax_cross_entropy(ConstTensorViewF64 logits, std::span<const int64_t> labels,
                                              TensorViewF64 logits_grad = {});

// logits z and targets y of the same shape, any shape; y in [0, 1] (soft targets allowed). With A = sigmoid(z) and
// M the number of elements (the batch N for one output per sample):
//   L = (1/M) sum -[y log A + (1 - y) log(1 - A)] = (1/M) sum [ max(z, 0) - z y + log1p(exp(-|z|)) ]
//   dL/dz = (A - y) / M: the sigmoid's derivative A (1 - A) cancels the cross-entropy's denominators (seed 002).
// Returns L and, when logits_grad is given (it may be left empty), writes dL/dz there.
CONVGEMM_CXX_API double sigmoid_binary_cross_entropy(ConstTensorView logits, ConstTensorView targets,
                                                     TensorView logits_grad = {});
CONVGEMM_CXX_API double sigmoid_binary_cross_entropy(ConstTensorViewF64 logits, ConstTensorViewF64 targets,
                                                     TensorViewF64 logits_grad = {});

}  // namespace convgemm
