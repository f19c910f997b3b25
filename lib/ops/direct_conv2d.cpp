// The direct convolution: the definition in conv2d.hpp as nested loops, and its two adjoints written as
// gathers over the same index relation h = p*sh + r*dh - pad_top, w = q*sw + s*dw - pad_left. No im2col, no
// GEMM: an independent oracle for the GEMM path. Templated once over the element type (float, double).
#include <convgemm/direct_conv2d.hpp>

#include "tensor_checks.hpp"

#include <algorithm>

namespace convgemm {
namespace {

// The index arithmetic of one problem, shared by the four loops below.
struct DirectGeometry {
  int64_t N, C, H, W, K, R, S, P, Q, G, Cg, Kg;
  int64_t sh, sw, dh, dw, pt, pl;

  DirectGeometry(const Conv2dParams& p, const Conv2dShapes& shapes)
      : N(p.batch),
        C(p.in_channels),
        H(p.in_height),
        W(p.in_width),
        K(p.out_channels),
        R(p.kernel_height),
        S(p.kernel_width),
        P(shapes.output[2]),
        Q(shapes.output[3]),
        G(p.groups),
        Cg(C / G),
        Kg(K / G),
        sh(p.stride.height),
        sw(p.stride.width),
        dh(p.dilation.height),
        dw(p.dilation.width),
        pt(p.padding.top),
        pl(p.padding.left) {}

  int64_t x_index(int64_t n, int64_t c, int64_t h, int64_t w) const { return ((n * C + c) * H + h) * W + w; }
  int64_t y_index(int64_t n, int64_t k, int64_t p, int64_t q) const { return ((n * K + k) * P + p) * Q + q; }
  int64_t w_index(int64_t k, int64_t c, int64_t r, int64_t s) const { return ((k * Cg + c) * R + r) * S + s; }
  // Input row read by output row p through kernel row r, or -1 when it lies in the padding.
  int64_t input_row(int64_t p, int64_t r) const {
    const int64_t h = p * sh + r * dh - pt;
    return h >= 0 && h < H ? h : -1;
  }
  int64_t input_col(int64_t q, int64_t s) const {
    const int64_t w = q * sw + s * dw - pl;
    return w >= 0 && w < W ? w : -1;
  }
};

template <class T>
void forward(const Conv2dParams& params, BasicTensorView<const T> x, BasicTensorView<const T> weights,
             std::span<const T> bias, BasicTensorView<T> y) {
  const Conv2dShapes shapes = conv2d_shapes(params);
  check_tensor(x, shapes.input, "input");
  check_tensor(weights, shapes.weights, "weights");
  check_optional_vector(bias, shapes.bias, "bias", "params.has_bias is false");
  check_tensor(y, shapes.output, "output");
  const DirectGeometry g(params, shapes);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t k = 0; k < g.K; ++k) {
      const int64_t c_first = k / g.Kg * g.Cg;  // first input channel of k's group
      for (int64_t p = 0; p < g.P; ++p)
        for (int64_t q = 0; q < g.Q; ++q) {
          T sum = bias.empty() ? T{0} : bias[static_cast<size_t>(k)];
          for (int64_t c = 0; c < g.Cg; ++c)
            for (int64_t r = 0; r < g.R; ++r) {
              const int64_t h = g.input_row(p, r);
              if (h < 0) continue;
              for (int64_t s = 0; s < g.S; ++s) {
                const int64_t w = g.input_col(q, s);
                if (w < 0) continue;
                sum += x.data[g.x_index(n, c_first + c, h, w)] * weights.data[g.w_index(k, c, r, s)];
              }
            }
          y.data[g.y_index(n, k, p, q)] = sum;
        }
    }
}

// The output pixel that reads input pixel h through kernel row r, or -1: p = (h + pad - r*dilation) / stride when
// that divides exactly and lands inside the output.
int64_t reading_output(int64_t input, int64_t tap, int64_t stride, int64_t dilation, int64_t pad, int64_t outputs) {
  const int64_t offset = input + pad - tap * dilation;
  if (offset < 0 || offset % stride != 0) return -1;
  const int64_t output = offset / stride;
  return output < outputs ? output : -1;
}

// dx[n,c,h,w] = sum_{k in c's group, r, s} dy[n,k,p,q] * w[k,c,r,s] over the (p, q) that read (h, w) via (r, s).
template <class T>
void backward_data(const Conv2dParams& params, BasicTensorView<const T> dy, BasicTensorView<const T> weights,
                   BasicTensorView<T> dx) {
  const Conv2dShapes shapes = conv2d_shapes(params);
  check_tensor(dy, shapes.output, "output_grad");
  check_tensor(weights, shapes.weights, "weights");
  check_tensor(dx, shapes.input, "input_grad");
  const DirectGeometry g(params, shapes);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t c = 0; c < g.C; ++c) {
      const int64_t group = c / g.Cg;
      const int64_t c_in_group = c % g.Cg;
      for (int64_t h = 0; h < g.H; ++h)
        for (int64_t w = 0; w < g.W; ++w) {
          T sum{0};
          for (int64_t k = group * g.Kg; k < (group + 1) * g.Kg; ++k)
            for (int64_t r = 0; r < g.R; ++r) {
              const int64_t p = reading_output(h, r, g.sh, g.dh, g.pt, g.P);
              if (p < 0) continue;
              for (int64_t s = 0; s < g.S; ++s) {
                const int64_t q = reading_output(w, s, g.sw, g.dw, g.pl, g.Q);
                if (q < 0) continue;
                sum += dy.data[g.y_index(n, k, p, q)] * weights.data[g.w_index(k, c_in_group, r, s)];
              }
            }
          dx.data[g.x_index(n, c, h, w)] = sum;
        }
    }
}

