// Writes the .npz that check_npz.py reads back with numpy: a small model whose every parameter value is a known
// function of its layer and position, exported with convgemm::io::export_npz.
#include <convgemm/io/npz.hpp>
#include <convgemm/nn/sequential.hpp>

#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: npz_writer OUTPUT.npz\n");
    return 2;
  }
  try {
    using namespace convgemm::nn;
    // Layers 0 conv, 1 relu, 2 pool, 3 flatten, 4 dense: keys 0.weight, 0.bias, 4.weight, 4.bias.
    Sequential model = Sequential::from_spec("conv4k3,relu,maxpool2,flatten,dense3", {2, 8, 8});
    for (int64_t i = 0; i < model.size(); ++i) {
      for (Parameter& parameter : model.layer(i).parameters()) {
        // value = layer + position / 1000 (+ 0.5 for biases): every element distinguishable.
        const float offset = static_cast<float>(i) + (parameter.name == "bias" ? 0.5f : 0.0f);
        for (size_t p = 0; p < parameter.value.size(); ++p) {
          parameter.value[p] = offset + static_cast<float>(p) / 1000.0f;
        }
      }
    }
    convgemm::io::export_npz(argv[1], model);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "%s\n", error.what());
    return 1;
  }
  return 0;
}
