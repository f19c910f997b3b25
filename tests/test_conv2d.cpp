// The im2col + GEMM plan against the direct oracle: 600 seeded random problems over the core issue's ranges,
// the 1x1 fast path, caller-supplied workspaces, and concurrent calls on one plan from several host threads.
#include "conv2d_tester.hpp"

#include <convgemm/runtime.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <thread>

using namespace convgemm;
using convgemm::testing::Conv2dTester;
using convgemm::testing::describe;
using convgemm::testing::random_conv2d_params;

TEST_CASE("conv2d: im2col+GEMM matches the direct oracle on 600 random problems", "[conv2d]") {
  int pointwise = 0, grouped = 0, depthwise = 0, strided = 0, dilated = 0, padded = 0;
  for (uint64_t seed = 1; seed <= 600; ++seed) {
    std::mt19937_64 rng(seed);
    Conv2dParams params = random_conv2d_params(rng);
    if (seed % 10 == 0) {  // every tenth problem takes the 1x1 fast path
      params.kernel_height = params.kernel_width = 1;
      params.stride = {};
      params.padding = {};
    }
    const Conv2dPlan plan(params);
    pointwise += !plan.uses_im2col();
    grouped += params.groups > 1 && params.groups < params.in_channels;
    depthwise += params.groups > 1 && params.groups == params.in_channels;
    strided += params.stride.height > 1 || params.stride.width > 1;
    dilated += params.dilation.height > 1 || params.dilation.width > 1;
    padded += params.padding.top + params.padding.bottom + params.padding.left + params.padding.right > 0;
    const Conv2dTester tester(params, seed);
    tester.check(plan, /*caller_workspace=*/seed % 2 == 0);
    if (seed % 3 == 0) tester.check_optimized_direct();  // the benchmarks' direct baseline, on 200 problems
  }
  // The draw really covers every feature (a guard against a generator that silently stopped varying).
  CHECK(pointwise >= 60);
  CHECK(grouped >= 50);
  CHECK(depthwise >= 50);
  CHECK(strided >= 200);
  CHECK(dilated >= 200);
  CHECK(padded >= 300);
}

TEST_CASE("conv2d: the fused ReLU post-op equals ReLU applied to the forward output, bit for bit", "[conv2d]") {
  // Random problems (small images: several samples per tile, depthwise, 1x1) plus images of a tile or more.
  std::vector<Conv2dParams> problems;
  std::mt19937_64 rng(99);
  for (int i = 0; i < 100; ++i) problems.push_back(random_conv2d_params(rng));
  problems.push_back({.batch = 2,
                      .in_channels = 3,
                      .in_height = 30,
                      .in_width = 30,
                      .out_channels = 5,
                      .kernel_height = 3,
                      .kernel_width = 3,
                      .has_bias = true});
  problems.push_back(
      {.batch = 2, .in_channels = 4, .in_height = 24, .in_width = 24, .out_channels = 6, .has_bias = false});
  int64_t negatives = 0;
  for (size_t i = 0; i < problems.size(); ++i) {
    INFO("problem " << i << ": " << describe(problems[i]));
    const Conv2dPlan plan(problems[i]);
    const Conv2dShapes& shapes = plan.shapes();
    std::vector<float> x(static_cast<size_t>(element_count(shapes.input)));
    std::vector<float> w(static_cast<size_t>(element_count(shapes.weights))), b(static_cast<size_t>(shapes.bias));
    for (auto* values : {&x, &w, &b})
      for (float& value : *values) value = static_cast<float>(std::uniform_real_distribution<double>(-1, 1)(rng));
    std::vector<float> plain(static_cast<size_t>(element_count(shapes.output)));
    std::vector<float> fused(plain.size(), NAN);
    plan.forward({x.data(), shapes.input}, {w.data(), shapes.weights}, b, {plain.data(), shapes.output});
    plan.forward({x.data(), shapes.input}, {w.data(), shapes.weights}, b, {fused.data(), shapes.output}, PostOp::relu);
    for (float& value : plain) {
      negatives += value < 0;
      value = value > 0 ? value : 0.0f;
    }
    CHECK(fused == plain);
  }
  CHECK(negatives > 1000);  // the post-op had something to do
}

TEST_CASE("conv2d: the 1x1 fast path skips im2col, and on images of a tile or more it needs no workspace", "[conv2d]") {
  Conv2dParams params{.batch = 3,
                      .in_channels = 16,
                      .in_height = 16,
                      .in_width = 17,
                      .out_channels = 12,
                      .kernel_height = 1,
                      .kernel_width = 1,
                      .groups = 4,
                      .has_bias = true};
  const Conv2dPlan plan(params);
  CHECK_FALSE(plan.uses_im2col());
  CHECK(plan.workspace_bytes(Conv2dDirection::forward) == 0);
  CHECK(plan.workspace_bytes(Conv2dDirection::backward_data) == 0);
  Conv2dTester(params, 7).check(plan);

  // Small images are laid side by side in one GEMM, which needs a gather buffer.
  params.in_height = params.in_width = 5;
  const Conv2dPlan small(params);
  CHECK_FALSE(small.uses_im2col());
  CHECK(small.workspace_bytes(Conv2dDirection::forward) > 0);
  Conv2dTester(params, 8).check(small);

  // Dilation does not matter for a 1x1 kernel, but stride or padding does.
  params.dilation = {2, 3};
  CHECK_FALSE(Conv2dPlan(params).uses_im2col());
  params.stride = {2, 1};
  CHECK(Conv2dPlan(params).uses_im2col());
}

