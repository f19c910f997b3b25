// Softmax + cross-entropy and sigmoid + binary cross-entropy: argument checks (labels and targets included), then
// one deterministic parallel reduction that sums the loss and writes the gradient in the same pass.
// Templated once over the element type (float, double); losses are always accumulated in double.
#include <convgemm/error.hpp>
#include <convgemm/loss.hpp>

#include "kernels/sigmoid.hpp"
#include "tensor_checks.hpp"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_reduce.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>

namespace convgemm {
namespace {

// Work per task of the reductions. Fixed, so the blocks and the order their sums are added in depend on the size
// only: parallel_deterministic_reduce then gives the same bits for any thread count.
constexpr int64_t rows_per_task = 64;
constexpr int64_t elements_per_task = 4096;

// sum over i in [0, count) of term(i), blocked and added in a fixed order.
template <class Term>
double deterministic_sum(int64_t count, int64_t grain, const Term& term) {
  return oneapi::tbb::parallel_deterministic_reduce(
      oneapi::tbb::blocked_range<int64_t>(0, count, static_cast<size_t>(grain)), 0.0,
      [&](const oneapi::tbb::blocked_range<int64_t>& range, double sum) {
        for (int64_t i = range.begin(); i < range.end(); ++i) sum += term(i);
        return sum;
      },
      std::plus<double>());
}

// The logits define the problem's shape, so they are checked for a shape at all: every extent positive (and the
// trailing two 1 when the logits must be an N x K matrix), the size representable.
template <class T>
void check_logits(BasicTensorView<const T> logits, bool matrix) {
  if (logits.data == nullptr) throw Error(Status::invalid_argument, "logits", "data pointer is null");
  const Shape4& s = logits.shape;
  const bool positive = std::all_of(s.begin(), s.end(), [](int64_t extent) { return extent > 0; });
  if (!positive || (matrix && (s[2] != 1 || s[3] != 1))) {
    throw Error(Status::invalid_argument, "logits",
                "shape " + to_string(s) + (matrix ? " is not {N, K, 1, 1} with N, K >= 1" : " has an extent < 1"));
  }
  checked_product({s[0], s[1], s[2], s[3], int64_t{sizeof(double)}}, "logits size");
}

// Whether the caller asked for the gradient: an empty view (the default argument) means no.
template <class T>
bool wants_gradient(BasicTensorView<T> logits_grad, const Shape4& shape) {
  if (logits_grad.data == nullptr && logits_grad.shape == Shape4{}) return false;
  check_tensor(logits_grad, shape, "logits_grad");
  return true;
}

// L = (1/N) sum_n [ m_n + log sum_j exp(z[n,j] - m_n) - z[n, label_n] ],  m_n = max_j z[n,j]
// dL/dz[n,j] = (exp(z[n,j] - m_n) / sum_j exp(z[n,j] - m_n) - [j == label_n]) / N
template <class T>
double fused_softmax_cross_entropy(BasicTensorView<const T> logits, std::span<const int64_t> labels,
                                   BasicTensorView<T> logits_grad) {
  check_logits(logits, true);
  const int64_t N = logits.shape[0], K = logits.shape[1];
  if (static_cast<int64_t>(labels.size()) != N) {
    throw Error(Status::invalid_argument, "labels",
                "has " + std::to_string(labels.size()) + " elements, expected one per sample: " + std::to_string(N));
  }
  for (size_t n = 0; n < labels.size(); ++n) {
    if (labels[n] < 0 || labels[n] >= K) {
      throw Error(Status::invalid_argument, "labels",
                  "labels[" + std::to_string(n) + "] = " + std::to_string(labels[n]) + " is not a class in [0, " +
                      std::to_string(K) + ")");
    }
  }
  const bool gradient = wants_gradient(logits_grad, logits.shape);

  const double total = deterministic_sum(N, rows_per_task, [&](int64_t n) {
    const T* z = logits.data + n * K;
    const auto label = labels[static_cast<size_t>(n)];
    const double max = *std::max_element(z, z + K);
    double sum = 0;
    for (int64_t j = 0; j < K; ++j) sum += std::exp(z[j] - max);
    if (gradient) {
      T* dz = logits_grad.data + n * K;
      for (int64_t j = 0; j < K; ++j) {
        const double probability = std::exp(z[j] - max) / sum;
        dz[j] = static_cast<T>((probability - (j == label ? 1.0 : 0.0)) / static_cast<double>(N));
      }
    }
    return std::log(sum) - (z[label] - max);
  });
  return total / static_cast<double>(N);
}

// L = (1/M) sum_i [ max(z_i, 0) - z_i y_i + log1p(exp(-|z_i|)) ],  dL/dz_i = (sigmoid(z_i) - y_i) / M
template <class T>
double fused_sigmoid_binary_cross_entropy(BasicTensorView<const T> logits, BasicTensorView<const T> targets,
                                          BasicTensorView<T> logits_grad) {
  check_logits(logits, false);
  check_tensor(targets, logits.shape, "targets");
  const int64_t M = logits.size();
  for (int64_t i = 0; i < M; ++i) {
    const T y = targets.data[i];
    if (!(y >= T{0} && y <= T{1})) {  // NaN fails too
      throw Error(Status::invalid_argument, "targets",
                  "targets[" + std::to_string(i) + "] = " + std::to_string(y) + " is outside [0, 1]");
    }
  }
  const bool gradient = wants_gradient(logits_grad, logits.shape);

  const T count = static_cast<T>(M);
  const double total = deterministic_sum(M, elements_per_task, [&](int64_t i) {
    const T z = logits.data[i], y = targets.data[i];
    if (gradient) logits_grad.data[i] = (kernels::sigmoid(z) - y) / count;
    const double zd = z;
    return std::max(zd, 0.0) - zd * static_cast<double>(y) + std::log1p(std::exp(-std::fabs(zd)));
  });
  return total / static_cast<double>(M);
}

}  // namespace

double softmax_cross_entropy(ConstTensorView logits, std::span<const int64_t> labels, TensorView logits_grad) {
  return fused_softmax_cross_entropy<float>(logits, labels, logits_grad);
}
double softmax_cross_entropy(ConstTensorViewF64 logits, std::span<const int64_t> labels, TensorViewF64 logits_grad) {
  return fused_softmax_cross_entropy<double>(logits, labels, logits_grad);
}
double sigmoid_binary_cross_entropy(ConstTensorView logits, ConstTensorView targets, TensorView logits_grad) {
  return fused_sigmoid_binary_cross_entropy<float>(logits, targets, logits_grad);
}
double sigmoid_binary_cross_entropy(ConstTensorViewF64 logits, ConstTensorViewF64 targets, TensorViewF64 logits_grad) {
  return fused_sigmoid_binary_cross_entropy<double>(logits, targets, logits_grad);
}

}  // namespace convgemm
