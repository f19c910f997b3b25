// Tiled convolution by direct loops: shape validation, then forward, backward-data, backward-weights and
// backward-bias side by side, each a loop nest over the definition in tiled_conv2d.hpp run in parallel over the
// elements it owns. Templated once over the element type (float, double).
#include <convgemm/error.hpp>
#include <convgemm/tiled_conv2d.hpp>

#include "tensor_checks.hpp"

#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <string>
#include <vector>

namespace convgemm {

TiledConv2dShapes tiled_conv2d_shapes(const TiledConv2dParams& p) {
  const Conv2dShapes conv = conv2d_shapes(p.conv);
  const int64_t P = conv.output[2], Q = conv.output[3];
  const auto require_tile = [](int64_t tile, int64_t output, const char* name, const char* axis) {
    if (tile < 1 || tile > output) {
      throw Error(Status::invalid_argument, name,
                  std::to_string(tile) + " is not in [1, " + std::to_string(output) + "], the output " + axis);
    }
  };
  require_tile(p.tile_height, P, "tile_height", "height");
  require_tile(p.tile_width, Q, "tile_width", "width");
  const int64_t sets = p.tile_height * p.tile_width;  // <= P*Q, which conv2d_shapes has bounded
  const int64_t set_channels = checked_product({sets, p.conv.out_channels}, "weights size");
  checked_product({set_channels, conv.weights[1], conv.weights[2], conv.weights[3], int64_t{sizeof(double)}},
                  "weights size");
  return {.input = conv.input,
          .weights = {set_channels, conv.weights[1], conv.weights[2], conv.weights[3]},
          .output = conv.output,
          .bias = p.conv.has_bias ? set_channels : 0,
          .kernel_sets = sets};
}

TiledConv2dParams locally_connected2d_params(const Conv2dParams& conv) {
  const Conv2dShapes shapes = conv2d_shapes(conv);
  return {.conv = conv, .tile_height = shapes.output[2], .tile_width = shapes.output[3]};
}

namespace {

// The index arithmetic of one problem.
struct Geometry {
  int64_t N, C, H, W, K, R, S, P, Q, G, Cg, Kg, sh, sw, dh, dw, pt, pl, th, tw;

  explicit Geometry(const TiledConv2d& op)
      : N(op.params().conv.batch),
        C(op.params().conv.in_channels),
        H(op.params().conv.in_height),
        W(op.params().conv.in_width),
        K(op.params().conv.out_channels),
        R(op.params().conv.kernel_height),
        S(op.params().conv.kernel_width),
        P(op.shapes().output[2]),
        Q(op.shapes().output[3]),
        G(op.params().conv.groups),
        Cg(C / G),
        Kg(K / G),
        sh(op.params().conv.stride.height),
        sw(op.params().conv.stride.width),
        dh(op.params().conv.dilation.height),
        dw(op.params().conv.dilation.width),
        pt(op.params().conv.padding.top),
        pl(op.params().conv.padding.left),
        th(op.params().tile_height),
        tw(op.params().tile_width) {}

  int64_t kernel_set(int64_t p, int64_t q) const { return p % th * tw + q % tw; }
  // Offset of filter k of kernel set j in the weights: a Cg x R x S block.
  int64_t filter_offset(int64_t j, int64_t k) const { return (j * K + k) * Cg * R * S; }
  // Offset of the first input channel of group g of sample n.
  int64_t group_input_offset(int64_t n, int64_t g) const { return (n * C + g * Cg) * H * W; }

