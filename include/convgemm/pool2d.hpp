// Pooling: max and average pooling over R x S windows of each channel (MaxPool2d, AvgPool2d), and max pooling
// across groups of channels (ChannelMaxPool, "maxout"), each with its forward and backward, on NCHW tensors.
//
// Notation as in conv2d.hpp: N batch, C channels, H x W input, R x S window, P x Q output. A window slides over
// every channel of every sample the way a convolution kernel does (no dilation):
//   window(p, q) = rows p*sh - pad_top .. p*sh - pad_top + R-1, columns q*sw - pad_left .. q*sw - pad_left + S-1
// Calls check every argument before writing anything, then run in parallel over the N*C planes (each plane's
// outputs and gradients belong to one task, so results do not depend on the thread count) in the caller's
// TBB arena. Every call has a float and a double overload; the double ones drive the finite-difference checks.
#pragma once

#include <convgemm/export.hpp>

#include <convgemm/conv2d.hpp>
#include <convgemm/tensor.hpp>

#include <cstdint>

namespace convgemm {

struct Pool2dParams {
  int64_t batch = 1;          // N
  int64_t channels = 1;       // C
  int64_t in_height = 1;      // H
  int64_t in_width = 1;       // W
  int64_t kernel_height = 1;  // R
  int64_t kernel_width = 1;   // S
  // 1 x 1 unless set; PyTorch's default of stride = kernel must be written out here: {.height = R, .width = S}.
  Stride2d stride{};
  // Each side must be smaller than the kernel along its axis, so that every window covers an input pixel.
  Padding2d padding{};
};

struct PoolShapes {
  Shape4 input;   // {N, C, H, W}
  Shape4 output;  // {N, C, P, Q} for pool2d, {N, C/g, H, W} for channel max pooling
};

// P = conv2d_output_size(H, R, sh, pad_top, pad_bottom, 1), Q likewise: floor division, as PyTorch's default
// ceil_mode=False. Throws convgemm::Error naming the parameter for non-positive sizes or strides, negative
// padding, padding not smaller than the kernel, a kernel larger than the padded input, or sizes overflowing.
CONVGEMM_CXX_API PoolShapes pool2d_shapes(const Pool2dParams& params);

class CONVGEMM_CXX_API MaxPool2d {
 public:
  explicit MaxPool2d(const Pool2dParams& params) : params_(params), shapes_(pool2d_shapes(params)) {}
  const Pool2dParams& params() const { return params_; }
  const PoolShapes& shapes() const { return shapes_; }

  // y[n,c,p,q] = max of x[n,c,h,w] over the window (p, q). Padding counts as -infinity, so it never wins; a NaN
  // in the window wins (it propagates, as in PyTorch).
  void forward(ConstTensorView input, TensorView output) const;
  void forward(ConstTensorViewF64 input, TensorViewF64 output) const;
  // dx[n,c,h,w] = sum of dy[n,c,p,q] over the windows (p, q) whose arg-max is (h, w); overlapping windows add up.
  // The arg-max is recomputed from the input, so nothing has to be kept from forward; among equal maxima the
  // first in row-major window order wins, so a tie sends the whole gradient to one pixel. Overwrites dx.
  void backward(ConstTensorView input, ConstTensorView output_grad, TensorView input_grad) const;
  void backward(ConstTensorViewF64 input, ConstTensorViewF64 output_grad, TensorViewF64 input_grad) const;
  // A ReLU and this pooling differentiated in one pass: `input` is the ReLU's output (this pooling's input) and
  // input_grad becomes the gradient with respect to the ReLU's input, backward()'s dx times [input > 0].
  void backward_after_relu(ConstTensorView input, ConstTensorView output_grad, TensorView input_grad) const;

 private:
  Pool2dParams params_;
  PoolShapes shapes_;
};

// Average pooling divides by the full window area R*S, padded taps included: PyTorch's default
// count_include_pad=True. A window hanging over the border therefore averages in zeros.
class CONVGEMM_CXX_API AvgPool2d {
 public:
  explicit AvgPool2d(const Pool2dParams& params) : params_(params), shapes_(pool2d_shapes(params)) {}
  const Pool2dParams& params() const { return params_; }
  const PoolShapes& shapes() const { return shapes_; }

  // y[n,c,p,q] = (1 / (R*S)) * sum of x[n,c,h,w] over the window's input pixels
  void forward(ConstTensorView input, TensorView output) const;
  void forward(ConstTensorViewF64 input, TensorViewF64 output) const;
  // dx[n,c,h,w] = (1 / (R*S)) * sum of dy[n,c,p,q] over the windows (p, q) that cover (h, w). Overwrites dx.
  void backward(ConstTensorView output_grad, TensorView input_grad) const;
  void backward(ConstTensorViewF64 output_grad, TensorViewF64 input_grad) const;

 private:
  Pool2dParams params_;
  PoolShapes shapes_;
};

// Cross-channel max pooling (maxout, Goodfellow et al. 2013): the channels fall into C/g consecutive groups of g,
// and output channel j is, at every pixel, the maximum of input channels j*g .. (j+1)*g - 1.
struct ChannelMaxPoolParams {
  int64_t batch = 1;       // N
  int64_t channels = 1;    // C, divisible by group_size
  int64_t height = 1;      // H
  int64_t width = 1;       // W
  int64_t group_size = 1;  // g
};

// Throws convgemm::Error naming the parameter for non-positive sizes, channels not divisible by group_size, or
// sizes overflowing.
CONVGEMM_CXX_API PoolShapes channel_max_pool_shapes(const ChannelMaxPoolParams& params);

class CONVGEMM_CXX_API ChannelMaxPool {
 public:
  explicit ChannelMaxPool(const ChannelMaxPoolParams& params)
      : params_(params), shapes_(channel_max_pool_shapes(params)) {}
  const ChannelMaxPoolParams& params() const { return params_; }
  const PoolShapes& shapes() const { return shapes_; }

  // y[n,j,h,w] = max over c in [j*g, (j+1)*g) of x[n,c,h,w]; a NaN wins, as in MaxPool2d.
  void forward(ConstTensorView input, TensorView output) const;
  void forward(ConstTensorViewF64 input, TensorViewF64 output) const;
  // dx[n,c,h,w] = dy[n,j,h,w] when c is the arg-max of its group at (h, w) (the first of equal maxima), else 0.
  void backward(ConstTensorView input, ConstTensorView output_grad, TensorView input_grad) const;
  void backward(ConstTensorViewF64 input, ConstTensorViewF64 output_grad, TensorViewF64 input_grad) const;

 private:
  ChannelMaxPoolParams params_;
  PoolShapes shapes_;
};

}  // namespace convgemm
