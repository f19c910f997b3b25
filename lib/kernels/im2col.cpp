// im2col and col2im share one traversal: for each tap (c, r, s) and output row p, the output columns q whose
// input column q*sw + s*dw - pad_left falls inside the image form one contiguous range [q_begin, q_end);
// outside it the column matrix holds zeros (padding). Computing the range once per row keeps the inner loops
// branch-free, so they vectorise for stride 1.
#include "kernels/im2col.hpp"

#include <algorithm>
#include <cstring>

namespace convgemm::kernels {
namespace {

// Smallest q >= 0 with q*stride + offset >= target, clamped to [0, limit].
int64_t first_output_at_or_past(int64_t target, int64_t offset, int64_t stride, int64_t limit) {
  const int64_t distance = target - offset;
  if (distance <= 0) return 0;
  return std::min(limit, (distance + stride - 1) / stride);
}

// Calls row(c, input_row or -1 when the row is padding, valid q range, input column offset, col row pointer
// offset) for every (tap, output row) pair.
template <class RowFunction>
void for_each_tap_row(const ImageGeometry& g, RowFunction&& row) {
  const int64_t output_pixels = g.col_cols();
  for (int64_t c = 0; c < g.channels; ++c) {
    for (int64_t r = 0; r < g.kernel_height; ++r) {
      for (int64_t s = 0; s < g.kernel_width; ++s) {
        const int64_t col_row = (c * g.kernel_height + r) * g.kernel_width + s;
        const int64_t column_offset = s * g.dilation_width - g.pad_left;  // input column of q = 0
        const int64_t q_begin = first_output_at_or_past(0, column_offset, g.stride_width, g.output_width);
        const int64_t q_end =
            std::max(q_begin, first_output_at_or_past(g.width, column_offset, g.stride_width, g.output_width));
        for (int64_t p = 0; p < g.output_height; ++p) {
          const int64_t h = p * g.stride_height + r * g.dilation_height - g.pad_top;
          const int64_t input_row = (h >= 0 && h < g.height) ? c * g.height + h : -1;
          row(col_row * output_pixels + p * g.output_width, input_row, q_begin, q_end, column_offset);
        }
      }
    }
  }
}

}  // namespace

void im2col(const ImageGeometry& g, const float* image, float* col) {
  const int64_t stride = g.stride_width;
  const int64_t width = g.output_width;
  for_each_tap_row(g, [&](int64_t col_offset, int64_t input_row, int64_t q_begin, int64_t q_end,
                          int64_t column_offset) {
    float* dst = col + col_offset;
    if (input_row < 0 || q_begin == q_end) {  // the whole row reads padding
      std::fill(dst, dst + width, 0.0f);
      return;
    }
    // Index arithmetic rather than a shifted pointer: column_offset may be negative (left padding).
    const int64_t row_start = input_row * g.width + column_offset;
    std::fill(dst, dst + q_begin, 0.0f);
    if (stride == 1) {
      std::memcpy(dst + q_begin, image + row_start + q_begin, static_cast<size_t>(q_end - q_begin) * sizeof(float));
    } else {
      for (int64_t q = q_begin; q < q_end; ++q) dst[q] = image[row_start + q * stride];
    }
    std::fill(dst + q_end, dst + width, 0.0f);
  });
}

void col2im_accumulate(const ImageGeometry& g, const float* col, float* image) {
  const int64_t stride = g.stride_width;
  for_each_tap_row(g, [&](int64_t col_offset, int64_t input_row, int64_t q_begin, int64_t q_end,
                          int64_t column_offset) {
    if (input_row < 0 || q_end == q_begin) return;  // the tap read padding: its gradient goes nowhere
    const float* src = col + col_offset;
    const int64_t row_start = input_row * g.width + column_offset;
    if (stride == 1) {
      float* dst = image + row_start + q_begin;
      for (int64_t q = q_begin; q < q_end; ++q) dst[q - q_begin] += src[q];
    } else {
      for (int64_t q = q_begin; q < q_end; ++q) image[row_start + q * stride] += src[q];
    }
  });
}

}  // namespace convgemm::kernels
