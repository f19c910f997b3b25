#include <convgemm/convgemm.hpp>
#include <cstdio>

int main() {
  using namespace convgemm::nn;
  // 512 noisy 4x4 images; class 1 when the top half is the brighter one.
  Dataset data{.sample_shape = {1, 4, 4}, .images = {}, .labels = {}, .classes = 2};
  std::mt19937_64 rng(1);
  for (int64_t n = 0; n < 512; ++n) {
    for (int i = 0; i < 16; ++i) data.images.push_back(float(uniform_double(rng)) + ((i < 8) == (n % 2) ? 0.5f : 0));
    data.labels.push_back(n % 2);
  }
  Sequential model = Sequential::from_spec("conv4k3,relu,flatten,dense2", data.sample_shape);
  model.initialize(/*seed=*/42);
  std::printf("%s", model.summary().c_str());
  Adam adam({.learning_rate = 0.01});
  Trainer trainer(model, adam, {.epochs = 5, .batch_size = 32, .seed = 7});
  trainer.fit(data, [](const EpochMetrics& e) { std::printf("epoch %d: loss %.3f\n", int(e.epoch), e.loss); });
  std::printf("accuracy %.2f\n", evaluate(model, data, 128).accuracy);
  convgemm::io::save_checkpoint("training.ckpt", model, adam, trainer.progress());  // atomic, checksummed
}
