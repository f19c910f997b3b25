// Conv2d through im2col + SGEMM: the plan (validated shapes, execution path, workspace), then forward,
// backward-data, backward-weights and backward-bias, each a short function naming the GEMM it performs.
//
// Per sample n and group g, with col = im2col(x[n, g]) of shape (C/G*R*S) x (P*Q):
//   forward           y[n, g]  = W[g] * col                       (K/G x P*Q)
//   backward-data     dx[n, g] = col2im(W[g]^T * dy[n, g])         (the full convolution with the flipped filter)
//   backward-weights  dW[g]   += dy[n, g] * col^T                  (K/G x C/G*R*S)
// A 1x1, stride-1, unpadded, undilated convolution has col == x[n, g], so it skips im2col/col2im entirely.
#include <convgemm/conv2d.hpp>
#include <convgemm/error.hpp>

#include "kernels/avx512.hpp"
#include "kernels/conv_gemm.hpp"
#include "kernels/depthwise.hpp"
#include "kernels/gemm.hpp"
#include "kernels/im2col.hpp"
#include "kernels/rows.hpp"
#include "ops/convolution_params.hpp"
#include "tensor_checks.hpp"
#include "workspace.hpp"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace convgemm {

using kernels::sgemm;
using kernels::Transpose;

// ---------------------------------------------------------------------------------------------------------------
// Parameters and shapes

int64_t conv2d_output_size(int64_t input, int64_t kernel, int64_t stride, int64_t pad_before, int64_t pad_after,
                           int64_t dilation) {
  const int64_t dilated_kernel = dilation * (kernel - 1) + 1;
  const int64_t span = input + pad_before + pad_after - dilated_kernel;
  // floor division; a negative span means the kernel does not fit
  return span < 0 ? 0 : span / stride + 1;
}

int64_t validated_output_size(int64_t input, int64_t kernel, int64_t stride, int64_t pad_before, int64_t pad_after,
                              int64_t dilation, const char* kernel_name, const char* axis) {
  const int64_t dilated_kernel = checked_product({dilation, kernel - 1}, std::string(kernel_name) + " * dilation") + 1;
  int64_t padded_input = 0;
  if (__builtin_add_overflow(input, pad_before, &padded_input) ||
      __builtin_add_overflow(padded_input, pad_after, &padded_input)) {
    throw Error(Status::invalid_argument, std::string("padding (") + axis + ")", "padded input size overflows 64 bits");
  }
  if (dilated_kernel > padded_input) {
    throw Error(Status::invalid_argument, kernel_name,
                std::to_string(kernel) + " (dilated extent " + std::to_string(dilated_kernel) +
                    ") is larger than the padded input " + axis + " " + std::to_string(padded_input));
  }
  return conv2d_output_size(input, kernel, stride, pad_before, pad_after, dilation);
}

Padding2d Padding2d::same(int64_t in_height, int64_t in_width, int64_t kernel_height, int64_t kernel_width,
                          Stride2d stride, Dilation2d dilation) {
  require_positive(in_height, "in_height");
  require_positive(in_width, "in_width");
  require_positive(kernel_height, "kernel_height");
  require_positive(kernel_width, "kernel_width");
  require_positive(stride.height, "stride.height");
  require_positive(stride.width, "stride.width");
  require_positive(dilation.height, "dilation.height");
  require_positive(dilation.width, "dilation.width");
  const auto total = [](int64_t input, int64_t kernel, int64_t s, int64_t d) {
    const int64_t output = (input + s - 1) / s;
    const int64_t dilated_kernel = checked_product({d, kernel - 1}, "dilated kernel") + 1;
    return std::max<int64_t>(0, (output - 1) * s + dilated_kernel - input);
  };
  const int64_t vertical = total(in_height, kernel_height, stride.height, dilation.height);
  const int64_t horizontal = total(in_width, kernel_width, stride.width, dilation.width);
  return {vertical / 2, vertical - vertical / 2, horizontal / 2, horizontal - horizontal / 2};
}

Conv2dShapes conv2d_shapes(const Conv2dParams& p) {
  check_convolution_params(p);
  const int64_t out_height = validated_output_size(p.in_height, p.kernel_height, p.stride.height, p.padding.top,
                                                   p.padding.bottom, p.dilation.height, "kernel_height", "height");
  const int64_t out_width = validated_output_size(p.in_width, p.kernel_width, p.stride.width, p.padding.left,
                                                  p.padding.right, p.dilation.width, "kernel_width", "width");
  Conv2dShapes shapes{
      .input = {p.batch, p.in_channels, p.in_height, p.in_width},
      .weights = {p.out_channels, p.in_channels / p.groups, p.kernel_height, p.kernel_width},
      .output = {p.batch, p.out_channels, out_height, out_width},
      .bias = p.has_bias ? p.out_channels : 0,
  };
  // Every tensor's size in bytes must be representable, so that no later index computation can overflow.
  checked_product({p.batch, p.in_channels, p.in_height, p.in_width, int64_t{sizeof(double)}}, "input size");
  checked_product({p.out_channels, p.in_channels / p.groups, p.kernel_height, p.kernel_width, int64_t{sizeof(double)}},
                  "weights size");
  checked_product({p.batch, p.out_channels, out_height, out_width, int64_t{sizeof(double)}}, "output size");
  return shapes;
}

double conv2d_flops(const Conv2dParams& p) {
  const Conv2dShapes shapes = conv2d_shapes(p);
  return 2.0 * static_cast<double>(p.batch) * static_cast<double>(p.out_channels) *
         static_cast<double>(p.in_channels / p.groups) * static_cast<double>(p.kernel_height * p.kernel_width) *
         static_cast<double>(shapes.output[2] * shapes.output[3]);
}

// ---------------------------------------------------------------------------------------------------------------
// The plan

