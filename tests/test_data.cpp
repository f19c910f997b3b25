// Data: IDX files the tests write themselves (raw and gzipped) read back into a data set, every kind of bad file
// rejected naming the file, seeded shuffling, and mini-batch assembly.
#include "nn_test_helpers.hpp"
#include "require_error.hpp"

#include <convgemm/io/idx.hpp>
#include <convgemm/nn/dataset.hpp>

#include <zlib.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

using namespace convgemm;
using convgemm::testing::require_error;
using convgemm::testing::TemporaryDirectory;

namespace {

using Bytes = std::vector<unsigned char>;

// An IDX file's bytes: magic 0x0000 <type> <dims>, big-endian sizes, then the values.
Bytes idx_bytes(const std::vector<uint32_t>& dimensions, const Bytes& values, unsigned char type = 0x08) {
  Bytes bytes = {0, 0, type, static_cast<unsigned char>(dimensions.size())};
  for (const uint32_t d : dimensions)
    for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<unsigned char>(d >> shift));
  bytes.insert(bytes.end(), values.begin(), values.end());
  return bytes;
}

void write_raw(const std::filesystem::path& path, const Bytes& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

void write_gzip(const std::filesystem::path& path, const Bytes& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  REQUIRE(file != nullptr);
  REQUIRE(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
  REQUIRE(gzclose(file) == Z_OK);
}

Bytes read_raw(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(file), {});
}

// Three 2x3 images with pixel values 10*i + j and labels 2, 0, 1.
const Bytes image_values = {0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 20, 21, 22, 23, 24, 255};
const Bytes label_values = {2, 0, 1};

}  // namespace

TEST_CASE("idx: raw and gzipped files load into the same data set", "[idx]") {
  TemporaryDirectory directory;
  const auto images = idx_bytes({3, 2, 3}, image_values), labels = idx_bytes({3}, label_values);
  write_raw(directory / "images", images);
  write_raw(directory / "labels", labels);
  write_gzip(directory / "images.gz", images);
  write_gzip(directory / "labels.gz", labels);

  const io::IdxArray array = io::read_idx(directory / "images.gz");
  CHECK(array.dimensions == std::vector<int64_t>{3, 2, 3});
  CHECK(array.data == std::vector<uint8_t>(image_values.begin(), image_values.end()));

  for (const auto& [image_file, label_file] :
       {std::pair("images", "labels"), std::pair("images.gz", "labels.gz"), std::pair("images.gz", "labels")}) {
    INFO(image_file << " + " << label_file);
    const nn::Dataset data = io::load_idx_dataset(directory / image_file, directory / label_file);
    CHECK(data.size() == 3);
    CHECK(data.sample_shape == nn::SampleShape{1, 2, 3});
    CHECK(data.classes == 3);
    CHECK(data.labels == std::vector<int64_t>{2, 0, 1});
    REQUIRE(data.images.size() == image_values.size());
    for (size_t i = 0; i < image_values.size(); ++i)
      CHECK(data.images[i] == static_cast<float>(image_values[i]) / 255.0f);
    CHECK(data.images.back() == 1.0f);
    data.validate();
  }
}

TEST_CASE("idx: bad files are rejected naming the file", "[idx][errors]") {
  TemporaryDirectory directory;
  const auto bad = Status::invalid_argument;
  const auto images = idx_bytes({3, 2, 3}, image_values), labels = idx_bytes({3}, label_values);
  write_raw(directory / "images", images);
  write_raw(directory / "labels", labels);
  const auto rejects = [&](const std::string& name, const Bytes& bytes, bool gzip, const std::string& why,
                           Status status = Status::invalid_argument) {
    INFO(name << ": " << why);
    const std::filesystem::path path = directory / name;
    gzip ? write_gzip(path, bytes) : write_raw(path, bytes);
    require_error([&] { io::read_idx(path); }, status, path.string());
    try {
      io::read_idx(path);
    } catch (const Error& error) {
      CHECK(std::string(error.what()).find(why) != std::string::npos);
    }
  };
  rejects("zip-magic", {'P', 'K', 3, 4, 0, 0, 0, 0}, false, "bad magic 0x504b0304");
  rejects("no-dimensions", {0, 0, 8, 0}, false, "bad magic");
  rejects("text", Bytes{'h', 'e', 'l', 'l', 'o'}, true, "bad magic");
  rejects("floats", idx_bytes({1}, {0, 0, 0, 0}, 0x0D), false, "unsigned bytes", Status::unsupported);
  rejects("tiny", {0, 0}, false, "truncated");
  rejects("short-header", {0, 0, 8, 3, 0, 0, 0, 3}, false, "truncated: the header ends before dimension 1");
  Bytes truncated = images;
  truncated.resize(truncated.size() - 5);
  rejects("truncated", truncated, false, "truncated: the header announces 18 values, the file holds 13");
  rejects("truncated.gz", truncated, true, "truncated");
  Bytes longer = images;
  longer.push_back(7);
  rejects("trailing", longer, false, "has bytes after the 18 values");

  // A gzip stream cut short, and one with a damaged byte.
  write_gzip(directory / "whole.gz", images);
  Bytes gzip = read_raw(directory / "whole.gz");
  write_raw(directory / "cut.gz", Bytes(gzip.begin(), gzip.begin() + static_cast<ptrdiff_t>(gzip.size() / 2)));
  require_error([&] { io::read_idx(directory / "cut.gz"); }, bad, (directory / "cut.gz").string());
  gzip[gzip.size() - 6] ^= 0xFF;  // inside the trailer's CRC: the data decompresses but does not check
  write_raw(directory / "damaged.gz", gzip);
  require_error([&] { io::read_idx(directory / "damaged.gz"); }, bad, (directory / "damaged.gz").string());

  require_error([&] { io::read_idx(directory / "missing"); }, bad, (directory / "missing").string());

  // Label / image count mismatch names the labels file; wrong dimensionality names the file at fault.
  write_raw(directory / "two-labels", idx_bytes({2}, {0, 1}));
  require_error([&] { io::load_idx_dataset(directory / "images", directory / "two-labels"); }, bad,
                (directory / "two-labels").string());
  require_error([&] { io::load_idx_dataset(directory / "labels", directory / "labels"); }, bad,
                (directory / "labels").string());
  require_error([&] { io::load_idx_dataset(directory / "images", directory / "images"); }, bad,
                (directory / "images").string());
}

