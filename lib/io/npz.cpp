// The .npz writer: each array encoded as an .npy (magic, version 1.0, a Python-literal header padded to 64 bytes,
// the raw float32 data), the lot stored in a ZIP archive (local headers, central directory, end record) built in
// memory and written atomically.
#include <convgemm/error.hpp>
#include <convgemm/io/npz.hpp>

#include "file.hpp"

#include <cstring>
#include <set>
#include <string>

namespace convgemm::io {
namespace {

// The NumPy format's description: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
std::vector<std::byte> encode_npy(const NpyArray& array) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < array.shape.size(); ++i) {
    header += std::to_string(array.shape[i]);
    if (array.shape.size() == 1 || i + 1 < array.shape.size()) header += ",";  // (3,) is a tuple, (3) is not
    if (i + 1 < array.shape.size()) header += " ";
  }
  header += "), }";
  // magic (6) + version (2) + header length (2) + header, padded with spaces and ended by a newline to a multiple of
  // 64 bytes, so that the data is aligned.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  ByteWriter npy;
  npy.raw(std::string_view("\x93NUMPY\x01\x00", 8));
  npy.u16(static_cast<uint16_t>(header.size()));
  npy.raw(header);
  const size_t start = npy.size();
  npy.bytes().resize(start + array.data.size() * 4);
  for (size_t i = 0; i < array.data.size(); ++i) {
    uint32_t bits = 0;
    std::memcpy(&bits, &array.data[i], 4);
    for (int b = 0; b < 4; ++b)
      npy.bytes()[start + i * 4 + static_cast<size_t>(b)] = static_cast<std::byte>(bits >> (8 * b));
  }
  return std::move(npy.bytes());
}

// ZIP (PKWARE APPNOTE 6.3): entries stored (method 0), dated 1980-01-01 00:00 (DOS time 0, date 0x21) so that the
// same weights give the same file bit for bit.
constexpr uint16_t zip_version = 20;  // 2.0: what stored entries in directories need
constexpr uint16_t dos_time = 0, dos_date = 0x21;
constexpr uint64_t zip32_limit = 0xFFFFFFFFu;

struct Entry {
  std::string name;
  uint32_t crc;
  uint32_t size;
  uint32_t offset;
};

}  // namespace

void write_npz(const std::filesystem::path& path, std::span<const NpyArray> arrays) {
  std::set<std::string> names;
  for (const NpyArray& array : arrays) {
    int64_t count = 1;
    for (const int64_t extent : array.shape) {
      if (extent < 0 || __builtin_mul_overflow(count, extent, &count)) count = -1;
    }
    if (count != static_cast<int64_t>(array.data.size())) {
      throw Error(
          Status::invalid_argument, "arrays",
          array.name + ": shape holds " + std::to_string(count) + " values, data " + std::to_string(array.data.size()));
    }
    if (array.name.empty() || !names.insert(array.name).second) {
      throw Error(Status::invalid_argument, "arrays", "name '" + array.name + "' is empty or repeated");
    }
  }
  if (arrays.size() > 0xFFFF) throw Error(Status::unsupported, path.string(), "more than 65535 arrays need ZIP64");

  ByteWriter zip;
  std::vector<Entry> entries;
  const auto require_zip32 = [&](uint64_t value) {
    if (value > zip32_limit) throw Error(Status::unsupported, path.string(), "archive past 4 GiB needs ZIP64");
    return static_cast<uint32_t>(value);
  };
  for (const NpyArray& array : arrays) {
    const std::vector<std::byte> npy = encode_npy(array);
    const Entry entry{array.name + ".npy", crc32_of(npy), require_zip32(npy.size()), require_zip32(zip.size())};
    zip.u32(0x04034b50);  // local file header
    zip.u16(zip_version);
    zip.u16(0);  // flags
    zip.u16(0);  // stored
    zip.u16(dos_time);
    zip.u16(dos_date);
    zip.u32(entry.crc);
    zip.u32(entry.size);  // compressed
    zip.u32(entry.size);  // uncompressed
    zip.u16(static_cast<uint16_t>(entry.name.size()));
    zip.u16(0);  // extra field
    zip.raw(entry.name);
    zip.raw(npy);
    entries.push_back(entry);
  }
  const uint32_t directory_offset = require_zip32(zip.size());
  for (const Entry& entry : entries) {
    zip.u32(0x02014b50);   // central directory header
    zip.u16(zip_version);  // made by
    zip.u16(zip_version);  // needed
    zip.u16(0);
    zip.u16(0);
    zip.u16(dos_time);
    zip.u16(dos_date);
    zip.u32(entry.crc);
    zip.u32(entry.size);
    zip.u32(entry.size);
    zip.u16(static_cast<uint16_t>(entry.name.size()));
    zip.u16(0);  // extra field
    zip.u16(0);  // comment
    zip.u16(0);  // disk
    zip.u16(0);  // internal attributes
    zip.u32(0);  // external attributes
    zip.u32(entry.offset);
    zip.raw(entry.name);
  }
  const uint32_t directory_size = require_zip32(zip.size() - directory_offset);
  zip.u32(0x06054b50);  // end of central directory
  zip.u16(0);
  zip.u16(0);
  zip.u16(static_cast<uint16_t>(entries.size()));
  zip.u16(static_cast<uint16_t>(entries.size()));
  zip.u32(directory_size);
  zip.u32(directory_offset);
  zip.u16(0);  // comment
  write_file_atomically(path, zip.bytes());
}

void export_npz(const std::filesystem::path& path, const nn::Sequential& model) {
  std::vector<NpyArray> arrays;
  for (int64_t i = 0; i < model.size(); ++i) {
    for (const nn::Parameter& parameter : model.layer(i).parameters()) {
      arrays.push_back({std::to_string(i) + "." + parameter.name, parameter.shape, parameter.value});
    }
  }
  write_npz(path, arrays);
}

}  // namespace convgemm::io
