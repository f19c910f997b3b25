// Checkpoint save and load: the payload encoded in memory and written atomically with its CRC-32; on load, the file
// is checked whole, decoded into temporaries, checked against the model and the optimiser, and only then committed.
#include <convgemm/error.hpp>
#include <convgemm/io/checkpoint.hpp>

#include "file.hpp"

#include <algorithm>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace convgemm::io {
namespace {

constexpr std::string_view magic = "CVGMCKPT";
constexpr uint32_t format_version = 1;
constexpr size_t header_bytes = 8 + 4 + 8;  // magic, version, payload size
constexpr size_t trailer_bytes = 4;         // CRC-32

struct SavedParameter {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> value;
};

struct SavedLayer {
  std::string type;
  std::vector<uint64_t> random_state;
  std::vector<SavedParameter> parameters;
};

// A decoded checkpoint, not yet applied to anything.
struct Checkpoint {
  nn::TrainingProgress progress;
  std::vector<SavedLayer> layers;
  std::string optimizer_type;
  nn::OptimizerState optimizer_state;
};

std::vector<std::byte> encode(const nn::Sequential& model, const nn::Optimizer& optimizer,
                              const nn::TrainingProgress& progress) {
  ByteWriter payload;
  payload.i64(progress.epoch);
  std::ostringstream rng;
  rng << progress.rng;
  payload.string(rng.str());
  payload.u64(static_cast<uint64_t>(model.size()));
  for (int64_t i = 0; i < model.size(); ++i) {
    const nn::Layer& layer = model.layer(i);
    payload.string(layer.type());
    const std::vector<uint64_t> random_state = layer.random_state();
    payload.u64(random_state.size());
    for (const uint64_t value : random_state) payload.u64(value);
    payload.u64(layer.parameters().size());
    for (const nn::Parameter& parameter : layer.parameters()) {
      payload.string(parameter.name);
      payload.u64(parameter.shape.size());
      for (const int64_t extent : parameter.shape) payload.i64(extent);
      payload.floats(parameter.value);
    }
  }
  payload.string(optimizer.type());
  payload.u64(optimizer.state().steps);
  payload.u64(optimizer.state().buffers.size());
  for (const std::vector<float>& buffer : optimizer.state().buffers) payload.floats(buffer);

  ByteWriter file;
  file.raw(magic);
  file.u32(format_version);
  file.u64(payload.size());
  file.raw(payload.bytes());
  file.u32(crc32_of(file.bytes()));
  return std::move(file.bytes());
}

// Checks the envelope (magic, version, size, checksum) and decodes the payload.
Checkpoint decode(std::span<const std::byte> bytes, const std::string& file) {
  ByteReader header(bytes, file);
  if (bytes.size() < header_bytes + trailer_bytes) {
    header.fail("is truncated: " + std::to_string(bytes.size()) + " bytes, shorter than any checkpoint");
  }
  const auto file_magic = header.raw(magic.size());
  if (!std::equal(file_magic.begin(), file_magic.end(), std::as_bytes(std::span(magic)).begin())) {
    header.fail("is not a convgemm checkpoint (bad magic)");
  }
  const uint32_t version = header.u32();
  if (version != format_version) {
    header.fail("has checkpoint format version " + std::to_string(version) + ", this build reads " +
                std::to_string(format_version));
  }
  const uint64_t payload_size = header.u64();
  const uint64_t expected_size = header_bytes + payload_size + trailer_bytes;
  if (payload_size > bytes.size() || expected_size > bytes.size()) {
    header.fail("is truncated: " + std::to_string(bytes.size()) + " bytes, its header announces " +
                std::to_string(payload_size + header_bytes + trailer_bytes));
  }
  if (expected_size < bytes.size()) {
    header.fail("is corrupted: " + std::to_string(bytes.size() - expected_size) + " bytes after its end");
  }
  const auto payload_bytes = bytes.subspan(header_bytes, static_cast<size_t>(payload_size));
  ByteReader trailer(bytes.subspan(header_bytes + static_cast<size_t>(payload_size)), file);
  const uint32_t stored_crc = trailer.u32();
  if (crc32_of(bytes.first(header_bytes + static_cast<size_t>(payload_size))) != stored_crc) {
    header.fail("is corrupted: its CRC-32 checksum does not match its contents");
  }

  // The checksum matched, so a payload that does not decode was written wrong, not damaged: still an error.
  ByteReader payload(payload_bytes, file);
  Checkpoint checkpoint;
  checkpoint.progress.epoch = payload.i64();
  std::istringstream rng(payload.string());
  rng >> checkpoint.progress.rng;
  if (!rng) payload.fail("holds an unreadable random generator state");
  const uint64_t layers = payload.u64();
  for (uint64_t i = 0; i < layers; ++i) {
    SavedLayer layer;
    layer.type = payload.string();
    const uint64_t random_values = payload.u64();
    for (uint64_t v = 0; v < random_values; ++v) layer.random_state.push_back(payload.u64());
    const uint64_t parameters = payload.u64();
    for (uint64_t p = 0; p < parameters; ++p) {
      SavedParameter parameter;
      parameter.name = payload.string();
      const uint64_t rank = payload.u64();
      for (uint64_t d = 0; d < rank; ++d) parameter.shape.push_back(payload.i64());
      parameter.value = payload.floats();
      layer.parameters.push_back(std::move(parameter));
    }
    checkpoint.layers.push_back(std::move(layer));
  }
  checkpoint.optimizer_type = payload.string();
  checkpoint.optimizer_state.steps = payload.u64();
  const uint64_t buffers = payload.u64();
  for (uint64_t b = 0; b < buffers; ++b) checkpoint.optimizer_state.buffers.push_back(payload.floats());
  if (payload.remaining() != 0) payload.fail("is corrupted: " + std::to_string(payload.remaining()) + " unread bytes");
  return checkpoint;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i) text += (i > 0 ? ", " : "") + std::to_string(shape[i]);
  return text + ")";
}

