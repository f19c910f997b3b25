// The convolution benchmark suite: every shape x direction x implementation, named
// conv/<direction>/<impl>/<shape>, with the counters GFLOPs (conv2d_flops: one FLOP formula for all
// directions) and workspace_bytes; plus SGEMM references (sgemm/2048 and the GEMM each shape lowers to) so
// every convolution figure can be read as a fraction of the GEMM peak measured in the same run.
// Implementations: im2col (the plan), direct (the optimised direct loop nest), direct_naive (the plain-loop
// oracle, on shapes it finishes in seconds) and onednn (oneDNN's convolution on plain NCHW tensors, when
// oneDNN was found at configure time); memory_bound is no convolution but the time to read the operands and
// write the result once (see prepare_memory_bound).
#include <convgemm/convgemm.hpp>

#include <CLI/CLI.hpp>
#include <benchmark/benchmark.h>
#include <cblas.h>
#ifdef CONVGEMM_BENCH_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace convgemm;

struct Shape {
  const char* name;
  int64_t N, C, H, W, K, R, S, stride, pad, groups;
};

// name N C H W K R S stride pad groups
const Shape shapes[] = {
    {"lenet1", 64, 1, 28, 28, 32, 3, 3, 1, 1, 1},      {"lenet2", 64, 32, 14, 14, 64, 3, 3, 1, 1, 1},
    {"r50_c1", 16, 3, 224, 224, 64, 7, 7, 2, 3, 1},    {"r50_3x3a", 16, 64, 56, 56, 64, 3, 3, 1, 1, 1},
    {"r50_1x1a", 16, 256, 56, 56, 64, 1, 1, 1, 0, 1},  {"r50_3x3b", 16, 128, 28, 28, 128, 3, 3, 1, 1, 1},
    {"r50_3x3c", 16, 256, 14, 14, 256, 3, 3, 1, 1, 1}, {"r50_3x3d", 16, 512, 7, 7, 512, 3, 3, 1, 1, 1},
    {"vgg_1_2", 8, 64, 224, 224, 64, 3, 3, 1, 1, 1},   {"alex_g2", 16, 96, 27, 27, 256, 5, 5, 1, 2, 2},
    {"dw", 16, 128, 56, 56, 128, 3, 3, 1, 1, 128},     {"r50_3x3b_n1", 1, 128, 28, 28, 128, 3, 3, 1, 1, 1},
};

// With --resnet50-1x1: the rest of ResNet-50's 1x1 convolutions (v1.5, batch 16; the suite has r50_1x1a), named
// r50_1x1_<C>_<K>_<H>, s2 for the stride-2 projections of the shortcut.
const Shape resnet50_1x1_shapes[] = {
    {"r50_1x1_64_64_56", 16, 64, 56, 56, 64, 1, 1, 1, 0, 1},
    {"r50_1x1_64_256_56", 16, 64, 56, 56, 256, 1, 1, 1, 0, 1},
    {"r50_1x1_256_128_56", 16, 256, 56, 56, 128, 1, 1, 1, 0, 1},
    {"r50_1x1_256_512_56s2", 16, 256, 56, 56, 512, 1, 1, 2, 0, 1},
    {"r50_1x1_512_128_28", 16, 512, 28, 28, 128, 1, 1, 1, 0, 1},
    {"r50_1x1_128_512_28", 16, 128, 28, 28, 512, 1, 1, 1, 0, 1},
    {"r50_1x1_512_256_28", 16, 512, 28, 28, 256, 1, 1, 1, 0, 1},
    {"r50_1x1_512_1024_28s2", 16, 512, 28, 28, 1024, 1, 1, 2, 0, 1},
    {"r50_1x1_1024_256_14", 16, 1024, 14, 14, 256, 1, 1, 1, 0, 1},
    {"r50_1x1_256_1024_14", 16, 256, 14, 14, 1024, 1, 1, 1, 0, 1},
    {"r50_1x1_1024_512_14", 16, 1024, 14, 14, 512, 1, 1, 1, 0, 1},
    {"r50_1x1_1024_2048_14s2", 16, 1024, 14, 14, 2048, 1, 1, 2, 0, 1},
    {"r50_1x1_2048_512_7", 16, 2048, 7, 7, 512, 1, 1, 1, 0, 1},
    {"r50_1x1_512_2048_7", 16, 512, 7, 7, 2048, 1, 1, 1, 0, 1},
};