  // visit(tap index c*R*S + r*S + s, input index within the group's channels) for every tap of output pixel (p, q)
  // that reads the image rather than the padding.
  template <class Visit>
  void for_each_tap(int64_t p, int64_t q, const Visit& visit) const {
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t r = 0; r < R; ++r) {
        const int64_t h = p * sh + r * dh - pt;
        if (h < 0 || h >= H) continue;
        for (int64_t s = 0; s < S; ++s) {
          const int64_t w = q * sw + s * dw - pl;
          if (w < 0 || w >= W) continue;
          visit((c * R + r) * S + s, (c * H + h) * W + w);
        }
      }
  }
};

// y[n,k,p,q] = b[j,k] + sum_{c,r,s} x[...] * w[j,k,c,r,s]; one task per output plane (n, k)
template <class T>
void tiled_forward(const TiledConv2d& op, BasicTensorView<const T> x, BasicTensorView<const T> weights,
                   std::span<const T> bias, BasicTensorView<T> y) {
  const TiledConv2dShapes& s = op.shapes();
  check_tensor(x, s.input, "input");
  check_tensor(weights, s.weights, "weights");
  check_optional_vector(bias, s.bias, "bias", "params.conv.has_bias is false");
  check_tensor(y, s.output, "output");
  const Geometry g(op);
  oneapi::tbb::parallel_for(int64_t{0}, g.N * g.K, [&](int64_t plane) {
    const int64_t n = plane / g.K, k = plane % g.K;
    const T* image = x.data + g.group_input_offset(n, k / g.Kg);
    T* output = y.data + plane * g.P * g.Q;
    for (int64_t p = 0; p < g.P; ++p)
      for (int64_t q = 0; q < g.Q; ++q) {
        const int64_t j = g.kernel_set(p, q);
        const T* filter = weights.data + g.filter_offset(j, k);
        double sum = bias.empty() ? 0.0 : static_cast<double>(bias[static_cast<size_t>(j * g.K + k)]);
        g.for_each_tap(p, q,
                       [&](int64_t tap, int64_t pixel) { sum += static_cast<double>(filter[tap]) * image[pixel]; });
        output[p * g.Q + q] = static_cast<T>(sum);
      }
  });
}

// dx[n, group g] = sum over the group's filters k and pixels (p, q) of dy[n,k,p,q] * w[j(p,q),k] scattered onto the
// taps; one task per (sample, group), which owns those channels of dx and adds into them in a fixed order.
template <class T>
void tiled_backward_data(const TiledConv2d& op, BasicTensorView<const T> dy, BasicTensorView<const T> weights,
                         BasicTensorView<T> dx) {
  const TiledConv2dShapes& s = op.shapes();
  check_tensor(dy, s.output, "output_grad");
  check_tensor(weights, s.weights, "weights");
  check_tensor(dx, s.input, "input_grad");
  const Geometry g(op);
  oneapi::tbb::parallel_for(int64_t{0}, g.N * g.G, [&](int64_t item) {
    const int64_t n = item / g.G, group = item % g.G;
    T* image_grad = dx.data + g.group_input_offset(n, group);
    std::fill(image_grad, image_grad + g.Cg * g.H * g.W, T{0});
    for (int64_t k = group * g.Kg; k < (group + 1) * g.Kg; ++k) {
      const T* output_grad = dy.data + (n * g.K + k) * g.P * g.Q;
      for (int64_t p = 0; p < g.P; ++p)
        for (int64_t q = 0; q < g.Q; ++q) {
          const T d = output_grad[p * g.Q + q];
          const T* filter = weights.data + g.filter_offset(g.kernel_set(p, q), k);
          g.for_each_tap(p, q, [&](int64_t tap, int64_t pixel) { image_grad[pixel] += d * filter[tap]; });
        }
    }
  });
}

// dw[j,k] (+)= sum over n and the pixels (p, q) of set j of dy[n,k,p,q] * x[taps of (p, q)]; one task per (j, k).
template <class T>
void tiled_backward_weights(const TiledConv2d& op, BasicTensorView<const T> x, BasicTensorView<const T> dy,
                            BasicTensorView<T> dw, GradientMode mode) {
  const TiledConv2dShapes& s = op.shapes();
  check_tensor(x, s.input, "input");
  check_tensor(dy, s.output, "output_grad");
  check_tensor(dw, s.weights, "weights_grad");
  const Geometry g(op);
  const int64_t taps = g.Cg * g.R * g.S;
  oneapi::tbb::parallel_for(int64_t{0}, s.kernel_sets * g.K, [&](int64_t item) {
    const int64_t j = item / g.K, k = item % g.K;
    std::vector<double> sum(static_cast<size_t>(taps), 0.0);
    for (int64_t n = 0; n < g.N; ++n) {
      const T* image = x.data + g.group_input_offset(n, k / g.Kg);
      const T* output_grad = dy.data + (n * g.K + k) * g.P * g.Q;
      for (int64_t p = j / g.tw; p < g.P; p += g.th)
        for (int64_t q = j % g.tw; q < g.Q; q += g.tw) {
          const double d = output_grad[p * g.Q + q];
          g.for_each_tap(p, q, [&](int64_t tap, int64_t pixel) { sum[static_cast<size_t>(tap)] += d * image[pixel]; });
        }
    }
    T* filter_grad = dw.data + g.filter_offset(j, k);
    for (int64_t tap = 0; tap < taps; ++tap) {
      const double previous = mode == GradientMode::accumulate ? static_cast<double>(filter_grad[tap]) : 0.0;
      filter_grad[tap] = static_cast<T>(previous + sum[static_cast<size_t>(tap)]);
    }
  });
}

// db[j,k] (+)= sum over n and the pixels (p, q) of set j of dy[n,k,p,q]
template <class T>
void tiled_backward_bias(const TiledConv2d& op, BasicTensorView<const T> dy, std::span<T> db, GradientMode mode) {
  const TiledConv2dShapes& s = op.shapes();
  check_tensor(dy, s.output, "output_grad");
  check_optional_vector(db, s.bias, "bias_grad", "params.conv.has_bias is false");
  const Geometry g(op);
  oneapi::tbb::parallel_for(int64_t{0}, static_cast<int64_t>(db.size()), [&](int64_t item) {
    const int64_t j = item / g.K, k = item % g.K;
    double sum = mode == GradientMode::accumulate ? static_cast<double>(db[static_cast<size_t>(item)]) : 0.0;
    for (int64_t n = 0; n < g.N; ++n) {
      const T* output_grad = dy.data + (n * g.K + k) * g.P * g.Q;
      for (int64_t p = j / g.tw; p < g.P; p += g.th)
        for (int64_t q = j % g.tw; q < g.Q; q += g.tw) sum += output_grad[p * g.Q + q];
    }
    db[static_cast<size_t>(item)] = static_cast<T>(sum);
  });
}

}  // namespace