namespace {

// A GEMM whose N (pixels) or K dimension is narrower than this runs well below the BLAS peak, so tiles are at
// least this wide, and small images are batched side by side until they reach it.
constexpr int64_t min_tile_pixels = 512;
// ...except a 1x1 convolution's images of at least this many pixels (two and a half micro-panels of the GEMM
// kernel), which stay one per tile: its GEMMs then read x and dY in place and write y and dx directly, where several
// samples side by side are copied into the column and gather buffers and y is copied back out. ResNet-50's 1x1
// layers at 14 x 14 in the suite (bench_conv2d --resnet50-1x1, medians of 3 alternating runs): backward-data +3-9 %,
// backward-weights 0-4 %, forward -1 to +3 %. A /tmp harness (batch 16, 2 threads, 1024 -> 256 and 256 -> 1024
// channels, three rounds): 14 x 14 forward +7 %, backward-data +5-10 %; 12 x 12 (three whole micro-panels) +30 %;
// 11 x 11 (121 pixels) forward +5-9 %, backward-data +13-19 %; 10 x 10 forward -6 to -11 %, backward-data mixed.
constexpr int64_t min_pointwise_sample_pixels = 120;
// Splitting one sample over threads stops at tiles this narrow: below it the GEMMs cost more than they share.
constexpr int64_t min_split_tile_pixels = 64;
// Forward's filter blocks (see filter_blocks): at least this many filters each, cut at the GEMM kernel's micro-tile
// rows (kernels::conv_gemm_row_block).
constexpr int64_t min_filter_block_rows = 32;
// backward-weights splits each group's input channels into blocks (so one sample can use several threads) with
// at least this many columns of dW per block. Shape-only, like every choice that affects dW's summation order.
constexpr int64_t min_weight_block_columns = 512;
constexpr int64_t max_weight_blocks = 8;
// backward-weights sums a chunk of consecutive tiles into one partial dW with accumulating GEMMs, and adds the
// chunks' partials in order. Chunks span at least this many pixels (fewer waves, fewer partial additions) but
// the batch still splits into at least min_weight_chunks of them (parallelism). Shape-only, again.
constexpr int64_t min_weight_chunk_pixels = 8192;
constexpr int64_t min_weight_chunks = 8;
// A dW of at most small_weights_bytes (a first layer: a few filters over 1-3 channels; lenet1's is 1.1 KiB) costs
// next to nothing to hold and add up per chunk, so its batch splits into at least min_small_weight_chunks, for the
// threads to balance: lenet1's weight gradient +6-10 % (medians of 7 alternating runs, 2 threads). 16 chunks for
// every shape had cost lenet2 2-9 % and r50_3x3b 4-7 % (session 9). Shape-only, as the rest.
constexpr int64_t small_weights_bytes = 16 << 10;
constexpr int64_t min_small_weight_chunks = 16;
// Every chunk's partial dW is held at once (one wave) when together they take at most this; otherwise a wave holds
// as many as there are threads. Each wave costs two fork-joins: lenet1's weight gradient (8 chunks of a 1 KiB dW,
// 0.2 ms a call) spent about a quarter of its time in TBB's waits and wake-ups at 4 waves; and a wave of one item
// per thread cannot be balanced (see parallel_ranges). 8 MiB rather than 2 takes r50_3x3b (8 chunks of 576 KiB)
// and alex_g2 into one wave: +11 % and +3 % (medians of 5 alternating runs); 32 MiB would also take r50_3x3c
// (8 x 2.3 MiB): 0.93x, its partials out of cache. The partials are summed in chunk order either way, so dW does
// not change.
constexpr size_t max_one_wave_partials_bytes = size_t{8} << 20;
// OutputStores::automatic writes y around the cache when the call's input and output together take more than this:
// the last-level cache one core reaches, a Zen 4/5 CCD's L3 (sysconf's figure is no guide in a VM: 508 MiB here, the
// host's total). Past it, y cannot all be in cache when the next layer reads it anyway, and each line written
// ordinarily is first read from memory (read for ownership) and evicts a line the call still needs. Non-temporal
// against ordinary stores, forward, same binary, medians of 5 alternating runs: with the memory bus shared (one
// thread, the other core copying 256 MiB buffers, as other processes or MPI ranks on a node do) r50_c1 (61 MiB) +11 /
// +14 %, r50_1x1a (64 MiB) +13 / +12 %, vgg_1_2 (128 MiB) +2 / +1 %, below the threshold lenet1 +5 / +2 %, r50_3x3c
// 0 %; on a quiet host (2 threads) r50_1x1a +0.5 %, vgg_1_2 +1.4 %, r50_c1 -2 %. Buffers read straight back (the
// gather and column buffers) keep ordinary stores: backward-data's column buffer streamed 0.82x.
constexpr size_t non_temporal_min_bytes = size_t{32} << 20;

// Whether OutputStores::automatic also streams backward-data's dx past that size, where a 1x1 convolution's GEMM
// writes it directly (W^T * dY, whole samples, one pass; everything else goes through col2im, which reads dx back).
// That GEMM writes 256 rows of dx 48 floats at a time, and with ordinary stores each line is first read from memory:
// r50_1x1a's backward-data (51 MB of dx) ran 154 -> 206 GFLOP/s streamed on AMD Zen 4 (2 threads, medians of 5
// alternating runs; oneDNN 215 in the same runs). On Zen 5 (family 0x1A) it measured 0.95x, 0.97-0.99x and 0.96x in
// three sessions, so there dx keeps ordinary stores unless non_temporal is asked for.
bool streams_input_grad_by_default() {
#ifdef CONVGEMM_HAVE_AVX512
  return !kernels::cpu_is_amd_zen5();
#else
  return true;
#endif
}

// The untouched bytes between one thread's workspace slot and the next. With the slots back to back, the thread
// on the second slot ran lenet1's forward tiles 1.5-3.5x slower than the thread on the first (5.9 against 8.7-21
// us a tile, a /tmp loop of 3000 calls, Zen 4; swapping the slots swapped the slow thread, so it follows the memory,
// not the core). Gaps of 0.5-4 KiB left it so, 16 KiB halved it, 32 KiB and more removed it (2 threads: 300 ->
// 188 us a call). The likely cause is one core's prefetchers running past the end of its slot into the next, whose
// lines the other core then has to take back; 64 KiB leaves room for that.
constexpr size_t slot_gap_bytes = size_t{64} << 10;

// Half the L2 cache: the column tile shares it with the GEMM's packed panels.
int64_t column_tile_budget_bytes() {
  const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
  return (l2 > 0 ? l2 : 1 << 20) / 2;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

size_t float_bytes(int64_t floats) { return round_up_to_alignment(static_cast<size_t>(floats) * sizeof(float)); }

enum class Path { im2col_gemm, pointwise_gemm, depthwise_direct };

// A rectangle of the flattened (sample, output pixel) space: one GEMM's worth of columns.
struct Tile {
  int64_t n_begin, n_end, pixel_begin, pixel_end;
  int64_t samples() const { return n_end - n_begin; }
  int64_t pixels() const { return pixel_end - pixel_begin; }
  int64_t width() const { return samples() * pixels(); }
};

// How the flattened (sample, output pixel) space is cut into tiles: either tiles of one sample's pixels, or
// (samples_per_tile > 1) whole small samples side by side.
struct Tiling {
  int64_t batch = 0, output_pixels = 0;
  int64_t samples_per_tile = 0, tile_pixels = 0, tiles_per_sample = 0, sample_groups = 0;
  int64_t multiple = 1;   // where tiles inside a sample may end (the last excepted)
  bool balanced = false;  // tile t of a sample starts at balanced_begin(t), else at t * tile_pixels

  Tiling() = default;
  // Tiles of about max_pixels columns at most, balanced.
  // Samples smaller than min_tile_pixels are laid side by side until the tile reaches min_tile_pixels: just wide
  // enough for an efficient GEMM, no wider, since every extra sample adds gather/scatter traffic.
  Tiling(int64_t batch_, int64_t output_pixels_, int64_t max_pixels, int64_t min_pixels, int64_t multiple_)
      : batch(batch_), output_pixels(output_pixels_), multiple(multiple_) {
    if (output_pixels >= min_pixels) {
      samples_per_tile = 1;
      tiles_per_sample = (output_pixels + max_pixels - 1) / max_pixels;
      tile_pixels = (output_pixels + tiles_per_sample - 1) / tiles_per_sample;  // balanced tiles
      // Cut at multiples of `multiple` (only one ragged tile per sample), unless that takes more tiles; narrower
      // tiles (a workspace cap) stay as they are. Each boundary is the multiple nearest to an equal split where the
      // tiles are at least a multiple wide (a 14 x 14 image of a 1x1 convolution in two tiles: 96 + 100 pixels
      // rather than 144 + 52, which left one of two threads idle for 47 % of the call), else every tile but the
      // last is one width, rounded up.
      if (tiles_per_sample > 1 && tile_pixels >= multiple) {
        const int64_t widened = (tile_pixels + multiple - 1) / multiple * multiple;
        tiles_per_sample = (output_pixels + widened - 1) / widened;
        balanced = output_pixels / tiles_per_sample >= multiple;
        tile_pixels = widened;
        if (balanced) {
          tile_pixels = 0;
          for (int64_t t = 0; t < tiles_per_sample; ++t) {
            tile_pixels = std::max(tile_pixels, balanced_begin(t + 1) - balanced_begin(t));
          }
        }
      }
    } else {
      samples_per_tile = std::clamp<int64_t>(min_pixels / output_pixels, 1, batch);
      tiles_per_sample = 1;
      tile_pixels = output_pixels;
      // Balanced groups: 16 samples in tiles of 10 would leave one tile of 6.
      const int64_t groups = (batch + samples_per_tile - 1) / samples_per_tile;
      samples_per_tile = (batch + groups - 1) / groups;
    }
    sample_groups = (batch + samples_per_tile - 1) / samples_per_tile;
  }
  // The first pixel of tile t of tiles_per_sample balanced ones (t == tiles_per_sample: the end of the sample).
  int64_t balanced_begin(int64_t t) const {
    if (t == tiles_per_sample) return output_pixels;
    return (t * output_pixels + tiles_per_sample * multiple / 2) / (tiles_per_sample * multiple) * multiple;
  }
  // The widest tile: what a tile's buffers hold.
  int64_t width() const { return samples_per_tile * tile_pixels; }
  int64_t count() const { return sample_groups * tiles_per_sample; }
  Tile tile(int64_t index) const {
    const int64_t group = index / tiles_per_sample, t = index % tiles_per_sample;
    const int64_t n_begin = group * samples_per_tile;
    const int64_t pixel_begin = balanced ? balanced_begin(t) : t * tile_pixels;
    const int64_t pixel_end = balanced ? balanced_begin(t + 1) : std::min(output_pixels, pixel_begin + tile_pixels);
    return {n_begin, std::min(batch, n_begin + samples_per_tile), pixel_begin, pixel_end};
  }
};

// The columns a GEMM reads: a workspace buffer, or the input itself for 1x1 convolutions.
struct Columns {
  const float* data;
  int64_t stride;
};

// The B operand for a tile of dY (group g): dY itself, or a gathered copy when the tile spans samples.
struct OutputGradTile {
  const float* data;
  int64_t stride;
};

}  // namespace

// Items [front, back) of one slot's range (see parallel_ranges), both ends in one atomic word so that the slot
// taking its next item from the front and another taking the last from the back cannot both get the same one.
// Aligned to a cache line: each slot's range is written by that slot alone until the stealing starts.
struct alignas(64) ItemRange {
  std::atomic<uint64_t> bounds{0};
  static uint64_t pack(uint64_t front, uint64_t back) { return front | back << 32; }
  void reset(int64_t front, int64_t back) {
    bounds.store(pack(static_cast<uint64_t>(front), static_cast<uint64_t>(back)), std::memory_order_relaxed);
  }
  // The item taken, or -1 when the range is empty.
  template <bool from_front>
  int64_t take() {
    uint64_t current = bounds.load(std::memory_order_relaxed);
    for (;;) {
      const uint64_t front = current & 0xFFFFFFFFu, back = current >> 32;
      if (front >= back) return -1;
      const uint64_t next = from_front ? pack(front + 1, back) : pack(front, back - 1);
      if (bounds.compare_exchange_weak(current, next, std::memory_order_relaxed)) {
        return static_cast<int64_t>(from_front ? front : back - 1);
      }
    }
  }
  int64_t take_front() { return take<true>(); }
  int64_t take_back() { return take<false>(); }
};

struct Conv2dPlan::Impl {
  Conv2dParams params;
  Conv2dShapes shapes;
  int threads;
  Parallelism parallelism;
  // Set when the caller asked for a thread count: every call then runs inside this arena.
  mutable std::optional<oneapi::tbb::task_arena> arena;

