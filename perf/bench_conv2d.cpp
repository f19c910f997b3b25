// The convolution benchmark suite: every shape x direction x implementation, named conv/<direction>/<impl>/<shape>,
// with the counters GFLOPs (one FLOP formula for all directions: conv2d_flops) and workspace_bytes.
// Implementations: im2col (the plan) and direct_naive (the plain-loop oracle, only on shapes it finishes
// in reasonable time).
#include <convgemm/convgemm.hpp>

#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

namespace {

using namespace convgemm;

struct Shape {
  const char* name;
  int64_t N, C, H, W, K, R, S, stride, pad, groups;
};

// name N C H W K R S stride pad (groups)
const Shape shapes[] = {
    {"lenet1", 64, 1, 28, 28, 32, 3, 3, 1, 1, 1},
    {"lenet2", 64, 32, 14, 14, 64, 3, 3, 1, 1, 1},
    {"r50_c1", 16, 3, 224, 224, 64, 7, 7, 2, 3, 1},
    {"r50_3x3a", 16, 64, 56, 56, 64, 3, 3, 1, 1, 1},
    {"r50_1x1a", 16, 256, 56, 56, 64, 1, 1, 1, 0, 1},
    {"r50_3x3b", 16, 128, 28, 28, 128, 3, 3, 1, 1, 1},
    {"r50_3x3c", 16, 256, 14, 14, 256, 3, 3, 1, 1, 1},
    {"r50_3x3d", 16, 512, 7, 7, 512, 3, 3, 1, 1, 1},
    {"vgg_1_2", 8, 64, 224, 224, 64, 3, 3, 1, 1, 1},
    {"alex_g2", 16, 96, 27, 27, 256, 5, 5, 1, 2, 2},
    {"dw", 16, 128, 56, 56, 128, 3, 3, 1, 1, 128},
    {"r50_3x3b_n1", 1, 128, 28, 28, 128, 3, 3, 1, 1, 1},
};

Conv2dParams to_params(const Shape& s) {
  return {.batch = s.N, .in_channels = s.C, .in_height = s.H, .in_width = s.W, .out_channels = s.K,
          .kernel_height = s.R, .kernel_width = s.S, .stride = {s.stride, s.stride},
          .padding = Padding2d::symmetric(s.pad, s.pad), .groups = s.groups};
}

// The tensors of one problem, filled with random values once.
struct Problem {
  Conv2dParams params;
  Conv2dShapes shapes;
  std::vector<float> x, w, y, dy, dx, dw;

  explicit Problem(const Shape& shape) : params(to_params(shape)), shapes(conv2d_shapes(params)) {
    std::mt19937_64 rng(1);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    const auto fill = [&](std::vector<float>& v, int64_t n) {
      v.resize(static_cast<size_t>(n));
      for (float& e : v) e = uniform(rng);
    };
    fill(x, element_count(shapes.input));
    fill(w, element_count(shapes.weights));
    fill(dy, element_count(shapes.output));
    y.resize(dy.size());
    dx.resize(x.size());
    dw.resize(w.size());
  }
  ConstTensorView input() const { return {x.data(), shapes.input}; }
  ConstTensorView weights() const { return {w.data(), shapes.weights}; }
  ConstTensorView output_grad() const { return {dy.data(), shapes.output}; }
};

void set_counters(benchmark::State& state, const Conv2dParams& params, size_t workspace_bytes) {
  state.counters["GFLOPs"] = benchmark::Counter(conv2d_flops(params) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["workspace_bytes"] = static_cast<double>(workspace_bytes);
}

void register_im2col(const Shape& shape) {
  const std::string suffix = std::string("/im2col/") + shape.name;
  benchmark::RegisterBenchmark(("conv/forward" + suffix).c_str(), [shape](benchmark::State& state) {
    Problem p(shape);
    const Conv2dPlan plan(p.params);
    for (auto _ : state) plan.forward(p.input(), p.weights(), {}, {p.y.data(), p.shapes.output});
    set_counters(state, p.params, plan.workspace_bytes(Conv2dDirection::forward));
  })->UseRealTime()->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark(("conv/backward_data" + suffix).c_str(), [shape](benchmark::State& state) {
    Problem p(shape);
    const Conv2dPlan plan(p.params);
    for (auto _ : state) plan.backward_data(p.output_grad(), p.weights(), {p.dx.data(), p.shapes.input});
    set_counters(state, p.params, plan.workspace_bytes(Conv2dDirection::backward_data));
  })->UseRealTime()->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark(("conv/backward_weights" + suffix).c_str(), [shape](benchmark::State& state) {
    Problem p(shape);
    const Conv2dPlan plan(p.params);
    for (auto _ : state) plan.backward_weights(p.input(), p.output_grad(), {p.dw.data(), p.shapes.weights});
    set_counters(state, p.params, plan.workspace_bytes(Conv2dDirection::backward_weights));
  })->UseRealTime()->Unit(benchmark::kMillisecond);
}

void register_direct_naive(const Shape& shape) {
  // The plain loops run at ~1-2 GFLOP/s: skip shapes that would take more than a few seconds per call.
  if (conv2d_flops(to_params(shape)) > 2e9) return;
  const std::string suffix = std::string("/direct_naive/") + shape.name;
  benchmark::RegisterBenchmark(("conv/forward" + suffix).c_str(), [shape](benchmark::State& state) {
    Problem p(shape);
    for (auto _ : state) {
      direct_conv2d_forward(p.params, p.input(), p.weights(), std::span<const float>{},
                            TensorView{p.y.data(), p.shapes.output});
    }
    set_counters(state, p.params, 0);
  })->UseRealTime()->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  for (const Shape& shape : shapes) register_im2col(shape);
  for (const Shape& shape : shapes) register_direct_naive(shape);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const RuntimeInfo info = runtime_info();
  benchmark::AddCustomContext("blas", info.blas_vendor + " " + info.blas_kernel);
  benchmark::AddCustomContext("threads", std::to_string(info.default_threads));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
