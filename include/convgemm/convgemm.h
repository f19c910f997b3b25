/* convgemm's C ABI: a thin skin over the C++ API for frameworks that embed convgemm. Plain C99 types only;
 * no exception crosses it. Every function returns a convgemm_status; on failure convgemm_last_error() gives
 * a message naming the offending parameter (per thread), and no output buffer has been written. */
#ifndef CONVGEMM_H
#define CONVGEMM_H

#include <convgemm/version.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define CONVGEMM_API
#else
#define CONVGEMM_API __attribute__((visibility("default")))
#endif

typedef enum convgemm_status {
  CONVGEMM_SUCCESS = 0,
  CONVGEMM_INVALID_ARGUMENT = 1, /* a parameter, tensor or buffer is wrong; the message names it */
  CONVGEMM_UNSUPPORTED = 2,      /* valid, but past a limit such as OpenBLAS's 32-bit GEMM sizes */
  CONVGEMM_OUT_OF_MEMORY = 3,
  CONVGEMM_INTERNAL_ERROR = 4,
  CONVGEMM_STATUS_MAX_ENUM = 0x7FFFFFFF /* keeps the enum 32 bits wide; never returned */
} convgemm_status;

/* Version of the library actually loaded; compare with CONVGEMM_VERSION_* of the header compiled against. */
CONVGEMM_API const char* convgemm_version_string(void);
CONVGEMM_API void convgemm_version(int* major, int* minor, int* patch);
/* "CONVGEMM_INVALID_ARGUMENT" etc. */
CONVGEMM_API const char* convgemm_status_name(convgemm_status status);
/* Message of the last failed call on this thread ("" if none). Valid until the next call on this thread. */
CONVGEMM_API const char* convgemm_last_error(void);

/* What the library runs on. The strings are valid for the life of the process. */
typedef struct convgemm_build_info {
  const char* version;     /* convgemm's */
  const char* blas_vendor; /* "OpenBLAS" */
  const char* blas_config; /* OpenBLAS's version and build options */
  const char* blas_kernel; /* the CPU kernel set OpenBLAS chose when it loaded, e.g. "SkylakeX" */
  const char* tbb_version;
  int32_t default_threads; /* concurrency of the calling thread's TBB arena */
  int32_t cpu_has_avx512;  /* 1 when the CPU has AVX-512 F/CD/BW/DQ/VL */
} convgemm_build_info;

/* An AVX-512 CPU on a pre-AVX-512 kernel set (Debian's OpenBLAS 0.3.21 on AMD Zen 5) runs SGEMM at half speed:
 * set OPENBLAS_CORETYPE=SkylakeX in the environment before the process loads OpenBLAS (see the README). */
CONVGEMM_API convgemm_status convgemm_get_build_info(convgemm_build_info* info);

/* What the convolutions' GEMMs run on: "convgemm AVX-512" (the library's own kernels, on CPUs with AVX-512 F) or
 * "OpenBLAS" (other CPUs, or CONVGEMM_KERNELS=portable in the environment when the library loaded). Valid for the
 * life of the process. */
CONVGEMM_API const char* convgemm_conv_gemm_kernel(void);

/* A dense tensor the caller owns: NCHW activations, KCRS weights (K, C/groups, R, S). */
typedef struct convgemm_tensor {
  float* data;
  int64_t dims[4];
} convgemm_tensor;

typedef struct convgemm_const_tensor {
  const float* data;
  int64_t dims[4];
} convgemm_const_tensor;

/* The problem; see conv2d.hpp for the definition. Start from convgemm_conv2d_params_init(). */
typedef struct convgemm_conv2d_params {
  int64_t batch, in_channels, in_height, in_width;
  int64_t out_channels, kernel_height, kernel_width;
  int64_t stride_height, stride_width;
  int64_t pad_top, pad_bottom, pad_left, pad_right;
  int64_t dilation_height, dilation_width;
  int64_t groups;
  int32_t has_bias; /* 0 or 1 */
} convgemm_conv2d_params;