enum class Direction { forward, backward_data, backward_weights };
const char* name_of(Direction d) {
  switch (d) {
    case Direction::forward: return "forward";
    case Direction::backward_data: return "backward_data";
    case Direction::backward_weights: return "backward_weights";
  }
  return "?";
}

Conv2dParams to_params(const Shape& s) {
  return {.batch = s.N,
          .in_channels = s.C,
          .in_height = s.H,
          .in_width = s.W,
          .out_channels = s.K,
          .kernel_height = s.R,
          .kernel_width = s.S,
          .stride = {s.stride, s.stride},
          .padding = Padding2d::symmetric(s.pad, s.pad),
          .groups = s.groups};
}

// Tensors start on a 64-byte boundary, as a framework's allocator places them (PyTorch's CPU allocator, oneDNN's).
template <class T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t{64}); }
  bool operator==(const CacheLineAllocator&) const { return true; }
};
using Floats = std::vector<float, CacheLineAllocator<float>>;

// The tensors of one problem, filled with random values once.
struct Problem {
  Conv2dParams params;
  Conv2dShapes shapes;
  Floats x, w, y, dy, dx, dw;

  explicit Problem(const Shape& shape) : params(to_params(shape)), shapes(conv2d_shapes(params)) {
    std::mt19937_64 rng(1);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    const auto fill = [&](Floats& v, int64_t n) {
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
  TensorView output() { return {y.data(), shapes.output}; }
  TensorView input_grad() { return {dx.data(), shapes.input}; }
  TensorView weights_grad() { return {dw.data(), shapes.weights}; }
};

// What an implementation prepares for one (problem, direction): the call to time, its workspace, and whatever
// state (plans, primitives) the call needs to stay alive.
struct Prepared {
  std::function<void()> call;
  size_t workspace_bytes = 0;
  std::shared_ptr<void> state;
};
using Preparer = std::function<Prepared(Problem&, Direction)>;

Prepared stateless(std::function<void()> call) { return {std::move(call), 0, nullptr}; }

void register_conv(const char* implementation, const Shape& shape, Direction direction, Preparer prepare) {
  const std::string name = std::string("conv/") + name_of(direction) + "/" + implementation + "/" + shape.name;
  benchmark::RegisterBenchmark(name.c_str(),
                               [shape, direction, prepare](benchmark::State& state) {
                                 Problem problem(shape);
                                 const Prepared prepared = prepare(problem, direction);
                                 for (auto _ : state) prepared.call();
                                 state.counters["GFLOPs"] = benchmark::Counter(
                                     conv2d_flops(problem.params) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
                                 state.counters["workspace_bytes"] = static_cast<double>(prepared.workspace_bytes);
                               })
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

Prepared prepare_im2col(Problem& p, Direction direction) {
  auto plan = std::make_shared<Conv2dPlan>(p.params);
  switch (direction) {
    case Direction::forward:
      return {[&p, plan] { plan->forward(p.input(), p.weights(), {}, p.output()); },
              plan->workspace_bytes(Conv2dDirection::forward), plan};
    case Direction::backward_data:
      return {[&p, plan] { plan->backward_data(p.output_grad(), p.weights(), p.input_grad()); },
              plan->workspace_bytes(Conv2dDirection::backward_data), plan};
    case Direction::backward_weights:
      return {[&p, plan] { plan->backward_weights(p.input(), p.output_grad(), p.weights_grad()); },
              plan->workspace_bytes(Conv2dDirection::backward_weights), plan};
  }
  return {};
}

Prepared prepare_direct(Problem& p, Direction direction) {
  switch (direction) {
    case Direction::forward:
      return stateless([&p] { direct_conv2d_forward_optimized(p.params, p.input(), p.weights(), {}, p.output()); });
    case Direction::backward_data:
      return stateless(
          [&p] { direct_conv2d_backward_data_optimized(p.params, p.output_grad(), p.weights(), p.input_grad()); });
    case Direction::backward_weights:
      return stateless(
          [&p] { direct_conv2d_backward_weights_optimized(p.params, p.input(), p.output_grad(), p.weights_grad()); });
  }
  return {};
}

// The bytes of [data, data + size) folded by XOR (a reduction the compiler vectorises; char may alias float), and
// a fill of `out`: the two halves of the memory bound below, cloned for the widest vectors the CPU has so that the
// bound is the memory's and not that of 16-byte loads and stores.
__attribute__((target_clones("avx512f", "avx2", "default"))) unsigned char fold_bytes(const unsigned char* data,
                                                                                      size_t size) {
  unsigned char folded = 0;
  for (size_t i = 0; i < size; ++i) folded ^= data[i];
  return folded;
}
__attribute__((target_clones("avx512f", "avx2", "default"))) void fill_floats(float* out, size_t size, float value) {
  for (size_t i = 0; i < size; ++i) out[i] = value;
}

// The memory bound of a call: read the direction's operands once, write its result once, over the same threads
// the convolutions use, and nothing else. Its GFLOPs counter (the convolution's FLOPs over that time) is a rate no
// implementation can pass on this machine: where it is below the SGEMM peak, the shape is bandwidth bound and the
// report measures it against this roofline as well.
Prepared prepare_memory_bound(Problem& p, Direction direction) {
  std::vector<std::span<const float>> reads;
  std::span<float> write;
  switch (direction) {
    case Direction::forward: reads = {p.x, p.w}, write = p.y; break;
    case Direction::backward_data: reads = {p.dy, p.w}, write = p.dx; break;
    case Direction::backward_weights: reads = {p.x, p.dy}, write = p.dw; break;
  }
  return stateless([reads, write] {
    const int parts = oneapi::tbb::this_task_arena::max_concurrency();
    oneapi::tbb::parallel_for(0, parts, [&](int part) {
      unsigned char folded = 0;
      for (const std::span<const float> operand : reads) {
        const size_t size = operand.size_bytes(), begin = size * part / parts, end = size * (part + 1) / parts;
        folded ^= fold_bytes(reinterpret_cast<const unsigned char*>(operand.data()) + begin, end - begin);
      }
      const size_t begin = write.size() * part / parts, end = write.size() * (part + 1) / parts;
      fill_floats(write.data() + begin, end - begin, static_cast<float>(folded));
    });
    benchmark::ClobberMemory();
  });
}

Prepared prepare_direct_naive(Problem& p, Direction direction) {
  switch (direction) {
    case Direction::forward:
      return stateless(
          [&p] { direct_conv2d_forward(p.params, p.input(), p.weights(), std::span<const float>{}, p.output()); });
    case Direction::backward_data:
      return stateless([&p] { direct_conv2d_backward_data(p.params, p.output_grad(), p.weights(), p.input_grad()); });
    case Direction::backward_weights:
      return stateless(
          [&p] { direct_conv2d_backward_weights(p.params, p.input(), p.output_grad(), p.weights_grad()); });
  }
  return {};
}

#ifdef CONVGEMM_BENCH_ONEDNN
// oneDNN's convolution on plain NCHW / (G)OIHW tensors, as a framework that keeps NCHW would call it.
Prepared prepare_onednn(Problem& p, Direction direction) {
  using dnnl::memory;
  using tag = memory::format_tag;
  struct State {
    dnnl::engine engine{dnnl::engine::kind::cpu, 0};
    dnnl::stream stream{engine};
    dnnl::primitive primitive;
    std::unordered_map<int, memory> arguments;
  };
  auto state = std::make_shared<State>();
  const Conv2dParams& c = p.params;
  const memory::dims src{c.batch, c.in_channels, c.in_height, c.in_width};
  const memory::dims dst{c.batch, c.out_channels, p.shapes.output[2], p.shapes.output[3]};
  const memory::dims weights = c.groups == 1
                                   ? memory::dims{c.out_channels, c.in_channels, c.kernel_height, c.kernel_width}
                                   : memory::dims{c.groups, c.out_channels / c.groups, c.in_channels / c.groups,
                                                  c.kernel_height, c.kernel_width};
  const memory::desc src_md(src, memory::data_type::f32, tag::nchw);
  const memory::desc dst_md(dst, memory::data_type::f32, tag::nchw);
  const memory::desc weights_md(weights, memory::data_type::f32, c.groups == 1 ? tag::oihw : tag::goihw);
  const memory::dims strides{c.stride.height, c.stride.width};
  const memory::dims dilates{c.dilation.height - 1, c.dilation.width - 1};
  const memory::dims pad_l{c.padding.top, c.padding.left}, pad_r{c.padding.bottom, c.padding.right};
  const dnnl::convolution_forward::primitive_desc forward_pd(
      {dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src_md, weights_md, dst_md, strides,
       dilates, pad_l, pad_r},
      state->engine);
  const auto wrap = [&](const memory::desc& md, Floats& v) { return memory(md, state->engine, v.data()); };
  size_t scratchpad = 0;
  switch (direction) {
    case Direction::forward:
      state->primitive = dnnl::convolution_forward(forward_pd);
      state->arguments = {{DNNL_ARG_SRC, wrap(src_md, p.x)},
                          {DNNL_ARG_WEIGHTS, wrap(weights_md, p.w)},
                          {DNNL_ARG_DST, wrap(dst_md, p.y)}};
      scratchpad = forward_pd.scratchpad_desc().get_size();
      break;
    case Direction::backward_data: {
      const dnnl::convolution_backward_data::primitive_desc pd(
          {dnnl::algorithm::convolution_direct, src_md, weights_md, dst_md, strides, dilates, pad_l, pad_r},
          state->engine, forward_pd);
      state->primitive = dnnl::convolution_backward_data(pd);
      state->arguments = {{DNNL_ARG_DIFF_DST, wrap(dst_md, p.dy)},
                          {DNNL_ARG_WEIGHTS, wrap(weights_md, p.w)},
                          {DNNL_ARG_DIFF_SRC, wrap(src_md, p.dx)}};
      scratchpad = pd.scratchpad_desc().get_size();
      break;
    }
    case Direction::backward_weights: {
      const dnnl::convolution_backward_weights::primitive_desc pd(
          {dnnl::algorithm::convolution_direct, src_md, weights_md, dst_md, strides, dilates, pad_l, pad_r},
          state->engine, forward_pd);
      state->primitive = dnnl::convolution_backward_weights(pd);
      state->arguments = {{DNNL_ARG_SRC, wrap(src_md, p.x)},
                          {DNNL_ARG_DIFF_DST, wrap(dst_md, p.dy)},
                          {DNNL_ARG_DIFF_WEIGHTS, wrap(weights_md, p.dw)}};
      scratchpad = pd.scratchpad_desc().get_size();
      break;
    }
  }
  State* s = state.get();
  return {[s] {
            s->primitive.execute(s->stream, s->arguments);
            s->stream.wait();
          },
          scratchpad, state};
}
#endif

// C[m x n] = A[m x k] * B[k x n] with OpenBLAS on all cores: the peak the convolutions are measured against.
// convgemm pins OpenBLAS to one thread (its parallelism is TBB's), so this benchmark lifts that for its run.
void register_sgemm(const std::string& name, int64_t m, int64_t n, int64_t k, int64_t batch) {
  benchmark::RegisterBenchmark(
      name.c_str(),
      [=](benchmark::State& state) {
        std::vector<float> a(static_cast<size_t>(m * k), 0.5f), b(static_cast<size_t>(k * n), 0.25f),
            c(static_cast<size_t>(m * n));
        const int previous = openblas_get_num_threads();
        openblas_set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));
        for (auto _ : state) {
          for (int64_t i = 0; i < batch; ++i) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
                        static_cast<int>(k), 1.0f, a.data(), static_cast<int>(k), b.data(), static_cast<int>(n), 0.0f,
                        c.data(), static_cast<int>(n));
          }
        }
        openblas_set_num_threads(previous);
        state.counters["GFLOPs"] = benchmark::Counter(2.0 * static_cast<double>(m * n * k * batch) / 1e9,
                                                      benchmark::Counter::kIsIterationInvariantRate);
      })
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  ensure_fast_blas_kernel(argc, argv);
  CLI::App app{"bench_conv2d: convgemm's benchmark suite (Google Benchmark)"};
  bool resnet50_1x1 = false;
  app.add_flag("--resnet50-1x1", resnet50_1x1, "also the rest of ResNet-50's 1x1 convolutions (r50_1x1_*)");
  app.footer("Every other argument goes to Google Benchmark (--benchmark_filter=REGEX, --benchmark_list_tests, ...).");
  app.allow_extras();
  CLI11_PARSE(app, argc, argv);
  std::vector<std::string> benchmark_arguments = app.remaining();
  benchmark_arguments.insert(benchmark_arguments.begin(), argv[0]);
  std::vector<char*> benchmark_argv;
  for (std::string& argument : benchmark_arguments) benchmark_argv.push_back(argument.data());
  int benchmark_argc = static_cast<int>(benchmark_argv.size());

