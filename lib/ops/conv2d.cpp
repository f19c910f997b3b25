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

#include "kernels/gemm.hpp"
#include "kernels/im2col.hpp"
#include "tensor_checks.hpp"
#include "workspace.hpp"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <optional>
#include <string>

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
  require_positive(p.batch, "batch");
  require_positive(p.in_channels, "in_channels");
  require_positive(p.in_height, "in_height");
  require_positive(p.in_width, "in_width");
  require_positive(p.out_channels, "out_channels");
  require_positive(p.kernel_height, "kernel_height");
  require_positive(p.kernel_width, "kernel_width");
  require_positive(p.stride.height, "stride.height");
  require_positive(p.stride.width, "stride.width");
  require_positive(p.dilation.height, "dilation.height");
  require_positive(p.dilation.width, "dilation.width");
  require_positive(p.groups, "groups");
  require_non_negative(p.padding.top, "padding.top");
  require_non_negative(p.padding.bottom, "padding.bottom");
  require_non_negative(p.padding.left, "padding.left");
  require_non_negative(p.padding.right, "padding.right");
  if (p.in_channels % p.groups != 0) {
    throw Error(Status::invalid_argument, "in_channels",
                std::to_string(p.in_channels) + " is not divisible by groups " + std::to_string(p.groups));
  }
  if (p.out_channels % p.groups != 0) {
    throw Error(Status::invalid_argument, "out_channels",
                std::to_string(p.out_channels) + " is not divisible by groups " + std::to_string(p.groups));
  }
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

// backward-weights reduces partial gradients over chunks of this many output pixels' worth of samples (at least
// one sample). The chunking depends only on the shape, never on the thread count: that is what makes dW
// bitwise reproducible. Larger chunks mean fewer partial-gradient additions, smaller ones more parallelism.
constexpr int64_t weight_chunk_min_pixels = 256;

}  // namespace

struct Conv2dPlan::Impl {
  Conv2dParams params;
  Conv2dShapes shapes;
  int threads;
  // Set when the caller asked for a thread count: every call then runs inside this arena.
  mutable std::optional<oneapi::tbb::task_arena> arena;

  int64_t group_in_channels;   // C/G
  int64_t group_out_channels;  // K/G
  int64_t input_pixels;        // H*W
  int64_t output_pixels;       // P*Q
  int64_t col_rows;            // C/G*R*S: the GEMM's inner dimension in forward
  bool pointwise;              // 1x1, stride 1, no padding, no dilation: col == x
  kernels::ImageGeometry geometry;
  size_t col_bytes;            // one column buffer, rounded up to the workspace alignment (0 when pointwise)
  size_t weights_grad_bytes;   // one partial dW, rounded up likewise
  int64_t weight_chunk_samples;
  int64_t weight_chunks;
  mutable WorkspacePool pool;

  Impl(const Conv2dParams& p, ExecutionOptions options) : params(p), shapes(conv2d_shapes(p)) {
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
    pointwise = p.kernel_height == 1 && p.kernel_width == 1 && p.stride.height == 1 && p.stride.width == 1 &&
                p.padding.top == 0 && p.padding.bottom == 0 && p.padding.left == 0 && p.padding.right == 0;
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
    kernels::require_blas_dimension(output_pixels, "output_height * output_width");
    kernels::require_blas_dimension(col_rows, "in_channels / groups * kernel_height * kernel_width");
    const int64_t col_floats = pointwise ? 0 : checked_product({col_rows, output_pixels}, "column buffer");
    col_bytes = round_up_to_alignment(
        static_cast<size_t>(checked_product({col_floats, int64_t{sizeof(float)}}, "column buffer")));
    weights_grad_bytes = round_up_to_alignment(static_cast<size_t>(element_count(shapes.weights)) * sizeof(float));

    weight_chunk_samples = std::clamp<int64_t>((weight_chunk_min_pixels + output_pixels - 1) / output_pixels, 1,
                                               p.batch);
    weight_chunks = (p.batch + weight_chunk_samples - 1) / weight_chunk_samples;
  }

  // Independent work items run in at most `threads` slots, each with its own slice of the workspace.
  int64_t slots(Conv2dDirection direction) const {
    const int64_t items = direction == Conv2dDirection::backward_weights ? weight_chunks : params.batch;
    return std::min<int64_t>(threads, items);
  }

  size_t slot_bytes(Conv2dDirection direction) const {
    switch (direction) {
      case Conv2dDirection::forward:
      case Conv2dDirection::backward_data: return col_bytes;
      case Conv2dDirection::backward_weights: return col_bytes + weights_grad_bytes;
      case Conv2dDirection::backward_bias: return 0;
    }
    return 0;
  }

  size_t workspace_bytes(Conv2dDirection direction) const {
    return static_cast<size_t>(slots(direction)) * slot_bytes(direction);
  }

