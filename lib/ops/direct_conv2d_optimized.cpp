// The optimised direct convolution (see direct_conv2d.hpp): a register-blocked loop nest over a zero-padded copy
// of each sample. Backward-data reuses the forward kernel on the "deconvolution" problem; backward-weights has
// its own kernel that keeps 4 filters x 16 lanes of dot products in registers.
#include <convgemm/direct_conv2d.hpp>

#include "kernels/vector_clones.hpp"
#include "tensor_checks.hpp"

#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace convgemm {
namespace {

constexpr int filter_block = 4;  // filters whose outputs accumulate together: 4 x 16 floats fit the registers
constexpr int pixel_block = 16;  // output pixels per accumulator row: one AVX-512 register of floats

// One sample's input, zero-padded on every side, with slack on the right so that a full pixel block can always
// be read. Rows are padded_width apart.
struct PaddedImage {
  int64_t channels, padded_height, padded_width;
  std::vector<float> data;

  PaddedImage(const Conv2dParams& p, int64_t channels_, int64_t height, int64_t width, int64_t slack)
      : channels(channels_),
        padded_height(height + p.padding.top + p.padding.bottom),
        padded_width(width + p.padding.left + p.padding.right + slack),
        data(static_cast<size_t>(channels * padded_height * padded_width)) {}

  void load(const float* image, int64_t height, int64_t width, int64_t pad_top, int64_t pad_left) {
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t h = 0; h < height; ++h) {
        const float* from = image + (c * height + h) * width;
        std::copy(from, from + width, row(c, h + pad_top) + pad_left);
      }
  }
  float* row(int64_t c, int64_t h) { return data.data() + (c * padded_height + h) * padded_width; }
};

// 16 floats: one AVX-512 register (two AVX2 registers in that clone). GCC's vector extension says exactly
// which values live in registers, where auto-vectorisation of the plain loops produced shuffles.
typedef float Vector __attribute__((vector_size(pixel_block * sizeof(float))));

[[gnu::always_inline]] inline void load(Vector& v, const float* from, int64_t stride) {
  if (stride == 1) {
    std::memcpy(&v, from, sizeof v);
  } else {
    for (int i = 0; i < pixel_block; ++i) v[i] = from[i * stride];
  }
}

// y[k0 .. k0+4, p, q0 .. q0+16] = sum over (c, r, s) of w * x_padded, accumulated in registers and stored to
// `out` (4 x 16) at the end. `filters` holds 4 filters (zero past the group's last one), taps_per_filter apart.
CONVGEMM_VECTOR_CLONES
void forward_block(const float* __restrict x, int64_t channels, int64_t padded_height, int64_t padded_width, int64_t R,
                   int64_t S, int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t p, int64_t q0,
                   const float* __restrict filters, int64_t taps_per_filter, float* __restrict out) {
  Vector acc[filter_block] = {};
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t r = 0; r < R; ++r) {
      const float* row = x + (c * padded_height + p * sh + r * dh) * padded_width + q0 * sw;
      const float* w = filters + (c * R + r) * S;
      for (int64_t s = 0; s < S; ++s) {
        Vector xv;
        load(xv, row + s * dw, sw);
        for (int k = 0; k < filter_block; ++k) acc[k] += w[k * taps_per_filter + s] * xv;
      }
    }
  }
  std::memcpy(out, acc, sizeof acc);
}

// The forward convolution of `input` (its params as given) into `output`, optionally with bias.
void forward(const Conv2dParams& p, const Conv2dShapes& shapes, const float* input, const float* weights,
             const float* bias, float* output) {
  const int64_t G = p.groups, Cg = p.in_channels / G, Kg = p.out_channels / G;
  const int64_t P = shapes.output[2], Q = shapes.output[3], taps = Cg * p.kernel_height * p.kernel_width;
  const int64_t k_blocks = (Kg + filter_block - 1) / filter_block;
  const int64_t slack = pixel_block * p.stride.width;
  oneapi::tbb::parallel_for(int64_t{0}, p.batch * G, [&](int64_t item) {
    const int64_t n = item / G, g = item % G;
    PaddedImage x(p, Cg, p.in_height, p.in_width, slack);
    x.load(input + (n * p.in_channels + g * Cg) * p.in_height * p.in_width, p.in_height, p.in_width, p.padding.top,
           p.padding.left);
    oneapi::tbb::parallel_for(int64_t{0}, k_blocks, [&](int64_t kb) {
      const int64_t k0 = kb * filter_block, filters_here = std::min<int64_t>(filter_block, Kg - k0);
      std::vector<float> filters(static_cast<size_t>(filter_block * taps), 0.0f);
      std::copy(weights + (g * Kg + k0) * taps, weights + (g * Kg + k0 + filters_here) * taps, filters.begin());
      float acc[filter_block][pixel_block];
      for (int64_t row = 0; row < P; ++row) {
        for (int64_t q0 = 0; q0 < Q; q0 += pixel_block) {
          forward_block(x.data.data(), Cg, x.padded_height, x.padded_width, p.kernel_height, p.kernel_width,
                        p.stride.height, p.stride.width, p.dilation.height, p.dilation.width, row, q0, filters.data(),
                        taps, &acc[0][0]);
          const int64_t width = std::min<int64_t>(pixel_block, Q - q0);
          for (int64_t k = 0; k < filters_here; ++k) {
            const int64_t channel = g * Kg + k0 + k;
            float* y = output + ((n * p.out_channels + channel) * P + row) * Q + q0;
            const float b = bias == nullptr ? 0.0f : bias[channel];
            for (int64_t i = 0; i < width; ++i) y[i] = acc[k][i] + b;
          }
        }
      }
    });
  });
}

