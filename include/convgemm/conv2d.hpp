// 2-D convolution: its parameters, the output-size formula, and a plan that runs forward, backward-data,
// backward-weights and backward-bias through im2col + SGEMM, in parallel over the batch with oneTBB.
//
// Notation (used throughout convgemm): N batch, C input channels, H x W input, K output channels (filters),
// R x S kernel, P x Q output, G groups (each group convolves C/G input channels into K/G output channels).
//   y[n,k,p,q] = b[k] + sum_{c,r,s} x[n, g*C/G + c, p*sh + r*dh - pad_top, q*sw + s*dw - pad_left] * w[k,c,r,s]
// with g = k / (K/G), c < C/G, and x read as zero outside the image. This is a cross-correlation, as in every
// deep-learning framework; backward-data is then a full convolution of dy with the 180-degree-rotated filter.
#pragma once

#include <convgemm/export.hpp>
#include <convgemm/tensor.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace convgemm {

struct Stride2d {
  int64_t height = 1;
  int64_t width = 1;
};

struct Dilation2d {
  int64_t height = 1;
  int64_t width = 1;
};

// Zero padding, given per side.
struct Padding2d {
  int64_t top = 0;
  int64_t bottom = 0;
  int64_t left = 0;
  int64_t right = 0;

  // No padding: the output shrinks by the kernel's extent minus one.
  static Padding2d valid() { return {}; }
  // The same on every side.
  static Padding2d symmetric(int64_t height, int64_t width) { return {height, height, width, width}; }
  // TensorFlow's "same": output = ceil(input / stride); an odd total puts the extra pixel bottom/right.
  CONVGEMM_CXX_API static Padding2d same(int64_t in_height, int64_t in_width, int64_t kernel_height,
                                         int64_t kernel_width, Stride2d stride = {}, Dilation2d dilation = {});
};

// The problem, as plain data. Validated when a plan (or a direct convolution) is made from it.
struct Conv2dParams {
  int64_t batch = 1;          // N
  int64_t in_channels = 1;    // C
  int64_t in_height = 1;      // H
  int64_t in_width = 1;       // W
  int64_t out_channels = 1;   // K
  int64_t kernel_height = 1;  // R
  int64_t kernel_width = 1;   // S
  Stride2d stride{};
  Padding2d padding{};
  Dilation2d dilation{};
  int64_t groups = 1;  // G; C and K must both be divisible by it. G == C is a depthwise convolution.
  bool has_bias = false;
};

// P (or Q) = floor((H + pad_before + pad_after - dilation*(R-1) - 1) / stride) + 1.
// Returns a value < 1 when the dilated kernel does not fit in the padded input; no validation here.
CONVGEMM_CXX_API int64_t conv2d_output_size(int64_t input, int64_t kernel, int64_t stride, int64_t pad_before,
                                            int64_t pad_after, int64_t dilation);

// The tensor shapes a valid problem implies. conv2d_shapes() validates the params and throws convgemm::Error
// naming the offending parameter: non-positive sizes, a kernel larger than the padded input, channels not
// divisible by groups, negative padding, products that overflow 64 bits.
struct Conv2dShapes {
  Shape4 input;    // {N, C, H, W}
  Shape4 weights;  // {K, C/G, R, S}
  Shape4 output;   // {N, K, P, Q}
  int64_t bias;    // K when has_bias, else 0
};
CONVGEMM_CXX_API Conv2dShapes conv2d_shapes(const Conv2dParams& params);

// The one FLOP convention of convgemm, for every direction: 2*N*K*(C/G)*R*S*P*Q, padded taps included.
CONVGEMM_CXX_API double conv2d_flops(const Conv2dParams& params);

enum class Conv2dDirection { forward, backward_data, backward_weights, backward_bias };

// Whether a gradient call overwrites its output or adds to it (beta = 1), for frameworks that sum gradients.
enum class GradientMode { overwrite, accumulate };

// An activation fused into the end of a forward call.
enum class PostOp { none, relu };

// How a call spreads over the threads. Every choice computes the same result (dW and db bitwise).
enum class Parallelism {
  automatic,      // across the batch when it gives every thread work, else within each sample
  across_batch,   // each thread takes whole samples (or groups of small samples)
  within_sample,  // samples one after another, each split over all threads (pixel tiles or channel blocks)
};