// dw[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] * x[n, c, p*sh + r*dh - pt, q*sw + s*dw - pl]
template <class T>
void backward_weights(const Conv2dParams& params, BasicTensorView<const T> x, BasicTensorView<const T> dy,
                      BasicTensorView<T> dweights) {
  const Conv2dShapes shapes = conv2d_shapes(params);
  check_tensor(x, shapes.input, "input");
  check_tensor(dy, shapes.output, "output_grad");
  check_tensor(dweights, shapes.weights, "weights_grad");
  const DirectGeometry g(params, shapes);
  for (int64_t k = 0; k < g.K; ++k) {
    const int64_t c_first = k / g.Kg * g.Cg;
    for (int64_t c = 0; c < g.Cg; ++c)
      for (int64_t r = 0; r < g.R; ++r)
        for (int64_t s = 0; s < g.S; ++s) {
          T sum{0};
          for (int64_t n = 0; n < g.N; ++n)
            for (int64_t p = 0; p < g.P; ++p) {
              const int64_t h = g.input_row(p, r);
              if (h < 0) continue;
              for (int64_t q = 0; q < g.Q; ++q) {
                const int64_t w = g.input_col(q, s);
                if (w < 0) continue;
                sum += dy.data[g.y_index(n, k, p, q)] * x.data[g.x_index(n, c_first + c, h, w)];
              }
            }
          dweights.data[g.w_index(k, c, r, s)] = sum;
        }
  }
}

// db[k] = sum_{n,p,q} dy[n,k,p,q]
template <class T>
void backward_bias(const Conv2dParams& params, BasicTensorView<const T> dy, std::span<T> dbias) {
  const Conv2dShapes shapes = conv2d_shapes(params);
  check_tensor(dy, shapes.output, "output_grad");
  check_optional_vector(dbias, shapes.bias, "bias_grad", "params.has_bias is false");
  const DirectGeometry g(params, shapes);
  for (size_t k = 0; k < dbias.size(); ++k) {
    T sum{0};
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t i = 0; i < g.P * g.Q; ++i) sum += dy.data[g.y_index(n, static_cast<int64_t>(k), 0, 0) + i];
    dbias[k] = sum;
  }
}

}  // namespace

void direct_conv2d_forward(const Conv2dParams& params, ConstTensorView input, ConstTensorView weights,
                           std::span<const float> bias, TensorView output) {
  forward<float>(params, input, weights, bias, output);
}
void direct_conv2d_forward(const Conv2dParams& params, ConstTensorViewF64 input, ConstTensorViewF64 weights,
                           std::span<const double> bias, TensorViewF64 output) {
  forward<double>(params, input, weights, bias, output);
}
void direct_conv2d_backward_data(const Conv2dParams& params, ConstTensorView output_grad, ConstTensorView weights,
                                 TensorView input_grad) {
  backward_data<float>(params, output_grad, weights, input_grad);
}
void direct_conv2d_backward_data(const Conv2dParams& params, ConstTensorViewF64 output_grad, ConstTensorViewF64 weights,
                                 TensorViewF64 input_grad) {
  backward_data<double>(params, output_grad, weights, input_grad);
}
void direct_conv2d_backward_weights(const Conv2dParams& params, ConstTensorView input, ConstTensorView output_grad,
                                    TensorView weights_grad) {
  backward_weights<float>(params, input, output_grad, weights_grad);
}
void direct_conv2d_backward_weights(const Conv2dParams& params, ConstTensorViewF64 input,
                                    ConstTensorViewF64 output_grad, TensorViewF64 weights_grad) {
  backward_weights<double>(params, input, output_grad, weights_grad);
}
void direct_conv2d_backward_bias(const Conv2dParams& params, ConstTensorView output_grad, std::span<float> bias_grad) {
  backward_bias<float>(params, output_grad, bias_grad);
}
void direct_conv2d_backward_bias(const Conv2dParams& params, ConstTensorViewF64 output_grad,
                                 std::span<double> bias_grad) {
  backward_bias<double>(params, output_grad, bias_grad);
}

}  // namespace convgemm