TEST_CASE("conv2d: realistic layer shapes match the oracle", "[conv2d]") {
  const std::vector<Conv2dParams> layers = {
      // LeNet-style first layer, 'same' padding
      {.batch = 4,
       .in_channels = 1,
       .in_height = 28,
       .in_width = 28,
       .out_channels = 8,
       .kernel_height = 3,
       .kernel_width = 3,
       .padding = Padding2d::same(28, 28, 3, 3),
       .has_bias = true},
      // ResNet stem: 7x7 stride 2 pad 3
      {.batch = 2,
       .in_channels = 3,
       .in_height = 32,
       .in_width = 30,
       .out_channels = 16,
       .kernel_height = 7,
       .kernel_width = 7,
       .stride = {2, 2},
       .padding = Padding2d::symmetric(3, 3)},
      // small spatial size, many channels (weight-gradient chunks span several samples)
      {.batch = 9,
       .in_channels = 32,
       .in_height = 7,
       .in_width = 7,
       .out_channels = 24,
       .kernel_height = 3,
       .kernel_width = 3,
       .padding = Padding2d::symmetric(1, 1),
       .has_bias = true},
      // a wide image: one sample's 1880 pixels are one tile, so the weight gradient's reduction spans more than
      // one K block of the AVX-512 dot kernel (1024), with a ragged tail; 13 filters x 45 columns leave partial
      // micro-tiles on both sides
      {.batch = 2,
       .in_channels = 3,
       .in_height = 40,
       .in_width = 47,
       .out_channels = 13,
       .kernel_height = 3,
       .kernel_width = 5,
       .padding = Padding2d::symmetric(1, 2),
       .has_bias = true},
      // a stem with 72 filters: dW's 147 columns are too few for the weight gradient's panel kernel, so its dot
      // kernel takes the 72 rows
      {.batch = 2,
       .in_channels = 3,
       .in_height = 30,
       .in_width = 28,
       .out_channels = 72,
       .kernel_height = 7,
       .kernel_width = 7,
       .stride = {2, 2},
       .padding = Padding2d::symmetric(3, 3)},
      // rows wider than the whole-row paths take (> 64 pixels), at stride 2: 75-pixel output rows
      {.batch = 2,
       .in_channels = 3,
       .in_height = 11,
       .in_width = 150,
       .out_channels = 5,
       .kernel_height = 7,
       .kernel_width = 7,
       .stride = {2, 2},
       .padding = Padding2d::symmetric(3, 3)},
      // and at stride 1, one sample of 80 rows of 90 pixels cut into tiles that end inside a row
      {.batch = 1,
       .in_channels = 4,
       .in_height = 80,
       .in_width = 90,
       .out_channels = 6,
       .kernel_height = 3,
       .kernel_width = 3,
       .padding = Padding2d::symmetric(1, 1),
       .has_bias = true},
      // a 1x1 bottleneck over images of two tiles: forward reads x in place a micro-panel at a time, its 300
      // channels in two K blocks (256 + 44); backward-data reads dY in place, a whole K block at a time
      {.batch = 2, .in_channels = 300, .in_height = 32, .in_width = 30, .out_channels = 24, .has_bias = true},
      // and with 70 filters: the weight gradient's panel kernel packs x's transpose in place (200 columns of dW: four
      // full micro-panels and a ragged one)
      {.batch = 2, .in_channels = 200, .in_height = 32, .in_width = 30, .out_channels = 70},
      // the weight gradient's panel kernel on a column tile: 69 filters (row blocks of 7 and 8), 207 columns of dW
      // (a ragged micro-panel of 15), tiles of two samples and of one (442 and 221 pixels, each one pass deep: ragged
      // 16 x 16 transposes at their ends), two tiles per chunk of dW's reduction (the second adds to C)
      {.batch = 17,
       .in_channels = 23,
       .in_height = 13,
       .in_width = 17,
       .out_channels = 69,
       .kernel_height = 3,
       .kernel_width = 3,
       .padding = Padding2d::symmetric(1, 1),
       .has_bias = true},
      // column matrices deeper than the GEMM kernel takes (2070 rows): forward lowers and multiplies them in 17
      // uneven blocks of channels, adding the blocks' products
      {.batch = 1,
       .in_channels = 230,
       .in_height = 24,
       .in_width = 24,
       .out_channels = 10,
       .kernel_height = 3,
       .kernel_width = 3,
       .padding = Padding2d::symmetric(1, 1),
       .has_bias = true},
      // and so in tiles of several small samples side by side (2160 rows, 6 samples of 49 pixels)
      {.batch = 12,
       .in_channels = 240,
       .in_height = 7,
       .in_width = 7,
       .out_channels = 20,
       .kernel_height = 3,
       .kernel_width = 3,
       .padding = Padding2d::symmetric(1, 1),
       .has_bias = true},
      // depthwise 3x3
      {.batch = 3,
       .in_channels = 24,
       .in_height = 14,
       .in_width = 14,
       .out_channels = 24,
       .kernel_height = 3,
       .kernel_width = 3,
       .padding = Padding2d::symmetric(1, 1),
       .groups = 24},
  };
  for (size_t i = 0; i < layers.size(); ++i) {
    const Conv2dPlan plan(layers[i]);
    const Conv2dTester tester(layers[i], 100 + i);
    tester.check(plan, i % 2 == 1);
    tester.check_optimized_direct();
  }
}

TEST_CASE("conv2d: GEMMs of every height take their micro-tiles, 9-row ones included", "[conv2d]") {
  // The AVX-512 kernel's C has the filters as rows in forward and channels x 9 taps in backward-data: 1-10 filters
  // are one row block of each height, 9 / 18 / 27 / 36 (and 1-4 channels) take 9-row micro-tiles, 17 and 37 mixed
  // blocks of 8 rows or fewer. 9 x 13 images: the 117 columns end in a ragged micro-tile. The one-channel weight
  // gradients (dW of 9 columns) take the wide dot tiles of 1-3 rows.
  for (const int64_t channels : {1, 2, 3, 4, 5}) {
    for (const int64_t filters : {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 17, 18, 27, 36, 37}) {
      const Conv2dParams params{.batch = 2,
                                .in_channels = channels,
                                .in_height = 9,
                                .in_width = 13,
                                .out_channels = filters,
                                .kernel_height = 3,
                                .kernel_width = 3,
                                .padding = Padding2d::symmetric(1, 1),
                                .has_bias = true};
      INFO(describe(params));
      Conv2dTester(params, 700 + static_cast<uint64_t>(channels * 100 + filters)).check(Conv2dPlan(params), false);
    }
  }
}

