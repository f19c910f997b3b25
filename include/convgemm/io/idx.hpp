// A reader for the IDX format of MNIST and Fashion-MNIST, gzip-compressed or raw, and a loader that turns an
// images file and a labels file into an in-memory data set.
//
// IDX: a big-endian header (two zero bytes, a type byte, the number of dimensions d, then d 32-bit sizes) followed
// by the values, row-major. MNIST-style files hold unsigned bytes (type 0x08): images N x rows x columns, labels N.
#pragma once

#include <convgemm/export.hpp>

#include <convgemm/nn/dataset.hpp>

#include <cstdint>
#include <filesystem>
#include <vector>

namespace convgemm::io {

struct CONVGEMM_CXX_API IdxArray {
  std::vector<int64_t> dimensions;
  std::vector<uint8_t> data;  // product(dimensions) values
};

// Reads an unsigned-byte IDX file, gzip-compressed (recognised by its content, not its name) or raw. Throws
// convgemm::Error naming the file when it cannot be read, its magic is not an IDX one (Status::unsupported for
// IDX types other than unsigned bytes), it is truncated, it has bytes after the data, or its gzip stream is corrupt.
CONVGEMM_CXX_API IdxArray read_idx(const std::filesystem::path& path);

// Images (N x rows x columns) and labels (N), each file as read_idx reads it, as a data set of 1 x rows x columns
// samples scaled to [0, 1] (byte / 255) and classes = the largest label + 1. Throws convgemm::Error naming the file
// for the errors of read_idx, for dimensions that are not those, and (naming the labels file) when the counts differ.
CONVGEMM_CXX_API nn::Dataset load_idx_dataset(const std::filesystem::path& images, const std::filesystem::path& labels);

}  // namespace convgemm::io