typedef enum convgemm_conv2d_direction {
  CONVGEMM_FORWARD = 0,
  CONVGEMM_BACKWARD_DATA = 1,
  CONVGEMM_BACKWARD_WEIGHTS = 2,
  CONVGEMM_BACKWARD_BIAS = 3,
  CONVGEMM_DIRECTION_MAX_ENUM = 0x7FFFFFFF /* keeps the enum 32 bits wide; not a direction */
} convgemm_conv2d_direction;

/* All sizes 1, stride 1, dilation 1, groups 1, no padding, no bias. */
CONVGEMM_API convgemm_status convgemm_conv2d_params_init(convgemm_conv2d_params* params);
/* Sets the padding to TensorFlow's "same" for the params' sizes, stride and dilation (extra pixel bottom/right). */
CONVGEMM_API convgemm_status convgemm_conv2d_params_set_same_padding(convgemm_conv2d_params* params);

typedef struct convgemm_conv2d_plan convgemm_conv2d_plan;

/* threads: 0 = the default TBB concurrency; > 0 = the plan runs every call in its own arena of that size. */
CONVGEMM_API convgemm_status convgemm_conv2d_plan_create(const convgemm_conv2d_params* params, int32_t threads,
                                                         convgemm_conv2d_plan** plan);

typedef enum convgemm_parallelism {
  CONVGEMM_PARALLEL_AUTOMATIC = 0,     /* across the batch when it gives every thread work, else within samples */
  CONVGEMM_PARALLEL_ACROSS_BATCH = 1,  /* each thread takes whole samples */
  CONVGEMM_PARALLEL_WITHIN_SAMPLE = 2, /* samples one after another, each split over all threads */
  CONVGEMM_PARALLELISM_MAX_ENUM = 0x7FFFFFFF
} convgemm_parallelism;

/* How a convolution writes its output (y, and dx where its GEMM writes dx itself). */
typedef enum convgemm_output_stores {
  CONVGEMM_STORES_AUTOMATIC = 0,    /* bypass the cache where the call's input and output outgrow the last-level
                                       cache, so that they could not all be in cache when the next layer reads them */
  CONVGEMM_STORES_CACHED = 1,       /* ordinary stores: the output stays in cache for whatever reads it next */
  CONVGEMM_STORES_NON_TEMPORAL = 2, /* stores that bypass the cache (streaming stores) */
  CONVGEMM_OUTPUT_STORES_MAX_ENUM = 0x7FFFFFFF
} convgemm_output_stores;

/* How a plan runs; start from convgemm_execution_options_init(). (output_stores came in 0.2: a caller built against
 * 0.1's header passes a shorter struct, hence the new minor version.) */
typedef struct convgemm_execution_options {
  int32_t threads; /* as for convgemm_conv2d_plan_create */
  convgemm_parallelism parallelism;
  size_t workspace_limit_bytes; /* 0: none; else workspace sizes stay within it (or creation fails) */
  convgemm_output_stores output_stores;
} convgemm_execution_options;

CONVGEMM_API convgemm_status convgemm_execution_options_init(convgemm_execution_options* options);
/* options may be NULL (the defaults). */
CONVGEMM_API convgemm_status convgemm_conv2d_plan_create_with_options(const convgemm_conv2d_params* params,
                                                                      const convgemm_execution_options* options,
                                                                      convgemm_conv2d_plan** plan);
/* One line on the plan's path, tiling and threading; valid while the plan lives. NULL for a NULL plan. */
CONVGEMM_API const char* convgemm_conv2d_describe(const convgemm_conv2d_plan* plan);
CONVGEMM_API void convgemm_conv2d_plan_destroy(convgemm_conv2d_plan* plan);
/* {N, K, P, Q} */
CONVGEMM_API convgemm_status convgemm_conv2d_output_dims(const convgemm_conv2d_plan* plan, int64_t dims[4]);
CONVGEMM_API convgemm_status convgemm_conv2d_workspace_size(const convgemm_conv2d_plan* plan,
                                                            convgemm_conv2d_direction direction, size_t* bytes);