TEST_CASE("conv2d: backward-data under a deep dY cuts W^T's rows into blocks, with any thread split", "[conv2d]") {
  // 136 filters are two K blocks of the AVX-512 kernel, which then takes at most 512 rows of W^T: the 1170 rows
  // (130 channels x 9 taps) run as 3 blocks on one thread, as 2 x 2 when two threads split the one sample group.
  const Conv2dParams params{.batch = 3,
                            .in_channels = 130,
                            .in_height = 6,
                            .in_width = 7,
                            .out_channels = 136,
                            .kernel_height = 3,
                            .kernel_width = 3,
                            .padding = Padding2d::symmetric(1, 1),
                            .has_bias = true};
  const Conv2dTester tester(params, 41);
  for (const int threads : {1, 2}) {
    const Conv2dPlan plan(params, {.threads = threads});
    tester.check(plan, threads == 2);
  }
}

TEST_CASE("conv2d: backward-data's channel blocks of different heights stay within the workspace", "[conv2d]") {
  // Two threads split the channels into blocks of W^T taller and shorter than 64 rows (2 and 1 channels of a 7 x 7
  // filter, 8 and 7 of a 3 x 3), dY 254-256 deep, cut into tiles of one 48-pixel micro-panel: the shorter block
  // streams dY 256 rows deep, the taller packs 128, and the one panel buffer per thread, sized for the tallest
  // block, must hold both (it held 12144 floats against 12288 once: the copy ran into the other thread's column
  // buffer or past the workspace). The caller's workspace is followed by a guard that no call may touch; which thread
  // takes which block varies from call to call, hence the repetitions.
  const std::vector<Conv2dParams> problems = {
      {.batch = 2,
       .in_channels = 3,
       .in_height = 8,
       .in_width = 12,
       .out_channels = 254,
       .kernel_height = 7,
       .kernel_width = 7,
       .padding = Padding2d::symmetric(3, 3)},
      {.batch = 1,
       .in_channels = 15,
       .in_height = 8,
       .in_width = 12,
       .out_channels = 256,
       .kernel_height = 3,
       .kernel_width = 3,
       .padding = Padding2d::symmetric(1, 1)},
  };
  for (size_t i = 0; i < problems.size(); ++i) {
    const Conv2dParams& params = problems[i];
    const Conv2dShapes shapes = conv2d_shapes(params);
    const Conv2dPlan plan(params, {.threads = 2, .parallelism = Parallelism::within_sample});
    INFO(describe(params) << " | " << plan.describe());
    Conv2dTester(params, 800 + i).check(plan, /*caller_workspace=*/true);
    std::mt19937_64 rng(810 + i);
    const std::vector<float> dy = testing::random_floats(element_count(shapes.output), rng);
    const std::vector<float> w = testing::random_floats(element_count(shapes.weights), rng);
    std::vector<float> dx(static_cast<size_t>(element_count(shapes.input)));
    const size_t bytes = plan.workspace_bytes(Conv2dDirection::backward_data);
    constexpr size_t guard = 4096;
    constexpr std::byte pattern{0xA5};
    std::vector<std::byte> buffer(bytes + guard, pattern);
    for (int call = 0; call < 40; ++call) {
      plan.backward_data(testing::in(dy, shapes.output), testing::in(w, shapes.weights), testing::out(dx, shapes.input),
                         std::span<std::byte>(buffer.data(), bytes));
      REQUIRE(std::all_of(buffer.begin() + static_cast<std::ptrdiff_t>(bytes), buffer.end(),
                          [&](std::byte b) { return b == pattern; }));
    }
  }
}

TEST_CASE("conv2d: the 1x1 forward streams its image micro-panel by micro-panel at every depth, width and split",
          "[conv2d]") {
  // Tiles inside a sample make the 1x1 GEMM read its image from the wider input (the panel buffer path): the first
  // row block copies each micro-panel as it reads it, for the others, and every row block prefetches part of the next
  // one, across K blocks (depths over 256), ragged last panels (two tiles of 240 and 197 pixels per sample), depths
  // under 16 (copied after the steps), row blocks of every height, and into the next group's or tile's image. Up to
  // 256 filters stream; 264 pack K blocks of all of the tile instead. At most 128 filters over 128 channels or more
  // read every micro-panel in place with every row block, and need no panel buffer.
  int streamed = 0, read_in_place = 0;
  for (const int64_t groups : {1, 2}) {
    for (const int64_t channels : {1, 15, 16, 128, 129, 260}) {
      if (groups > 1 && channels == 1) continue;  // depthwise: the direct kernel, no GEMM
      for (const int64_t filters : {3, 8, 13, 64, 72, 256, 264}) {
        const Conv2dParams params{.batch = 2,
                                  .in_channels = groups * channels,
                                  .in_height = 19,
                                  .in_width = 23,
                                  .out_channels = groups * filters,
                                  .groups = groups,
                                  .has_bias = true};
        INFO(describe(params));
        const Conv2dPlan plan(params, {.threads = 3, .parallelism = Parallelism::within_sample});
        REQUIRE_FALSE(plan.uses_im2col());
        const bool panel_buffer = plan.workspace_bytes(Conv2dDirection::forward) > 0;  // tiles are within samples
        if (filters <= 128 && channels >= 128) {
          read_in_place += !panel_buffer;
        } else {
          streamed += panel_buffer;
        }
        Conv2dTester(params, 500 + static_cast<uint64_t>(channels * filters * groups)).check(plan, filters == 8);
      }
    }
  }
  CHECK(streamed == 47);
  CHECK(read_in_place == 30);
}

// The pixels per tile, from describe()'s "tiles of S sample(s) x P pixels".
int64_t tile_pixels(const Conv2dPlan& plan) {
  const std::string text = plan.describe();
  const size_t at = text.find(" sample(s) x ");
  REQUIRE(at != std::string::npos);
  return std::stoll(text.substr(at + 13));
}