void TiledConv2d::forward(ConstTensorView input, ConstTensorView weights, std::span<const float> bias,
                          TensorView output) const {
  tiled_forward<float>(*this, input, weights, bias, output);
}
void TiledConv2d::forward(ConstTensorViewF64 input, ConstTensorViewF64 weights, std::span<const double> bias,
                          TensorViewF64 output) const {
  tiled_forward<double>(*this, input, weights, bias, output);
}
void TiledConv2d::backward_data(ConstTensorView output_grad, ConstTensorView weights, TensorView input_grad) const {
  tiled_backward_data<float>(*this, output_grad, weights, input_grad);
}
void TiledConv2d::backward_data(ConstTensorViewF64 output_grad, ConstTensorViewF64 weights,
                                TensorViewF64 input_grad) const {
  tiled_backward_data<double>(*this, output_grad, weights, input_grad);
}
void TiledConv2d::backward_weights(ConstTensorView input, ConstTensorView output_grad, TensorView weights_grad,
                                   GradientMode mode) const {
  tiled_backward_weights<float>(*this, input, output_grad, weights_grad, mode);
}
void TiledConv2d::backward_weights(ConstTensorViewF64 input, ConstTensorViewF64 output_grad, TensorViewF64 weights_grad,
                                   GradientMode mode) const {
  tiled_backward_weights<double>(*this, input, output_grad, weights_grad, mode);
}
void TiledConv2d::backward_bias(ConstTensorView output_grad, std::span<float> bias_grad, GradientMode mode) const {
  tiled_backward_bias<float>(*this, output_grad, bias_grad, mode);
}
void TiledConv2d::backward_bias(ConstTensorViewF64 output_grad, std::span<double> bias_grad, GradientMode mode) const {
  tiled_backward_bias<double>(*this, output_grad, bias_grad, mode);
}

}  // namespace convgemm
