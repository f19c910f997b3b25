// Sequential::from_spec: the model spec grammar of sequential.hpp. Each comma-separated token is split into a
// name, an optional main number and lettered options, checked against what that layer takes, and added; any error,
// the layer's own included, is re-thrown naming the token.
#include <convgemm/error.hpp>
#include <convgemm/nn/sequential.hpp>

#include <cctype>
#include <charconv>
#include <functional>
#include <map>
#include <optional>
#include <string>

namespace convgemm::nn {
namespace {

// A token split into its parts: "conv32k3s2" -> name "conv", number "32", options {k: 3, s: 2}.
struct Token {
  std::string text;
  std::string name;
  std::string number;  // the main number as written, "" when absent
  std::map<char, int64_t> options;
};

[[noreturn]] void reject(const Token& token, size_t index, const std::string& why) {
  throw Error(Status::invalid_argument, token.text.empty() ? "<empty>" : token.text,
              "layer " + std::to_string(index) + " of the model spec: " + why);
}

int64_t parse_integer(const Token& token, size_t index, std::string_view digits, const std::string& what) {
  int64_t value = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (error != std::errc() || end != digits.data() + digits.size()) {
    reject(token, index, what + " '" + std::string(digits) + "' is not an integer that fits 64 bits");
  }
  return value;
}

Token split(std::string_view text, size_t index) {
  Token token;
  const size_t first = text.find_first_not_of(" \t\n");
  const size_t last = text.find_last_not_of(" \t\n");
  token.text = first == std::string_view::npos ? "" : std::string(text.substr(first, last - first + 1));
  if (token.text.empty()) reject(token, index, "is empty (two commas in a row, or a comma at an end?)");
  const std::string& t = token.text;
  size_t i = 0;
  while (i < t.size() && std::islower(static_cast<unsigned char>(t[i]))) ++i;
  token.name = t.substr(0, i);
  if (token.name.empty()) reject(token, index, "does not start with a lower-case layer name");
  const size_t number_begin = i;
  while (i < t.size() && (std::isdigit(static_cast<unsigned char>(t[i])) || t[i] == '.')) ++i;
  token.number = t.substr(number_begin, i - number_begin);
  while (i < t.size()) {
    const char option = t[i++];
    if (!std::islower(static_cast<unsigned char>(option))) {
      reject(token, index, std::string("unexpected character '") + option + "'");
    }
    const size_t digits_begin = i;
    while (i < t.size() && std::isdigit(static_cast<unsigned char>(t[i]))) ++i;
    if (i == digits_begin) reject(token, index, std::string("option '") + option + "' has no number");
    if (token.options.count(option) != 0) reject(token, index, std::string("option '") + option + "' given twice");
    token.options[option] = parse_integer(token, index, std::string_view(t).substr(digits_begin, i - digits_begin),
                                          std::string("option '") + option + "'");
  }
  return token;
}

// What one layer name takes, and how to add it.
struct Grammar {
  enum class Number { none, integer, fraction } number;
  std::string options;   // the option letters it accepts
  std::string required;  // those it needs
  std::function<void(Sequential&, const Token&, size_t)> add;
};

int64_t option(const Token& token, char letter, int64_t otherwise) {
  const auto it = token.options.find(letter);
  return it == token.options.end() ? otherwise : it->second;
}
int64_t main_integer(const Token& token, size_t index) { return parse_integer(token, index, token.number, "number"); }

// The window options shared by the convolutions: k (kernel), s (stride), p (padding), d (dilation), g (groups).
template <class Config>
Config window(const Token& token, size_t index) {
  Config config;
  config.out_channels = main_integer(token, index);
  const int64_t kernel = option(token, 'k', 1), stride = option(token, 's', 1), padding = option(token, 'p', 0);
  const int64_t dilation = option(token, 'd', 1);
  config.kernel = {kernel, kernel};
  config.stride = {stride, stride};
  config.padding = Padding2d::symmetric(padding, padding);
  config.dilation = {dilation, dilation};
  config.groups = option(token, 'g', 1);
  return config;
}

template <class Config>
Config pool(const Token& token, size_t index) {
  const int64_t kernel = main_integer(token, index), stride = option(token, 's', kernel),
                padding = option(token, 'p', 0);
  return {.kernel = {kernel, kernel}, .stride = {stride, stride}, .padding = Padding2d::symmetric(padding, padding)};
}

const std::map<std::string, Grammar>& grammar() {
  using N = Grammar::Number;
  static const std::map<std::string, Grammar> layers = {
      {"conv",
       {N::integer, "kspdg", "k", [](Sequential& m, const Token& t, size_t i) { m.add(window<Conv2d>(t, i)); }}},
      {"deconv",
       {N::integer, "kspodg", "k",
        [](Sequential& m, const Token& t, size_t i) {
          auto config = window<ConvTranspose2d>(t, i);
          const int64_t output_padding = option(t, 'o', 0);
          config.output_padding = {output_padding, output_padding};
          m.add(config);
        }}},
      {"tconv",
       {N::integer, "kspdgt", "kt",
        [](Sequential& m, const Token& t, size_t i) {
          auto config = window<TiledConv2d>(t, i);
          config.tile = {option(t, 't', 1), option(t, 't', 1)};
          m.add(config);
        }}},
      {"local",
       {N::integer, "kspdg", "k",
        [](Sequential& m, const Token& t, size_t i) {
          auto config = window<TiledConv2d>(t, i);
          config.locally_connected = true;
          m.add(config);
        }}},
      {"maxpool",
       {N::integer, "sp", "", [](Sequential& m, const Token& t, size_t i) { m.add(pool<MaxPool2d>(t, i)); }}},
      {"avgpool",
       {N::integer, "sp", "", [](Sequential& m, const Token& t, size_t i) { m.add(pool<AvgPool2d>(t, i)); }}},
      {"maxout",
       {N::integer, "", "",
        [](Sequential& m, const Token& t, size_t i) { m.add(ChannelMaxPool{.group_size = main_integer(t, i)}); }}},
      {"relu", {N::none, "", "", [](Sequential& m, const Token&, size_t) { m.add(ReLU{}); }}},
      {"sigmoid", {N::none, "", "", [](Sequential& m, const Token&, size_t) { m.add(Sigmoid{}); }}},
      {"tanh", {N::none, "", "", [](Sequential& m, const Token&, size_t) { m.add(Tanh{}); }}},
      {"flatten", {N::none, "", "", [](Sequential& m, const Token&, size_t) { m.add(Flatten{}); }}},
      {"dropout",
       {N::fraction, "", "",
        [](Sequential& m, const Token& t, size_t i) {
          double probability = 0;
          const auto [end, error] = std::from_chars(t.number.data(), t.number.data() + t.number.size(), probability);
          if (error != std::errc() || end != t.number.data() + t.number.size()) {
            reject(t, i, "probability '" + t.number + "' is not a decimal number");
          }
          m.add(Dropout{.probability = probability});
        }}},
      {"dense",
       {N::integer, "", "",
        [](Sequential& m, const Token& t, size_t i) { m.add(Dense{.out_features = main_integer(t, i)}); }}},
  };
  return layers;
}

void add_token(Sequential& model, const Token& token, size_t index) {
  const auto it = grammar().find(token.name);
  if (it == grammar().end()) {
    std::string known;
    for (const auto& [name, unused] : grammar()) known += (known.empty() ? "" : ", ") + name;
    reject(token, index, "unknown layer '" + token.name + "'; the layers are " + known);
  }
  const Grammar& g = it->second;
  if (g.number == Grammar::Number::none && !token.number.empty()) {
    reject(token, index, token.name + " takes no number");
  }
  if (g.number != Grammar::Number::none && token.number.empty()) {
    reject(token, index, token.name + " needs a number right after its name");
  }
  if (g.number == Grammar::Number::integer && token.number.find('.') != std::string::npos) {
    reject(token, index, token.name + "'s number must be an integer");
  }
  for (const auto& [letter, value] : token.options) {
    if (g.options.find(letter) == std::string::npos) {
      reject(token, index,
             token.name + " has no option '" + letter + "'" + (g.options.empty() ? "" : "; it takes " + g.options));
    }
  }
  for (const char letter : g.required) {
    if (token.options.count(letter) == 0) reject(token, index, token.name + " needs option '" + letter + "'");
  }
  try {
    g.add(model, token, index);
  } catch (const Error& error) {
    if (error.parameter() == token.text) throw;  // already names the token
    reject(token, index, error.what());
  }
}

}  // namespace

Sequential Sequential::from_spec(std::string_view spec, const SampleShape& input_shape, bool fuse_layers) {
  Sequential model(input_shape, fuse_layers);
  size_t index = 0;
  size_t begin = 0;
  while (true) {
    const size_t comma = spec.find(',', begin);
    const std::string_view text = spec.substr(begin, comma == std::string_view::npos ? spec.npos : comma - begin);
    add_token(model, split(text, index), index);
    if (comma == std::string_view::npos) break;
    begin = comma + 1;
    ++index;
  }
  return model;
}

}  // namespace convgemm::nn