TEST_CASE("conv2d: tiles narrower than a micro-panel read the image and dY in place, with the sums of wide tiles",
          "[conv2d]") {
  // Under a tight cap the tiles inside a sample get narrower than the GEMM's 48-column micro-panel, and the plan
  // gives them no panel buffer (it would outgrow the tile): the GEMM then reads B (a 1x1 convolution's image,
  // backward-data's dY) in place with every row block, in the K blocks the panel loops take, so that y is the same
  // bits as under wide tiles (the panel path). They ran on OpenBLAS once, and on OpenBLAS's AVX-512 kernels y
  // differed in the last bits. Eight threads, so that the slots' panel buffers outweigh the weight gradient's partial
  // dW; caps shrink by a quarter from one thread's need down to the narrowest tiling; every plan is checked against
  // the oracle, and forward's y bit for bit against the uncapped plan's (wide tiles, panels).
  const std::vector<Conv2dParams> problems = {
      // 1x1: K of 12 (shorter than 16 steps) under 8 and 72 filters, and 260 (two streamed K blocks) under 136 and
      // 144, all streamed panels (fewer filters over 260 channels read them in place with no buffer, and get no
      // narrow tiles)
      {.batch = 1, .in_channels = 12, .in_height = 20, .in_width = 25, .out_channels = 8, .has_bias = true},
      {.batch = 1, .in_channels = 260, .in_height = 20, .in_width = 25, .out_channels = 136, .has_bias = true},
      {.batch = 1, .in_channels = 12, .in_height = 20, .in_width = 25, .out_channels = 72, .has_bias = true},
      {.batch = 1, .in_channels = 260, .in_height = 20, .in_width = 25, .out_channels = 144},
      // im2col: backward-data's W^T (36 rows) over dY tiles read in place
      {.batch = 1,
       .in_channels = 4,
       .in_height = 21,
       .in_width = 19,
       .out_channels = 10,
       .kernel_height = 3,
       .kernel_width = 3,
       .padding = Padding2d::symmetric(1, 1),
       .has_bias = true},
  };
  const bool bitwise = runtime_info().conv_gemm_kernel != "OpenBLAS";  // see the forward determinism test
  for (size_t i = 0; i < problems.size(); ++i) {
    const Conv2dParams& params = problems[i];
    INFO(describe(params));
    const Conv2dTester tester(params, 800 + i);
    const Conv2dShapes shapes = conv2d_shapes(params);
    std::mt19937_64 rng(8);
    const auto input = convgemm::testing::random_floats(element_count(shapes.input), rng);
    const auto weights = convgemm::testing::random_floats(element_count(shapes.weights), rng);
    const auto bias = convgemm::testing::random_floats(shapes.bias, rng);
    const auto forward = [&](const Conv2dPlan& plan) {
      std::vector<float> output(static_cast<size_t>(element_count(shapes.output)));
      plan.forward({input.data(), shapes.input}, {weights.data(), shapes.weights}, bias,
                   {output.data(), shapes.output});
      return output;
    };
    const ExecutionOptions options{.threads = 8, .parallelism = Parallelism::within_sample};
    int narrow = 0;
    const std::vector<float> wide = forward(Conv2dPlan(params, options));
    for (size_t cap = Conv2dPlan(params, {.threads = 1}).workspace_bytes(); cap > 0; cap = cap * 3 / 4) {
      std::optional<Conv2dPlan> plan;
      try {
        plan.emplace(params, ExecutionOptions{options.threads, options.parallelism, cap});
      } catch (const Error& error) {
        REQUIRE(error.parameter() == "workspace_limit_bytes");
        break;
      }
      INFO(plan->describe());
      narrow += tile_pixels(*plan) < 48;  // the micro-panel's columns
      tester.check(*plan);
      if (bitwise) CHECK(forward(*plan) == wide);
    }
    CHECK(narrow > 0);
  }
}

TEST_CASE("conv2d: batch-1 forward on fewer tiles than threads splits the filters, with the same y", "[conv2d]") {
  // A 7 x 7 image is one tile (49 pixels), so batch-1 inference there gave one thread all the work: forward now also
  // splits the filters into blocks (at least 32 filters each, cut at the kernel's 8-row micro-tiles), each item
  // lowering its tile again. Checked against the oracle, and y bit for bit against one thread's.
  const std::vector<Conv2dParams> problems = {
      // ResNet-50's last stage at batch 1: 1x1 (the image read in place) and 3x3 (deeper than the kernel's K: lowered
      // in channel blocks)
      {.batch = 1, .in_channels = 300, .in_height = 7, .in_width = 7, .out_channels = 72, .has_bias = true},
      {.batch = 1,
       .in_channels = 240,
       .in_height = 7,
       .in_width = 7,
       .out_channels = 100,
       .kernel_height = 3,
       .kernel_width = 3,
       .padding = Padding2d::symmetric(1, 1),
       .has_bias = true},
      // grouped: tiles enough for two and three threads (of 78 and 52 pixels), filter blocks under eight
      {.batch = 1,
       .in_channels = 8,
       .in_height = 12,
       .in_width = 13,
       .out_channels = 128,
       .kernel_height = 3,
       .kernel_width = 3,
       .padding = Padding2d::symmetric(1, 1),
       .groups = 2,
       .has_bias = true},
  };
  const bool bitwise = runtime_info().conv_gemm_kernel != "OpenBLAS";  // see the forward determinism test
  for (size_t i = 0; i < problems.size(); ++i) {
    const Conv2dParams& params = problems[i];
    INFO(describe(params));
    const Conv2dShapes shapes = conv2d_shapes(params);
    std::mt19937_64 rng(9);
    const auto input = convgemm::testing::random_floats(element_count(shapes.input), rng);
    const auto weights = convgemm::testing::random_floats(element_count(shapes.weights), rng);
    const auto bias = convgemm::testing::random_floats(shapes.bias, rng);
    const auto forward = [&](const Conv2dPlan& plan, PostOp post_op) {
      std::vector<float> output(static_cast<size_t>(element_count(shapes.output)));
      plan.forward({input.data(), shapes.input}, {weights.data(), shapes.weights}, bias, {output.data(), shapes.output},
                   post_op);
      return output;
    };
    const Conv2dPlan one_thread(params, {.threads = 1});
    REQUIRE(one_thread.describe().find("filter blocks") == std::string::npos);
    for (const int threads : {2, 3, 8}) {
      const Conv2dPlan plan(params, {.threads = threads});
      INFO(plan.describe());
      CHECK((plan.describe().find("filter blocks") != std::string::npos) == (i < 2 || threads == 8));
      Conv2dTester(params, 900 + i).check(plan, /*caller_workspace=*/threads == 3);
      for (const PostOp post_op : {PostOp::none, PostOp::relu}) {
        if (bitwise) CHECK(forward(plan, post_op) == forward(one_thread, post_op));
      }
    }
  }
}

