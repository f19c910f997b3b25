// Data set checks, seeded shuffling (Fisher-Yates over uniform_below) and mini-batch assembly (one copy per image,
// in parallel over the images).
#include <convgemm/error.hpp>
#include <convgemm/nn/dataset.hpp>
#include <convgemm/nn/init.hpp>

#include "tensor_checks.hpp"

#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <numeric>
#include <string>

namespace convgemm::nn {

ConstTensorView Dataset::batch_view(int64_t first, int64_t count) const {
  if (first < 0 || count < 1 || first > size() - count) {
    throw Error(Status::invalid_argument, "count",
                "images [" + std::to_string(first) + ", " + std::to_string(first + count) +
                    ") are not in the data set of " + std::to_string(size()));
  }
  return {images.data() + first * element_count(sample_shape), batch_shape(count, sample_shape)};
}

void Dataset::validate() const {
  const auto reject = [](const std::string& why) { throw Error(Status::invalid_argument, "dataset", why); };
  if (sample_shape[0] < 1 || sample_shape[1] < 1 || sample_shape[2] < 1) reject("sample shape has an extent < 1");
  if (static_cast<int64_t>(images.size()) != size() * element_count(sample_shape)) {
    reject("holds " + std::to_string(images.size()) + " values, not " + std::to_string(size()) + " images of " +
           std::to_string(element_count(sample_shape)));
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= classes) {
      reject("label " + std::to_string(i) + " is " + std::to_string(labels[i]) + ", not a class in [0, " +
             std::to_string(classes) + ")");
    }
  }
}

std::vector<int64_t> shuffled_indices(int64_t count, std::mt19937_64& rng) {
  require_non_negative(count, "count");
  std::vector<int64_t> indices(static_cast<size_t>(count));
  std::iota(indices.begin(), indices.end(), int64_t{0});
  for (int64_t i = count - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(uniform_below(rng, static_cast<uint64_t>(i) + 1));
    std::swap(indices[static_cast<size_t>(i)], indices[static_cast<size_t>(j)]);
  }
  return indices;
}

void gather_batch(const Dataset& data, std::span<const int64_t> indices, TensorView images, std::span<int64_t> labels) {
  const auto count = static_cast<int64_t>(indices.size());
  if (count < 1) throw Error(Status::invalid_argument, "indices", "is empty");
  check_tensor(images, batch_shape(count, data.sample_shape), "images");
  check_vector(labels, count, "labels");
  for (size_t i = 0; i < indices.size(); ++i) {
    if (indices[i] < 0 || indices[i] >= data.size()) {
      throw Error(Status::invalid_argument, "indices",
                  "indices[" + std::to_string(i) + "] = " + std::to_string(indices[i]) + " is not an image of the " +
                      std::to_string(data.size()));
    }
  }
  const int64_t image_size = element_count(data.sample_shape);
  oneapi::tbb::parallel_for(int64_t{0}, count, [&](int64_t i) {
    const float* from = data.images.data() + indices[static_cast<size_t>(i)] * image_size;
    std::copy(from, from + image_size, images.data + i * image_size);
    labels[static_cast<size_t>(i)] = data.labels[static_cast<size_t>(indices[static_cast<size_t>(i)])];
  });
}

}  // namespace convgemm::nn