  float* slot_floats(std::span<std::byte> workspace, Conv2dDirection direction, int64_t slot, size_t offset = 0) const {
    return reinterpret_cast<float*>(workspace.data() + static_cast<size_t>(slot) * slot_bytes(direction) + offset);
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

  // Splits the batch into slots(direction) contiguous ranges and runs body(slot, n_begin, n_end) on each.
  template <class Body>
  void parallel_over_batch(Conv2dDirection direction, Body&& body) const {
    const int64_t slot_count = slots(direction);
    oneapi::tbb::parallel_for(int64_t{0}, slot_count, [&](int64_t slot) {
      body(slot, slot * params.batch / slot_count, (slot + 1) * params.batch / slot_count);
    });
  }

  // The column matrix of one sample's group: the input itself for 1x1 convolutions, else im2col into col.
  const float* columns(const float* input_group, float* col) const {
    if (pointwise) return input_group;
    kernels::im2col(geometry, input_group, col);
    return col;
  }

  // y[n] = W * im2col(x[n]) + b
  void forward_sample(const float* input, const float* weights, const float* bias, float* output, float* col) const {
    for (int64_t g = 0; g < params.groups; ++g) {
      const float* col_g = columns(input + g * group_in_channels * input_pixels, col);
      sgemm(Transpose::no, Transpose::no, group_out_channels, output_pixels, col_rows, 1.0f,
            weights + g * group_out_channels * col_rows, col_rows, col_g, output_pixels, 0.0f,
            output + g * group_out_channels * output_pixels, output_pixels);
    }
    if (bias == nullptr) return;
    for (int64_t k = 0; k < params.out_channels; ++k) {
      float* row = output + k * output_pixels;
      for (int64_t i = 0; i < output_pixels; ++i) row[i] += bias[k];
    }
  }

  // dx[n] = col2im(W^T * dy[n])
  void backward_data_sample(const float* output_grad, const float* weights, float* input_grad, float* col) const {
    const int64_t group_input_floats = group_in_channels * input_pixels;
    if (!pointwise) std::fill(input_grad, input_grad + params.in_channels * input_pixels, 0.0f);
    for (int64_t g = 0; g < params.groups; ++g) {
      const float* weights_g = weights + g * group_out_channels * col_rows;
      const float* output_grad_g = output_grad + g * group_out_channels * output_pixels;
      float* input_grad_g = input_grad + g * group_input_floats;
      // For 1x1 the product already is dx; otherwise it is the column-space gradient that col2im scatters back.
      float* product = pointwise ? input_grad_g : col;
      sgemm(Transpose::yes, Transpose::no, col_rows, output_pixels, group_out_channels, 1.0f, weights_g, col_rows,
            output_grad_g, output_pixels, 0.0f, product, output_pixels);
      if (!pointwise) kernels::col2im_accumulate(geometry, col, input_grad_g);
    }
  }

  // partial = sum over samples [n_begin, n_end) of dy[n] * im2col(x[n])^T, accumulated in sample order.
  void weights_grad_chunk(const float* input, const float* output_grad, int64_t n_begin, int64_t n_end, float* col,
                          float* partial) const {
    const int64_t sample_input = params.in_channels * input_pixels;
    const int64_t sample_output = params.out_channels * output_pixels;
    for (int64_t n = n_begin; n < n_end; ++n) {
      const float beta = n == n_begin ? 0.0f : 1.0f;
      for (int64_t g = 0; g < params.groups; ++g) {
        const float* col_g = columns(input + n * sample_input + g * group_in_channels * input_pixels, col);
        sgemm(Transpose::no, Transpose::yes, group_out_channels, col_rows, output_pixels, 1.0f,
              output_grad + n * sample_output + g * group_out_channels * output_pixels, output_pixels, col_g,
              output_pixels, beta, partial + g * group_out_channels * col_rows, col_rows);
      }
    }
  }
};

Conv2dPlan::Conv2dPlan(const Conv2dParams& params, ExecutionOptions options)
    : impl_(std::make_unique<Impl>(params, options)) {}
Conv2dPlan::~Conv2dPlan() = default;
Conv2dPlan::Conv2dPlan(Conv2dPlan&&) noexcept = default;
Conv2dPlan& Conv2dPlan::operator=(Conv2dPlan&&) noexcept = default;

const Conv2dParams& Conv2dPlan::params() const { return impl_->params; }
const Conv2dShapes& Conv2dPlan::shapes() const { return impl_->shapes; }
int Conv2dPlan::threads() const { return impl_->threads; }
bool Conv2dPlan::uses_im2col() const { return !impl_->pointwise; }
size_t Conv2dPlan::workspace_bytes(Conv2dDirection direction) const { return impl_->workspace_bytes(direction); }
size_t Conv2dPlan::workspace_bytes() const {
  return std::max({workspace_bytes(Conv2dDirection::forward), workspace_bytes(Conv2dDirection::backward_data),
                   workspace_bytes(Conv2dDirection::backward_weights)});
}

// ---------------------------------------------------------------------------------------------------------------
// The four calls: check every argument, lease the workspace, then run the batch in parallel.

void Conv2dPlan::forward(ConstTensorView input, ConstTensorView weights, std::span<const float> bias,
                         TensorView output, std::span<std::byte> workspace) const {
  const Impl& plan = *impl_;
  check_tensor(input, plan.shapes.input, "input");
  check_tensor(weights, plan.shapes.weights, "weights");
  check_optional_vector(bias, plan.shapes.bias, "bias", "params.has_bias is false");
  check_tensor(output, plan.shapes.output, "output");
  constexpr auto direction = Conv2dDirection::forward;
  const auto lease = plan.pool.lease(workspace, plan.workspace_bytes(direction));

  const int64_t sample_input = element_count(plan.shapes.input) / plan.params.batch;
  const int64_t sample_output = element_count(plan.shapes.output) / plan.params.batch;
  plan.run([&] {
    plan.parallel_over_batch(direction, [&](int64_t slot, int64_t n_begin, int64_t n_end) {
      float* col = plan.slot_floats(lease.bytes(), direction, slot);
      for (int64_t n = n_begin; n < n_end; ++n) {
        plan.forward_sample(input.data + n * sample_input, weights.data, bias.empty() ? nullptr : bias.data(),
                            output.data + n * sample_output, col);
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

  const int64_t sample_input = element_count(plan.shapes.input) / plan.params.batch;
  const int64_t sample_output = element_count(plan.shapes.output) / plan.params.batch;
  plan.run([&] {
    plan.parallel_over_batch(direction, [&](int64_t slot, int64_t n_begin, int64_t n_end) {
      float* col = plan.slot_floats(lease.bytes(), direction, slot);
      for (int64_t n = n_begin; n < n_end; ++n) {
        plan.backward_data_sample(output_grad.data + n * sample_output, weights.data,
                                  input_grad.data + n * sample_input, col);
      }
    });
  });
}

// Chunks run in waves of slots(); after each wave the partial gradients are added to dW in chunk order, element
// by element. The sum is therefore ((dW0 + p0) + p1) + ... for every thread count.
void Conv2dPlan::backward_weights(ConstTensorView input, ConstTensorView output_grad, TensorView weights_grad,
                                  GradientMode mode, std::span<std::byte> workspace) const {
  const Impl& plan = *impl_;
  check_tensor(input, plan.shapes.input, "input");
  check_tensor(output_grad, plan.shapes.output, "output_grad");
  check_tensor(weights_grad, plan.shapes.weights, "weights_grad");
  constexpr auto direction = Conv2dDirection::backward_weights;
  const auto lease = plan.pool.lease(workspace, plan.workspace_bytes(direction));

  const int64_t slot_count = plan.slots(direction);
  const int64_t weights_size = weights_grad.size();
  const auto partial = [&](int64_t slot) { return plan.slot_floats(lease.bytes(), direction, slot, plan.col_bytes); };
  plan.run([&] {
    for (int64_t wave_begin = 0; wave_begin < plan.weight_chunks; wave_begin += slot_count) {
      const int64_t wave_size = std::min(slot_count, plan.weight_chunks - wave_begin);
      oneapi::tbb::parallel_for(int64_t{0}, wave_size, [&](int64_t slot) {
        const int64_t chunk = wave_begin + slot;
        const int64_t n_begin = chunk * plan.weight_chunk_samples;
        const int64_t n_end = std::min(plan.params.batch, n_begin + plan.weight_chunk_samples);
        plan.weights_grad_chunk(input.data, output_grad.data, n_begin, n_end,
                                plan.slot_floats(lease.bytes(), direction, slot), partial(slot));
      });
      // The first partial of an overwriting call replaces dW instead of being added to it.
      const bool replace = wave_begin == 0 && mode == GradientMode::overwrite;
      oneapi::tbb::parallel_for(oneapi::tbb::blocked_range<int64_t>(0, weights_size, 4096),
                                [&](const oneapi::tbb::blocked_range<int64_t>& range) {
                                  float* dw = weights_grad.data;
                                  int64_t first_slot = 0;
                                  if (replace) {
                                    std::copy(partial(0) + range.begin(), partial(0) + range.end(), dw + range.begin());
                                    first_slot = 1;
                                  }
                                  for (int64_t slot = first_slot; slot < wave_size; ++slot) {
                                    const float* p = partial(slot);
                                    for (int64_t i = range.begin(); i < range.end(); ++i) dw[i] += p[i];
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
  const int64_t channels = plan.params.out_channels;
  plan.run([&] {
    oneapi::tbb::parallel_for(int64_t{0}, channels, [&](int64_t k) {
      double sum = mode == GradientMode::accumulate ? bias_grad[static_cast<size_t>(k)] : 0.0;
      for (int64_t n = 0; n < plan.params.batch; ++n) {
        const float* row = output_grad.data + (n * channels + k) * plan.output_pixels;
        for (int64_t i = 0; i < plan.output_pixels; ++i) sum += row[i];
      }
      bias_grad[static_cast<size_t>(k)] = static_cast<float>(sum);
    });
  });
}

}  // namespace convgemm