  std::vector<Shape> all_shapes(std::begin(shapes), std::end(shapes));
  if (resnet50_1x1) all_shapes.insert(all_shapes.end(), std::begin(resnet50_1x1_shapes), std::end(resnet50_1x1_shapes));
  register_sgemm("sgemm/2048", 2048, 2048, 2048, 1);
  for (const Shape& shape : all_shapes) {
    // The forward GEMM of the whole batch, one group: (K/G) x (C/G*R*S) times (C/G*R*S) x (N*P*Q).
    const Conv2dShapes s = conv2d_shapes(to_params(shape));
    register_sgemm(std::string("sgemm/") + shape.name, shape.K / shape.groups, shape.N * s.output[2] * s.output[3],
                   shape.C / shape.groups * shape.R * shape.S, shape.groups);
  }
  // Batch-1 inference on one thread: the baseline for the within-sample speed-up on all cores.
  register_conv("im2col_1thread", shapes[11], Direction::forward, [](Problem& p, Direction) {
    auto plan = std::make_shared<Conv2dPlan>(p.params, ExecutionOptions{.threads = 1});
    return Prepared{[&p, plan] { plan->forward(p.input(), p.weights(), {}, p.output()); },
                    plan->workspace_bytes(Conv2dDirection::forward), plan};
  });
  for (const Direction direction : {Direction::forward, Direction::backward_data, Direction::backward_weights}) {
    // The peak again just before each direction's minutes of runs: on a shared host the load can change between
    // sections, and the report shows each direction against its own section's figure too.
    register_sgemm(std::string("sgemm/2048/before_") + name_of(direction), 2048, 2048, 2048, 1);
    for (const Shape& shape : all_shapes) {
      register_conv("im2col", shape, direction, prepare_im2col);
      register_conv("direct", shape, direction, prepare_direct);
      register_conv("memory_bound", shape, direction, prepare_memory_bound);
#ifdef CONVGEMM_BENCH_ONEDNN
      register_conv("onednn", shape, direction, prepare_onednn);
#endif
      // The plain loops run at ~2 GFLOP/s: only where a call takes a few seconds at most.
      if (conv2d_flops(to_params(shape)) <= 2e9) register_conv("direct_naive", shape, direction, prepare_direct_naive);
    }
  }
  benchmark::Initialize(&benchmark_argc, benchmark_argv.data());
  if (benchmark::ReportUnrecognizedArguments(benchmark_argc, benchmark_argv.data())) return 1;
  const RuntimeInfo info = runtime_info();
  benchmark::AddCustomContext("convgemm", info.version);
  // A kernel forced through the environment is named as such: it is not what ensure_fast_blas_kernel would choose.
  benchmark::AddCustomContext(
      "blas",
      info.blas_vendor + " " + info.blas_kernel +
          (info.blas_coretype_override.empty() ? "" : " (OPENBLAS_CORETYPE=" + info.blas_coretype_override + ")"));
  benchmark::AddCustomContext("blas_config", info.blas_config);
  benchmark::AddCustomContext("conv_gemm", info.conv_gemm_kernel);
  benchmark::AddCustomContext("threads", std::to_string(info.default_threads));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
