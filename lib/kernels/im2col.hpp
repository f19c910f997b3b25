// im2col / col2im for one image (one sample, one group): the lowering that turns a convolution into a GEMM.
// The column matrix has one row per kernel tap (c, r, s) and one column per output pixel (p, q):
//   col[(c*R + r)*S + s][p*Q + q] = x[c][p*sh + r*dh - pad_top][q*sw + s*dw - pad_left]   (0 outside x)
// col2im is its adjoint: it adds every column entry back onto the input pixel it was read from.
#pragma once

#include <cstdint>

namespace convgemm::kernels {

struct ImageGeometry {
  int64_t channels;  // of this group
  int64_t height, width;
  int64_t kernel_height, kernel_width;
  int64_t stride_height, stride_width;
  int64_t pad_top, pad_left;
  int64_t dilation_height, dilation_width;
  int64_t output_height, output_width;

  int64_t col_rows() const { return channels * kernel_height * kernel_width; }
  int64_t col_cols() const { return output_height * output_width; }
};

// col (col_rows x col_cols) = im2col(image (channels x height x width))
void im2col(const ImageGeometry& geometry, const float* image, float* col);

// image += col2im(col). The caller zeroes image first when it wants the plain adjoint.
void col2im_accumulate(const ImageGeometry& geometry, const float* col, float* image);

}  // namespace convgemm::kernels