// Throws (naming the file) unless the checkpoint fits the model and the optimiser exactly.
void check_fit(const Checkpoint& checkpoint, const nn::Sequential& model, const nn::Optimizer& optimizer,
               const std::string& file) {
  const auto reject = [&](const std::string& why) { throw Error(Status::invalid_argument, file, why); };
  if (static_cast<int64_t>(checkpoint.layers.size()) != model.size()) {
    reject("holds a model of " + std::to_string(checkpoint.layers.size()) + " layers, this one has " +
           std::to_string(model.size()));
  }
  for (size_t i = 0; i < checkpoint.layers.size(); ++i) {
    const SavedLayer& saved = checkpoint.layers[i];
    const nn::Layer& layer = model.layer(static_cast<int64_t>(i));
    const std::string where = "layer " + std::to_string(i) + " ";
    if (saved.type != layer.type()) reject(where + "is a " + saved.type + " there, a " + layer.type() + " here");
    if (saved.random_state.size() != layer.random_state().size()) {
      reject(where + "(" + layer.type() + ") has a random state of " + std::to_string(saved.random_state.size()) +
             " values there, " + std::to_string(layer.random_state().size()) + " here");
    }
    if (saved.parameters.size() != layer.parameters().size()) {
      reject(where + "has " + std::to_string(saved.parameters.size()) + " parameters there, " +
             std::to_string(layer.parameters().size()) + " here");
    }
    for (size_t p = 0; p < saved.parameters.size(); ++p) {
      const SavedParameter& s = saved.parameters[p];
      const nn::Parameter& parameter = layer.parameters()[p];
      if (s.name != parameter.name || s.shape != parameter.shape || s.value.size() != parameter.value.size()) {
        reject(where + "parameter " + std::to_string(p) + " is " + s.name + " " + shape_text(s.shape) + " there, " +
               parameter.name + " " + shape_text(parameter.shape) + " here");
      }
    }
  }
  if (checkpoint.optimizer_type != optimizer.type()) {
    reject("holds the state of a " + checkpoint.optimizer_type + " optimiser, not " + optimizer.type());
  }
  try {
    optimizer.check_state(checkpoint.optimizer_state, model.parameters());
  } catch (const Error& error) {
    reject(std::string("does not fit the optimiser: ") + error.what());
  }
}

}  // namespace

void save_checkpoint(const std::filesystem::path& path, const nn::Sequential& model, const nn::Optimizer& optimizer,
                     const nn::TrainingProgress& progress) {
  write_file_atomically(path, encode(model, optimizer, progress));
}

nn::TrainingProgress load_checkpoint(const std::filesystem::path& path, nn::Sequential& model,
                                     nn::Optimizer& optimizer) {
  const std::string file = path.string();
  Checkpoint checkpoint = decode(read_file(path), file);
  check_fit(checkpoint, model, optimizer, file);

  // Everything fits. What needs memory is made first; from there on nothing can fail (the sizes were all checked),
  // so the model and the optimiser change together or not at all.
  std::vector<std::vector<uint64_t>> random_state;
  for (const SavedLayer& layer : checkpoint.layers) random_state.push_back(layer.random_state);
  const std::vector<const nn::Parameter*> parameters = std::as_const(model).parameters();
  model.set_random_state(random_state);
  optimizer.set_state(std::move(checkpoint.optimizer_state), parameters);
  for (int64_t i = 0; i < model.size(); ++i) {
    const std::span<nn::Parameter> layer_parameters = model.layer(i).parameters();
    for (size_t p = 0; p < layer_parameters.size(); ++p) {
      const std::vector<float>& saved = checkpoint.layers[static_cast<size_t>(i)].parameters[p].value;
      std::copy(saved.begin(), saved.end(), layer_parameters[p].value.begin());
    }
  }
  return std::move(checkpoint.progress);
}

}  // namespace convgemm::io
