// An in-memory labelled data set (images and class labels), seeded shuffling, and mini-batch assembly that copies
// each image once, from the data set straight into the batch the model reads.
#pragma once

#include <convgemm/export.hpp>

#include <convgemm/nn/layer.hpp>
#include <convgemm/tensor.hpp>

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace convgemm::nn {

struct CONVGEMM_CXX_API Dataset {
  SampleShape sample_shape{1, 1, 1};  // {C, H, W} of every image
  std::vector<float> images;          // size() images, one after another, each C x H x W
  std::vector<int64_t> labels;        // one class in [0, classes) per image
  int64_t classes = 0;

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  // Images [first, first + count) as a batch, without copying: contiguous samples need no assembly.
  ConstTensorView batch_view(int64_t first, int64_t count) const;
  // Throws convgemm::Error naming "dataset" unless the sizes agree and every label is a class.
  void validate() const;
};

// 0 .. count-1 in a random order: Fisher-Yates, drawing with uniform_below() (init.hpp), so the order depends on the
// generator's state only, whatever the standard library.
CONVGEMM_CXX_API std::vector<int64_t> shuffled_indices(int64_t count, std::mt19937_64& rng);

// Copies the images indices[0], indices[1], ... into images (a batch {indices.size(), sample_shape}) and their labels
// into labels: each image is copied once. Throws convgemm::Error naming the argument for a bad index or size.
CONVGEMM_CXX_API void gather_batch(const Dataset& data, std::span<const int64_t> indices, TensorView images,
                                   std::span<int64_t> labels);

}  // namespace convgemm::nn