TEST_CASE("conv2d: a sample cut into tiles for the threads is cut evenly, at whole micro-panels", "[conv2d]") {
  // 196 pixels of a 1x1 convolution over two threads: 96 + 100 (the multiple of 48 nearest to half), not 144 + 52,
  // which left one thread idle for almost half the call; 784 pixels: 384 + 400. A 3x3 convolution cuts at whole
  // output rows: 28 rows of 28 pixels, 14 + 14.
  const auto widest_tile = [](int64_t size, int64_t kernel) {
    const Conv2dParams params{.batch = 1,
                              .in_channels = 16,
                              .in_height = size,
                              .in_width = size,
                              .out_channels = 16,
                              .kernel_height = kernel,
                              .kernel_width = kernel,
                              .padding = Padding2d::symmetric(kernel / 2, kernel / 2)};
    return tile_pixels(Conv2dPlan(params, {.threads = 2}));
  };
  CHECK(widest_tile(14, 1) == 100);
  CHECK(widest_tile(28, 1) == 400);
  CHECK(widest_tile(28, 3) == 392);
}

TEST_CASE("conv2d: a 1x1 forward over whole samples reads each image in place while it prefetches the next one",
          "[conv2d]") {
  // One tile per sample, too large for L1 (40 x 480 floats and more), several samples per thread: each GEMM reads
  // its image in place, row blocks outermost, and asks for the next sample's image as it goes (its next_b). Its
  // micro-tiles must read B with the image's leading dimension, not the panel buffer's 48 (session 14's stream_tile
  // did: wrong outputs, caught here).
  const std::vector<Conv2dParams> problems = {
      {.batch = 3, .in_channels = 40, .in_height = 20, .in_width = 24, .out_channels = 24, .has_bias = true},
      {.batch = 4, .in_channels = 64, .in_height = 14, .in_width = 14, .out_channels = 19},
      // a ResNet bottleneck's 1x1 at 14 x 14: 1024 channels in one pass
      {.batch = 2, .in_channels = 1024, .in_height = 14, .in_width = 14, .out_channels = 64, .has_bias = true},
  };
  for (size_t i = 0; i < problems.size(); ++i) {
    for (const int threads : {1, 2}) {
      const Conv2dPlan plan(problems[i], {.threads = threads, .parallelism = Parallelism::across_batch});
      REQUIRE_FALSE(plan.uses_im2col());
      Conv2dTester(problems[i], 700 + i).check(plan);
    }
  }
}

TEST_CASE("conv2d: a 1x1 convolution keeps images of 120 pixels or more one per tile, smaller ones side by side",
          "[conv2d]") {
  // From 120 pixels on, each tile is one sample, its GEMMs reading x and dY in place and writing y and dx directly
  // (forward needs no workspace); below, samples are laid side by side in the column and gather buffers. Images
  // either side of the line (100, 119, 120, 121 pixels), ragged and whole micro-panels (144 = 3 x 48), deep and
  // shallow channels, against the oracle in every direction; 12 samples, so that side by side they still make a tile
  // per thread (fewer tiles than threads would cut the samples instead).
  struct Case {
    int64_t height, width, channels, filters;
    bool one_per_tile;
  };
  const Case cases[] = {
      {10, 10, 64, 40, false}, {7, 17, 96, 16, false}, {12, 10, 64, 40, true},
      {11, 11, 200, 24, true}, {12, 12, 32, 72, true}, {14, 14, 300, 9, true},
  };
  for (const Case& c : cases) {
    const Conv2dParams params{.batch = 12,
                              .in_channels = c.channels,
                              .in_height = c.height,
                              .in_width = c.width,
                              .out_channels = c.filters,
                              .has_bias = true};
    INFO(describe(params));
    const Conv2dTester tester(params, 950 + static_cast<uint64_t>(c.height * c.width + c.channels));
    for (const int threads : {1, 2}) {
      const Conv2dPlan plan(params, {.threads = threads});
      INFO(plan.describe());
      REQUIRE_FALSE(plan.uses_im2col());
      CHECK((plan.describe().find("tiles of 1 sample(s)") != std::string::npos) == c.one_per_tile);
      if (c.one_per_tile) CHECK(plan.workspace_bytes(Conv2dDirection::forward) == 0);
      tester.check(plan, threads == 2);
    }
  }
}

TEST_CASE("conv2d: a 1x1 forward over an image cut into tiles reads deep micro-panels in place under few filters",
          "[conv2d]") {
  // An image cut into several tiles is a B inside a wider matrix, streamed one micro-panel (48 pixels, up to 256
  // channels deep) at a time. Under at most 128 filters over at least 128 channels every row block reads the
  // micro-panel in place (no panel buffer: forward needs no workspace); under more filters, or over shallower images,
  // the first row block copies it into the panel buffer for the others. Ragged row blocks (20 filters: 7 + 7 + 6) and
  // micro-panels (1517 pixels), a second pass 44 channels deep (300 channels), with a bias, against the oracle.
  struct Case {
    int64_t channels, filters;
    bool in_place;
  };
  const Case cases[] = {{300, 20, true},   {128, 64, true},   {300, 128, true},
                        {300, 129, false}, {127, 64, false}, {96, 20, false}};
  for (const Case& c : cases) {
    const Conv2dParams params{
        .batch = 2, .in_channels = c.channels, .in_height = 37, .in_width = 41, .out_channels = c.filters,
        .has_bias = true};
    INFO(describe(params));
    const Conv2dTester tester(params, 980 + static_cast<uint64_t>(c.channels + c.filters));
    for (const int threads : {1, 2}) {
      const Conv2dPlan plan(params, {.threads = threads, .parallelism = Parallelism::across_batch});
      INFO(plan.describe());
      REQUIRE_FALSE(plan.uses_im2col());
      REQUIRE(plan.describe().find("tiles of 1 sample(s)") != std::string::npos);
      REQUIRE(tile_pixels(plan) < 37 * 41);
      if (runtime_info().conv_gemm_kernel != "OpenBLAS") {
        CHECK((plan.workspace_bytes(Conv2dDirection::forward) == 0) == c.in_place);
      }
      tester.check(plan, threads == 2);
    }
  }
}