/* workspace: NULL (the plan uses its own) or at least convgemm_conv2d_workspace_size() bytes, float-aligned.
 * bias: NULL with bias_size 0 when the params have no bias, else K floats. */
CONVGEMM_API convgemm_status convgemm_conv2d_forward(const convgemm_conv2d_plan* plan, convgemm_const_tensor input,
                                                     convgemm_const_tensor weights, const float* bias,
                                                     int64_t bias_size, convgemm_tensor output, void* workspace,
                                                     size_t workspace_bytes);
/* The same followed by ReLU, max(y, 0), applied in the GEMM's epilogue rather than as a pass over y (oneDNN's
 * post-op). The backward calls still take the gradient with respect to the convolution's own output. */
CONVGEMM_API convgemm_status convgemm_conv2d_forward_relu(const convgemm_conv2d_plan* plan, convgemm_const_tensor input,
                                                          convgemm_const_tensor weights, const float* bias,
                                                          int64_t bias_size, convgemm_tensor output, void* workspace,
                                                          size_t workspace_bytes);
CONVGEMM_API convgemm_status convgemm_conv2d_backward_data(const convgemm_conv2d_plan* plan,
                                                           convgemm_const_tensor output_grad,
                                                           convgemm_const_tensor weights, convgemm_tensor input_grad,
                                                           void* workspace, size_t workspace_bytes);
/* accumulate: 0 overwrites weights_grad, 1 adds to it. */
CONVGEMM_API convgemm_status convgemm_conv2d_backward_weights(const convgemm_conv2d_plan* plan,
                                                              convgemm_const_tensor input,
                                                              convgemm_const_tensor output_grad,
                                                              convgemm_tensor weights_grad, int32_t accumulate,
                                                              void* workspace, size_t workspace_bytes);
CONVGEMM_API convgemm_status convgemm_conv2d_backward_bias(const convgemm_conv2d_plan* plan,
                                                           convgemm_const_tensor output_grad, float* bias_grad,
                                                           int64_t bias_grad_size, int32_t accumulate);

/* --- Transposed convolution (the "deconvolution" layer, PyTorch's ConvTranspose2d; see conv_transpose2d.hpp) ----
 * Weights are C_in x C_out/groups x R x S. Output size: (H-1)*stride - pad_top - pad_bottom + dilation*(R-1) +
 * output_padding + 1. The calls mirror the convolution's; directions are named from this operator's side. */

typedef struct convgemm_conv_transpose2d_params {
  int64_t batch, in_channels, in_height, in_width;
  int64_t out_channels, kernel_height, kernel_width;
  int64_t stride_height, stride_width;
  int64_t pad_top, pad_bottom, pad_left, pad_right;
  int64_t output_padding_height, output_padding_width; /* each smaller than the stride */
  int64_t dilation_height, dilation_width;
  int64_t groups;
  int32_t has_bias; /* 0 or 1 */
} convgemm_conv_transpose2d_params;

typedef struct convgemm_conv_transpose2d_plan convgemm_conv_transpose2d_plan;

/* options may be NULL (the defaults). */
CONVGEMM_API convgemm_status convgemm_conv_transpose2d_plan_create(const convgemm_conv_transpose2d_params* params,
                                                                   const convgemm_execution_options* options,
                                                                   convgemm_conv_transpose2d_plan** plan);
CONVGEMM_API void convgemm_conv_transpose2d_plan_destroy(convgemm_conv_transpose2d_plan* plan);
CONVGEMM_API const char* convgemm_conv_transpose2d_describe(const convgemm_conv_transpose2d_plan* plan);
CONVGEMM_API convgemm_status convgemm_conv_transpose2d_output_dims(const convgemm_conv_transpose2d_plan* plan,
                                                                   int64_t dims[4]);
CONVGEMM_API convgemm_status convgemm_conv_transpose2d_workspace_size(const convgemm_conv_transpose2d_plan* plan,
                                                                      convgemm_conv2d_direction direction,
                                                                      size_t* bytes);
