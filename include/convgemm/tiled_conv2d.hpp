// Tiled convolution (Goodfellow, Bengio, Courville, Deep Learning, section 9.5 and figure 9.16): t_h x t_w sets of
// kernels cycled over the output positions, between a convolution (t = 1) and a locally connected layer (t = P x Q).
//
// Notation as in conv2d.hpp: N batch, C input channels, H x W input, K output channels, R x S kernel, P x Q output,
// G groups. Output pixel (p, q) uses kernel set j(p, q) = (p mod t_h) * t_w + (q mod t_w), and each set has its own
// bias too, so that t = P x Q is exactly a locally connected layer (untied weights and biases):
//   y[n,k,p,q] = b[j,k] + sum_{c,r,s} x[n, g*C/G + c, p*sh + r*dh - pt, q*sw + s*dw - pl] * w[j,k,c,r,s]
// with weights stored as a {t_h*t_w*K, C/G, R, S} tensor (kernel set outermost) and the bias as t_h*t_w*K values.
// Neighbouring outputs use different filters, as in a locally connected layer, while the parameter count grows
// only with t, not with the output size.
//
// The loops are direct (correct before fast): forward in parallel over output planes, backward-data over (sample,
// group), backward-weights and backward-bias over (kernel set, filter). Each element is owned by one task and summed
// in a fixed order (forward, weights and bias in double precision), so every result is the same for any thread count.
// Calls check every argument before writing anything and run in the caller's TBB arena. Float and double overloads (the
// double ones drive the finite-difference checks).
#pragma once

#include <convgemm/export.hpp>

#include <convgemm/conv2d.hpp>
#include <convgemm/tensor.hpp>

#include <cstdint>
#include <span>

namespace convgemm {

struct TiledConv2dParams {
  // The convolution every kernel set performs: sizes, stride, padding, dilation, groups, and whether there is a bias.
  Conv2dParams conv{};
  int64_t tile_height = 1;  // t_h: kernel sets repeat every t_h output rows; 1 <= t_h <= P
  int64_t tile_width = 1;   // t_w: and every t_w output columns; 1 <= t_w <= Q
};

struct TiledConv2dShapes {
  Shape4 input;         // {N, C, H, W}
  Shape4 weights;       // {t_h*t_w*K, C/G, R, S}
  Shape4 output;        // {N, K, P, Q}
  int64_t bias;         // t_h*t_w*K when has_bias, else 0
  int64_t kernel_sets;  // t_h*t_w
};

// Validates the convolution (as conv2d_shapes does) and the tile, throwing convgemm::Error naming the parameter:
// tile_height / tile_width below 1 or above the output's height / width (a set no output pixel uses would be a
// parameter that never learns).
CONVGEMM_CXX_API TiledConv2dShapes tiled_conv2d_shapes(const TiledConv2dParams& params);

// The locally connected limit of a convolution: one kernel set per output pixel (t = P x Q).
CONVGEMM_CXX_API TiledConv2dParams locally_connected2d_params(const Conv2dParams& conv);

class CONVGEMM_CXX_API TiledConv2d {
 public:
  explicit TiledConv2d(const TiledConv2dParams& params) : params_(params), shapes_(tiled_conv2d_shapes(params)) {}
  const TiledConv2dParams& params() const { return params_; }
  const TiledConv2dShapes& shapes() const { return shapes_; }

  // y[n,k,p,q] = b[j,k] + sum_{c,r,s} x[n, c', p*sh + r*dh - pt, q*sw + s*dw - pl] * w[j,k,c,r,s], j = j(p, q)
  void forward(ConstTensorView input, ConstTensorView weights, std::span<const float> bias, TensorView output) const;
  void forward(ConstTensorViewF64 input, ConstTensorViewF64 weights, std::span<const double> bias,
               TensorViewF64 output) const;
  // dL/dx[n,c',h,w] = sum of dy[n,k,p,q] * w[j(p,q),k,c,r,s] over the (k, r, s, p, q) whose tap reads (h, w).
  // Overwrites dx.
  void backward_data(ConstTensorView output_grad, ConstTensorView weights, TensorView input_grad) const;
  void backward_data(ConstTensorViewF64 output_grad, ConstTensorViewF64 weights, TensorViewF64 input_grad) const;
  // dL/dw[j,k,c,r,s] (+)= sum over n and the pixels (p, q) of set j of dy[n,k,p,q] * x[n, c', tap (r, s) of (p, q)]
  void backward_weights(ConstTensorView input, ConstTensorView output_grad, TensorView weights_grad,
                        GradientMode mode = GradientMode::overwrite) const;
  void backward_weights(ConstTensorViewF64 input, ConstTensorViewF64 output_grad, TensorViewF64 weights_grad,
                        GradientMode mode = GradientMode::overwrite) const;
  // dL/db[j,k] (+)= sum over n and the pixels (p, q) of set j of dy[n,k,p,q]
  void backward_bias(ConstTensorView output_grad, std::span<float> bias_grad,
                     GradientMode mode = GradientMode::overwrite) const;
  void backward_bias(ConstTensorViewF64 output_grad, std::span<double> bias_grad,
                     GradientMode mode = GradientMode::overwrite) const;

 private:
  TiledConv2dParams params_;
  TiledConv2dShapes shapes_;
};

}  // namespace convgemm
