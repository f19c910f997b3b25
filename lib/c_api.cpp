// The C ABI: translation only. C structs become C++ views and params, exceptions become a status code plus a
// thread-local message, and nothing else happens here.
#include <convgemm/convgemm.h>
#include <convgemm/convgemm.hpp>

#include "kernels/conv_gemm.hpp"

#include <oneapi/tbb/task_arena.h>

#include <exception>
#include <new>
#include <string>

struct convgemm_conv2d_plan {
  convgemm::Conv2dPlan plan;
  std::string description;
};

struct convgemm_conv_transpose2d_plan {
  convgemm::ConvTranspose2dPlan plan;
  std::string description;
};

namespace {

thread_local std::string last_error_message;

template <class Function>
convgemm_status translate_errors(Function&& function) noexcept {
  try {
    function();
    return CONVGEMM_SUCCESS;
  } catch (const convgemm::Error& error) {
    last_error_message = error.what();
    return static_cast<convgemm_status>(error.status());
  } catch (const std::bad_alloc&) {
    last_error_message = "convgemm: out of memory";
    return CONVGEMM_OUT_OF_MEMORY;
  } catch (const std::exception& error) {
    last_error_message = std::string("convgemm: internal error: ") + error.what();
    return CONVGEMM_INTERNAL_ERROR;
  } catch (...) {
    last_error_message = "convgemm: internal error: unknown exception";
    return CONVGEMM_INTERNAL_ERROR;
  }
}

template <class T>
T* require_non_null(T* pointer, const char* name) {
  if (pointer == nullptr) throw convgemm::Error(convgemm::Status::invalid_argument, name, "is null");
  return pointer;
}

// A C flag: 0 or 1, nothing else (a stray value is more likely a bug in the caller than a request).
bool to_bool(int32_t flag, const char* name) {
  if (flag != 0 && flag != 1) throw convgemm::Error(convgemm::Status::invalid_argument, name, "must be 0 or 1");
  return flag == 1;
}

convgemm::Conv2dParams to_cpp(const convgemm_conv2d_params& p) {
  return convgemm::Conv2dParams{
      .batch = p.batch,
      .in_channels = p.in_channels,
      .in_height = p.in_height,
      .in_width = p.in_width,
      .out_channels = p.out_channels,
      .kernel_height = p.kernel_height,
      .kernel_width = p.kernel_width,
      .stride = {p.stride_height, p.stride_width},
      .padding = {p.pad_top, p.pad_bottom, p.pad_left, p.pad_right},
      .dilation = {p.dilation_height, p.dilation_width},
      .groups = p.groups,
      .has_bias = to_bool(p.has_bias, "has_bias"),
  };
}

convgemm::ConstTensorView to_cpp(convgemm_const_tensor t) {
  return {t.data, {t.dims[0], t.dims[1], t.dims[2], t.dims[3]}};
}
convgemm::TensorView to_cpp(convgemm_tensor t) { return {t.data, {t.dims[0], t.dims[1], t.dims[2], t.dims[3]}}; }

template <class T>
std::span<T> to_span(T* data, int64_t size, const char* name) {
  if (size < 0) throw convgemm::Error(convgemm::Status::invalid_argument, name, "size is negative");
  return {data, static_cast<size_t>(size)};
}

std::span<std::byte> to_workspace(void* workspace, size_t bytes) {
  if (workspace == nullptr && bytes != 0) {
    throw convgemm::Error(convgemm::Status::invalid_argument, "workspace", "is null but workspace_bytes is not 0");
  }
  return {static_cast<std::byte*>(workspace), workspace == nullptr ? 0 : bytes};
}

convgemm::ExecutionOptions to_cpp(const convgemm_execution_options& options) {
  convgemm::Parallelism parallelism = convgemm::Parallelism::automatic;
  switch (options.parallelism) {
    case CONVGEMM_PARALLEL_AUTOMATIC: break;
    case CONVGEMM_PARALLEL_ACROSS_BATCH: parallelism = convgemm::Parallelism::across_batch; break;
    case CONVGEMM_PARALLEL_WITHIN_SAMPLE: parallelism = convgemm::Parallelism::within_sample; break;
    default: throw convgemm::Error(convgemm::Status::invalid_argument, "parallelism", "is not a convgemm_parallelism");
  }
  convgemm::OutputStores output_stores = convgemm::OutputStores::automatic;
  switch (options.output_stores) {
    case CONVGEMM_STORES_AUTOMATIC: break;
    case CONVGEMM_STORES_CACHED: output_stores = convgemm::OutputStores::cached; break;
    case CONVGEMM_STORES_NON_TEMPORAL: output_stores = convgemm::OutputStores::non_temporal; break;
    default:
      throw convgemm::Error(convgemm::Status::invalid_argument, "output_stores", "is not a convgemm_output_stores");
  }
  return {.threads = options.threads,
          .parallelism = parallelism,
          .workspace_limit_bytes = options.workspace_limit_bytes,
          .output_stores = output_stores};
}

convgemm::GradientMode to_mode(int32_t accumulate) {
  return to_bool(accumulate, "accumulate") ? convgemm::GradientMode::accumulate : convgemm::GradientMode::overwrite;
}

convgemm::Pool2dParams to_cpp(const convgemm_pool2d_params& p) {
  return {.batch = p.batch,
          .channels = p.channels,
          .in_height = p.in_height,
          .in_width = p.in_width,
          .kernel_height = p.kernel_height,
          .kernel_width = p.kernel_width,
          .stride = {p.stride_height, p.stride_width},
          .padding = {p.pad_top, p.pad_bottom, p.pad_left, p.pad_right}};
}

bool is_max_pool(convgemm_pool_kind kind) {
  if (kind != CONVGEMM_MAX_POOL && kind != CONVGEMM_AVERAGE_POOL) {
    throw convgemm::Error(convgemm::Status::invalid_argument, "kind", "is not a convgemm_pool_kind");
  }
  return kind == CONVGEMM_MAX_POOL;
}

// The activation's forward and backward, by kind.
struct ActivationFunctions {
  void (*forward)(std::span<const float>, std::span<float>);
  void (*backward)(std::span<const float>, std::span<const float>, std::span<float>);
};
ActivationFunctions activation_of(convgemm_activation kind) {
  switch (kind) {
    case CONVGEMM_RELU: return {convgemm::relu_forward, convgemm::relu_backward};
    case CONVGEMM_SIGMOID: return {convgemm::sigmoid_forward, convgemm::sigmoid_backward};
    case CONVGEMM_TANH: return {convgemm::tanh_forward, convgemm::tanh_backward};
    case CONVGEMM_ACTIVATION_MAX_ENUM: break;
  }
  throw convgemm::Error(convgemm::Status::invalid_argument, "kind", "is not a convgemm_activation");
}

// A flat buffer of `count` floats; null only when empty.
template <class T>
std::span<T> to_buffer(T* data, int64_t count, const char* name) {
  if (count < 0) throw convgemm::Error(convgemm::Status::invalid_argument, "count", "is negative");
  if (data == nullptr && count > 0) throw convgemm::Error(convgemm::Status::invalid_argument, name, "is null");
  return {data, static_cast<size_t>(count)};
}

template <class Handle>
const auto& plan_of(const Handle* plan) {
  return require_non_null(plan, "plan")->plan;
}

convgemm::Conv2dDirection to_cpp(convgemm_conv2d_direction direction) {
  switch (direction) {
    case CONVGEMM_FORWARD: return convgemm::Conv2dDirection::forward;
    case CONVGEMM_BACKWARD_DATA: return convgemm::Conv2dDirection::backward_data;
    case CONVGEMM_BACKWARD_WEIGHTS: return convgemm::Conv2dDirection::backward_weights;
    case CONVGEMM_BACKWARD_BIAS: return convgemm::Conv2dDirection::backward_bias;
    case CONVGEMM_DIRECTION_MAX_ENUM: break;
  }
  throw convgemm::Error(convgemm::Status::invalid_argument, "direction", "is not a convgemm_conv2d_direction");
}

// The calls both plan kinds (convolution, transposed convolution) share, over either handle.
template <class Handle>
convgemm_status output_dims(const Handle* plan, int64_t dims[4]) {
  return translate_errors([&] {
    const convgemm::Shape4& output = plan_of(plan).shapes().output;
    require_non_null(dims, "dims");
    for (int i = 0; i < 4; ++i) dims[i] = output[static_cast<size_t>(i)];
  });
}

template <class Handle>
convgemm_status workspace_size(const Handle* plan, convgemm_conv2d_direction direction, size_t* bytes) {
  return translate_errors([&] {
    const auto& cpp_plan = plan_of(plan);
    const convgemm::Conv2dDirection cpp_direction = to_cpp(direction);
    *require_non_null(bytes, "bytes") = cpp_plan.workspace_bytes(cpp_direction);
  });
}

template <class Handle>
convgemm_status forward(const Handle* plan, convgemm_const_tensor input, convgemm_const_tensor weights,
                        const float* bias, int64_t bias_size, convgemm_tensor output, void* workspace,
                        size_t workspace_bytes) {
  return translate_errors([&] {
    plan_of(plan).forward(to_cpp(input), to_cpp(weights), to_span(bias, bias_size, "bias"), to_cpp(output),
                          to_workspace(workspace, workspace_bytes));
  });
}

template <class Handle>
convgemm_status backward_data(const Handle* plan, convgemm_const_tensor output_grad, convgemm_const_tensor weights,
                              convgemm_tensor input_grad, void* workspace, size_t workspace_bytes) {
  return translate_errors([&] {
    plan_of(plan).backward_data(to_cpp(output_grad), to_cpp(weights), to_cpp(input_grad),
                                to_workspace(workspace, workspace_bytes));
  });
}

template <class Handle>
convgemm_status backward_weights(const Handle* plan, convgemm_const_tensor input, convgemm_const_tensor output_grad,
                                 convgemm_tensor weights_grad, int32_t accumulate, void* workspace,
                                 size_t workspace_bytes) {
  return translate_errors([&] {
    plan_of(plan).backward_weights(to_cpp(input), to_cpp(output_grad), to_cpp(weights_grad), to_mode(accumulate),
                                   to_workspace(workspace, workspace_bytes));
  });
}

template <class Handle>
convgemm_status backward_bias(const Handle* plan, convgemm_const_tensor output_grad, float* bias_grad,
                              int64_t bias_grad_size, int32_t accumulate) {
  return translate_errors([&] {
    plan_of(plan).backward_bias(to_cpp(output_grad), to_span(bias_grad, bias_grad_size, "bias_grad"),
                                to_mode(accumulate));
  });
}

convgemm::ConvTranspose2dParams to_cpp(const convgemm_conv_transpose2d_params& p) {
  return convgemm::ConvTranspose2dParams{
      .batch = p.batch,
      .in_channels = p.in_channels,
      .in_height = p.in_height,
      .in_width = p.in_width,
      .out_channels = p.out_channels,
      .kernel_height = p.kernel_height,
      .kernel_width = p.kernel_width,
      .stride = {p.stride_height, p.stride_width},
      .padding = {p.pad_top, p.pad_bottom, p.pad_left, p.pad_right},
      .output_padding = {p.output_padding_height, p.output_padding_width},
      .dilation = {p.dilation_height, p.dilation_width},
      .groups = p.groups,
      .has_bias = to_bool(p.has_bias, "has_bias"),
  };
}

}  // namespace