TEST_CASE("conv2d: a 1x1 backward-data streams a deep dY under few channels through the panel buffer", "[conv2d]") {
  // A 1x1 convolution's backward-data multiplies whole samples: dx = W^T * dY in one GEMM per sample. Under at most
  // 64 channels (W^T's rows) and over more than 128 filters (its depth), that GEMM copies dY micro-panel by
  // micro-panel into the panel buffer, 256 filters deep per pass (300 filters: two passes, the second starting from
  // dx), its micro-tiles broadcasting W^T's rows; with ragged last micro-panels (1110 pixels), row blocks of every
  // height (1, 13 and 64 channels), and the next sample's dY prefetched. 65 or 72 channels, or 128 filters, read dY
  // in place and need no panel buffer; under 64 and 72 channels (whole 8-row blocks) one call runs every row block
  // over a micro-panel, asking for the next one between its tiles.
  int streamed = 0;
  for (const int64_t channels : {1, 13, 64, 65, 72}) {
    for (const int64_t filters : {128, 129, 300}) {
      const Conv2dParams params{
          .batch = 3, .in_channels = channels, .in_height = 30, .in_width = 37, .out_channels = filters};
      INFO(describe(params));
      const Conv2dTester tester(params, 900 + static_cast<uint64_t>(channels * filters));
      for (const int threads : {1, 2}) {
        const Conv2dPlan plan(params, {.threads = threads, .parallelism = Parallelism::across_batch});
        INFO(plan.describe());
        REQUIRE_FALSE(plan.uses_im2col());
        REQUIRE(plan.describe().find("tiles of 1 sample(s)") != std::string::npos);  // the GEMM writes dx
        streamed += plan.workspace_bytes(Conv2dDirection::backward_data) > 0;
        tester.check(plan, threads == 2);
      }
    }
  }
  CHECK(streamed == 3 * 2 * 2);  // 1, 13 and 64 channels over 129 and 300 filters, 1 and 2 threads
}

TEST_CASE("conv2d: backward-data writes every row of dx, also rows no output reads, over many tiles per sample",
          "[conv2d]") {
  // Kernel rows at vertical stride 2 read only the odd input rows; 3 rows of padding on top make the first output
  // rows read nothing but padding. 70-pixel rows are cut into tiles at micro-panel boundaries, inside rows, and a
  // workspace cap makes the tiles narrower still. dx starts as NaN in the tester, so an unwritten row fails.
  const Conv2dParams params{.batch = 2,
                            .in_channels = 3,
                            .in_height = 12,
                            .in_width = 70,
                            .out_channels = 5,
                            .kernel_height = 1,
                            .kernel_width = 3,
                            .stride = {2, 1},
                            .padding = {3, 1, 2, 1},
                            .has_bias = true};
  const Conv2dTester tester(params, 43);
  const size_t uncapped_bytes = Conv2dPlan(params, {.threads = 1}).workspace_bytes();
  for (const int threads : {1, 2}) {
    for (const size_t cap : {size_t{0}, uncapped_bytes / 4}) {
      INFO("threads " << threads << ", cap " << cap);
      const Conv2dPlan plan(params, {.threads = threads, .workspace_limit_bytes = cap});
      tester.check(plan, cap > 0);
    }
  }
}

TEST_CASE("conv2d: backward-data writes every row of dx, also rows no output reads, in tiles of whole samples",
          "[conv2d]") {
  // As above, with tiles that hold whole samples (col2im then writes dx instead of adding to it, without zeroing it
  // first): several small samples per tile or one sample per tile; rows up to 64 pixels at horizontal stride 1 (the
  // AVX-512 whole-row col2im) and the generic path (stride 2 across, or rows wider than 64). Output rows read the
  // even input rows from 0 to 10: the odd rows and the last row (11) get nothing. dx starts as NaN.
  for (const int64_t width : {20, 60, 70}) {
    for (const int64_t stride_width : {1, 2}) {
      for (const int64_t batch : {1, 12}) {
        const Conv2dParams params{.batch = batch,
                                  .in_channels = 3,
                                  .in_height = 12,
                                  .in_width = width,
                                  .out_channels = 5,
                                  .kernel_height = 1,
                                  .kernel_width = 3,
                                  .stride = {2, stride_width},
                                  .padding = {2, 0, 2, 1},
                                  .has_bias = true};
        INFO(describe(params));
        const Conv2dPlan plan(params, {.threads = batch > 1 ? 2 : 1});  // (one sample on two threads is split)
        const int64_t output_pixels = plan.shapes().output[2] * plan.shapes().output[3];
        REQUIRE_THAT(plan.describe(),
                     Catch::Matchers::Contains(" x " + std::to_string(output_pixels) + " pixels"));  // whole samples
        Conv2dTester(params, 44 + static_cast<uint64_t>(width + stride_width + batch)).check(plan, batch > 1);
      }
    }
  }
}