  int64_t group_in_channels;   // C/G
  int64_t group_out_channels;  // K/G
  int64_t input_pixels;        // H*W
  int64_t output_pixels;       // P*Q
  int64_t col_rows;            // C/G*R*S: the GEMM's inner dimension in forward
  Path path;
  kernels::ImageGeometry geometry;  // one group's image

  // Forward and backward-data tile by `tiling`, which a workspace cap may narrow. Backward-weights tiles by
  // `weight_tiling`, which depends on the shape alone: its sample groups are the chunks of the fixed-order dW
  // reduction, each split into weight_blocks channel blocks, so dW is the same sum for any thread count or cap.
  Tiling tiling;
  Tiling weight_tiling;
  int64_t weight_blocks;
  int64_t weight_chunk_tiles;  // consecutive tiles of weight_tiling per chunk
  int64_t weight_chunks;
  int64_t weight_wave_chunks;  // chunks whose partial dW are held at once (a cap may lower it, never the sums)
  int64_t weight_slots;        // concurrent backward-weights items (a cap may lower it)
  // backward-data within a sample: channel blocks (their col2im writes are disjoint).
  int64_t data_blocks;
  // Forward lowers the input channels in this many equal blocks (see forward_tile).
  int64_t lowering_blocks;
  // The bytes between workspace slots: slot_gap_bytes, or none under a workspace cap that it would break.
  size_t slot_gap = slot_gap_bytes;
  // Forward's GEMMs store y around the cache, and backward-data's GEMMs dx where they write it directly (see
  // OutputStores and streams_input_grad_by_default).
  bool streams_output, streams_input_grad;

  mutable WorkspacePool pool;

  Impl(const Conv2dParams& p, const ExecutionOptions& options)
      : params(p), shapes(conv2d_shapes(p)), parallelism(options.parallelism) {
    if (options.threads < 0) {
      throw Error(Status::invalid_argument, "threads", "must not be negative, got " + std::to_string(options.threads));
    }
    if (options.threads > 0) {
      arena.emplace(options.threads);
      arena->initialize();
    }
    threads = options.threads > 0 ? options.threads : oneapi::tbb::this_task_arena::max_concurrency();

    group_in_channels = p.in_channels / p.groups;
    group_out_channels = p.out_channels / p.groups;
    input_pixels = p.in_height * p.in_width;
    output_pixels = shapes.output[2] * shapes.output[3];
    col_rows = group_in_channels * p.kernel_height * p.kernel_width;
    const bool pointwise = p.kernel_height == 1 && p.kernel_width == 1 && p.stride.height == 1 && p.stride.width == 1 &&
                           p.padding.top == 0 && p.padding.bottom == 0 && p.padding.left == 0 && p.padding.right == 0;
    path = group_in_channels == 1 && p.groups > 1 ? Path::depthwise_direct
           : pointwise                            ? Path::pointwise_gemm
                                                  : Path::im2col_gemm;
    geometry = {
        .channels = group_in_channels,
        .height = p.in_height,
        .width = p.in_width,
        .kernel_height = p.kernel_height,
        .kernel_width = p.kernel_width,
        .stride_height = p.stride.height,
        .stride_width = p.stride.width,
        .pad_top = p.padding.top,
        .pad_left = p.padding.left,
        .dilation_height = p.dilation.height,
        .dilation_width = p.dilation.width,
        .output_height = shapes.output[2],
        .output_width = shapes.output[3],
    };

    kernels::require_blas_dimension(group_out_channels, "out_channels / groups");
    kernels::require_blas_dimension(col_rows, "in_channels / groups * kernel_height * kernel_width");
    kernels::require_blas_dimension(output_pixels, "output_height * output_width");
    // Forward lowers a column matrix deeper than the AVX-512 GEMM kernel takes in blocks of whole channels, as equal
    // as possible, of at most one K block of the kernel (or one channel): r50_3x3c (2304 rows) +7 %, r50_3x3d (4608)
    // +17 %, against one deep GEMM on OpenBLAS. Shallower ones stay whole: blocks of them measured 2-4 % slower
    // (r50_3x3a, r50_3x3b, vgg_1_2, medians of 8 alternating pairs), the extra, shallower passes over C costing more
    // than the column block staying in L2 saves.
    const int64_t most_channels = std::max<int64_t>(1, kernels::conv_gemm_depth_block / geometry.taps());
    const bool deep = col_rows > kernels::conv_gemm_max_depth;
    lowering_blocks = path == Path::im2col_gemm && deep ? ceil_div(group_in_channels, most_channels) : 1;

    weight_blocks =
        std::clamp<int64_t>(col_rows / min_weight_block_columns, 1, std::min(max_weight_blocks, group_in_channels));
    // The column tile (and the gathered dY of a multi-sample tile) fit in the L2 budget.
    const int64_t budget = column_tile_budget_bytes() / static_cast<int64_t>(sizeof(float));
    const int64_t max_pixels = std::max(min_tile_pixels, budget / (col_rows + group_out_channels));
    const bool whole_pointwise_samples = path == Path::pointwise_gemm && output_pixels >= min_pointwise_sample_pixels;
    use_weight_tiling(make_tiling(max_pixels, whole_pointwise_samples ? std::min(min_tile_pixels, output_pixels)
                                                                      : min_tile_pixels));
    kernels::require_blas_dimension(weight_tiling.width(), "tile width");
    const bool one_wave =
        static_cast<size_t>(weight_chunks) * float_bytes(element_count(shapes.weights)) <= max_one_wave_partials_bytes;
    weight_wave_chunks = one_wave ? weight_chunks : std::min(ceil_div(threads, weight_blocks), weight_chunks);
    weight_slots = threads;
    // Forward and backward-data start from the same tiles; when the batch cannot keep every thread busy, forward
    // cuts each sample into at least one tile per thread (down to min_split_tile_pixels).
    Tiling tiles = weight_tiling;
    if (parallelism != Parallelism::across_batch && tiles.sample_groups < threads) {
      const int64_t wanted = ceil_div(threads, tiles.sample_groups);
      if (tiles.tiles_per_sample < wanted) {
        const int64_t split = std::max(min_split_tile_pixels, ceil_div(output_pixels, wanted));
        tiles = make_tiling(split, std::min(split, min_tile_pixels));
      }
    }
    use_tiling(tiles);
    if (options.workspace_limit_bytes > 0) fit_workspace(options.workspace_limit_bytes);
    const size_t footprint = float_bytes(element_count(shapes.input) + element_count(shapes.output));
    const bool large = options.output_stores == OutputStores::automatic && footprint > non_temporal_min_bytes;
    streams_output = options.output_stores == OutputStores::non_temporal || large;
    streams_input_grad = writes_input_grad_directly() && (options.output_stores == OutputStores::non_temporal ||
                                                          (large && streams_input_grad_by_default()));
  }

