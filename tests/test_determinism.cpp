// dW and db must be bitwise identical whatever the thread count: the plan reduces partial weight gradients over
// fixed batch chunks in a fixed order, and sums each bias channel sequentially. So must forward's y on convgemm's
// AVX-512 kernel, whose every tile sums in one order whatever the tiling.
#include "conv2d_tester.hpp"

#include <convgemm/runtime.hpp>

#include <oneapi/tbb/task_arena.h>

using namespace convgemm;
using convgemm::testing::bitwise_equal;

namespace {

struct Gradients {
  std::vector<float> weights_grad, bias_grad;
};

Gradients gradients(const Conv2dPlan& plan, const std::vector<float>& input, const std::vector<float>& output_grad) {
  const Conv2dShapes& shapes = plan.shapes();
  Gradients result{std::vector<float>(static_cast<size_t>(element_count(shapes.weights))),
                   std::vector<float>(static_cast<size_t>(shapes.bias))};
  plan.backward_weights({input.data(), shapes.input}, {output_grad.data(), shapes.output},
                        {result.weights_grad.data(), shapes.weights});
  plan.backward_bias({output_grad.data(), shapes.output}, result.bias_grad);
  return result;
}

// 23 samples of 7x7 pixels in two groups: several samples per tile (or per weight-gradient chunk), or one, or part
// of one, by thread count and cap.
const Conv2dParams small_grouped_images{.batch = 23,
                                        .in_channels = 8,
                                        .in_height = 7,
                                        .in_width = 7,
                                        .out_channels = 16,
                                        .kernel_height = 3,
                                        .kernel_width = 3,
                                        .padding = Padding2d::symmetric(1, 1),
                                        .groups = 2,
                                        .has_bias = true};

}  // namespace

TEST_CASE("conv2d: dW and db are bitwise identical for 1, 2, 3 and 8 threads", "[conv2d][determinism]") {
  const std::vector<Conv2dParams> problems = {
      // many samples of >= 256 output pixels: one sample per chunk, several waves
      {.batch = 13,
       .in_channels = 5,
       .in_height = 20,
       .in_width = 18,
       .out_channels = 7,
       .kernel_height = 3,
       .kernel_width = 3,
       .padding = Padding2d::symmetric(1, 1),
       .has_bias = true},
      // small images: several samples per chunk
      small_grouped_images,
      // 1x1 fast path
      {.batch = 11, .in_channels = 12, .in_height = 9, .in_width = 10, .out_channels = 6, .has_bias = true},
      // one large sample, channel blocks (C/G*R*S >= 1024) and several pixel tiles
      {.batch = 2,
       .in_channels = 128,
       .in_height = 24,
       .in_width = 20,
       .out_channels = 8,
       .kernel_height = 3,
       .kernel_width = 3,
       .padding = Padding2d::symmetric(1, 1),
       .has_bias = true},
      // depthwise
      {.batch = 6,
       .in_channels = 8,
       .in_height = 12,
       .in_width = 12,
       .out_channels = 16,
       .kernel_height = 3,
       .kernel_width = 3,
       .padding = Padding2d::symmetric(1, 1),
       .groups = 8,
       .has_bias = true},
  };
  for (const Conv2dParams& params : problems) {
    INFO(convgemm::testing::describe(params));
    const Conv2dShapes shapes = conv2d_shapes(params);
    std::mt19937_64 rng(3);
    // Values spanning several orders of magnitude make any change of summation order visible in the last bits.
    auto input = convgemm::testing::random_floats(element_count(shapes.input), rng);
    auto output_grad = convgemm::testing::random_floats(element_count(shapes.output), rng);
    for (size_t i = 0; i < output_grad.size(); ++i) output_grad[i] *= std::ldexp(1.0f, static_cast<int>(i % 17) - 8);

    const Gradients reference = gradients(Conv2dPlan(params, {.threads = 1}), input, output_grad);
    for (const int threads : {2, 3, 8}) {
      INFO("plan with its own arena of " << threads << " threads");
      const Gradients result = gradients(Conv2dPlan(params, {.threads = threads}), input, output_grad);
      CHECK(bitwise_equal(result.weights_grad, reference.weights_grad));
      CHECK(bitwise_equal(result.bias_grad, reference.bias_grad));
    }
    for (const int threads : {2, 3, 8}) {
      INFO("within-sample parallelism, " << threads << " threads");
      const Gradients result = gradients(
          Conv2dPlan(params, {.threads = threads, .parallelism = Parallelism::within_sample}), input, output_grad);
      CHECK(bitwise_equal(result.weights_grad, reference.weights_grad));
      CHECK(bitwise_equal(result.bias_grad, reference.bias_grad));
    }
    // Under a workspace cap the tiles are narrower (a different, but again thread-independent, sum). The cap is half
    // of what one thread needs, so that it narrows the tiles at every thread count (a default plan's need includes
    // the gaps between its threads' slots, which a cap removes first).
    const size_t cap = Conv2dPlan(params, {.threads = 1}).workspace_bytes() / 2;
    const Gradients capped_reference =
        gradients(Conv2dPlan(params, {.threads = 1, .workspace_limit_bytes = cap}), input, output_grad);
    for (const int threads : {2, 3, 8}) {
      INFO("workspace cap " << cap << ", " << threads << " threads");
      const Gradients result =
          gradients(Conv2dPlan(params, {.threads = threads, .workspace_limit_bytes = cap}), input, output_grad);
      CHECK(bitwise_equal(result.weights_grad, capped_reference.weights_grad));
      CHECK(bitwise_equal(result.bias_grad, capped_reference.bias_grad));
    }
    for (const int threads : {1, 2, 3, 8}) {
      INFO("default plan made and run inside a caller's arena of " << threads << " threads");
      oneapi::tbb::task_arena arena(threads);
      arena.execute([&] {
        const Conv2dPlan plan(params);
        CHECK(plan.threads() == threads);
        const Gradients result = gradients(plan, input, output_grad);
        CHECK(bitwise_equal(result.weights_grad, reference.weights_grad));
        CHECK(bitwise_equal(result.bias_grad, reference.bias_grad));
      });
    }
  }
}

