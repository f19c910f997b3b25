// convgemm-demo: one real-sized convolution layer, forward and all three backward passes, through the im2col +
// SGEMM plan and through the direct convolution; prints the agreement of the two and their speeds. The single-layer
// demonstration beside convgemm-train (which tools/run runs); built by tools/run and tools/test.
#include <convgemm/convgemm.hpp>

#include <oneapi/tbb/task_arena.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double seconds_of(const std::function<void()>& call) {
  const auto start = Clock::now();
  call();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double median_seconds(const std::function<void()>& call, int repeats) {
  call();  // warm-up: first-touch of buffers, the plan's workspace pool
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) times.push_back(seconds_of(call));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// max |a - b| / max |b|: the error relative to the tensor's scale.
double normalized_max_error(const std::vector<float>& a, const std::vector<float>& b) {
  double error = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    error = std::max(error, std::fabs(double{a[i]} - double{b[i]}));
    scale = std::max(scale, std::fabs(double{b[i]}));
  }
  return scale == 0 ? error : error / scale;
}

std::vector<float> random_floats(int64_t count, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> values(static_cast<size_t>(count));
  for (float& v : values) v = uniform(rng);
  return values;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace convgemm;
  ensure_fast_blas_kernel(argc, argv);
  Conv2dParams params{.batch = 8,
                      .in_channels = 64,
                      .in_height = 28,
                      .in_width = 28,
                      .out_channels = 64,
                      .kernel_height = 3,
                      .kernel_width = 3,
                      .has_bias = true};
  int64_t padding = 1, stride = 1;
  int threads = 0, repeats = 5;
  CLI::App app{"convgemm-demo: one convolution layer through im2col+SGEMM and the direct convolution"};
  app.add_option("--batch", params.batch, "N")->capture_default_str();
  app.add_option("--channels", params.in_channels, "C")->capture_default_str();
  app.add_option("--size", params.in_height, "H = W")->capture_default_str();
  app.add_option("--filters", params.out_channels, "K")->capture_default_str();
  app.add_option("--kernel", params.kernel_height, "R = S")->capture_default_str();
  app.add_option("--stride", stride, "stride")->capture_default_str();
  app.add_option("--padding", padding, "zero padding on every side")->capture_default_str();
  app.add_option("--threads", threads, "worker threads (0: all cores)")->capture_default_str();
  app.add_option("--repeats", repeats, "timed runs of the GEMM path (median reported)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  params.in_width = params.in_height;
  params.kernel_width = params.kernel_height;
  params.stride = {stride, stride};
  params.padding = Padding2d::symmetric(padding, padding);

  try {
    const Conv2dPlan plan(params, {.threads = threads});
    const Conv2dShapes& s = plan.shapes();
    const RuntimeInfo info = runtime_info();
    std::printf("convgemm %s | %s kernel %s%s | conv GEMM %s | TBB %s | %d threads\n", info.version.c_str(),
                info.blas_vendor.c_str(), info.blas_kernel.c_str(),
                info.blas_coretype_override.empty() ? "" : " (OPENBLAS_CORETYPE)", info.conv_gemm_kernel.c_str(),
                info.tbb_version.c_str(), plan.threads());
    std::printf("plan: %s\n", plan.describe().c_str());
    std::printf("layer: N=%ld C=%ld %ldx%ld -> K=%ld %ldx%ld, kernel %ldx%ld, stride %ld, padding %ld, bias\n",
                params.batch, params.in_channels, params.in_height, params.in_width, params.out_channels, s.output[2],
                s.output[3], params.kernel_height, params.kernel_width, stride, padding);
    std::printf("workspace: %.2f MiB (column tiles per thread, never the whole batch's columns)\n\n",
                static_cast<double>(plan.workspace_bytes()) / (1 << 20));

    std::mt19937_64 rng(2026);
    const auto x = random_floats(element_count(s.input), rng), w = random_floats(element_count(s.weights), rng),
               b = random_floats(s.bias, rng), dy = random_floats(element_count(s.output), rng);
    std::vector<float> y(dy.size()), dx(x.size()), dw(w.size()), db(b.size());
    std::vector<float> y_ref(dy.size()), dx_ref(x.size()), dw_ref(w.size()), db_ref(b.size());
    const ConstTensorView xv{x.data(), s.input}, wv{w.data(), s.weights}, dyv{dy.data(), s.output};

    struct Direction {
      const char* name;
      std::function<void()> gemm, direct;
      const std::vector<float>& result;
      const std::vector<float>& reference;
    };
    const Direction directions[] = {
        {"forward",
         [&] {
           plan.forward(xv, wv, b, {y.data(), s.output});
         },
         [&] {
           direct_conv2d_forward(params, xv, wv, b, TensorView{y_ref.data(), s.output});
         },
         y, y_ref},
        {"backward-data",
         [&] {
           plan.backward_data(dyv, wv, {dx.data(), s.input});
         },
         [&] {
           direct_conv2d_backward_data(params, dyv, wv, TensorView{dx_ref.data(), s.input});
         },
         dx, dx_ref},
        {"backward-weights",
         [&] {
           plan.backward_weights(xv, dyv, {dw.data(), s.weights});
         },
         [&] {
           direct_conv2d_backward_weights(params, xv, dyv, TensorView{dw_ref.data(), s.weights});
         },
         dw, dw_ref},
    };
    const double gflop = conv2d_flops(params) / 1e9;
    std::printf("%-17s %14s %14s %9s %16s\n", "direction", "im2col GFLOP/s", "direct GFLOP/s", "speed-up",
                "max error/scale");
    bool agree = true;
    for (const Direction& d : directions) {
      const double gemm_time = median_seconds(d.gemm, repeats);
      const double direct_time = seconds_of(d.direct);  // the plain loops are slow: one run
      const double error = normalized_max_error(d.result, d.reference);
      agree = agree && error < 1e-4;
      std::printf("%-17s %14.1f %14.2f %8.0fx %16.1e\n", d.name, gflop / gemm_time, gflop / direct_time,
                  direct_time / gemm_time, error);
    }
    plan.backward_bias(dyv, db);
    direct_conv2d_backward_bias(params, dyv, db_ref);
    const double bias_error = normalized_max_error(db, db_ref);
    agree = agree && bias_error < 1e-4;
    std::printf("%-17s %14s %14s %9s %16.1e\n", "backward-bias", "", "", "", bias_error);
    std::printf("\n%s\n", agree ? "im2col+GEMM agrees with the direct convolution (error/scale < 1e-4)"
                                : "MISMATCH between im2col+GEMM and the direct convolution");
    return agree ? 0 : 1;
  } catch (const Error& error) {
    std::fprintf(stderr, "%s\n", error.what());
    return 2;
  }
}
