// The atomic write (POSIX: mkstemp, write, fsync, rename, fsync of the directory), the whole-file read, the
// little-endian encoder and decoder, and zlib's CRC-32 over buffers of any size.
#include "file.hpp"

#include <zlib.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <utility>

namespace convgemm::io {
namespace {

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& why) {
  throw Error(Status::invalid_argument, path.string(), why);
}

std::string system_error(const std::string& what) { return what + ": " + std::strerror(errno); }

// Closes the descriptor and, unless released, removes the temporary file it was opened for.
class TemporaryFile {
 public:
  explicit TemporaryFile(std::string name) : name_(std::move(name)) {}
  ~TemporaryFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!kept_) ::unlink(name_.c_str());
  }
  TemporaryFile(const TemporaryFile&) = delete;
  TemporaryFile& operator=(const TemporaryFile&) = delete;

  int& fd() { return fd_; }
  std::string& name() { return name_; }
  void keep() { kept_ = true; }

 private:
  std::string name_;
  int fd_ = -1;
  bool kept_ = false;
};

}  // namespace

void write_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  if (path.filename().empty()) fail(path, "is not a file name");
  const std::filesystem::path directory = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  // In the same directory, so that the rename cannot cross file systems and is atomic.
  std::string name = ".";  // appended, not "." + name: GCC 12 warns falsely (-Wrestrict) about that operator+
  name += path.filename().string();
  name += ".tmp-XXXXXX";
  TemporaryFile temporary((directory / name).string());
  temporary.fd() = ::mkstemp(temporary.name().data());
  if (temporary.fd() < 0) {
    temporary.keep();  // nothing was created
    fail(path, system_error("cannot create a temporary file in " + directory.string()));
  }
  // mkstemp makes the file private (0600); what we write is data for others to read.
  if (::fchmod(temporary.fd(), 0644) != 0) fail(path, system_error("cannot set the permissions"));
  for (size_t written = 0; written < bytes.size();) {
    const ssize_t result = ::write(temporary.fd(), bytes.data() + written, bytes.size() - written);
    if (result < 0 && errno == EINTR) continue;
    if (result <= 0) fail(path, system_error("cannot write " + temporary.name()));
    written += static_cast<size_t>(result);
  }
  // The data must be on disk before the rename makes it visible under the real name.
  if (::fsync(temporary.fd()) != 0) fail(path, system_error("cannot flush " + temporary.name()));
  const int fd = std::exchange(temporary.fd(), -1);
  if (::close(fd) != 0) fail(path, system_error("cannot close " + temporary.name()));
  if (::rename(temporary.name().c_str(), path.c_str()) != 0)
    fail(path, system_error("cannot rename the temporary file"));
  temporary.keep();
  // And the rename itself must reach the disk, or a crash could bring back the old file.
  const int directory_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY);
  if (directory_fd >= 0) {
    ::fsync(directory_fd);
    ::close(directory_fd);
  }
}

std::vector<std::byte> read_file(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) fail(path, system_error("cannot open"));
  file.seekg(0, std::ios::end);
  const std::streamoff size = file.tellg();
  if (size < 0) fail(path, "cannot determine its size");
  file.seekg(0, std::ios::beg);
  std::vector<std::byte> bytes(static_cast<size_t>(size));
  file.read(reinterpret_cast<char*>(bytes.data()), size);
  if (!file) fail(path, system_error("cannot read"));
  return bytes;
}

void ByteWriter::little_endian(uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) bytes_.push_back(static_cast<std::byte>(value >> (8 * i)));
}

void ByteWriter::raw(std::span<const std::byte> bytes) {
  // resize + memcpy rather than insert: GCC 12 warns falsely (-Wstringop-overflow) about insert into an empty vector.
  const size_t start = bytes_.size();
  bytes_.resize(start + bytes.size());
  if (!bytes.empty()) std::memcpy(bytes_.data() + start, bytes.data(), bytes.size());
}

void ByteWriter::floats(std::span<const float> values) {
  u64(values.size());
  const size_t start = bytes_.size();
  bytes_.resize(start + values.size() * 4);
  for (size_t i = 0; i < values.size(); ++i) {
    uint32_t bits = 0;
    std::memcpy(&bits, &values[i], 4);
    for (int b = 0; b < 4; ++b)
      bytes_[start + i * 4 + static_cast<size_t>(b)] = static_cast<std::byte>(bits >> (8 * b));
  }
}

void ByteReader::fail(const std::string& why) const { throw Error(Status::invalid_argument, file_, why); }

std::span<const std::byte> ByteReader::raw(uint64_t count) {
  if (count > remaining()) {
    fail("is truncated: " + std::to_string(count) + " bytes needed at offset " + std::to_string(position_) + ", " +
         std::to_string(remaining()) + " left");
  }
  const auto bytes = bytes_.subspan(position_, static_cast<size_t>(count));
  position_ += static_cast<size_t>(count);
  return bytes;
}

uint64_t ByteReader::little_endian(int bytes) {
  const auto data = raw(static_cast<uint64_t>(bytes));
  uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value |= static_cast<uint64_t>(data[static_cast<size_t>(i)]) << (8 * i);
  return value;
}

std::string ByteReader::string() {
  const auto data = raw(u64());
  return {reinterpret_cast<const char*>(data.data()), data.size()};
}

std::vector<float> ByteReader::floats() {
  const uint64_t count = u64();
  if (count > remaining() / 4) {
    fail("is truncated: " + std::to_string(count) + " floats needed at offset " + std::to_string(position_) + ", " +
         std::to_string(remaining()) + " bytes left");
  }
  const auto data = raw(count * 4);
  std::vector<float> values(static_cast<size_t>(count));
  for (size_t i = 0; i < values.size(); ++i) {
    uint32_t bits = 0;
    for (int b = 0; b < 4; ++b) bits |= static_cast<uint32_t>(data[i * 4 + static_cast<size_t>(b)]) << (8 * b);
    std::memcpy(&values[i], &bits, 4);
  }
  return values;
}

uint32_t crc32_of(std::span<const std::byte> bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  // zlib takes 32-bit lengths: feed large buffers in pieces.
  constexpr size_t piece = size_t{1} << 30;
  for (size_t offset = 0; offset < bytes.size(); offset += piece) {
    const size_t length = std::min(piece, bytes.size() - offset);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + offset), static_cast<uInt>(length));
  }
  return static_cast<uint32_t>(crc);
}

}  // namespace convgemm::io