TEST_CASE("conv2d: forward y is bitwise identical for 1, 2, 3 and 8 threads, any policy and a workspace cap",
          "[conv2d][determinism]") {
  // Every tile of convgemm's AVX-512 kernel makes the same sum for an element of y, then adds the bias, whether it
  // holds several small samples (adding the bias as it copies from the gather buffer to y), one sample or part of
  // one; so the tiling, which the thread count, the policy and a cap choose, does not change y. (A kernel that
  // started its sums from the bias in some tiles only failed here.) OpenBLAS (CPUs without AVX-512,
  // CONVGEMM_KERNELS=portable) promises no such thing: it picks its blocking, and so its order of additions, by the
  // matrices' sizes (a deep problem below differs in the last bits between tile widths). A 1x1 convolution deeper
  // than a micro-panel is the same sum too: tiles within a sample read its image in K blocks, each starting from the
  // C the last one left, while whole samples take all of K in one pass.
  if (runtime_info().conv_gemm_kernel == "OpenBLAS") {
    WARN("forward on OpenBLAS: y may differ in the last bits between tilings; not checked");
    return;
  }
  const std::vector<Conv2dParams> problems = {
      // small images: several samples per tile, or one, or part of one, by thread count and cap
      small_grouped_images,
      // one input channel (9 taps: tiles of fewer than 16 steps of l), lenet1's shape on a smaller batch
      {.batch = 9,
       .in_channels = 1,
       .in_height = 28,
       .in_width = 28,
       .out_channels = 32,
       .kernel_height = 3,
       .kernel_width = 3,
       .padding = Padding2d::symmetric(1, 1),
       .has_bias = true},
      // 1x1: whole samples read in place, or streamed micro-panels within a sample
      {.batch = 5, .in_channels = 12, .in_height = 20, .in_width = 25, .out_channels = 6, .has_bias = true},
      // 1x1 deeper than a streamed micro-panel (256 rows): within a sample in two K blocks, whole samples in one
      // pass; under 8 filters (streamed panels) and 72 (packed panels, 128-deep K blocks)
      {.batch = 3, .in_channels = 300, .in_height = 14, .in_width = 15, .out_channels = 8, .has_bias = true},
      {.batch = 3, .in_channels = 300, .in_height = 14, .in_width = 15, .out_channels = 72, .has_bias = true},
      // deeper than the GEMM kernel's K: lowered in channel blocks, the later ones adding to y
      {.batch = 2,
       .in_channels = 240,
       .in_height = 9,
       .in_width = 10,
       .out_channels = 9,
       .kernel_height = 3,
       .kernel_width = 3,
       .padding = Padding2d::symmetric(1, 1),
       .has_bias = true},
  };
  for (const Conv2dParams& params : problems) {
    INFO(convgemm::testing::describe(params));
    const Conv2dShapes shapes = conv2d_shapes(params);
    std::mt19937_64 rng(5);
    const auto input = convgemm::testing::random_floats(element_count(shapes.input), rng);
    const auto weights = convgemm::testing::random_floats(element_count(shapes.weights), rng);
    auto bias = convgemm::testing::random_floats(shapes.bias, rng);
    for (size_t k = 0; k < bias.size(); ++k) bias[k] *= std::ldexp(1.0f, static_cast<int>(k % 9) - 4);
    for (const PostOp post_op : {PostOp::none, PostOp::relu}) {
      const auto forward = [&](const ExecutionOptions& options) {
        const Conv2dPlan plan(params, options);
        std::vector<float> output(static_cast<size_t>(element_count(shapes.output)));
        plan.forward({input.data(), shapes.input}, {weights.data(), shapes.weights}, bias,
                     {output.data(), shapes.output}, post_op);
        return output;
      };
      const std::vector<float> reference = forward({.threads = 1});
      const size_t cap = Conv2dPlan(params, {.threads = 1}).workspace_bytes() / 3;  // narrows at any thread count
      for (const int threads : {1, 2, 3, 8}) {
        for (const Parallelism parallelism : {Parallelism::across_batch, Parallelism::within_sample}) {
          for (const size_t limit : {size_t{0}, cap}) {
            INFO(threads << " threads, parallelism " << static_cast<int>(parallelism) << ", cap " << limit);
            std::vector<float> output;
            try {
              output = forward({.threads = threads, .parallelism = parallelism, .workspace_limit_bytes = limit});
            } catch (const Error& error) {
              REQUIRE(error.parameter() == "workspace_limit_bytes");  // a cap below the narrowest tiling
              continue;
            }
            CHECK(bitwise_equal(output, reference));
          }
        }
      }
    }
  }
}
