// Direct 2-D convolution: plain loops over the definition in conv2d.hpp, and its two adjoints written out
// directly (not through im2col). It is the oracle the tests hold the GEMM path to, and the baseline users
// benchmark against. Overloads for float and for double (the double ones drive the finite-difference checks).
// All calls overwrite their output; shapes are checked exactly as Conv2dPlan checks them.
#pragma once

#include <convgemm/conv2d.hpp>
#include <convgemm/export.hpp>
#include <convgemm/tensor.hpp>

#include <span>

namespace convgemm {

// y[n,k,p,q] = b[k] + sum_{c,r,s} x[n, c, p*sh + r*dh - pt, q*sw + s*dw - pl] * w[k,c,r,s]
CONVGEMM_CXX_API void direct_conv2d_forward(const Conv2dParams& params, ConstTensorView input, ConstTensorView weights,
                                            std::span<const float> bias, TensorView output);
CONVGEMM_CXX_API void direct_conv2d_forward(const Conv2dParams& params, ConstTensorViewF64 input,
                                            ConstTensorViewF64 weights, std::span<const double> bias,
                                            TensorViewF64 output);

// dx[n,c,h,w] = sum over (k,r,s) and (p,q) with p*sh + r*dh - pt == h, q*sw + s*dw - pl == w of dy[n,k,p,q]*w[k,c,r,s]
CONVGEMM_CXX_API void direct_conv2d_backward_data(const Conv2dParams& params, ConstTensorView output_grad,
                                                  ConstTensorView weights, TensorView input_grad);
CONVGEMM_CXX_API void direct_conv2d_backward_data(const Conv2dParams& params, ConstTensorViewF64 output_grad,
                                                  ConstTensorViewF64 weights, TensorViewF64 input_grad);

// dw[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] * x[n, c, p*sh + r*dh - pt, q*sw + s*dw - pl]
CONVGEMM_CXX_API void direct_conv2d_backward_weights(const Conv2dParams& params, ConstTensorView input,
                                                     ConstTensorView output_grad, TensorView weights_grad);
CONVGEMM_CXX_API void direct_conv2d_backward_weights(const Conv2dParams& params, ConstTensorViewF64 input,
                                                     ConstTensorViewF64 output_grad, TensorViewF64 weights_grad);

// db[k] = sum_{n,p,q} dy[n,k,p,q]
CONVGEMM_CXX_API void direct_conv2d_backward_bias(const Conv2dParams& params, ConstTensorView output_grad,
                                                  std::span<float> bias_grad);
CONVGEMM_CXX_API void direct_conv2d_backward_bias(const Conv2dParams& params, ConstTensorViewF64 output_grad,
                                                  std::span<double> bias_grad);

}  // namespace convgemm

namespace convgemm {

// The optimised direct convolution: the same sums with the loops arranged for the machine, so that benchmarks
// compare im2col + GEMM against a fair direct baseline rather than a straw man. Each sample's input is copied
// once into a zero-padded buffer (no bounds tests in the inner loops), 4 filters x 16 output pixels accumulate
// in vector registers over (c, r, s), and TBB runs samples and filter blocks in parallel. Backward-data runs the
// same kernel on dy as a forward convolution with the flipped, transposed filters (for stride > 1 over dy
// dilated with zeros, so it does stride_h*stride_w times the useful work there). Float only; overwrite only.
CONVGEMM_CXX_API void direct_conv2d_forward_optimized(const Conv2dParams& params, ConstTensorView input,
                                                      ConstTensorView weights, std::span<const float> bias,
                                                      TensorView output);
CONVGEMM_CXX_API void direct_conv2d_backward_data_optimized(const Conv2dParams& params, ConstTensorView output_grad,
                                                            ConstTensorView weights, TensorView input_grad);
CONVGEMM_CXX_API void direct_conv2d_backward_weights_optimized(const Conv2dParams& params, ConstTensorView input,
                                                               ConstTensorView output_grad, TensorView weights_grad);

}  // namespace convgemm