CONVGEMM_API convgemm_status convgemm_conv_transpose2d_forward(const convgemm_conv_transpose2d_plan* plan,
                                                               convgemm_const_tensor input,
                                                               convgemm_const_tensor weights, const float* bias,
                                                               int64_t bias_size, convgemm_tensor output,
                                                               void* workspace, size_t workspace_bytes);
CONVGEMM_API convgemm_status convgemm_conv_transpose2d_backward_data(const convgemm_conv_transpose2d_plan* plan,
                                                                     convgemm_const_tensor output_grad,
                                                                     convgemm_const_tensor weights,
                                                                     convgemm_tensor input_grad, void* workspace,
                                                                     size_t workspace_bytes);
CONVGEMM_API convgemm_status convgemm_conv_transpose2d_backward_weights(
    const convgemm_conv_transpose2d_plan* plan, convgemm_const_tensor input, convgemm_const_tensor output_grad,
    convgemm_tensor weights_grad, int32_t accumulate, void* workspace, size_t workspace_bytes);
CONVGEMM_API convgemm_status convgemm_conv_transpose2d_backward_bias(const convgemm_conv_transpose2d_plan* plan,
                                                                     convgemm_const_tensor output_grad,
                                                                     float* bias_grad, int64_t bias_grad_size,
                                                                     int32_t accumulate);

/* --- Pooling: max or average over R x S windows of each channel (see pool2d.hpp) ------------------------------ */

typedef enum convgemm_pool_kind {
  CONVGEMM_MAX_POOL = 0,     /* padding never wins; the gradient goes to the first arg-max */
  CONVGEMM_AVERAGE_POOL = 1, /* divides by R*S, padding included (PyTorch's count_include_pad=True) */
  CONVGEMM_POOL_KIND_MAX_ENUM = 0x7FFFFFFF
} convgemm_pool_kind;

typedef struct convgemm_pool2d_params {
  int64_t batch, channels, in_height, in_width;
  int64_t kernel_height, kernel_width;
  int64_t stride_height, stride_width; /* no default: PyTorch's stride = kernel must be written out */
  int64_t pad_top, pad_bottom, pad_left, pad_right;
} convgemm_pool2d_params;

/* {N, C, P, Q} for these params, after validating them. */
CONVGEMM_API convgemm_status convgemm_pool2d_output_dims(const convgemm_pool2d_params* params, int64_t dims[4]);
CONVGEMM_API convgemm_status convgemm_pool2d_forward(convgemm_pool_kind kind, const convgemm_pool2d_params* params,
                                                     convgemm_const_tensor input, convgemm_tensor output);
/* input: the forward's input (max pooling recomputes its arg-max from it; average pooling ignores it, pass
 * {NULL, {0}}). input_grad is overwritten. */
CONVGEMM_API convgemm_status convgemm_pool2d_backward(convgemm_pool_kind kind, const convgemm_pool2d_params* params,
                                                      convgemm_const_tensor input, convgemm_const_tensor output_grad,
                                                      convgemm_tensor input_grad);

/* --- Activations: elementwise over `count` floats (see activation.hpp) ---------------------------------------- */

typedef enum convgemm_activation {
  CONVGEMM_RELU = 0,
  CONVGEMM_SIGMOID = 1,
  CONVGEMM_TANH = 2,
  CONVGEMM_ACTIVATION_MAX_ENUM = 0x7FFFFFFF
} convgemm_activation;

/* output may be input (in place). */
CONVGEMM_API convgemm_status convgemm_activation_forward(convgemm_activation kind, const float* input, float* output,
                                                         int64_t count);
/* From the forward's OUTPUT, as frameworks do: dx = dy * f'(y). input_grad may be output_grad. */
CONVGEMM_API convgemm_status convgemm_activation_backward(convgemm_activation kind, const float* output,
                                                          const float* output_grad, float* input_grad, int64_t count);

#ifdef __cplusplus
}
#endif

#endif
