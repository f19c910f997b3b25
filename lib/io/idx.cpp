// The IDX reader: zlib's gzread, which reads gzip streams and passes raw files through unchanged, then the header
// checks, exactly the data's size (no less: truncated; no more: trailing bytes), and the data set loader.
#include <convgemm/error.hpp>
#include <convgemm/io/idx.hpp>

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

namespace convgemm::io {
namespace {

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& why,
                       Status status = Status::invalid_argument) {
  throw Error(status, path.string(), why);
}

// A gzFile that closes itself.
class GzipFile {
 public:
  explicit GzipFile(const std::filesystem::path& path) : path_(path), file_(gzopen(path.c_str(), "rb")) {
    if (file_ == nullptr)
      fail(path, std::string("cannot open: ") + (errno != 0 ? std::strerror(errno) : "out of memory"));
    gzbuffer(file_, 1 << 17);
  }
  ~GzipFile() { gzclose(file_); }
  GzipFile(const GzipFile&) = delete;
  GzipFile& operator=(const GzipFile&) = delete;

  // Reads up to size bytes; returns how many there were. A corrupt gzip stream is an Error.
  size_t read(void* destination, size_t size) {
    auto* out = static_cast<unsigned char*>(destination);
    size_t total = 0;
    while (total < size) {
      // gzread takes and returns int-sized counts.
      const auto piece = static_cast<unsigned>(std::min<size_t>(size - total, size_t{1} << 30));
      const int got = gzread(file_, out + total, piece);
      if (got < 0) {
        int code = 0;
        fail(path_, std::string("is not a valid gzip stream: ") + gzerror(file_, &code));
      }
      if (got == 0) break;
      total += static_cast<size_t>(got);
    }
    // A stream that ends early reports it as an error after the last bytes.
    int code = 0;
    gzerror(file_, &code);
    if (code != Z_OK && code != Z_BUF_ERROR)
      fail(path_, std::string("is not a valid gzip stream: ") + gzerror(file_, &code));
    return total;
  }

 private:
  std::filesystem::path path_;
  gzFile file_;
};

uint32_t big_endian(const unsigned char* bytes) {
  return uint32_t{bytes[0]} << 24 | uint32_t{bytes[1]} << 16 | uint32_t{bytes[2]} << 8 | uint32_t{bytes[3]};
}

}  // namespace

IdxArray read_idx(const std::filesystem::path& path) {
  GzipFile file(path);
  unsigned char magic[4] = {};
  if (file.read(magic, 4) < 4) fail(path, "is truncated: shorter than the 4-byte IDX magic");
  char magic_text[16];
  std::snprintf(magic_text, sizeof magic_text, "0x%08x", big_endian(magic));
  if (magic[0] != 0 || magic[1] != 0 || magic[3] == 0) {
    fail(path, std::string("bad magic ") + magic_text + ": not an IDX file (expected 0x0000 <type> <dimensions>)");
  }
  if (magic[2] != 0x08) {
    fail(path,
         std::string("magic ") + magic_text +
             ": IDX data of another type than unsigned bytes (0x08) is not "
             "supported",
         Status::unsupported);
  }
  IdxArray array;
  int64_t count = 1;
  for (int d = 0; d < magic[3]; ++d) {
    unsigned char size[4];
    if (file.read(size, 4) < 4) fail(path, "is truncated: the header ends before dimension " + std::to_string(d));
    const auto extent = static_cast<int64_t>(big_endian(size));
    array.dimensions.push_back(extent);
    // 32-bit extents, at most 255 of them: the product can overflow only past 2^63, which no file reaches.
    if (__builtin_mul_overflow(count, extent, &count)) fail(path, "header sizes overflow 64 bits");
  }
  array.data.resize(static_cast<size_t>(count));
  const size_t got = file.read(array.data.data(), array.data.size());
  if (got < array.data.size()) {
    fail(path, "is truncated: the header announces " + std::to_string(count) + " values, the file holds " +
                   std::to_string(got));
  }
  unsigned char extra = 0;
  if (file.read(&extra, 1) != 0)
    fail(path, "has bytes after the " + std::to_string(count) + " values its header announces");
  return array;
}

nn::Dataset load_idx_dataset(const std::filesystem::path& images_path, const std::filesystem::path& labels_path) {
  const IdxArray images = read_idx(images_path);
  const IdxArray labels = read_idx(labels_path);
  if (images.dimensions.size() != 3) {
    fail(images_path, "holds " + std::to_string(images.dimensions.size()) +
                          "-dimensional data, not images (count x rows x columns)");
  }
  if (labels.dimensions.size() != 1) {
    fail(labels_path, "holds " + std::to_string(labels.dimensions.size()) + "-dimensional data, not labels (count)");
  }
  if (labels.dimensions[0] != images.dimensions[0]) {
    fail(labels_path, "holds " + std::to_string(labels.dimensions[0]) + " labels, but " + images_path.string() +
                          " holds " + std::to_string(images.dimensions[0]) + " images");
  }
  nn::Dataset data;
  data.sample_shape = {1, images.dimensions[1], images.dimensions[2]};
  data.images.resize(images.data.size());
  std::transform(images.data.begin(), images.data.end(), data.images.begin(),
                 [](uint8_t value) { return static_cast<float>(value) / 255.0f; });
  data.labels.assign(labels.data.begin(), labels.data.end());
  data.classes = labels.data.empty() ? 0 : *std::max_element(labels.data.begin(), labels.data.end()) + 1;
  return data;
}

}  // namespace convgemm::io
