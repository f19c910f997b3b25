// Max, average and cross-channel max pooling: shape validation, then forward and backward side by side, each a
// loop over one plane (one sample's channel, or one output channel's group) run in parallel over the planes.
// Templated once over the element type (float, double).
#include <convgemm/error.hpp>
#include <convgemm/pool2d.hpp>

#include "kernels/avx512.hpp"
#include "tensor_checks.hpp"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

namespace convgemm {

// ---------------------------------------------------------------------------------------------------------------
// Parameters and shapes

namespace {

// A side padded by a whole kernel or more would make a window of padding alone, which has no maximum.
void require_padding_below_kernel(int64_t padding, int64_t kernel, const char* padding_name, const char* kernel_name) {
  if (padding >= kernel) {
    throw Error(Status::invalid_argument, padding_name,
                std::to_string(padding) + " must be smaller than " + kernel_name + " " + std::to_string(kernel) +
                    ", so that every window covers at least one input pixel");
  }
}

}  // namespace

PoolShapes pool2d_shapes(const Pool2dParams& p) {
  require_positive(p.batch, "batch");
  require_positive(p.channels, "channels");
  require_positive(p.in_height, "in_height");
  require_positive(p.in_width, "in_width");
  require_positive(p.kernel_height, "kernel_height");
  require_positive(p.kernel_width, "kernel_width");
  require_positive(p.stride.height, "stride.height");
  require_positive(p.stride.width, "stride.width");
  require_non_negative(p.padding.top, "padding.top");
  require_non_negative(p.padding.bottom, "padding.bottom");
  require_non_negative(p.padding.left, "padding.left");
  require_non_negative(p.padding.right, "padding.right");
  require_padding_below_kernel(p.padding.top, p.kernel_height, "padding.top", "kernel_height");
  require_padding_below_kernel(p.padding.bottom, p.kernel_height, "padding.bottom", "kernel_height");
  require_padding_below_kernel(p.padding.left, p.kernel_width, "padding.left", "kernel_width");
  require_padding_below_kernel(p.padding.right, p.kernel_width, "padding.right", "kernel_width");
  const int64_t out_height = validated_output_size(p.in_height, p.kernel_height, p.stride.height, p.padding.top,
                                                   p.padding.bottom, 1, "kernel_height", "height");
  const int64_t out_width = validated_output_size(p.in_width, p.kernel_width, p.stride.width, p.padding.left,
                                                  p.padding.right, 1, "kernel_width", "width");
  // Every tensor's size in bytes must be representable, so that no later index computation can overflow.
  checked_product({p.batch, p.channels, p.in_height, p.in_width, int64_t{sizeof(double)}}, "input size");
  checked_product({p.kernel_height, p.kernel_width}, "kernel_height * kernel_width");
  return {.input = {p.batch, p.channels, p.in_height, p.in_width},
          .output = {p.batch, p.channels, out_height, out_width}};
}

PoolShapes channel_max_pool_shapes(const ChannelMaxPoolParams& p) {
  require_positive(p.batch, "batch");
  require_positive(p.channels, "channels");
  require_positive(p.height, "height");
  require_positive(p.width, "width");
  require_positive(p.group_size, "group_size");
  if (p.channels % p.group_size != 0) {
    throw Error(Status::invalid_argument, "channels",
                std::to_string(p.channels) + " is not divisible by group_size " + std::to_string(p.group_size));
  }
  checked_product({p.batch, p.channels, p.height, p.width, int64_t{sizeof(double)}}, "input size");
  return {.input = {p.batch, p.channels, p.height, p.width},
          .output = {p.batch, p.channels / p.group_size, p.height, p.width}};
}

// ---------------------------------------------------------------------------------------------------------------
// Shared pieces

namespace {

// Whether value replaces the running maximum best: only a strictly larger value does, so the first of equal
// maxima stays; a NaN replaces any number so that it propagates, and the first NaN stays.
template <class T>
bool beats(T value, T best) {
  return value > best || (std::isnan(value) && !std::isnan(best));
}

// Runs body(plane) for every plane in [0, planes); each plane's writes belong to one task.
template <class Body>
void parallel_over_planes(int64_t planes, const Body& body) {
  oneapi::tbb::parallel_for(oneapi::tbb::blocked_range<int64_t>(0, planes),
                            [&](const oneapi::tbb::blocked_range<int64_t>& range) {
                              for (int64_t plane = range.begin(); plane < range.end(); ++plane) body(plane);
                            });
}

// The index arithmetic of a pool2d problem: the input rows and columns each window covers, padding clipped off.
struct WindowGeometry {
  int64_t planes, H, W, P, Q, R, S, sh, sw, pt, pl;

