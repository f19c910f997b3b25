// What every file convgemm writes or reads goes through: an atomic write (temporary file in the same directory,
// fsync, rename, fsync of the directory), a whole-file read, and little-endian encoding and bounds-checked decoding.
// Every error is a convgemm::Error naming the file.
#pragma once

#include <convgemm/error.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace convgemm::io {

// Writes bytes to path so that path afterwards holds either its old content or all of bytes, never a part: the
// bytes go to a temporary file next to it, which is flushed to disk and then renamed over path. Throws
// convgemm::Error naming path (and removes the temporary file) when any step fails.
void write_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes);

// The whole file, or convgemm::Error naming path.
std::vector<std::byte> read_file(const std::filesystem::path& path);

// Appends little-endian values to a byte buffer.
class ByteWriter {
 public:
  void u16(uint16_t value) { little_endian(value, 2); }
  void u32(uint32_t value) { little_endian(value, 4); }
  void u64(uint64_t value) { little_endian(value, 8); }
  void i64(int64_t value) { little_endian(static_cast<uint64_t>(value), 8); }
  void raw(std::span<const std::byte> bytes);
  void raw(std::string_view text) { raw(std::as_bytes(std::span(text.data(), text.size()))); }
  // u64 length, then the characters
  void string(std::string_view text) {
    u64(text.size());
    raw(text);
  }
  // u64 count, then each float as its IEEE-754 bits
  void floats(std::span<const float> values);

  std::vector<std::byte>& bytes() { return bytes_; }
  size_t size() const { return bytes_.size(); }

 private:
  void little_endian(uint64_t value, int bytes);
  std::vector<std::byte> bytes_;
};

// Reads little-endian values from a byte buffer; running past its end is an Error naming the file as truncated.
class ByteReader {
 public:
  ByteReader(std::span<const std::byte> bytes, std::string file) : bytes_(bytes), file_(std::move(file)) {}

  uint16_t u16() { return static_cast<uint16_t>(little_endian(2)); }
  uint32_t u32() { return static_cast<uint32_t>(little_endian(4)); }
  uint64_t u64() { return little_endian(8); }
  int64_t i64() { return static_cast<int64_t>(little_endian(8)); }
  std::span<const std::byte> raw(uint64_t count);
  std::string string();
  std::vector<float> floats();

  size_t remaining() const { return bytes_.size() - position_; }
  [[noreturn]] void fail(const std::string& why) const;

 private:
  uint64_t little_endian(int bytes);
  std::span<const std::byte> bytes_;
  size_t position_ = 0;
  std::string file_;
};

// zlib's CRC-32 (the one ZIP and gzip use) of bytes.
uint32_t crc32_of(std::span<const std::byte> bytes);

}  // namespace convgemm::io
