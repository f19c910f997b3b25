// Checkpoints: everything a training run needs to continue exactly where it stopped (the model's weights and random
// state, the optimiser's state, the epoch and the shuffling generator), written atomically with a checksum and
// loaded all or nothing.
//
// The file (little-endian): the 8-byte magic "CVGMCKPT", a u32 format version (1), a u64 payload size, the payload,
// and the CRC-32 (zlib's) of everything before it. The payload holds the epoch; the generator's state in the
// standard's text form; per layer its type, random state and parameters (name, shape, values); the optimiser's type,
// step count and buffers.
#pragma once

#include <convgemm/export.hpp>

#include <convgemm/nn/optimizer.hpp>
#include <convgemm/nn/sequential.hpp>
#include <convgemm/nn/train.hpp>

#include <filesystem>

namespace convgemm::io {

// Writes the checkpoint atomically: a temporary file in the same directory, fsync, rename, fsync of the directory.
// Throws convgemm::Error naming the file when it cannot be written; the old file, if any, is then left as it was.
CONVGEMM_CXX_API void save_checkpoint(const std::filesystem::path& path, const nn::Sequential& model,
                                      const nn::Optimizer& optimizer, const nn::TrainingProgress& progress);

// Loads a checkpoint into model and optimizer (which must have the architecture and type that wrote it) and returns
// the progress to continue from. The whole file is read and checked (size, checksum, structure, fit to the model and
// the optimiser) before anything is changed: on any error, a convgemm::Error naming the file, model and optimizer are
// left exactly as they were.
CONVGEMM_CXX_API nn::TrainingProgress load_checkpoint(const std::filesystem::path& path, nn::Sequential& model,
                                                      nn::Optimizer& optimizer);

}  // namespace convgemm::io