  // Tiles of one sample's pixels end on whole output rows where im2col and col2im have whole-row paths, and on
  // whole micro-panels of the GEMM kernel otherwise (measured: r50_c1's weight gradient +16-27 %; cutting r50_3x3a's
  // 56-pixel rows at micro-panels instead cost its forward 12-18 %).
  Tiling make_tiling(int64_t max_pixels, int64_t min_pixels) const {
    const int64_t Q = shapes.output[3];
    const int64_t multiple =
        path == Path::im2col_gemm && Q <= kernels::max_whole_row_width ? Q : kernels::conv_gemm_column_block;
    return Tiling(params.batch, output_pixels, max_pixels, min_pixels, multiple);
  }

  void use_weight_tiling(const Tiling& chosen) {
    weight_tiling = chosen;
    const bool small_weights =
        element_count(shapes.weights) * static_cast<int64_t>(sizeof(float)) <= small_weights_bytes;
    const int64_t least_chunks = small_weights ? min_small_weight_chunks : min_weight_chunks;
    weight_chunk_tiles = std::max<int64_t>(
        1, std::min(ceil_div(min_weight_chunk_pixels, chosen.width()), ceil_div(chosen.count(), least_chunks)));
    weight_chunks = ceil_div(chosen.count(), weight_chunk_tiles);
  }

  void use_tiling(const Tiling& chosen) {
    tiling = chosen;
    // Within a sample, backward-data splits channels so that every thread has a block.
    const bool split_sample = parallelism == Parallelism::within_sample ||
                              (parallelism == Parallelism::automatic && tiling.sample_groups < threads);
    const int64_t thread_blocks = split_sample ? std::min<int64_t>(group_in_channels, threads) : 1;
    // And into blocks of W^T's rows short enough for the AVX-512 kernel when dY is more than one of its K blocks
    // deep (see kernels::conv_gemm_max_transposed_rows; a multiple of the thread split, to stay balanced):
    // backward-data of r50_3x3c (2304 rows, 5 blocks) +28 %, r50_3x3d (4608, 10 blocks) +38 % against OpenBLAS on
    // all the rows (medians of 4 alternating pairs), col2im reading a smaller C back.
    const int64_t gemm_channels =
        std::max<int64_t>(1, kernels::conv_gemm_max_transposed_rows(group_out_channels) / geometry.taps());
    const int64_t thread_block_channels = ceil_div(group_in_channels, thread_blocks);
    const int64_t gemm_blocks =  // (gemm_channels may be INT64_MAX / taps: no ceil_div on it)
        thread_block_channels <= gemm_channels ? 1 : ceil_div(thread_block_channels, gemm_channels);
    data_blocks = std::min(group_in_channels, thread_blocks * gemm_blocks);
  }

  // Under a cap: halve the forward/backward-data tiles until the calls fit with every thread busy. For
  // backward-weights the tiles shrink until one item and one partial dW fit (a test that does not involve the
  // thread count, so dW's sums stay the same for any thread count), then as many items run at once as fit. A cap at
  // or above what the plan needs changes nothing (the narrowing would not start: one item's footprint fits too).
  void fit_workspace(size_t limit) {
    if (workspace_bytes_max() <= limit) return;
    slot_gap = 0;  // a cap below what the plan needs packs the slots back to back before it narrows anything
    weight_wave_chunks = 1;
    weight_slots = 1;
    for (int64_t target = weight_tiling.width();
         workspace_bytes(Conv2dDirection::backward_weights) > limit && target > 1;) {
      target = ceil_div(target, 2);
      use_weight_tiling(make_tiling(target, std::min(target, min_tile_pixels)));
    }
    while (weight_slots < threads && workspace_bytes_with_weight_slots(weight_slots + 1) <= limit) ++weight_slots;
    for (int64_t target = tiling.width();
         std::max(workspace_bytes(Conv2dDirection::forward), workspace_bytes(Conv2dDirection::backward_data)) > limit &&
         target > 1;) {
      target = ceil_div(target, 2);
      use_tiling(make_tiling(target, std::min(target, min_tile_pixels)));
    }
    if (workspace_bytes_max() > limit) {
      throw Error(Status::invalid_argument, "workspace_limit_bytes",
                  std::to_string(limit) + " is below the " + std::to_string(workspace_bytes_max()) +
                      " bytes the narrowest tiling needs");
    }
  }

  size_t workspace_bytes_with_weight_slots(int64_t candidate) const {
    return workspace_bytes_for_slots(Conv2dDirection::backward_weights,
                                     std::min(candidate, work_items(Conv2dDirection::backward_weights)));
  }

  // --- work decomposition and workspace ---------------------------------------------------------------------

  const Tiling& tiling_for(Conv2dDirection direction) const {
    return direction == Conv2dDirection::backward_weights ? weight_tiling : tiling;
  }

  // Forward within a sample of fewer tiles than threads (batch-1 inference of a 7 x 7 image: one tile) splits the
  // filters too, in this many blocks of whole micro-tile rows: each item multiplies its block of W by the tile's
  // columns (lowered again for each block: a small share beside its GEMM). Every entry of y is the same sum.
  bool forward_within_samples() const {
    return parallelism == Parallelism::within_sample ||
           (parallelism == Parallelism::automatic && tiling.sample_groups < threads);
  }
  int64_t filter_blocks() const {
    if (!forward_within_samples() || tiling.samples_per_tile > 1 || tiling.tiles_per_sample >= threads) return 1;
    return std::clamp<int64_t>(group_out_channels / min_filter_block_rows, 1,
                               ceil_div(threads, tiling.tiles_per_sample));
  }
  // Filters [begin, end) of block b of filter_blocks(): ends on whole micro-tile rows (8), the last excepted.
  std::pair<int64_t, int64_t> filter_block(int64_t b, int64_t blocks) const {
    const auto begin = [&](int64_t i) {
      constexpr int64_t rows = kernels::conv_gemm_row_block;
      return i == blocks ? group_out_channels : i * group_out_channels / blocks / rows * rows;
    };
    return {begin(b), begin(b + 1)};
  }

  // Items each direction splits into. Forward: (tile, filter block). Backward-data: (sample group, channel block).
  // Backward-weights, per wave: (chunk, channel block). Depthwise: (sample, channel), or filters for dW.
  int64_t work_items(Conv2dDirection direction) const {
    if (path == Path::depthwise_direct) {
      return direction == Conv2dDirection::backward_weights ? params.out_channels : params.batch * params.in_channels;
    }
    switch (direction) {
      case Conv2dDirection::forward: return tiling.count() * filter_blocks();
      case Conv2dDirection::backward_data: return tiling.sample_groups * data_blocks;
      case Conv2dDirection::backward_weights: return weight_wave_chunks * weight_blocks;
      case Conv2dDirection::backward_bias: return params.out_channels;
    }
    return 1;
  }

  int64_t slots(Conv2dDirection direction) const {
    const int64_t limit = direction == Conv2dDirection::backward_weights ? weight_slots : threads;
    return std::min<int64_t>(limit, work_items(direction));
  }