// How a forward call writes y, and a 1x1 convolution's backward-data dx (which its GEMM writes directly; other
// convolutions add dx up in col2im, always with ordinary stores). Every choice computes the same values.
enum class OutputStores {
  // Where the call's input and output together outgrow the last-level cache (32 MiB assumed, one AMD Zen 4/5 CCD's
  // L3), so that they could not all be in cache when the next layer reads them anyway: y non_temporal (r50_1x1a's and
  // r50_c1's forward +11-14 % under memory-bus contention, +12 % on a quiet Zen 4), and dx too except on AMD Zen 5,
  // where it measured slower (r50_1x1a's backward-data: 1.35x on Zen 4, 0.95-0.99x on Zen 5). cached otherwise.
  automatic,
  cached,        // ordinary stores: the output is left in cache for whatever reads it next
  non_temporal,  // stores that bypass the cache (streaming stores), for the output's vectors on 64-byte boundaries
};

struct ExecutionOptions {
  // Worker threads. 0: the concurrency of the TBB arena the plan is created in, and calls run in the caller's
  // arena. > 0: the plan owns a TBB arena of that many threads and every call runs inside it.
  int threads = 0;
  Parallelism parallelism = Parallelism::automatic;
  // Upper bound on workspace_bytes(); 0 means none. Under a cap the plan uses narrower pixel tiles; a cap
  // smaller than the narrowest tiling needs is an Error naming workspace_limit_bytes.
  size_t workspace_limit_bytes = 0;
  OutputStores output_stores = OutputStores::automatic;
};

// Describe once, execute many: a plan validates the problem, fixes the output shape, the execution path
// (im2col + GEMM, GEMM on the input for 1x1, or the direct depthwise kernel), the pixel tiling and the
// workspace size, and then runs any number of calls. Calls are const and may run concurrently from several
// host threads (each gets its own workspace).
//
// Tiling: im2col writes the column matrix of a tile of output pixels, sized so that it fits in half the L2
// cache, and the GEMM consumes it tile by tile. Images smaller than a tile are laid side by side, several
// samples per GEMM, so that small feature maps (7x7, 14x14) still make wide GEMMs.
//
// Workspace: every call takes an optional caller-supplied workspace of at least workspace_bytes(direction)
// bytes (float-aligned). Without one, the plan uses buffers from its own pool, allocated on first use and
// reused afterwards. Nothing is written to any output before all arguments have been checked.
class CONVGEMM_CXX_API Conv2dPlan {
 public:
  explicit Conv2dPlan(const Conv2dParams& params, ExecutionOptions options = {});
  ~Conv2dPlan();
  Conv2dPlan(Conv2dPlan&&) noexcept;
  Conv2dPlan& operator=(Conv2dPlan&&) noexcept;
  Conv2dPlan(const Conv2dPlan&) = delete;
  Conv2dPlan& operator=(const Conv2dPlan&) = delete;

  const Conv2dParams& params() const;
  const Conv2dShapes& shapes() const;
  int64_t output_height() const { return shapes().output[2]; }
  int64_t output_width() const { return shapes().output[3]; }
  // Threads the plan splits work over.
  int threads() const;
  // False for the 1x1 / stride 1 / no padding case (the input already is the column matrix) and for depthwise
  // convolutions (direct kernel).
  bool uses_im2col() const;
  // One line on the chosen path, tiling and threading, for logs and benchmark reports.
  std::string describe() const;
  // Bytes of workspace a call in that direction needs; workspace_bytes() is the largest over all directions.
  size_t workspace_bytes(Conv2dDirection direction) const;
  size_t workspace_bytes() const;

  // y = W * im2col(x) + b, one GEMM per sample and group.
  void forward(ConstTensorView input, ConstTensorView weights, std::span<const float> bias, TensorView output,
               std::span<std::byte> workspace = {}) const;
  // The same followed by an activation, applied to each tile while it is still in cache (oneDNN's post-op):
  // PostOp::relu writes max(y, 0) (0 for NaN, as relu_forward). The backward calls still take the gradient with
  // respect to the convolution's own output y, before the activation.
  void forward(ConstTensorView input, ConstTensorView weights, std::span<const float> bias, TensorView output,
               PostOp post_op, std::span<std::byte> workspace = {}) const;
  // dx = col2im(W^T * dy): the full convolution of dy with the 180-degree-rotated filter.
  void backward_data(ConstTensorView output_grad, ConstTensorView weights, TensorView input_grad,
                     std::span<std::byte> workspace = {}) const;
  // dW (+)= sum_n dy_n * im2col(x_n)^T, reduced over fixed batch chunks in a fixed order, so the result is
  // bitwise the same for any number of threads.
  void backward_weights(ConstTensorView input, ConstTensorView output_grad, TensorView weights_grad,
                        GradientMode mode = GradientMode::overwrite, std::span<std::byte> workspace = {}) const;
  // db (+)= sum over n, p, q of dy[n, k, p, q]; bitwise the same for any number of threads.
  void backward_bias(ConstTensorView output_grad, std::span<float> bias_grad,
                     GradientMode mode = GradientMode::overwrite) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace convgemm