TEST_CASE("conv2d: im2col at stride 2 over rows wider than 64 pixels, tiles cut inside rows, any padding and dilation",
          "[conv2d]") {
  // Rows of 65-256 output pixels at horizontal stride 2 split each input row into its even and odd elements once and
  // copy every kernel column's window of them (the AVX-512 path keeps up to 16 split rows in a ring). Each shape has
  // more pixels than one tile takes, so a tile starts inside a row; padding odd and even, on one side only, taller
  // than the kernel's reach; dilation; vertical strides 1-3; and a kernel 17 rows tall (past the ring: the per-vector
  // path).
  struct Case {
    int64_t channels, height, width, kernel, dilation, stride_height;
    Padding2d padding;
  };
  const Case cases[] = {
      {3, 40, 150, 7, 1, 2, Padding2d::symmetric(3, 3)},  // 75-pixel rows, odd padding (the ResNet stem's)
      {2, 33, 161, 5, 1, 2, Padding2d::symmetric(2, 2)},  // 81-pixel rows, even padding
      {2, 30, 140, 3, 3, 2, Padding2d::symmetric(3, 3)},  // dilation 3
      {2, 24, 150, 4, 1, 1, {1, 0, 0, 1}},                // padding on one side of each dimension, vertical stride 1
      {1, 31, 170, 5, 1, 3, Padding2d::symmetric(6, 5)},  // padding wider than the kernel's reach, vertical stride 3
      {1, 40, 140, 9, 2, 2, Padding2d::symmetric(8, 8)},  // 17 input rows per output row: past the ring
  };
  for (const Case& shape : cases) {
    const Conv2dParams params{.batch = 2,
                              .in_channels = shape.channels,
                              .in_height = shape.height,
                              .in_width = shape.width,
                              .out_channels = 5,
                              .kernel_height = shape.kernel,
                              .kernel_width = shape.kernel,
                              .stride = {shape.stride_height, 2},
                              .padding = shape.padding,
                              .dilation = {shape.dilation, shape.dilation},
                              .has_bias = true};
    // A cap that cuts the images into tiles of a few rows, most of them starting inside a row.
    const Conv2dPlan plan(params, {.workspace_limit_bytes = 256 << 10});
    INFO(describe(params) << " | " << plan.describe());
    CHECK(plan.shapes().output[3] > 64);
    Conv2dTester(params, 900 + static_cast<uint64_t>(shape.width)).check(plan, true);
  }
}

