/* An installed convgemm, used from plain C99 through the C ABI: a strided, padded, grouped convolution with bias,
 * checked against a naive loop over the definition written here, plus the error path. */
#include <convgemm/convgemm.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N = 2, C = 4, H = 9, W = 8, K = 6, R = 3, S = 3, G = 2, SH = 2, SW = 1 };

/* Deterministic values in [-1, 1), the same generator as the C++ consumer. */
static void pattern(float* values, int64_t count, uint32_t seed) {
  for (int64_t i = 0; i < count; ++i) {
    seed = seed * 1664525u + 1013904223u;
    values[i] = (float)(seed >> 8) / 8388608.0f - 1.0f;
  }
}

/* y[n,k,p,q] = b[k] + sum_{c,r,s} x[n, g*C/G + c, p*sh + r - pad_top, q*sw + s - pad_left] * w[k,c,r,s] */
static void naive_conv(const convgemm_conv2d_params* p, const float* x, const float* w, const float* b, int64_t P,
                       int64_t Q, float* y) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t oh = 0; oh < P; ++oh)
        for (int64_t ow = 0; ow < Q; ++ow) {
          double sum = b[k];
          const int64_t g = k / (K / G);
          for (int64_t c = 0; c < C / G; ++c)
            for (int64_t r = 0; r < R; ++r)
              for (int64_t s = 0; s < S; ++s) {
                const int64_t h = oh * SH + r - p->pad_top, wi = ow * SW + s - p->pad_left;
                if (h < 0 || h >= H || wi < 0 || wi >= W) continue;
                sum += (double)x[((n * C + g * (C / G) + c) * H + h) * W + wi] * w[((k * (C / G) + c) * R + r) * S + s];
              }
          y[((n * K + k) * P + oh) * Q + ow] = (float)sum;
        }
}

int main(void) {
  int major = -1;
  convgemm_version(&major, NULL, NULL);
  if (major != CONVGEMM_VERSION_MAJOR || strcmp(convgemm_version_string(), CONVGEMM_VERSION_STRING) != 0) {
    fprintf(stderr, "library %s, header %s\n", convgemm_version_string(), CONVGEMM_VERSION_STRING);
    return 1;
  }
  convgemm_conv2d_params p;
  convgemm_conv2d_params_init(&p);
  p.batch = N;
  p.in_channels = C;
  p.in_height = H;
  p.in_width = W;
  p.out_channels = K;
  p.kernel_height = R;
  p.kernel_width = S;
  p.stride_height = SH;
  p.stride_width = SW;
  p.groups = G;
  p.has_bias = 1;
  convgemm_conv2d_plan* plan = NULL;
  if (convgemm_conv2d_params_set_same_padding(&p) != CONVGEMM_SUCCESS ||
      convgemm_conv2d_plan_create(&p, 2, &plan) != CONVGEMM_SUCCESS) {
    fprintf(stderr, "%s\n", convgemm_last_error());
    return 1;
  }
  int64_t dims[4];
  convgemm_conv2d_output_dims(plan, dims);
  const int64_t P = dims[2], Q = dims[3], y_count = N * K * P * Q;
  float x[N * C * H * W], w[K * (C / G) * R * S], b[K];
  float* y = malloc(sizeof(float) * (size_t)y_count);
  float* expected = malloc(sizeof(float) * (size_t)y_count);
  pattern(x, N * C * H * W, 1);
  pattern(w, K * (C / G) * R * S, 2);
  pattern(b, K, 3);
  convgemm_const_tensor input = {x, {N, C, H, W}}, weights = {w, {K, C / G, R, S}};
  convgemm_tensor output = {y, {dims[0], dims[1], dims[2], dims[3]}};
  int failed = convgemm_conv2d_forward(plan, input, weights, b, K, output, NULL, 0) != CONVGEMM_SUCCESS;
  if (failed) fprintf(stderr, "%s\n", convgemm_last_error());
  naive_conv(&p, x, w, b, P, Q, expected);

  /* The loop sums in double; the library's float sums of 18 products in [-1, 1] plus a bias are within
   * 19 * 2^-24 * 19 ~ 2e-5 of that whatever the order, so 1e-4 only fails on a wrong result. */
  double worst = 0.0;
  for (int64_t i = 0; i < y_count && !failed; ++i) worst = fmax(worst, fabs((double)y[i] - expected[i]));
  printf("C consumer: %lld outputs, max |plan - naive| = %.3g\n", (long long)y_count, worst);
  failed = failed || !(worst <= 1e-4);

  /* Errors come back as a status and a message, never as an exception or an abort. */
  p.groups = 3;
  convgemm_conv2d_plan* rejected = NULL;
  if (convgemm_conv2d_plan_create(&p, 0, &rejected) != CONVGEMM_INVALID_ARGUMENT || rejected != NULL ||
      strstr(convgemm_last_error(), "in_channels") == NULL) {
    fprintf(stderr, "groups = 3 was not rejected as expected: %s\n", convgemm_last_error());
    failed = 1;
  }
  convgemm_conv2d_plan_destroy(plan);
  free(y);
  free(expected);
  return failed;
}
