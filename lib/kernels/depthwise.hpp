// Direct kernels for depthwise convolution (one input channel per group): per channel a small R x S correlation
// whose inner loop runs along an output row, contiguous for stride 1, so it vectorises. A GEMM per channel would
// be a (K/G) x (R*S) times (R*S) x (P*Q) product: far too thin for BLAS to run well.
#pragma once

#include "kernels/im2col.hpp"

namespace convgemm::kernels {

// output (P x Q) += correlation of image (H x W) with filter (R x S); geometry.channels must be 1.
void depthwise_forward(const ImageGeometry& geometry, const float* image, const float* filter, float* output);

// image_grad (H x W) += the full convolution of output_grad with the 180-degree-rotated filter.
void depthwise_backward_data(const ImageGeometry& geometry, const float* output_grad, const float* filter,
                             float* image_grad);

// filter_grad (R x S) += correlation of image with output_grad; each tap's sum runs in a fixed order.
void depthwise_backward_weights(const ImageGeometry& geometry, const float* image, const float* output_grad,
                                float* filter_grad);

}  // namespace convgemm::kernels