TEST_CASE("conv2d: concurrent calls on one plan from several host threads", "[conv2d]") {
  const Conv2dParams params{.batch = 4,
                            .in_channels = 6,
                            .in_height = 12,
                            .in_width = 11,
                            .out_channels = 8,
                            .kernel_height = 3,
                            .kernel_width = 3,
                            .padding = Padding2d::symmetric(1, 1)};
  const Conv2dPlan plan(params);
  const Conv2dShapes& shapes = plan.shapes();
  std::mt19937_64 rng(5);
  const auto input = convgemm::testing::random_floats(element_count(shapes.input), rng);
  const auto weights = convgemm::testing::random_floats(element_count(shapes.weights), rng);
  std::vector<float> expected(static_cast<size_t>(element_count(shapes.output)));
  plan.forward({input.data(), shapes.input}, {weights.data(), shapes.weights}, {}, {expected.data(), shapes.output});

  constexpr int host_threads = 4;
  std::vector<std::vector<float>> results(host_threads, std::vector<float>(expected.size()));
  std::vector<std::thread> threads;
  for (int t = 0; t < host_threads; ++t) {
    threads.emplace_back([&, t] {
      for (int repeat = 0; repeat < 20; ++repeat) {
        plan.forward({input.data(), shapes.input}, {weights.data(), shapes.weights}, {},
                     {results[t].data(), shapes.output});
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (const auto& result : results) CHECK(result == expected);
}

TEST_CASE("conv2d: every thread count, parallelism policy and workspace cap computes the same convolution",
          "[conv2d][threading]") {
  const std::vector<Conv2dParams> problems = {
      // one sample, many pixels: tiles within the sample
      {.batch = 1,
       .in_channels = 6,
       .in_height = 40,
       .in_width = 37,
       .out_channels = 9,
       .kernel_height = 3,
       .kernel_width = 3,
       .padding = Padding2d::symmetric(1, 1),
       .has_bias = true},
      // two samples, strided and dilated
      {.batch = 2,
       .in_channels = 4,
       .in_height = 33,
       .in_width = 30,
       .out_channels = 6,
       .kernel_height = 3,
       .kernel_width = 2,
       .stride = {2, 1},
       .padding = {1, 0, 2, 1},
       .dilation = {1, 2},
       .groups = 2},
      // small images: several samples per tile
      {.batch = 7,
       .in_channels = 12,
       .in_height = 6,
       .in_width = 5,
       .out_channels = 8,
       .kernel_height = 3,
       .kernel_width = 3,
       .padding = Padding2d::symmetric(1, 1),
       .groups = 2,
       .has_bias = true},
      // 1x1 over a large image
      {.batch = 2, .in_channels = 10, .in_height = 30, .in_width = 21, .out_channels = 7, .has_bias = true},
      // depthwise with a channel multiplier
      {.batch = 3,
       .in_channels = 5,
       .in_height = 17,
       .in_width = 16,
       .out_channels = 10,
       .kernel_height = 3,
       .kernel_width = 3,
       .stride = {2, 2},
       .padding = Padding2d::symmetric(1, 1),
       .groups = 5,
       .has_bias = true},
  };
  int capped = 0;
  for (size_t i = 0; i < problems.size(); ++i) {
    const Conv2dParams& params = problems[i];
    // One thread's need (no gaps between slots, which a cap removes first), so that the cap narrows the tiles.
    const size_t uncapped_bytes = Conv2dPlan(params, {.threads = 1}).workspace_bytes();
    for (const int threads : {1, 2, 3}) {
      for (const Parallelism parallelism :
           {Parallelism::automatic, Parallelism::across_batch, Parallelism::within_sample}) {
        for (const size_t cap : {size_t{0}, uncapped_bytes / 3}) {
          INFO("threads " << threads << ", parallelism " << static_cast<int>(parallelism) << ", cap " << cap);
          std::optional<Conv2dPlan> plan;
          try {
            plan.emplace(params, ExecutionOptions{threads, parallelism, cap});
          } catch (const Error& error) {
            REQUIRE(error.parameter() == "workspace_limit_bytes");  // the only acceptable refusal
            continue;
          }
          if (cap > 0) {
            CHECK(plan->workspace_bytes() <= cap);
            ++capped;
          }
          Conv2dTester(params, 300 + i).check(*plan, /*caller_workspace=*/threads == 2);
        }
      }
    }
  }
  CHECK(capped >= 20);  // most caps are feasible: the tiles really do shrink
}

TEST_CASE("conv2d: non-temporal output stores write the same y and dx as ordinary ones, on any alignment", "[conv2d]") {
  // Forward's GEMMs store y around the cache, and a 1x1 convolution's backward-data GEMM dx, where a tile writes whole
  // vectors on 64-byte boundaries in one pass, and ordinarily elsewhere: each case below mixes both (ragged last
  // micro-panels, tiles that start mid-vector, outputs that start off a boundary), and must match the cached plan bit
  // for bit (the same sums), every element written (the outputs start as NaN).
  const std::vector<Conv2dParams> problems = {
      // 1x1: the streamed micro-panels (tiles within samples) and whole samples read in place; backward-data writes
      // dx from its GEMM (W^T of 40 rows over 10 micro-panels of dY)
      {.batch = 2, .in_channels = 40, .in_height = 20, .in_width = 24, .out_channels = 24, .has_bias = true},
      // 3x3 over one K block (compact column tiles), 96-pixel rows
      {.batch = 3,
       .in_channels = 5,
       .in_height = 17,
       .in_width = 96,
       .out_channels = 19,
       .kernel_height = 3,
       .kernel_width = 3,
       .padding = Padding2d::symmetric(1, 1),
       .has_bias = true},
      // deeper than one K block (forward accumulates over lowering blocks: the last pass stores ordinarily)
      {.batch = 2,
       .in_channels = 260,
       .in_height = 9,
       .in_width = 16,
       .out_channels = 9,
       .kernel_height = 3,
       .kernel_width = 3,
       .padding = Padding2d::symmetric(1, 1)},
      // small images, several samples per tile (y through the gather buffer)
      {.batch = 6,
       .in_channels = 3,
       .in_height = 8,
       .in_width = 8,
       .out_channels = 16,
       .kernel_height = 3,
       .kernel_width = 3,
       .has_bias = true},
  };
  // A buffer of `count` floats whose first element sits `skew` floats past a 64-byte boundary, prefilled with NaN.
  struct Placed {
    std::vector<float> storage;
    float* data;
    Placed(int64_t count, int64_t skew) : storage(static_cast<size_t>(count + 32), std::nanf("")) {
      const auto address = reinterpret_cast<uintptr_t>(storage.data());
      data = storage.data() + (64 - address % 64) % 64 / sizeof(float) + skew;
    }
    std::vector<float> values(int64_t count) const { return {data, data + count}; }
  };
  for (size_t i = 0; i < problems.size(); ++i) {
    const Conv2dParams& params = problems[i];
    const Conv2dShapes shapes = conv2d_shapes(params);
    std::mt19937_64 rng(900 + i);
    const std::vector<float> x = testing::random_floats(element_count(shapes.input), rng);
    const std::vector<float> w = testing::random_floats(element_count(shapes.weights), rng);
    const std::vector<float> b = testing::random_floats(shapes.bias, rng);
    for (const Parallelism parallelism : {Parallelism::across_batch, Parallelism::within_sample}) {
      const Conv2dPlan cached(params,
                              {.threads = 2, .parallelism = parallelism, .output_stores = OutputStores::cached});
      const Conv2dPlan streaming(
          params, {.threads = 2, .parallelism = parallelism, .output_stores = OutputStores::non_temporal});
      INFO(describe(params) << " | " << streaming.describe());
      // Only the 1x1 convolution's backward-data writes dx from its GEMM (the others through col2im).
      CHECK(streaming.describe().find("non-temporal stores of y") != std::string::npos);
      CHECK((streaming.describe().find("and dx") != std::string::npos) == (i == 0));
      CHECK(cached.describe().find("non-temporal") == std::string::npos);
      for (const int64_t skew : {0, 1, 4}) {
        INFO("output " << skew << " floats past a 64-byte boundary");
        for (const PostOp post_op : {PostOp::none, PostOp::relu}) {
          Placed expected(element_count(shapes.output), skew), actual(element_count(shapes.output), skew);
          cached.forward(testing::in(x, shapes.input), testing::in(w, shapes.weights), b,
                         {expected.data, shapes.output}, post_op);
          streaming.forward(testing::in(x, shapes.input), testing::in(w, shapes.weights), b,
                            {actual.data, shapes.output}, post_op);
          const std::vector<float> y = expected.values(element_count(shapes.output));
          REQUIRE(std::none_of(y.begin(), y.end(), [](float v) { return std::isnan(v); }));
          REQUIRE(testing::bitwise_equal(actual.values(element_count(shapes.output)), y));
        }
        const std::vector<float> dy = testing::random_floats(element_count(shapes.output), rng);
        Placed expected(element_count(shapes.input), skew), actual(element_count(shapes.input), skew);
        cached.backward_data(testing::in(dy, shapes.output), testing::in(w, shapes.weights),
                             {expected.data, shapes.input});
        streaming.backward_data(testing::in(dy, shapes.output), testing::in(w, shapes.weights),
                                {actual.data, shapes.input});
        const std::vector<float> dx = expected.values(element_count(shapes.input));
        REQUIRE(std::none_of(dx.begin(), dx.end(), [](float v) { return std::isnan(v); }));
        REQUIRE(testing::bitwise_equal(actual.values(element_count(shapes.input)), dx));
      }
      // And against the direct oracle, on the tester's own buffers.
      Conv2dTester(params, 950 + i).check(streaming);
    }
  }
}

TEST_CASE("conv2d: automatic output stores go around the cache only past 32 MiB of input and output", "[conv2d]") {
  const auto streams = [](const Conv2dParams& params) {
    return Conv2dPlan(params).describe().find("non-temporal") != std::string::npos;
  };
  // r50_1x1a: 51 MiB of input and 13 MiB of output; lenet1: 0.2 and 6.4 MiB.
  CHECK(streams({.batch = 16, .in_channels = 256, .in_height = 56, .in_width = 56, .out_channels = 64}));
  CHECK_FALSE(streams({.batch = 64,
                       .in_channels = 1,
                       .in_height = 28,
                       .in_width = 28,
                       .out_channels = 32,
                       .kernel_height = 3,
                       .kernel_width = 3,
                       .padding = Padding2d::symmetric(1, 1)}));
  // Exactly 32 MiB does not stream, one more sample does: 4 MiB of input and 4 MiB of output per sample.
  Conv2dParams four_samples{.batch = 4, .in_channels = 256, .in_height = 64, .in_width = 64, .out_channels = 256};
  CHECK_FALSE(streams(four_samples));
  four_samples.batch = 5;
  CHECK(streams(four_samples));
}