extern "C" {

const char* convgemm_version_string(void) { return CONVGEMM_VERSION_STRING; }

void convgemm_version(int* major, int* minor, int* patch) {
  if (major != nullptr) *major = CONVGEMM_VERSION_MAJOR;
  if (minor != nullptr) *minor = CONVGEMM_VERSION_MINOR;
  if (patch != nullptr) *patch = CONVGEMM_VERSION_PATCH;
}

const char* convgemm_status_name(convgemm_status status) {
  switch (status) {
    case CONVGEMM_SUCCESS: return "CONVGEMM_SUCCESS";
    case CONVGEMM_INVALID_ARGUMENT: return "CONVGEMM_INVALID_ARGUMENT";
    case CONVGEMM_UNSUPPORTED: return "CONVGEMM_UNSUPPORTED";
    case CONVGEMM_OUT_OF_MEMORY: return "CONVGEMM_OUT_OF_MEMORY";
    case CONVGEMM_INTERNAL_ERROR: return "CONVGEMM_INTERNAL_ERROR";
    case CONVGEMM_STATUS_MAX_ENUM: break;
  }
  return "unknown convgemm_status";
}

const char* convgemm_last_error(void) { return last_error_message.c_str(); }

convgemm_status convgemm_get_build_info(convgemm_build_info* info) {
  return translate_errors([&] {
    require_non_null(info, "info");
    // Queried once; the strings then live as long as the process, as the header promises.
    static const convgemm::RuntimeInfo runtime = convgemm::runtime_info();
    *info = convgemm_build_info{
        .version = runtime.version.c_str(),
        .blas_vendor = runtime.blas_vendor.c_str(),
        .blas_config = runtime.blas_config.c_str(),
        .blas_kernel = runtime.blas_kernel.c_str(),
        .tbb_version = runtime.tbb_version.c_str(),
        .default_threads = oneapi::tbb::this_task_arena::max_concurrency(),
        .cpu_has_avx512 = runtime.cpu_has_avx512 ? 1 : 0,
    };
  });
}

const char* convgemm_conv_gemm_kernel(void) { return convgemm::kernels::conv_gemm_kernel(); }

convgemm_status convgemm_conv2d_params_init(convgemm_conv2d_params* params) {
  return translate_errors([&] {
    *require_non_null(params, "params") = convgemm_conv2d_params{
        .batch = 1,
        .in_channels = 1,
        .in_height = 1,
        .in_width = 1,
        .out_channels = 1,
        .kernel_height = 1,
        .kernel_width = 1,
        .stride_height = 1,
        .stride_width = 1,
        .pad_top = 0,
        .pad_bottom = 0,
        .pad_left = 0,
        .pad_right = 0,
        .dilation_height = 1,
        .dilation_width = 1,
        .groups = 1,
        .has_bias = 0,
    };
  });
}

convgemm_status convgemm_conv2d_params_set_same_padding(convgemm_conv2d_params* params) {
  return translate_errors([&] {
    convgemm_conv2d_params& p = *require_non_null(params, "params");
    const convgemm::Padding2d same =
        convgemm::Padding2d::same(p.in_height, p.in_width, p.kernel_height, p.kernel_width,
                                  {p.stride_height, p.stride_width}, {p.dilation_height, p.dilation_width});
    convgemm::Conv2dParams checked = to_cpp(p);
    checked.padding = same;
    convgemm::conv2d_shapes(checked);  // reject impossible sizes before touching *params
    p.pad_top = same.top;
    p.pad_bottom = same.bottom;
    p.pad_left = same.left;
    p.pad_right = same.right;
  });
}

convgemm_status convgemm_conv2d_plan_create(const convgemm_conv2d_params* params, int32_t threads,
                                            convgemm_conv2d_plan** plan) {
  convgemm_execution_options options;
  convgemm_execution_options_init(&options);
  options.threads = threads;
  return convgemm_conv2d_plan_create_with_options(params, &options, plan);
}

convgemm_status convgemm_execution_options_init(convgemm_execution_options* options) {
  return translate_errors([&] {
    *require_non_null(options, "options") = convgemm_execution_options{.threads = 0,
                                                                       .parallelism = CONVGEMM_PARALLEL_AUTOMATIC,
                                                                       .workspace_limit_bytes = 0,
                                                                       .output_stores = CONVGEMM_STORES_AUTOMATIC};
  });
}

convgemm_status convgemm_conv2d_plan_create_with_options(const convgemm_conv2d_params* params,
                                                         const convgemm_execution_options* options,
                                                         convgemm_conv2d_plan** plan) {
  return translate_errors([&] {
    require_non_null(plan, "plan");
    const convgemm::Conv2dParams cpp_params = to_cpp(*require_non_null(params, "params"));
    convgemm::Conv2dPlan created(cpp_params, options == nullptr ? convgemm::ExecutionOptions{} : to_cpp(*options));
    std::string description = created.describe();
    *plan = new convgemm_conv2d_plan{std::move(created), std::move(description)};
  });
}

const char* convgemm_conv2d_describe(const convgemm_conv2d_plan* plan) {
  return plan == nullptr ? nullptr : plan->description.c_str();
}

void convgemm_conv2d_plan_destroy(convgemm_conv2d_plan* plan) { delete plan; }

convgemm_status convgemm_conv2d_output_dims(const convgemm_conv2d_plan* plan, int64_t dims[4]) {
  return output_dims(plan, dims);
}

convgemm_status convgemm_conv2d_workspace_size(const convgemm_conv2d_plan* plan, convgemm_conv2d_direction direction,
                                               size_t* bytes) {
  return workspace_size(plan, direction, bytes);
}

convgemm_status convgemm_conv2d_forward(const convgemm_conv2d_plan* plan, convgemm_const_tensor input,
                                        convgemm_const_tensor weights, const float* bias, int64_t bias_size,
                                        convgemm_tensor output, void* workspace, size_t workspace_bytes) {
  return forward(plan, input, weights, bias, bias_size, output, workspace, workspace_bytes);
}

convgemm_status convgemm_conv2d_forward_relu(const convgemm_conv2d_plan* plan, convgemm_const_tensor input,
                                             convgemm_const_tensor weights, const float* bias, int64_t bias_size,
                                             convgemm_tensor output, void* workspace, size_t workspace_bytes) {
  return translate_errors([&] {
    plan_of(plan).forward(to_cpp(input), to_cpp(weights), to_span(bias, bias_size, "bias"), to_cpp(output),
                          convgemm::PostOp::relu, to_workspace(workspace, workspace_bytes));
  });
}

convgemm_status convgemm_conv2d_backward_data(const convgemm_conv2d_plan* plan, convgemm_const_tensor output_grad,
                                              convgemm_const_tensor weights, convgemm_tensor input_grad,
                                              void* workspace, size_t workspace_bytes) {
  return backward_data(plan, output_grad, weights, input_grad, workspace, workspace_bytes);
}

convgemm_status convgemm_conv2d_backward_weights(const convgemm_conv2d_plan* plan, convgemm_const_tensor input,
                                                 convgemm_const_tensor output_grad, convgemm_tensor weights_grad,
                                                 int32_t accumulate, void* workspace, size_t workspace_bytes) {
  return backward_weights(plan, input, output_grad, weights_grad, accumulate, workspace, workspace_bytes);
}

convgemm_status convgemm_conv2d_backward_bias(const convgemm_conv2d_plan* plan, convgemm_const_tensor output_grad,
                                              float* bias_grad, int64_t bias_grad_size, int32_t accumulate) {
  return backward_bias(plan, output_grad, bias_grad, bias_grad_size, accumulate);
}

convgemm_status convgemm_conv_transpose2d_plan_create(const convgemm_conv_transpose2d_params* params,
                                                      const convgemm_execution_options* options,
                                                      convgemm_conv_transpose2d_plan** plan) {
  return translate_errors([&] {
    require_non_null(plan, "plan");
    const convgemm::ConvTranspose2dParams cpp_params = to_cpp(*require_non_null(params, "params"));
    convgemm::ConvTranspose2dPlan created(cpp_params,
                                          options == nullptr ? convgemm::ExecutionOptions{} : to_cpp(*options));
    std::string description = created.conv_plan().describe();
    *plan = new convgemm_conv_transpose2d_plan{std::move(created), std::move(description)};
  });
}

void convgemm_conv_transpose2d_plan_destroy(convgemm_conv_transpose2d_plan* plan) { delete plan; }

const char* convgemm_conv_transpose2d_describe(const convgemm_conv_transpose2d_plan* plan) {
  return plan == nullptr ? nullptr : plan->description.c_str();
}

convgemm_status convgemm_conv_transpose2d_output_dims(const convgemm_conv_transpose2d_plan* plan, int64_t dims[4]) {
  return output_dims(plan, dims);
}

convgemm_status convgemm_conv_transpose2d_workspace_size(const convgemm_conv_transpose2d_plan* plan,
                                                         convgemm_conv2d_direction direction, size_t* bytes) {
  return workspace_size(plan, direction, bytes);
}

convgemm_status convgemm_conv_transpose2d_forward(const convgemm_conv_transpose2d_plan* plan,
                                                  convgemm_const_tensor input, convgemm_const_tensor weights,
                                                  const float* bias, int64_t bias_size, convgemm_tensor output,
                                                  void* workspace, size_t workspace_bytes) {
  return forward(plan, input, weights, bias, bias_size, output, workspace, workspace_bytes);
}

convgemm_status convgemm_conv_transpose2d_backward_data(const convgemm_conv_transpose2d_plan* plan,
                                                        convgemm_const_tensor output_grad,
                                                        convgemm_const_tensor weights, convgemm_tensor input_grad,
                                                        void* workspace, size_t workspace_bytes) {
  return backward_data(plan, output_grad, weights, input_grad, workspace, workspace_bytes);
}

convgemm_status convgemm_conv_transpose2d_backward_weights(const convgemm_conv_transpose2d_plan* plan,
                                                           convgemm_const_tensor input,
                                                           convgemm_const_tensor output_grad,
                                                           convgemm_tensor weights_grad, int32_t accumulate,
                                                           void* workspace, size_t workspace_bytes) {
  return backward_weights(plan, input, output_grad, weights_grad, accumulate, workspace, workspace_bytes);
}

convgemm_status convgemm_conv_transpose2d_backward_bias(const convgemm_conv_transpose2d_plan* plan,
                                                        convgemm_const_tensor output_grad, float* bias_grad,
                                                        int64_t bias_grad_size, int32_t accumulate) {
  return backward_bias(plan, output_grad, bias_grad, bias_grad_size, accumulate);
}

convgemm_status convgemm_pool2d_output_dims(const convgemm_pool2d_params* params, int64_t dims[4]) {
  return translate_errors([&] {
    const convgemm::PoolShapes shapes = convgemm::pool2d_shapes(to_cpp(*require_non_null(params, "params")));
    require_non_null(dims, "dims");
    for (int i = 0; i < 4; ++i) dims[i] = shapes.output[static_cast<size_t>(i)];
  });
}

convgemm_status convgemm_pool2d_forward(convgemm_pool_kind kind, const convgemm_pool2d_params* params,
                                        convgemm_const_tensor input, convgemm_tensor output) {
  return translate_errors([&] {
    const convgemm::Pool2dParams cpp_params = to_cpp(*require_non_null(params, "params"));
    if (is_max_pool(kind)) {
      convgemm::MaxPool2d(cpp_params).forward(to_cpp(input), to_cpp(output));
    } else {
      convgemm::AvgPool2d(cpp_params).forward(to_cpp(input), to_cpp(output));
    }
  });
}

convgemm_status convgemm_pool2d_backward(convgemm_pool_kind kind, const convgemm_pool2d_params* params,
                                         convgemm_const_tensor input, convgemm_const_tensor output_grad,
                                         convgemm_tensor input_grad) {
  return translate_errors([&] {
    const convgemm::Pool2dParams cpp_params = to_cpp(*require_non_null(params, "params"));
    if (is_max_pool(kind)) {
      convgemm::MaxPool2d(cpp_params).backward(to_cpp(input), to_cpp(output_grad), to_cpp(input_grad));
    } else {
      convgemm::AvgPool2d(cpp_params).backward(to_cpp(output_grad), to_cpp(input_grad));
    }
  });
}

convgemm_status convgemm_activation_forward(convgemm_activation kind, const float* input, float* output,
                                            int64_t count) {
  return translate_errors(
      [&] { activation_of(kind).forward(to_buffer(input, count, "input"), to_buffer(output, count, "output")); });
}

convgemm_status convgemm_activation_backward(convgemm_activation kind, const float* output, const float* output_grad,
                                             float* input_grad, int64_t count) {
  return translate_errors([&] {
    activation_of(kind).backward(to_buffer(output, count, "output"), to_buffer(output_grad, count, "output_grad"),
                                 to_buffer(input_grad, count, "input_grad"));
  });
}

}  // extern "C"