  // Per-slot buffers: the column tile, and the gathered dY / GEMM output of a multi-sample tile. A 1x1
  // convolution over single-sample tiles needs no column buffer: its GEMMs read x and write dx themselves.
  // (For 1x1 the input pixels are the output pixels, so the 32-bit checks also cover H*W as a leading dimension.)
  // Forward's and backward-data's column buffers hold their largest block of channels.
  size_t col_bytes(Conv2dDirection direction) const {
    const Tiling& t = tiling_for(direction);
    if (path == Path::depthwise_direct || (path == Path::pointwise_gemm && t.samples_per_tile == 1)) return 0;
    const int64_t channels = direction == Conv2dDirection::forward         ? largest_channel_block(lowering_blocks)
                             : direction == Conv2dDirection::backward_data ? largest_channel_block(data_blocks)
                                                                           : group_in_channels;
    return float_bytes(channels * geometry.taps() * buffer_stride(t.width()));
  }
  size_t gather_bytes(Conv2dDirection direction) const {
    const Tiling& t = tiling_for(direction);
    if (path == Path::depthwise_direct || t.samples_per_tile == 1) return 0;
    return float_bytes(group_out_channels * buffer_stride(t.width()));
  }
  // The leading dimension of the column and gather buffers for a tile `width` pixels wide: rounded up to whole
  // cache lines (kernels::conv_gemm_row_padding), so that every row starts on one, as the slots do, and a vector
  // load reads one line instead of two. Tiles of several 196-pixel samples (lenet2: rows of 588 floats) or 49-pixel
  // ones (r50_3x3d) had every row but one in sixteen straddle lines: forward of lenet2 +2-6 %, r50_3x3d +3 %, lenet2's
  // weight gradient +2-6 % (its dot kernel, aligned against misaligned in a /tmp harness: 141 against 107-110
  // GFLOP/s on one thread), the rest level (medians of 5-7 alternating runs, 2 threads).
  static int64_t buffer_stride(int64_t width) {
    constexpr int64_t line = kernels::conv_gemm_row_padding + 1;
    return (width + line - 1) / line * line;
  }
  // The GEMM's panel buffer (kernels::conv_gemm), for a B read in place from a wider matrix: forward's image of a
  // 1x1 convolution, backward-data's dY under im2col, when a sample is cut into several tiles; and for a 1x1
  // convolution's backward-data, which multiplies whole samples (see backward_data_item) and streams a deep dY under
  // few channels. Not for tiles narrower than one micro-panel (a tight workspace cap), where it would outgrow the
  // tile: those GEMMs read their B in place; nor where the GEMM reads every micro-panel in place anyway (at most 128
  // filters over 128 channels or more, see conv_gemm_panel_floats).
  // Backward-weights' panel kernel packs one micro-panel of the column tile's transpose, as deep as the tile is
  // wide (the largest channel block decides: fewer columns of dW never need more).
  size_t panel_bytes(Conv2dDirection direction) const {
    if (direction == Conv2dDirection::backward_weights) {
      if (path == Path::depthwise_direct) return 0;
      return float_bytes(kernels::weight_gemm_panel_floats(
          group_out_channels, largest_channel_block(weight_blocks) * geometry.taps(), weight_tiling.width()));
    }
    const bool forward = direction == Conv2dDirection::forward;
    if (!forward && writes_input_grad_directly()) {
      return float_bytes(kernels::conv_gemm_panel_floats(Transpose::yes, largest_channel_block(data_blocks),
                                                         output_pixels, group_out_channels, output_pixels));
    }
    const bool in_place = (forward && path == Path::pointwise_gemm) || (direction == Conv2dDirection::backward_data &&
                                                                         path == Path::im2col_gemm);
    if (!in_place || tiling.samples_per_tile > 1 || tiling.tiles_per_sample == 1 ||
        tiling.width() < kernels::conv_gemm_column_block) {
      return 0;
    }
    // A's rows: forward's filters, or backward-data's largest block of channels (the size covers every smaller block:
    // see conv_gemm_panel_floats).
    const int64_t rows = forward ? group_out_channels : largest_channel_block(data_blocks) * geometry.taps();
    return float_bytes(kernels::conv_gemm_panel_floats(forward ? Transpose::no : Transpose::yes, rows, tiling.width(),
                                                       forward ? col_rows : group_out_channels,
                                                       forward ? input_pixels : output_pixels));
  }
  size_t slot_bytes(Conv2dDirection direction) const {
    if (direction == Conv2dDirection::backward_bias) return 0;
    return col_bytes(direction) + gather_bytes(direction) + panel_bytes(direction);
  }
  // From one slot's start to the next: its buffers, then slot_gap bytes that no thread touches.
  size_t slot_stride(Conv2dDirection direction) const {
    const size_t bytes = slot_bytes(direction);
    return bytes == 0 ? 0 : bytes + slot_gap;
  }
  // `count` slots after the partials.
  size_t workspace_bytes_for_slots(Conv2dDirection direction, int64_t count) const {
    const size_t bytes = slot_bytes(direction);
    return partials_bytes(direction) +
           (count == 0 || bytes == 0 ? 0 : static_cast<size_t>(count - 1) * slot_stride(direction) + bytes);
  }
  size_t partials_bytes(Conv2dDirection direction) const {
    if (direction != Conv2dDirection::backward_weights || path == Path::depthwise_direct) return 0;
    return static_cast<size_t>(weight_wave_chunks) * float_bytes(element_count(shapes.weights));
  }
  size_t workspace_bytes(Conv2dDirection direction) const {
    return workspace_bytes_for_slots(direction, slots(direction));
  }
  size_t workspace_bytes_max() const {
    return std::max({workspace_bytes(Conv2dDirection::forward), workspace_bytes(Conv2dDirection::backward_data),
                     workspace_bytes(Conv2dDirection::backward_weights)});
  }

  // Layout: [partial dW of each wave chunk][slot 0: col, gather, panels][gap][slot 1: ...][gap]...[last slot]
  struct SlotBuffers {
    float* col;
    float* gather;
    float* panels;  // nullptr when the direction needs none
  };
  SlotBuffers slot_buffers(std::span<std::byte> workspace, Conv2dDirection direction, int64_t slot) const {
    std::byte* base = workspace.data() + partials_bytes(direction) + static_cast<size_t>(slot) * slot_stride(direction);
    const size_t col = col_bytes(direction), gather = gather_bytes(direction);
    return {reinterpret_cast<float*>(base), reinterpret_cast<float*>(base + col),
            panel_bytes(direction) == 0 ? nullptr : reinterpret_cast<float*>(base + col + gather)};
  }
  float* partial(std::span<std::byte> workspace, int64_t wave_chunk) const {
    return reinterpret_cast<float*>(workspace.data() +
                                    static_cast<size_t>(wave_chunk) * float_bytes(element_count(shapes.weights)));
  }

  template <class Function>
  void run(Function&& function) const {
    kernels::use_single_threaded_blas();
    if (arena) {
      arena->execute(function);
    } else {
      function();
    }
  }

  // Splits items [0, count) into min(max_slots, count) contiguous ranges, one per slot, each worked front to back by
  // its slot: body(slot, begin, end) for a run of its items. A slot whose range is done takes the other ranges'
  // items one at a time from their backs. The split decides only who computes what, never what is computed.
  // Why the stealing: the host's cores do not run at one speed (one of the two ran single-threaded convolutions
  // 17 % slower than the other for minutes at a time, pinned with taskset), and with fixed halves the call waited
  // for the slower one. Against fixed halves (2 threads, medians of 4 alternating runs): forward lenet1 +5 %, lenet2
  // +9 %, r50_c1 +14 %, r50_3x3a +5 %, r50_1x1a +6 %; backward-data lenet1 +10 %, lenet2 +12 %, r50_3x3a +8 %;
  // the rest level (0.97-1.04).
  template <class Body>
  void parallel_ranges(int64_t count, Body&& body, int64_t max_slots = 0) const {
    const int64_t slot_count = std::min<int64_t>(max_slots > 0 ? max_slots : threads, count);
    if (count > int64_t{std::numeric_limits<uint32_t>::max()}) {  // beyond ItemRange's 32-bit ends: fixed ranges
      oneapi::tbb::parallel_for(int64_t{0}, slot_count, [&](int64_t slot) {
        body(slot, slot * count / slot_count, (slot + 1) * count / slot_count);
      });
      return;
    }
    std::vector<ItemRange> ranges(static_cast<size_t>(slot_count));
    for (int64_t slot = 0; slot < slot_count; ++slot) {
      ranges[slot].reset(slot * count / slot_count, (slot + 1) * count / slot_count);
    }
    oneapi::tbb::parallel_for(int64_t{0}, slot_count, [&](int64_t slot) {
      for (int64_t item; (item = ranges[slot].take_front()) >= 0;) body(slot, item, item + 1);
      for (int64_t other = (slot + 1) % slot_count; other != slot; other = (other + 1) % slot_count) {
        for (int64_t item; (item = ranges[other].take_back()) >= 0;) body(slot, item, item + 1);
      }
    });
  }

