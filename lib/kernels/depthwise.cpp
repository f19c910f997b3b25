// The depthwise loops: for each tap (r, s) and output row p, the valid output columns [first, last) read input
// row h at columns q*sw + offset. The same traversal as im2col, without materialising the column matrix.
#include "kernels/depthwise.hpp"
#include "kernels/vector_clones.hpp"

namespace convgemm::kernels {
namespace {

template <class RowFunction>
CONVGEMM_CLONE_INLINE inline void for_each_valid_row(const ImageGeometry& g, RowFunction&& row) {
  for (int64_t r = 0; r < g.kernel_height; ++r) {
    for (int64_t s = 0; s < g.kernel_width; ++s) {
      const ValidColumns valid = valid_columns(g, s);
      if (valid.first == valid.last) continue;
      for (int64_t p = 0; p < g.output_height; ++p) {
        const int64_t h = input_row(g, p, r);
        if (h < 0) continue;
        row(r * g.kernel_width + s, p * g.output_width, h * g.width + valid.input_offset, valid.first, valid.last);
      }
    }
  }
}

CONVGEMM_VECTOR_CLONES
void depthwise_forward_cloned(const ImageGeometry& g, const float* image, const float* filter, float* output) {
  const int64_t stride = g.stride_width;
  for_each_valid_row(
      g, [&](int64_t tap, int64_t out_row, int64_t in_row, int64_t first, int64_t last) CONVGEMM_CLONE_INLINE {
        const float weight = filter[tap];
        float* y = output + out_row;
        if (stride == 1) {
          const float* x = image + in_row + first;
          for (int64_t q = first; q < last; ++q) y[q] += weight * x[q - first];
        } else {
          for (int64_t q = first; q < last; ++q) y[q] += weight * image[in_row + q * stride];
        }
      });
}

CONVGEMM_VECTOR_CLONES
void depthwise_backward_data_cloned(const ImageGeometry& g, const float* output_grad, const float* filter,
                                    float* image_grad) {
  const int64_t stride = g.stride_width;
  for_each_valid_row(
      g, [&](int64_t tap, int64_t out_row, int64_t in_row, int64_t first, int64_t last) CONVGEMM_CLONE_INLINE {
        const float weight = filter[tap];
        const float* dy = output_grad + out_row;
        if (stride == 1) {
          float* dx = image_grad + in_row + first;
          for (int64_t q = first; q < last; ++q) dx[q - first] += weight * dy[q];
        } else {
          for (int64_t q = first; q < last; ++q) image_grad[in_row + q * stride] += weight * dy[q];
        }
      });
}

CONVGEMM_VECTOR_CLONES
void depthwise_backward_weights_cloned(const ImageGeometry& g, const float* image, const float* output_grad,
                                       float* filter_grad) {
  const int64_t stride = g.stride_width;
  for_each_valid_row(
      g, [&](int64_t tap, int64_t out_row, int64_t in_row, int64_t first, int64_t last) CONVGEMM_CLONE_INLINE {
        const float* dy = output_grad + out_row;
        // Eight independent partial sums let the compiler vectorise the dot product without reassociating it.
        constexpr int lanes = 8;
        float partial[lanes] = {};
        int64_t q = first;
        for (; q + lanes <= last; q += lanes) {
          for (int l = 0; l < lanes; ++l) partial[l] += dy[q + l] * image[in_row + (q + l) * stride];
        }
        float sum = 0.0f;
        for (; q < last; ++q) sum += dy[q] * image[in_row + q * stride];
        for (const float lane : partial) sum += lane;
        filter_grad[tap] += sum;
      });
}

}  // namespace

// The entry points: plain functions over the cloned ones (see vector_clones.hpp).
void depthwise_forward(const ImageGeometry& g, const float* image, const float* filter, float* output) {
  depthwise_forward_cloned(g, image, filter, output);
}

void depthwise_backward_data(const ImageGeometry& g, const float* output_grad, const float* filter, float* image_grad) {
  depthwise_backward_data_cloned(g, output_grad, filter, image_grad);
}

void depthwise_backward_weights(const ImageGeometry& g, const float* image, const float* output_grad,
                                float* filter_grad) {
  depthwise_backward_weights_cloned(g, image, output_grad, filter_grad);
}

}  // namespace convgemm::kernels