// lanes (4 x 16) += sum over p, q of dy[k] * x_padded for one sample, channel and tap: 16 lanes per filter of
// partial dot products, in registers; the caller folds the lanes at the end. dy holds the block's 4 filters as
// P rows of padded_q (a multiple of 16, zero past Q) each, so every load is a full vector.
CONVGEMM_VECTOR_CLONES
void weights_block(const float* __restrict x, int64_t padded_width, const float* __restrict dy, int64_t P,
                   int64_t padded_q, int64_t sh, int64_t sw, int64_t r_offset, int64_t s_offset,
                   float* __restrict lanes) {
  Vector acc[filter_block] = {};
  for (int64_t p = 0; p < P; ++p) {
    const float* row = x + (p * sh + r_offset) * padded_width + s_offset;
    for (int64_t q0 = 0; q0 < padded_q; q0 += pixel_block) {
      Vector xv;
      load(xv, row + q0 * sw, sw);
      for (int k = 0; k < filter_block; ++k) {
        Vector dv;
        std::memcpy(&dv, dy + (k * P + p) * padded_q + q0, sizeof dv);
        acc[k] += dv * xv;
      }
    }
  }
  for (int k = 0; k < filter_block; ++k) {
    for (int i = 0; i < pixel_block; ++i) lanes[k * pixel_block + i] += acc[k][i];
  }
}

}  // namespace

void direct_conv2d_forward_optimized(const Conv2dParams& params, ConstTensorView input, ConstTensorView weights,
                                     std::span<const float> bias, TensorView output) {
  const Conv2dShapes shapes = conv2d_shapes(params);
  check_tensor(input, shapes.input, "input");
  check_tensor(weights, shapes.weights, "weights");
  check_optional_vector(bias, shapes.bias, "bias", "params.has_bias is false");
  check_tensor(output, shapes.output, "output");
  forward(params, shapes, input.data, weights.data, bias.empty() ? nullptr : bias.data(), output.data);
}

// dx[c, h, w] = sum over k, r, s of D[k, h + pt - r*dh, w + pl - s*dw] * w[k, c, r, s], where D is dy spread out
// with (stride - 1) zeros between pixels. With r' = R-1-r this is a forward correlation (stride 1, dilation d,
// no padding) of E = D shifted by extent - pad, (H + extent_h) x (W + extent_w) in size, with the filters rotated
// by 180 degrees and their in/out channels swapped within each group.
void direct_conv2d_backward_data_optimized(const Conv2dParams& params, ConstTensorView output_grad,
                                           ConstTensorView weights, TensorView input_grad) {
  const Conv2dShapes shapes = conv2d_shapes(params);
  check_tensor(output_grad, shapes.output, "output_grad");
  check_tensor(weights, shapes.weights, "weights");
  check_tensor(input_grad, shapes.input, "input_grad");
  const int64_t N = params.batch, K = params.out_channels, G = params.groups, Cg = params.in_channels / G;
  const int64_t Kg = K / G, R = params.kernel_height, S = params.kernel_width;
  const int64_t P = shapes.output[2], Q = shapes.output[3];
  const int64_t extent_h = params.dilation.height * (R - 1), extent_w = params.dilation.width * (S - 1);
  const int64_t lead_h = extent_h - params.padding.top, lead_w = extent_w - params.padding.left;
  const int64_t padded_h = params.in_height + extent_h, padded_w = params.in_width + extent_w;

  // Output pixels that land outside E read only padding in the forward pass: their gradient goes nowhere.
  std::vector<float> spread(static_cast<size_t>(N * K * padded_h * padded_w), 0.0f);
  for (int64_t nk = 0; nk < N * K; ++nk)
    for (int64_t p = 0; p < P; ++p) {
      const int64_t i = p * params.stride.height + lead_h;
      if (i < 0 || i >= padded_h) continue;
      for (int64_t q = 0; q < Q; ++q) {
        const int64_t j = q * params.stride.width + lead_w;
        if (j < 0 || j >= padded_w) continue;
        spread[static_cast<size_t>((nk * padded_h + i) * padded_w + j)] = output_grad.data[(nk * P + p) * Q + q];
      }
    }
  std::vector<float> flipped(static_cast<size_t>(element_count(shapes.weights)));
  for (int64_t g = 0; g < G; ++g)
    for (int64_t k = 0; k < Kg; ++k)
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t r = 0; r < R; ++r)
          for (int64_t s = 0; s < S; ++s)
            flipped[static_cast<size_t>((((g * Cg + c) * Kg + k) * R + (R - 1 - r)) * S + (S - 1 - s))] =
                weights.data[(((g * Kg + k) * Cg + c) * R + r) * S + s];
  const Conv2dParams transposed{.batch = N,
                                .in_channels = K,
                                .in_height = padded_h,
                                .in_width = padded_w,
                                .out_channels = params.in_channels,
                                .kernel_height = R,
                                .kernel_width = S,
                                .dilation = params.dilation,
                                .groups = G};
  forward(transposed, conv2d_shapes(transposed), spread.data(), flipped.data(), nullptr, input_grad.data);
}

