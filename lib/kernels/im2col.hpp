// im2col / col2im for one image (one sample, one group or channel block): the lowering that turns a convolution
// into a GEMM. The column matrix has one row per kernel tap (c, r, s) and one column per output pixel (p, q):
//   col[(c*R + r)*S + s][p*Q + q] = x[c][p*sh + r*dh - pad_top][q*sw + s*dw - pad_left]   (0 outside x)
// Both work on a range of output pixels [pixel_begin, pixel_end) of the image, written to (read from) columns
// 0 .. pixel_end - pixel_begin of a column matrix with leading dimension col_stride: that is how the plans tile
// the pixels of one sample, or lay several small samples side by side in one GEMM.
// col2im is the adjoint of im2col: it adds every column entry back onto the input pixel it was read from.
#pragma once

#include <cstdint>

namespace convgemm::kernels {

struct ImageGeometry {
  int64_t channels;  // of this group (or channel block)
  int64_t height, width;
  int64_t kernel_height, kernel_width;
  int64_t stride_height, stride_width;
  int64_t pad_top, pad_left;
  int64_t dilation_height, dilation_width;
  int64_t output_height, output_width;

  int64_t taps() const { return kernel_height * kernel_width; }
  int64_t col_rows() const { return channels * taps(); }
  int64_t output_pixels() const { return output_height * output_width; }
};

// Output rows up to this wide have faster paths (AVX-512) when a range [pixel_begin, pixel_end) holds whole rows:
// the plans cut the pixels of such images at row boundaries.
inline constexpr int64_t max_whole_row_width = 64;

// col[:, 0 : pixel_end - pixel_begin] = im2col(image)[:, pixel_begin : pixel_end]
void im2col(const ImageGeometry& geometry, const float* image, int64_t pixel_begin, int64_t pixel_end, float* col,
            int64_t col_stride);

// image += col2im(col[:, 0 : pixel_end - pixel_begin]) for those output pixels.
void col2im_accumulate(const ImageGeometry& geometry, const float* col, int64_t col_stride, int64_t pixel_begin,
                       int64_t pixel_end, float* image);

// image = col2im(col) over all the output pixels: every pixel of the image is written (zero where no tap reads it),
// so the image needs no zeroing first.
void col2im(const ImageGeometry& geometry, const float* col, int64_t col_stride, float* image);

// The same traversal, shared with the depthwise kernels: for kernel column s, the output columns q whose input
// column q*sw + s*dw - pad_left lies inside the image form the range [first, last).
struct ValidColumns {
  int64_t first, last;
  int64_t input_offset;  // input column of q = 0 (may be negative)
};
ValidColumns valid_columns(const ImageGeometry& geometry, int64_t s);

// Input row read by output row p through kernel row r, or -1 when it is padding.
inline int64_t input_row(const ImageGeometry& g, int64_t p, int64_t r) {
  const int64_t h = p * g.stride_height + r * g.dilation_height - g.pad_top;
  return h >= 0 && h < g.height ? h : -1;
}

// The first input row output row p reads (through the kernel's first row), not clamped to the image: below 0 where
// that row is padding.
inline int64_t first_input_row(const ImageGeometry& g, int64_t p) { return p * g.stride_height - g.pad_top; }

// The last input row output row p reads (through the kernel's last row), not clamped to the image: below 0 or
// past height - 1 where that row is padding.
inline int64_t last_input_row(const ImageGeometry& g, int64_t p) {
  return p * g.stride_height + (g.kernel_height - 1) * g.dilation_height - g.pad_top;
}

}  // namespace convgemm::kernels
