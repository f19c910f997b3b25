// Weight export to NumPy's .npz: a ZIP archive of .npy arrays, which numpy.load opens without convgemm, and whose
// names and layouts are those of a PyTorch nn.Sequential's state_dict, so that torch.from_numpy + load_state_dict
// takes them directly.
//
// Each array is a version 1.0 .npy file (little-endian float32, C order) stored uncompressed in the archive; the ZIP
// headers and their CRC-32s are written here, with zlib's crc32. Archives past ZIP's 32-bit limits (4 GiB, 65535
// entries) would need ZIP64, which is not implemented: they are refused with Status::unsupported.
#pragma once

#include <convgemm/export.hpp>

#include <convgemm/nn/sequential.hpp>

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace convgemm::io {

struct CONVGEMM_CXX_API NpyArray {
  std::string name;            // the key numpy.load gives it (the archive entry is name + ".npy")
  std::vector<int64_t> shape;  // product = data.size()
  std::span<const float> data;
};

// Writes the arrays as an .npz, atomically (see checkpoint.hpp). Throws convgemm::Error naming the file when it
// cannot be written, or naming "arrays" for a shape that does not match its data or a name that is empty or repeated.
CONVGEMM_CXX_API void write_npz(const std::filesystem::path& path, std::span<const NpyArray> arrays);

// Every parameter of the model as "<layer index>.<parameter name>", e.g. "0.weight", "0.bias", "7.weight": the
// keys of the state_dict of a torch.nn.Sequential with the same layers (ReLU, pooling, Flatten and Dropout take
// indices there too), in PyTorch's shapes (conv K x C/G x R x S, Linear K x C).
CONVGEMM_CXX_API void export_npz(const std::filesystem::path& path, const nn::Sequential& model);

}  // namespace convgemm::io