  // Forward's tiles, split by the parallelism policy: contiguous ranges of all tiles (across the batch), or
  // the tiles of one sample group at a time (within each sample).
  template <class Body>
  void parallel_over_tiles(Body&& body) const {
    const int64_t per_group = tiling.tiles_per_sample * filter_blocks();
    if (!forward_within_samples()) {
      if (parallelism == Parallelism::across_batch) {
        parallel_ranges(tiling.sample_groups, [&](int64_t slot, int64_t begin, int64_t end) {
          body(slot, begin * per_group, end * per_group);
        });
      } else {
        parallel_ranges(tiling.count(), body);
      }
      return;
    }
    for (int64_t group = 0; group < tiling.sample_groups; ++group) {
      parallel_ranges(per_group, [&](int64_t slot, int64_t begin, int64_t end) {
        body(slot, group * per_group + begin, group * per_group + end);
      });
    }
  }

  // --- GEMM operands ----------------------------------------------------------------------------------------

  // Channel c of group g of sample n, in x or dx.
  template <class T>
  T* input_channels(T* input, int64_t n, int64_t g, int64_t c) const {
    return input + ((n * params.in_channels) + g * group_in_channels + c) * input_pixels;
  }
  int64_t output_offset(int64_t n, int64_t g, int64_t k) const {
    return ((n * params.out_channels) + g * group_out_channels + k) * output_pixels;
  }

  // The column matrix of `tile` for input channels [c_begin, c_end) of group g (in col: rows buffer_stride apart).
  Columns lower(const float* input, int64_t g, int64_t c_begin, int64_t c_end, const Tile& tile, float* col) const {
    if (path == Path::pointwise_gemm && tile.samples() == 1) {
      return {input_channels(input, tile.n_begin, g, c_begin) + tile.pixel_begin, input_pixels};
    }
    kernels::ImageGeometry block = geometry;
    block.channels = c_end - c_begin;
    const int64_t col_stride = buffer_stride(tile.width());
    for (int64_t n = tile.n_begin; n < tile.n_end; ++n) {
      kernels::im2col(block, input_channels(input, n, g, c_begin), tile.pixel_begin, tile.pixel_end,
                      col + (n - tile.n_begin) * tile.pixels(), col_stride);
    }
    return {col, col_stride};
  }

  // dY[:, tile] of group g as a (K/G) x width matrix (gathered: rows buffer_stride apart).
  OutputGradTile output_grad_tile(const float* output_grad, int64_t g, const Tile& tile, float* gather) const {
    if (tile.samples() == 1) {
      return {output_grad + output_offset(tile.n_begin, g, 0) + tile.pixel_begin, output_pixels};
    }
    const int64_t gather_stride = buffer_stride(tile.width());
    for (int64_t n = tile.n_begin; n < tile.n_end; ++n) {
      for (int64_t k = 0; k < group_out_channels; ++k) {
        const float* from = output_grad + output_offset(n, g, k);
        std::copy(from, from + output_pixels, gather + k * gather_stride + (n - tile.n_begin) * output_pixels);
      }
    }
    return {gather, gather_stride};
  }

  // --- the GEMM path ----------------------------------------------------------------------------------------

  // y[:, tile] = W * im2col(x)[:, tile] + b, then the post-op, the column matrix lowered and multiplied in
  // lowering_blocks blocks of input channels (one, unless it is deeper than the GEMM kernel takes). The GEMMs after
  // the first add to C; the last applies bias and ReLU while C is in registers (prefilling y with the bias would cost
  // a pass over memory). A tile of several samples adds them as it copies its product from the gather buffer to y:
  // the same sum, then the same addition, so y does not depend on the tiling (nor on the thread count).
  // Item `item` of parallel_over_tiles: filter block item % filter_blocks() of tile item / filter_blocks().
  void forward_tile(const float* input, const float* weights, const float* bias, float* output, int64_t item,
                    SlotBuffers buffers, PostOp post_op) const {
    const int64_t blocks = filter_blocks(), tile_index = item / blocks;
    const auto [k_begin, k_end] = filter_block(item % blocks, blocks);
    const Tile tile = tiling.tile(tile_index);
    const bool relu = post_op == PostOp::relu;
    const bool single_sample = tile.samples() == 1;
    // A 1x1 GEMM reads its B (the image) in place and streams it from memory; it is told where the GEMM this thread
    // most likely runs next reads (the next group, else the next tile), to start on that too before it ends.
    const auto next_image = [&](int64_t g) -> const float* {
      if (path != Path::pointwise_gemm || tiling.samples_per_tile > 1) return nullptr;  // (one lowering block)
      if (g + 1 < params.groups) return input_channels(input, tile.n_begin, g + 1, 0) + tile.pixel_begin;
      if (tile_index + 1 == tiling.count()) return nullptr;
      const Tile next = tiling.tile(tile_index + 1);
      return input_channels(input, next.n_begin, 0, 0) + next.pixel_begin;
    };
    const int64_t taps = geometry.taps();
    for (int64_t g = 0; g < params.groups; ++g) {
      // Several small samples side by side: the product lands in the gather buffer and is spread back to y.
      // (A filter block of several samples is all filters: see filter_blocks.)
      float* product =
          single_sample ? output + output_offset(tile.n_begin, g, k_begin) + tile.pixel_begin : buffers.gather;
      const int64_t product_stride = single_sample ? output_pixels : buffer_stride(tile.width());
      const float* weights_g = weights + (g * group_out_channels + k_begin) * col_rows;
      for (int64_t b = 0; b < lowering_blocks; ++b) {
        const auto [c_begin, c_end] = channel_block(b, lowering_blocks);
        const Columns cols = lower(input, g, c_begin, c_end, tile, buffers.col);
        // (The gather buffer is read straight back: ordinary stores.)
        kernels::GemmEpilogue epilogue{.accumulate = c_begin > 0, .non_temporal = single_sample && streams_output};
        if (single_sample && c_end == group_in_channels) {
          epilogue.bias = bias == nullptr ? nullptr : bias + g * group_out_channels + k_begin;
          epilogue.relu = relu;
        }
        kernels::conv_gemm(Transpose::no, k_end - k_begin, tile.width(), (c_end - c_begin) * taps,
                           weights_g + c_begin * taps, col_rows, cols.data, cols.stride, product, product_stride,
                           epilogue, buffers.panels, next_image(g));
      }
      if (single_sample) continue;
      for (int64_t n = tile.n_begin; n < tile.n_end; ++n) {
        for (int64_t k = 0; k < group_out_channels; ++k) {
          const float* from = buffers.gather + k * product_stride + (n - tile.n_begin) * output_pixels;
          const float bias_k = bias == nullptr ? 0.0f : bias[g * group_out_channels + k];
          kernels::add_bias(from, output_pixels, bias_k, relu, output + output_offset(n, g, k));
        }
      }
    }
  }

  // Whether backward-data's GEMM writes dx itself (a 1x1 convolution's W^T * dY over whole samples), not col2im.
  bool writes_input_grad_directly() const { return path == Path::pointwise_gemm && tiling.samples_per_tile == 1; }

  // The last input row that the output pixels before pixel_end read: -1 when they read only the padding above the
  // image, height - 1 at most.
  int64_t last_input_row_before(int64_t pixel_end) const {
    return std::clamp<int64_t>(kernels::last_input_row(geometry, (pixel_end - 1) / shapes.output[3]), -1,
                               params.in_height - 1);
  }