void direct_conv2d_backward_weights_optimized(const Conv2dParams& params, ConstTensorView input,
                                              ConstTensorView output_grad, TensorView weights_grad) {
  const Conv2dShapes shapes = conv2d_shapes(params);
  check_tensor(input, shapes.input, "input");
  check_tensor(output_grad, shapes.output, "output_grad");
  check_tensor(weights_grad, shapes.weights, "weights_grad");
  const Conv2dParams& p = params;
  const int64_t G = p.groups, Cg = p.in_channels / G, Kg = p.out_channels / G, R = p.kernel_height;
  const int64_t S = p.kernel_width, P = shapes.output[2], Q = shapes.output[3], taps = R * S;
  const int64_t padded_q = (Q + pixel_block - 1) / pixel_block * pixel_block;
  const int64_t k_blocks = (Kg + filter_block - 1) / filter_block;
  // x is read up to padded_q pixels per row: the slack covers the block past Q (where dy is zero).
  const int64_t slack = (padded_q - Q + pixel_block) * p.stride.width;
  // One task per (group, filter block): it owns those filters' dW and sums them over the batch in order.
  oneapi::tbb::parallel_for(int64_t{0}, G * k_blocks, [&](int64_t item) {
    const int64_t g = item / k_blocks, k0 = item % k_blocks * filter_block;
    const int64_t filters_here = std::min<int64_t>(filter_block, Kg - k0);
    PaddedImage x(p, Cg, p.in_height, p.in_width, slack);
    std::vector<float> dy(static_cast<size_t>(filter_block * P * padded_q), 0.0f);
    // Per (channel, tap): 4 filters x 16 lanes of partial sums, accumulated over the batch, folded at the end.
    std::vector<float> lanes(static_cast<size_t>(Cg * taps * filter_block * pixel_block), 0.0f);
    for (int64_t n = 0; n < p.batch; ++n) {
      x.load(input.data + (n * p.in_channels + g * Cg) * p.in_height * p.in_width, p.in_height, p.in_width,
             p.padding.top, p.padding.left);
      // A block past the group's last filter repeats a real one: the loop keeps its fixed count of 4.
      for (int64_t k = 0; k < filter_block; ++k) {
        const float* from =
            output_grad.data + (n * p.out_channels + g * Kg + k0 + std::min(k, filters_here - 1)) * P * Q;
        for (int64_t row = 0; row < P; ++row) {
          std::copy(from + row * Q, from + (row + 1) * Q, dy.data() + (k * P + row) * padded_q);
        }
      }
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t r = 0; r < R; ++r)
          for (int64_t s = 0; s < S; ++s) {
            weights_block(x.row(c, 0), x.padded_width, dy.data(), P, padded_q, p.stride.height, p.stride.width,
                          r * p.dilation.height, s * p.dilation.width,
                          lanes.data() + ((c * taps + r * S + s) * filter_block) * pixel_block);
          }
    }
    for (int64_t k = 0; k < filters_here; ++k)
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t rs = 0; rs < taps; ++rs) {
          const float* lane = lanes.data() + ((c * taps + rs) * filter_block + k) * pixel_block;
          float total = 0.0f;
          for (int i = 0; i < pixel_block; ++i) total += lane[i];
          weights_grad.data[((g * Kg + k0 + k) * Cg + c) * taps + rs] = total;
        }
  });
}

}  // namespace convgemm