TEST_CASE("dataset: seeded shuffling is a reproducible permutation", "[dataset]") {
  std::mt19937_64 a(5), b(5), c(6);
  const auto first = nn::shuffled_indices(1000, a);
  CHECK(first == nn::shuffled_indices(1000, b));
  CHECK(first != nn::shuffled_indices(1000, c));
  std::vector<int64_t> sorted = first;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> identity(1000);
  std::iota(identity.begin(), identity.end(), 0);
  CHECK(sorted == identity);
  CHECK(first != identity);
  // The generator moves on: the next epoch gets another order.
  CHECK(nn::shuffled_indices(1000, a) != first);
  CHECK(nn::shuffled_indices(0, a).empty());
  // Every element lands in every position about equally often (10 elements, 20,000 shuffles, 2,000 expected).
  std::vector<std::vector<int>> counts(10, std::vector<int>(10, 0));
  std::mt19937_64 rng(7);
  for (int i = 0; i < 20000; ++i) {
    const auto order = nn::shuffled_indices(10, rng);
    for (size_t position = 0; position < 10; ++position) ++counts[position][static_cast<size_t>(order[position])];
  }
  for (const auto& row : counts)
    for (const int count : row) CHECK(count == Approx(2000).epsilon(0.12));
}

TEST_CASE("dataset: batches copy the chosen images and labels, and contiguous ones are views", "[dataset]") {
  nn::Dataset data{.sample_shape = {1, 2, 3}, .images = {}, .labels = {2, 0, 1}, .classes = 3};
  for (const unsigned char v : image_values) data.images.push_back(v);
  data.validate();
  const std::vector<int64_t> indices = {2, 0};
  std::vector<float> images(12, -1.0f);
  std::vector<int64_t> labels(2, -1);
  nn::gather_batch(data, indices, {images.data(), {2, 1, 2, 3}}, labels);
  CHECK(images == std::vector<float>{20, 21, 22, 23, 24, 255, 0, 1, 2, 3, 4, 5});
  CHECK(labels == std::vector<int64_t>{1, 2});

  const ConstTensorView view = data.batch_view(1, 2);
  CHECK(view.data == data.images.data() + 6);
  CHECK(view.shape == Shape4{2, 1, 2, 3});

  const auto bad = Status::invalid_argument;
  const std::vector<int64_t> out_of_range = {3};
  require_error(
      [&] {
        nn::gather_batch(data, out_of_range, {images.data(), {1, 1, 2, 3}}, std::span(labels).first(1));
      },
      bad, "indices");
  require_error([&] { nn::gather_batch(data, indices, {images.data(), {2, 1, 3, 2}}, labels); }, bad, "images");
  require_error(
      [&] {
        nn::gather_batch(data, indices, {images.data(), {2, 1, 2, 3}}, std::span(labels).first(1));
      },
      bad, "labels");
  require_error([&] { data.batch_view(2, 2); }, bad, "count");
  nn::Dataset broken = data;
  broken.labels[1] = 3;
  require_error([&] { broken.validate(); }, bad, "dataset");
  broken = data;
  broken.images.pop_back();
  require_error([&] { broken.validate(); }, bad, "dataset");
}