  WindowGeometry(const Pool2dParams& p, const PoolShapes& shapes)
      : planes(p.batch * p.channels),
        H(p.in_height),
        W(p.in_width),
        P(shapes.output[2]),
        Q(shapes.output[3]),
        R(p.kernel_height),
        S(p.kernel_width),
        sh(p.stride.height),
        sw(p.stride.width),
        pt(p.padding.top),
        pl(p.padding.left) {}

  // Input rows [begin, end) of window row p; never empty, since padding is smaller than the kernel.
  int64_t row_begin(int64_t p) const { return std::max<int64_t>(0, p * sh - pt); }
  int64_t row_end(int64_t p) const { return std::min(H, p * sh - pt + R); }
  int64_t col_begin(int64_t q) const { return std::max<int64_t>(0, q * sw - pl); }
  int64_t col_end(int64_t q) const { return std::min(W, q * sw - pl + S); }

  // Index within the plane of the maximum of window (p, q), the first in row-major order among equal maxima.
  template <class T>
  int64_t argmax(const T* plane, int64_t p, int64_t q) const {
    const int64_t h_begin = row_begin(p), h_end = row_end(p), w_begin = col_begin(q), w_end = col_end(q);
    int64_t best = h_begin * W + w_begin;
    for (int64_t h = h_begin; h < h_end; ++h)
      for (int64_t w = w_begin; w < w_end; ++w)
        if (beats(plane[h * W + w], plane[best])) best = h * W + w;
    return best;
  }
};

// ---------------------------------------------------------------------------------------------------------------
// Max pooling

// The common 2x2, stride-2, unpadded float case (the "maxpool2" of most CNNs) has AVX-512 kernels of its own: the
// generic loops, whose window bounds vary, do not vectorise. `beats` becomes a compare-and-select over the four taps
// in row-major order, so ties, signed zeros and NaNs come out exactly as in the generic loops, which serve every
// other case and CPUs without AVX-512.
#ifdef CONVGEMM_HAVE_AVX512
using kernels::first_lanes;

bool takes_2x2_kernels(const WindowGeometry& g) {
  return kernels::use_avx512_kernels() && g.R == 2 && g.S == 2 && g.sh == 2 && g.sw == 2 && g.pt == 0 && g.pl == 0;
}

// 16 windows per step. Two loads of a row give 32 floats, split into the windows' left (even) and right (odd)
// taps; masked loads and stores handle a row's last, partial step (13 windows in a LeNet).
struct WindowTaps {
  __m512 a, b, c, d;  // top-left, top-right, bottom-left, bottom-right: row-major order
};

CONVGEMM_AVX512 inline WindowTaps load_windows(const float* top, const float* bottom, int64_t windows) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __mmask16 low = first_lanes(2 * windows), high = first_lanes(2 * windows - 16);
  const __m512 top_low = _mm512_maskz_loadu_ps(low, top), top_high = _mm512_maskz_loadu_ps(high, top + 16);
  const __m512 bottom_low = _mm512_maskz_loadu_ps(low, bottom);
  const __m512 bottom_high = _mm512_maskz_loadu_ps(high, bottom + 16);
  return {_mm512_permutex2var_ps(top_low, even, top_high), _mm512_permutex2var_ps(top_low, odd, top_high),
          _mm512_permutex2var_ps(bottom_low, even, bottom_high), _mm512_permutex2var_ps(bottom_low, odd, bottom_high)};
}

// Lanes where value beats best: greater, or a NaN over a number.
CONVGEMM_AVX512 inline __mmask16 beats_mask(__m512 value, __m512 best) {
  return _mm512_cmp_ps_mask(value, best, _CMP_GT_OQ) |
         (_mm512_cmp_ps_mask(value, value, _CMP_UNORD_Q) & _mm512_cmp_ps_mask(best, best, _CMP_ORD_Q));
}

CONVGEMM_AVX512 void max_pool_2x2_forward_plane_avx512(const float* x, int64_t W, float* y, int64_t P, int64_t Q) {
  for (int64_t p = 0; p < P; ++p) {
    const float* top = x + 2 * p * W;
    for (int64_t q = 0; q < Q; q += 16) {
      const int64_t windows = std::min<int64_t>(16, Q - q);
      const WindowTaps t = load_windows(top + 2 * q, top + W + 2 * q, windows);
      __m512 best = _mm512_mask_blend_ps(beats_mask(t.b, t.a), t.a, t.b);
      best = _mm512_mask_blend_ps(beats_mask(t.c, best), best, t.c);
      best = _mm512_mask_blend_ps(beats_mask(t.d, best), best, t.d);
      _mm512_mask_storeu_ps(y + p * Q + q, first_lanes(windows), best);
    }
  }
}

// One row of `windows` windows' dx: grad in the left tap where `left`, in the right tap where `right`, else 0.
CONVGEMM_AVX512 inline void store_window_row(float* row, __m512 grad, __mmask16 left, __mmask16 right,
                                             int64_t windows) {
  const __m512i low_half = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i high_half = _mm512_add_epi32(low_half, _mm512_set1_epi32(8));
  const __m512 l = _mm512_maskz_mov_ps(left, grad), r = _mm512_maskz_mov_ps(right, grad);
  _mm512_mask_storeu_ps(row, first_lanes(2 * windows), _mm512_permutex2var_ps(l, low_half, r));
  _mm512_mask_storeu_ps(row + 16, first_lanes(2 * windows - 16), _mm512_permutex2var_ps(l, high_half, r));
}

CONVGEMM_AVX512 void max_pool_2x2_backward_plane_avx512(const float* x, const float* dy, int64_t W, float* dx,
                                                        int64_t P, int64_t Q, bool after_relu) {
  for (int64_t p = 0; p < P; ++p) {
    const float* top = x + 2 * p * W;
    float* grad_top = dx + 2 * p * W;
    if (W % 2 != 0) grad_top[W - 1] = grad_top[2 * W - 1] = 0.0f;
    for (int64_t q = 0; q < Q; q += 16) {
      const int64_t windows = std::min<int64_t>(16, Q - q);
      const WindowTaps t = load_windows(top + 2 * q, top + W + 2 * q, windows);
      const __mmask16 b_wins = beats_mask(t.b, t.a);
      const __m512 ab = _mm512_mask_blend_ps(b_wins, t.a, t.b);
      const __mmask16 c_wins = beats_mask(t.c, ab);
      const __m512 abc = _mm512_mask_blend_ps(c_wins, ab, t.c);
      const __mmask16 d_wins = beats_mask(t.d, abc);
      // After a ReLU, windows whose maximum is not positive pass no gradient.
      const __mmask16 passes =
          after_relu ? _mm512_cmp_ps_mask(_mm512_mask_blend_ps(d_wins, abc, t.d), _mm512_setzero_ps(), _CMP_GT_OQ)
                     : __mmask16(0xFFFF);
      const __m512 grad = _mm512_maskz_loadu_ps(first_lanes(windows) & passes, dy + p * Q + q);
      // The winner is the last tap that beat everything before it.
      const __mmask16 d_final = d_wins, c_final = c_wins & ~d_wins, b_final = b_wins & ~c_wins & ~d_wins;
      const __mmask16 a_final = ~(b_wins | c_wins | d_wins);
      store_window_row(grad_top + 2 * q, grad, a_final, b_final, windows);
      store_window_row(grad_top + W + 2 * q, grad, c_final, d_final, windows);
    }
  }
}

// dx of the whole plane: the windows' rows, then zeros for the row an odd H leaves outside every window.
void max_pool_2x2_backward_plane(const float* x, const float* dy, int64_t H, int64_t W, float* dx, int64_t P, int64_t Q,
                                 bool after_relu) {
  max_pool_2x2_backward_plane_avx512(x, dy, W, dx, P, Q, after_relu);
  std::fill(dx + 2 * P * W, dx + H * W, 0.0f);
}
#endif

// y[n,c,p,q] = max over window (p, q) of x[n,c,h,w]
template <class T>
void max_pool_forward(const MaxPool2d& pool, BasicTensorView<const T> x, BasicTensorView<T> y) {
  check_tensor(x, pool.shapes().input, "input");
  check_tensor(y, pool.shapes().output, "output");
  const WindowGeometry g(pool.params(), pool.shapes());
#ifdef CONVGEMM_HAVE_AVX512
  if constexpr (std::is_same_v<T, float>) {
    if (takes_2x2_kernels(g)) {
      parallel_over_planes(g.planes, [&](int64_t plane) {
        max_pool_2x2_forward_plane_avx512(x.data + plane * g.H * g.W, g.W, y.data + plane * g.P * g.Q, g.P, g.Q);
      });
      return;
    }
  }
#endif
  parallel_over_planes(g.planes, [&](int64_t plane) {
    const T* input = x.data + plane * g.H * g.W;
    T* output = y.data + plane * g.P * g.Q;
    for (int64_t p = 0; p < g.P; ++p)
      for (int64_t q = 0; q < g.Q; ++q) output[p * g.Q + q] = input[g.argmax(input, p, q)];
  });
}

// dx[n,c,h,w] = sum of dy[n,c,p,q] over the windows whose arg-max is (h, w), times [x > 0] after a ReLU
template <class T>
void max_pool_backward(const MaxPool2d& pool, BasicTensorView<const T> x, BasicTensorView<const T> dy,
                       BasicTensorView<T> dx, bool after_relu = false) {
  check_tensor(x, pool.shapes().input, "input");
  check_tensor(dy, pool.shapes().output, "output_grad");
  check_tensor(dx, pool.shapes().input, "input_grad");
  const WindowGeometry g(pool.params(), pool.shapes());
#ifdef CONVGEMM_HAVE_AVX512
  if constexpr (std::is_same_v<T, float>) {
    if (takes_2x2_kernels(g)) {
      parallel_over_planes(g.planes, [&](int64_t plane) {
        max_pool_2x2_backward_plane(x.data + plane * g.H * g.W, dy.data + plane * g.P * g.Q, g.H, g.W,
                                    dx.data + plane * g.H * g.W, g.P, g.Q, after_relu);
      });
      return;
    }
  }
#endif
  parallel_over_planes(g.planes, [&](int64_t plane) {
    const T* input = x.data + plane * g.H * g.W;
    const T* output_grad = dy.data + plane * g.P * g.Q;
    T* input_grad = dx.data + plane * g.H * g.W;
    std::fill(input_grad, input_grad + g.H * g.W, T{0});
    for (int64_t p = 0; p < g.P; ++p)
      for (int64_t q = 0; q < g.Q; ++q) {
        const int64_t best = g.argmax(input, p, q);
        if (!after_relu || input[best] > T{0}) input_grad[best] += output_grad[p * g.Q + q];
      }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Average pooling

// y[n,c,p,q] = (1 / (R*S)) * sum over window (p, q) of x[n,c,h,w]
template <class T>
void avg_pool_forward(const AvgPool2d& pool, BasicTensorView<const T> x, BasicTensorView<T> y) {
  check_tensor(x, pool.shapes().input, "input");
  check_tensor(y, pool.shapes().output, "output");
  const WindowGeometry g(pool.params(), pool.shapes());
  const T area = static_cast<T>(g.R * g.S);  // padded taps included (count_include_pad=True)
  parallel_over_planes(g.planes, [&](int64_t plane) {
    const T* input = x.data + plane * g.H * g.W;
    T* output = y.data + plane * g.P * g.Q;
    for (int64_t p = 0; p < g.P; ++p)
      for (int64_t q = 0; q < g.Q; ++q) {
        T sum{0};
        for (int64_t h = g.row_begin(p); h < g.row_end(p); ++h)
          for (int64_t w = g.col_begin(q); w < g.col_end(q); ++w) sum += input[h * g.W + w];
        output[p * g.Q + q] = sum / area;
      }
  });
}

// dx[n,c,h,w] = (1 / (R*S)) * sum of dy[n,c,p,q] over the windows (p, q) covering (h, w)
template <class T>
void avg_pool_backward(const AvgPool2d& pool, BasicTensorView<const T> dy, BasicTensorView<T> dx) {
  check_tensor(dy, pool.shapes().output, "output_grad");
  check_tensor(dx, pool.shapes().input, "input_grad");
  const WindowGeometry g(pool.params(), pool.shapes());
  const T area = static_cast<T>(g.R * g.S);
  parallel_over_planes(g.planes, [&](int64_t plane) {
    const T* output_grad = dy.data + plane * g.P * g.Q;
    T* input_grad = dx.data + plane * g.H * g.W;
    std::fill(input_grad, input_grad + g.H * g.W, T{0});
    for (int64_t p = 0; p < g.P; ++p)
      for (int64_t q = 0; q < g.Q; ++q) {
        const T share = output_grad[p * g.Q + q] / area;
        for (int64_t h = g.row_begin(p); h < g.row_end(p); ++h)
          for (int64_t w = g.col_begin(q); w < g.col_end(q); ++w) input_grad[h * g.W + w] += share;
      }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Cross-channel max pooling: plane (n, j) is output channel j of sample n, reading input channels j*g .. j*g+g-1,
// which are consecutive planes of H*W in NCHW.

// y[n,j,h,w] = max over c in [j*g, (j+1)*g) of x[n,c,h,w]
template <class T>
void channel_max_pool_forward(const ChannelMaxPool& pool, BasicTensorView<const T> x, BasicTensorView<T> y) {
  check_tensor(x, pool.shapes().input, "input");
  check_tensor(y, pool.shapes().output, "output");
  const int64_t group = pool.params().group_size;
  const int64_t pixels = pool.params().height * pool.params().width;
  parallel_over_planes(y.size() / pixels, [&](int64_t plane) {
    const T* input = x.data + plane * group * pixels;
    T* output = y.data + plane * pixels;
    std::copy(input, input + pixels, output);
    for (int64_t c = 1; c < group; ++c)
      for (int64_t i = 0; i < pixels; ++i)
        if (beats(input[c * pixels + i], output[i])) output[i] = input[c * pixels + i];
  });
}

// dx[n,c,h,w] = dy[n,j,h,w] where c is the first arg-max of group j at (h, w), else 0
template <class T>
void channel_max_pool_backward(const ChannelMaxPool& pool, BasicTensorView<const T> x, BasicTensorView<const T> dy,
                               BasicTensorView<T> dx) {
  check_tensor(x, pool.shapes().input, "input");
  check_tensor(dy, pool.shapes().output, "output_grad");
  check_tensor(dx, pool.shapes().input, "input_grad");
  const int64_t group = pool.params().group_size;
  const int64_t pixels = pool.params().height * pool.params().width;
  parallel_over_planes(dy.size() / pixels, [&](int64_t plane) {
    const T* input = x.data + plane * group * pixels;
    const T* output_grad = dy.data + plane * pixels;
    T* input_grad = dx.data + plane * group * pixels;
    std::fill(input_grad, input_grad + group * pixels, T{0});
    for (int64_t i = 0; i < pixels; ++i) {
      int64_t best = i;
      for (int64_t c = 1; c < group; ++c)
        if (beats(input[c * pixels + i], input[best])) best = c * pixels + i;
      input_grad[best] = output_grad[i];
    }
  });
}

}  // namespace

void MaxPool2d::forward(ConstTensorView input, TensorView output) const {
  max_pool_forward<float>(*this, input, output);
}
void MaxPool2d::forward(ConstTensorViewF64 input, TensorViewF64 output) const {
  max_pool_forward<double>(*this, input, output);
}
void MaxPool2d::backward(ConstTensorView input, ConstTensorView output_grad, TensorView input_grad) const {
  max_pool_backward<float>(*this, input, output_grad, input_grad);
}
void MaxPool2d::backward(ConstTensorViewF64 input, ConstTensorViewF64 output_grad, TensorViewF64 input_grad) const {
  max_pool_backward<double>(*this, input, output_grad, input_grad);
}
void MaxPool2d::backward_after_relu(ConstTensorView input, ConstTensorView output_grad, TensorView input_grad) const {
  max_pool_backward<float>(*this, input, output_grad, input_grad, true);
}

void AvgPool2d::forward(ConstTensorView input, TensorView output) const {
  avg_pool_forward<float>(*this, input, output);
}
void AvgPool2d::forward(ConstTensorViewF64 input, TensorViewF64 output) const {
  avg_pool_forward<double>(*this, input, output);
}
void AvgPool2d::backward(ConstTensorView output_grad, TensorView input_grad) const {
  avg_pool_backward<float>(*this, output_grad, input_grad);
}
void AvgPool2d::backward(ConstTensorViewF64 output_grad, TensorViewF64 input_grad) const {
  avg_pool_backward<double>(*this, output_grad, input_grad);
}

void ChannelMaxPool::forward(ConstTensorView input, TensorView output) const {
  channel_max_pool_forward<float>(*this, input, output);
}
void ChannelMaxPool::forward(ConstTensorViewF64 input, TensorViewF64 output) const {
  channel_max_pool_forward<double>(*this, input, output);
}
void ChannelMaxPool::backward(ConstTensorView input, ConstTensorView output_grad, TensorView input_grad) const {
  channel_max_pool_backward<float>(*this, input, output_grad, input_grad);
}
void ChannelMaxPool::backward(ConstTensorViewF64 input, ConstTensorViewF64 output_grad,
                              TensorViewF64 input_grad) const {
  channel_max_pool_backward<double>(*this, input, output_grad, input_grad);
}

}  // namespace convgemm
