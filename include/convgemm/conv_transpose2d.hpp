// Transposed 2-D convolution (the "deconvolution" layer, PyTorch's ConvTranspose2d): the adjoint of a convolution's
// input gradient, run as Conv2dPlan's GEMM pair swapped, so it upsamples by the stride.
//
// Notation as in conv2d.hpp, seen from this operator: N batch, C input channels, H x W input, K output channels,
// R x S kernel, P x Q output, G groups; weights are C x K/G x R x S (PyTorch's layout). Every input pixel scatters
// its kernel-weighted values onto the output:
//   y[n, g*K/G + k, h*sh - pt + r*dh, w*sw - pl + s*dw] += x[n, c, h, w] * W[c, k, r, s]   (c in group g, k < K/G)
// plus b[k], with writes that land in the padding dropped. P = (H-1)*sh - pt - pb + dh*(R-1) + output_padding + 1.
//
// The matching convolution maps a K-channel P x Q image to a C-channel H x W one with the same kernel, stride,
// padding, dilation and groups; its weights are these weights (K_conv = C, C_conv/G = K/G). Then
//   this forward          = that convolution's backward_data  (dx = col2im(W^T * dy), with dy := x)
//   this backward_data    = that convolution's forward        (y = W * im2col(x), with x := dy)
//   this backward_weights = that convolution's backward_weights with the roles of input and output gradient swapped
// which is Caffe's deconvolution layer. Everything Conv2dPlan promises (threads, workspace, bitwise-reproducible
// weight gradients, nothing written before every argument is checked) holds here too.
#pragma once

#include <convgemm/export.hpp>

#include <convgemm/conv2d.hpp>
#include <convgemm/tensor.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace convgemm {

// Extra output rows (bottom) and columns (right) that no padding removes; PyTorch's output_padding. It only
// chooses among the output sizes a strided convolution maps back onto the same input size, so it must be smaller
// than the stride (PyTorch also allows "smaller than the dilation"; that case has no matching convolution).
struct OutputPadding2d {
  int64_t height = 0;
  int64_t width = 0;
};

struct ConvTranspose2dParams {
  int64_t batch = 1;          // N
  int64_t in_channels = 1;    // C
  int64_t in_height = 1;      // H
  int64_t in_width = 1;       // W
  int64_t out_channels = 1;   // K
  int64_t kernel_height = 1;  // R
  int64_t kernel_width = 1;   // S
  Stride2d stride{};
  // Rows and columns removed from each side of the full output (PyTorch's padding, per side here).
  Padding2d padding{};
  OutputPadding2d output_padding{};
  Dilation2d dilation{};
  int64_t groups = 1;  // G; C and K must both be divisible by it
  bool has_bias = false;
};

struct ConvTranspose2dShapes {
  Shape4 input;    // {N, C, H, W}
  Shape4 weights;  // {C, K/G, R, S}
  Shape4 output;   // {N, K, P, Q}
  int64_t bias;    // K when has_bias, else 0
};

// P (or Q) = (input - 1) * stride - pad_before - pad_after + dilation * (kernel - 1) + output_padding + 1; no
// validation here, and the result may be < 1 for too much padding.
CONVGEMM_CXX_API int64_t conv_transpose2d_output_size(int64_t input, int64_t kernel, int64_t stride, int64_t pad_before,
                                                      int64_t pad_after, int64_t dilation, int64_t output_padding);

// Validates the params and throws convgemm::Error naming the offending parameter: non-positive sizes, negative
// padding, output_padding not smaller than the stride, channels not divisible by groups, padding that leaves no
// output, sizes overflowing 64 bits.
CONVGEMM_CXX_API ConvTranspose2dShapes conv_transpose2d_shapes(const ConvTranspose2dParams& params);

// The convolution whose backward-data this operator's forward is (no bias: the bias is this operator's own).
CONVGEMM_CXX_API Conv2dParams matching_conv2d_params(const ConvTranspose2dParams& params);

// Describe once, execute many, like Conv2dPlan: it owns the plan of the matching convolution and runs every call
// through it. Calls are const and may run concurrently from several host threads.
class CONVGEMM_CXX_API ConvTranspose2dPlan {
 public:
  explicit ConvTranspose2dPlan(const ConvTranspose2dParams& params, ExecutionOptions options = {});

  const ConvTranspose2dParams& params() const { return params_; }
  const ConvTranspose2dShapes& shapes() const { return shapes_; }
  // The matching convolution's plan: its describe() says how the GEMMs run.
  const Conv2dPlan& conv_plan() const { return conv_; }
  // Bytes of workspace a call in that direction needs (named from this operator's side); the largest over all.
  size_t workspace_bytes(Conv2dDirection direction) const;
  size_t workspace_bytes() const { return conv_.workspace_bytes(); }

  // y = col2im(W^T * x) + b: the matching convolution's backward_data, then the bias.
  void forward(ConstTensorView input, ConstTensorView weights, std::span<const float> bias, TensorView output,
               std::span<std::byte> workspace = {}) const;
  // dL/dx = W * im2col(dy): the matching convolution's forward.
  void backward_data(ConstTensorView output_grad, ConstTensorView weights, TensorView input_grad,
                     std::span<std::byte> workspace = {}) const;
  // dL/dW (+)= sum_n x_n * im2col(dy_n)^T: the matching convolution's weight gradient with its input := dy and its
  // output gradient := x. Bitwise the same for any number of threads.
  void backward_weights(ConstTensorView input, ConstTensorView output_grad, TensorView weights_grad,
                        GradientMode mode = GradientMode::overwrite, std::span<std::byte> workspace = {}) const;
  // dL/db (+)= sum over n, p, q of dy[n, k, p, q], in order and in double precision.
  void backward_bias(ConstTensorView output_grad, std::span<float> bias_grad,
                     GradientMode mode = GradientMode::overwrite) const;

  // The same four calls in double precision, through the direct convolution's double loops with the same role
  // swap: they exist for the finite-difference checks (convgemm has no double-precision GEMM path).
  void forward(ConstTensorViewF64 input, ConstTensorViewF64 weights, std::span<const double> bias,
               TensorViewF64 output) const;
  void backward_data(ConstTensorViewF64 output_grad, ConstTensorViewF64 weights, TensorViewF64 input_grad) const;
  void backward_weights(ConstTensorViewF64 input, ConstTensorViewF64 output_grad, TensorViewF64 weights_grad,
                        GradientMode mode = GradientMode::overwrite) const;
  void backward_bias(ConstTensorViewF64 output_grad, std::span<double> bias_grad,
                     GradientMode mode = GradientMode::overwrite) const;

 private:
  ConvTranspose2dParams params_;
  ConvTranspose2dShapes shapes_;
  Conv2dPlan conv_;
};

}  // namespace convgemm