  // dx[samples of the group, channels [c_begin, c_end) of every group] = col2im(W^T * dY)
  void backward_data_item(const float* output_grad, const float* weights, float* input_grad, int64_t sample_group,
                          int64_t c_begin, int64_t c_end, SlotBuffers buffers) const {
    const int64_t first_tile = sample_group * tiling.tiles_per_sample;
    const bool writes_directly = writes_input_grad_directly();
    kernels::ImageGeometry block = geometry;
    block.channels = c_end - c_begin;
    const int64_t rows = block.col_rows();
    for (int64_t g = 0; g < params.groups; ++g) {
      const float* weights_block = weights + g * group_out_channels * col_rows + c_begin * block.taps();
      if (writes_directly) {
        // A 1x1 convolution's dx = W^T * dY for the whole sample in one GEMM, whatever its tiles: dY is then a
        // compact B, read in place (or streamed through the panels under few channels, see panel_bytes), and C is dx
        // itself: r50_1x1a's backward-data +7 % against the sample's tiles of 480 pixels (2 threads, medians of 7
        // alternating runs). The next sample's dY, which this thread most likely multiplies next, is where the GEMM's
        // prefetches go on at its end.
        const int64_t n = tiling.tile(first_tile).n_begin;
        kernels::conv_gemm(Transpose::yes, rows, output_pixels, group_out_channels, weights_block, col_rows,
                           output_grad + output_offset(n, g, 0), output_pixels,
                           input_channels(input_grad, n, g, c_begin), input_pixels,
                           {.non_temporal = streams_input_grad}, buffers.panels,
                           n + 1 < params.batch ? output_grad + output_offset(n + 1, g, 0) : nullptr);
        continue;
      }
      for (int64_t t = 0; t < tiling.tiles_per_sample; ++t) {
        const Tile current = tiling.tile(first_tile + t);
        const OutputGradTile dy = output_grad_tile(output_grad, g, current, buffers.gather);
        const int64_t col_stride = buffer_stride(current.width());
        kernels::conv_gemm(Transpose::yes, rows, current.width(), group_out_channels, weights_block, col_rows, dy.data,
                           dy.stride, buffers.col, col_stride, {}, buffers.panels);
        if (tiling.tiles_per_sample == 1) {  // whole samples: col2im writes all of their dx
          for (int64_t n = current.n_begin; n < current.n_end; ++n) {
            kernels::col2im(block, buffers.col + (n - current.n_begin) * current.pixels(), col_stride,
                            input_channels(input_grad, n, g, c_begin));
          }
          continue;
        }
        // Tiles within a sample: col2im adds into dx, so dx starts at zero: the input rows this tile is the first to
        // reach (after the previous tile's last, up to its own last; the last tile to the image's end) are zeroed just
        // before, while they are about to be used, rather than the whole of dx in a pass of its own before the first
        // tile: the rows stay in cache for col2im. Backward-data of vgg_1_2 +7 %, r50_c1 +6 %, r50_3x3a +4 %, r50_3x3b
        // +2 % (2 threads, medians of 5-7 alternating runs).
        const int64_t zero_begin = t == 0 ? 0 : last_input_row_before(current.pixel_begin) + 1;
        const int64_t zero_end =
            t + 1 == tiling.tiles_per_sample ? params.in_height : last_input_row_before(current.pixel_end) + 1;
        for (int64_t n = current.n_begin; n < current.n_end; ++n) {
          float* dx = input_channels(input_grad, n, g, c_begin);
          if (zero_begin < zero_end) {
            for (int64_t c = 0; c < block.channels; ++c) {
              std::fill(dx + c * input_pixels + zero_begin * params.in_width,
                        dx + c * input_pixels + zero_end * params.in_width, 0.0f);
            }
          }
          kernels::col2im_accumulate(block, buffers.col + (n - current.n_begin) * current.pixels(), col_stride,
                                     current.pixel_begin, current.pixel_end, dx);
        }
      }
    }
  }

  // partial[:, columns of channels [c_begin, c_end)] = sum over the chunk's tiles of dY * im2col(x)^T
  void weights_item(const float* input, const float* output_grad, int64_t chunk, int64_t c_begin, int64_t c_end,
                    float* partial, SlotBuffers buffers) const {
    const int64_t first_tile = chunk * weight_chunk_tiles;
    const int64_t end_tile = std::min(weight_tiling.count(), first_tile + weight_chunk_tiles);
    const int64_t taps = geometry.taps();
    for (int64_t g = 0; g < params.groups; ++g) {
      for (int64_t t = 0; t < end_tile - first_tile; ++t) {
        const Tile current = weight_tiling.tile(first_tile + t);
        const Columns cols = lower(input, g, c_begin, c_end, current, buffers.col);
        const OutputGradTile dy = output_grad_tile(output_grad, g, current, buffers.gather);
        kernels::weight_gemm(group_out_channels, (c_end - c_begin) * taps, current.width(), dy.data, dy.stride,
                             cols.data, cols.stride, partial + g * group_out_channels * col_rows + c_begin * taps,
                             col_rows, /*accumulate=*/t > 0, buffers.panels);
      }
    }
  }

  // Channel block b of `blocks` equal blocks of the group's input channels.
  std::pair<int64_t, int64_t> channel_block(int64_t b, int64_t blocks) const {
    return {b * group_in_channels / blocks, (b + 1) * group_in_channels / blocks};
  }
  // The channels of the largest of channel_block's blocks: what a buffer sized for every block must hold.
  int64_t largest_channel_block(int64_t blocks) const { return ceil_div(group_in_channels, blocks); }

  // --- the depthwise path -----------------------------------------------------------------------------------

  kernels::ImageGeometry channel_geometry() const {
    kernels::ImageGeometry single = geometry;
    single.channels = 1;
    return single;
  }
  int64_t filter_size() const { return params.kernel_height * params.kernel_width; }
};

Conv2dPlan::Conv2dPlan(const Conv2dParams& params, ExecutionOptions options)
    : impl_(std::make_unique<Impl>(params, options)) {}
Conv2dPlan::~Conv2dPlan() = default;
Conv2dPlan::Conv2dPlan(Conv2dPlan&&) noexcept = default;
Conv2dPlan& Conv2dPlan::operator=(Conv2dPlan&&) noexcept = default;

const Conv2dParams& Conv2dPlan::params() const { return impl_->params; }
const Conv2dShapes& Conv2dPlan::shapes() const { return impl_->shapes; }
int Conv2dPlan::threads() const { return impl_->threads; }
bool Conv2dPlan::uses_im2col() const { return impl_->path == Path::im2col_gemm; }
size_t Conv2dPlan::workspace_bytes(Conv2dDirection direction) const { return impl_->workspace_bytes(direction); }
size_t Conv2dPlan::workspace_bytes() const { return impl_->workspace_bytes_max(); }

std::string Conv2dPlan::describe() const {
  const Impl& plan = *impl_;
  const char* path = plan.path == Path::depthwise_direct ? "depthwise direct"
                     : plan.path == Path::pointwise_gemm ? "1x1 GEMM"
                                                         : "im2col + GEMM";
  return std::string(path) + ", " + std::to_string(plan.threads) + " threads, tiles of " +
         std::to_string(plan.tiling.samples_per_tile) + " sample(s) x " + std::to_string(plan.tiling.tile_pixels) +
         " pixels, " + std::to_string(plan.tiling.count()) + " tiles" +
         (plan.filter_blocks() > 1 ? " x " + std::to_string(plan.filter_blocks()) + " filter blocks" : "") +
         ", dW in " + std::to_string(plan.weight_chunks) + " chunks x " + std::to_string(plan.weight_blocks) +
         " channel blocks" +
         (plan.streams_output
              ? plan.streams_input_grad ? ", non-temporal stores of y and dx" : ", non-temporal stores of y"
              : "");
}

// ---------------------------------------------------------------------------------------------------------------
// The four calls: check every argument, lease the workspace, then run.

void Conv2dPlan::forward(ConstTensorView input, ConstTensorView weights, std::span<const float> bias, TensorView output,
                         std::span<std::byte> workspace) const {
  forward(input, weights, bias, output, PostOp::none, workspace);
}

void Conv2dPlan::forward(ConstTensorView input, ConstTensorView weights, std::span<const float> bias, TensorView output,
                         PostOp post_op, std::span<std::byte> workspace) const {
  const Impl& plan = *impl_;
  check_tensor(input, plan.shapes.input, "input");
  check_tensor(weights, plan.shapes.weights, "weights");
  check_optional_vector(bias, plan.shapes.bias, "bias", "params.has_bias is false");
  check_tensor(output, plan.shapes.output, "output");
  constexpr auto direction = Conv2dDirection::forward;
  const auto lease = plan.pool.lease(workspace, plan.workspace_bytes(direction));
  const float* bias_data = bias.empty() ? nullptr : bias.data();

  if (plan.path == Path::depthwise_direct) {
    // y[n, k] = b[k] + x[n, c] (*) w[k] for the K/G filters k of input channel c
    const kernels::ImageGeometry single = plan.channel_geometry();
    const int64_t multiplier = plan.group_out_channels;
    plan.run([&] {
      plan.parallel_ranges(plan.work_items(direction), [&](int64_t, int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
          const int64_t n = item / plan.params.in_channels, c = item % plan.params.in_channels;
          for (int64_t k = c * multiplier; k < (c + 1) * multiplier; ++k) {
            float* y = output.data + plan.output_offset(n, 0, k);
            std::fill(y, y + plan.output_pixels, bias_data == nullptr ? 0.0f : bias_data[k]);
            kernels::depthwise_forward(single, plan.input_channels(input.data, n, 0, c),
                                       weights.data + k * plan.filter_size(), y);
            if (post_op == PostOp::relu) kernels::add_bias_in_place(y, plan.output_pixels, 0.0f, true);
          }
        }
      });
    });
    return;
  }
  plan.run([&] {
    plan.parallel_over_tiles([&](int64_t slot, int64_t begin, int64_t end) {
      const auto buffers = plan.slot_buffers(lease.bytes(), direction, slot);
      for (int64_t t = begin; t < end; ++t) {
        plan.forward_tile(input.data, weights.data, bias_data, output.data, t, buffers, post_op);
      }
    });
  });
}

