#include <convgemm/convgemm.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
  convgemm_conv2d_params p;
  convgemm_conv2d_params_init(&p);
  p.batch = 8; p.in_channels = 3; p.in_height = p.in_width = 32;
  p.out_channels = 16; p.kernel_height = p.kernel_width = 3;
  convgemm_conv2d_params_set_same_padding(&p);
  convgemm_conv2d_plan* plan = NULL;
  if (convgemm_conv2d_plan_create(&p, 0, &plan) != CONVGEMM_SUCCESS) {
    fprintf(stderr, "%s\n", convgemm_last_error());
    return 1;
  }
  float* x = calloc(8 * 3 * 32 * 32, sizeof(float));
  float* w = calloc(16 * 3 * 3 * 3, sizeof(float));
  float* y = calloc(8 * 16 * 32 * 32, sizeof(float));
  for (int i = 0; i < 8 * 3 * 32 * 32; ++i) x[i] = 1.0f;
  for (int i = 0; i < 16 * 3 * 3 * 3; ++i) w[i] = 0.1f;
  convgemm_const_tensor input = {x, {8, 3, 32, 32}}, weights = {w, {16, 3, 3, 3}};
  convgemm_tensor output = {y, {8, 16, 32, 32}};
  convgemm_status status = convgemm_conv2d_forward(plan, input, weights, NULL, 0, output, NULL, 0);
  if (status != CONVGEMM_SUCCESS) fprintf(stderr, "%s\n", convgemm_last_error());
  else printf("y = %.2f\n", y[16 * 32 + 16]); /* 27 taps * 0.1 = 2.70 */
  convgemm_conv2d_plan_destroy(plan);
  free(x); free(w); free(y);
  return status == CONVGEMM_SUCCESS ? 0 : 1;
}