void Conv2dPlan::backward_data(ConstTensorView output_grad, ConstTensorView weights, TensorView input_grad,
                               std::span<std::byte> workspace) const {
  const Impl& plan = *impl_;
  check_tensor(output_grad, plan.shapes.output, "output_grad");
  check_tensor(weights, plan.shapes.weights, "weights");
  check_tensor(input_grad, plan.shapes.input, "input_grad");
  constexpr auto direction = Conv2dDirection::backward_data;
  const auto lease = plan.pool.lease(workspace, plan.workspace_bytes(direction));

  if (plan.path == Path::depthwise_direct) {
    // dx[n, c] = sum over c's filters k of dy[n, k] (*) rot180(w[k])
    const kernels::ImageGeometry single = plan.channel_geometry();
    const int64_t multiplier = plan.group_out_channels;
    plan.run([&] {
      plan.parallel_ranges(plan.work_items(direction), [&](int64_t, int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
          const int64_t n = item / plan.params.in_channels, c = item % plan.params.in_channels;
          float* dx = plan.input_channels(input_grad.data, n, 0, c);
          std::fill(dx, dx + plan.input_pixels, 0.0f);
          for (int64_t k = c * multiplier; k < (c + 1) * multiplier; ++k) {
            kernels::depthwise_backward_data(single, output_grad.data + plan.output_offset(n, 0, k),
                                             weights.data + k * plan.filter_size(), dx);
          }
        }
      });
    });
    return;
  }
  plan.run([&] {
    plan.parallel_ranges(plan.work_items(direction), [&](int64_t slot, int64_t begin, int64_t end) {
      const auto buffers = plan.slot_buffers(lease.bytes(), direction, slot);
      for (int64_t item = begin; item < end; ++item) {
        const auto [c_begin, c_end] = plan.channel_block(item % plan.data_blocks, plan.data_blocks);
        plan.backward_data_item(output_grad.data, weights.data, input_grad.data, item / plan.data_blocks, c_begin,
                                c_end, buffers);
      }
    });
  });
}

// Chunks (sample groups) run in waves; after each wave their partial gradients are added to dW in chunk order,
// element by element. The chunks, channel blocks and tiles depend only on the shape, so the sum is
// ((dW0 + p0) + p1) + ... with the same p_i for every thread count: bitwise reproducible.
void Conv2dPlan::backward_weights(ConstTensorView input, ConstTensorView output_grad, TensorView weights_grad,
                                  GradientMode mode, std::span<std::byte> workspace) const {
  const Impl& plan = *impl_;
  check_tensor(input, plan.shapes.input, "input");
  check_tensor(output_grad, plan.shapes.output, "output_grad");
  check_tensor(weights_grad, plan.shapes.weights, "weights_grad");
  constexpr auto direction = Conv2dDirection::backward_weights;
  const auto lease = plan.pool.lease(workspace, plan.workspace_bytes(direction));
  float* dw = weights_grad.data;

  if (plan.path == Path::depthwise_direct) {
    // dw[k] (+)= sum over n, in order, of x[n, c] (*) dy[n, k]; one thread owns each filter.
    const kernels::ImageGeometry single = plan.channel_geometry();
    const int64_t taps = plan.filter_size();
    plan.run([&] {
      plan.parallel_ranges(plan.work_items(direction), [&](int64_t, int64_t begin, int64_t end) {
        std::vector<float> sum(static_cast<size_t>(taps));
        for (int64_t k = begin; k < end; ++k) {
          std::fill(sum.begin(), sum.end(), 0.0f);
          const int64_t c = k / plan.group_out_channels;
          for (int64_t n = 0; n < plan.params.batch; ++n) {
            kernels::depthwise_backward_weights(single, plan.input_channels(input.data, n, 0, c),
                                                output_grad.data + plan.output_offset(n, 0, k), sum.data());
          }
          for (int64_t i = 0; i < taps; ++i) {
            dw[k * taps + i] = mode == GradientMode::accumulate ? dw[k * taps + i] + sum[static_cast<size_t>(i)]
                                                                : sum[static_cast<size_t>(i)];
          }
        }
      });
    });
    return;
  }

  const int64_t weights_size = weights_grad.size();
  plan.run([&] {
    const int64_t chunks = plan.weight_chunks;
    for (int64_t wave_begin = 0; wave_begin < chunks; wave_begin += plan.weight_wave_chunks) {
      const int64_t wave_chunks = std::min(plan.weight_wave_chunks, chunks - wave_begin);
      plan.parallel_ranges(
          wave_chunks * plan.weight_blocks,
          [&](int64_t slot, int64_t begin, int64_t end) {
            const auto buffers = plan.slot_buffers(lease.bytes(), direction, slot);
            for (int64_t item = begin; item < end; ++item) {
              const int64_t wave_chunk = item / plan.weight_blocks;
              const auto [c_begin, c_end] = plan.channel_block(item % plan.weight_blocks, plan.weight_blocks);
              plan.weights_item(input.data, output_grad.data, wave_begin + wave_chunk, c_begin, c_end,
                                plan.partial(lease.bytes(), wave_chunk), buffers);
            }
          },
          plan.weight_slots);
      // The first partial of an overwriting call replaces dW instead of being added to it.
      const bool replace = wave_begin == 0 && mode == GradientMode::overwrite;
      oneapi::tbb::parallel_for(oneapi::tbb::blocked_range<int64_t>(0, weights_size, 4096),
                                [&](const oneapi::tbb::blocked_range<int64_t>& r) {
                                  int64_t first_chunk = 0;
                                  if (replace) {
                                    const float* p = plan.partial(lease.bytes(), 0);
                                    std::copy(p + r.begin(), p + r.end(), dw + r.begin());
                                    first_chunk = 1;
                                  }
                                  for (int64_t chunk = first_chunk; chunk < wave_chunks; ++chunk) {
                                    const float* p = plan.partial(lease.bytes(), chunk);
                                    for (int64_t i = r.begin(); i < r.end(); ++i) dw[i] += p[i];
                                  }
                                });
    }
  });
}

// Each channel's sum runs sequentially in (n, p, q) order in double precision: deterministic and accurate.
void Conv2dPlan::backward_bias(ConstTensorView output_grad, std::span<float> bias_grad, GradientMode mode) const {
  const Impl& plan = *impl_;
  check_tensor(output_grad, plan.shapes.output, "output_grad");
  check_optional_vector(bias_grad, plan.shapes.bias, "bias_grad", "params.has_bias is false");
  if (bias_grad.empty()) return;
  plan.run([&] {
    oneapi::tbb::parallel_for(int64_t{0}, plan.params.out_channels, [&](int64_t k) {
      double sum = mode == GradientMode::accumulate ? bias_grad[static_cast<size_t>(k)] : 0.0;
      for (int64_t n = 0; n < plan.params.batch; ++n) {
        sum += kernels::sum_in_double(output_grad.data + plan.output_offset(n, 0, k), plan.output_pixels);
      }
      bias_grad[static_cast<size_t>(k)] = static_cast<float>(sum);
    });
  });
}

}  // namespace convgemm
