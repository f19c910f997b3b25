// Every function of the C ABI (convgemm.h): results against the direct oracle, status codes and messages on bad
// input, and outputs left untouched when a call fails.
#include "conv2d_tester.hpp"

#include <convgemm/convgemm.h>

#include <cmath>
#include <cstring>

using namespace convgemm;

namespace {

convgemm_const_tensor c_tensor(const std::vector<float>& v, const Shape4& shape) {
  return {v.data(), {shape[0], shape[1], shape[2], shape[3]}};
}
convgemm_tensor c_tensor(std::vector<float>& v, const Shape4& shape) {
  return {v.data(), {shape[0], shape[1], shape[2], shape[3]}};
}

bool last_error_names(const char* parameter) { return std::strstr(convgemm_last_error(), parameter) != nullptr; }

struct PlanDeleter {
  void operator()(convgemm_conv2d_plan* plan) const { convgemm_conv2d_plan_destroy(plan); }
};
using PlanHandle = std::unique_ptr<convgemm_conv2d_plan, PlanDeleter>;

convgemm_conv2d_params example_params() {
  convgemm_conv2d_params p;
  REQUIRE(convgemm_conv2d_params_init(&p) == CONVGEMM_SUCCESS);
  p.batch = 3;
  p.in_channels = 4;
  p.in_height = 9;
  p.in_width = 8;
  p.out_channels = 6;
  p.kernel_height = 3;
  p.kernel_width = 2;
  p.stride_height = 2;
  p.dilation_width = 2;
  p.groups = 2;
  p.has_bias = 1;
  REQUIRE(convgemm_conv2d_params_set_same_padding(&p) == CONVGEMM_SUCCESS);
  return p;
}

// The C++ parameters of C's: what the C++ plan that a C plan is compared with takes (written out field by field
// here rather than through the library's own translation, which is what the comparison checks).
Conv2dParams cpp_params_of(const convgemm_conv2d_params& p) {
  return {.batch = p.batch,
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
          .has_bias = p.has_bias != 0};
}

}  // namespace

TEST_CASE("C ABI: version, status names, params helpers", "[c_api]") {
  int major = -1, minor = -1, patch = -1;
  convgemm_version(&major, &minor, &patch);
  CHECK(major == CONVGEMM_VERSION_MAJOR);
  CHECK(minor == CONVGEMM_VERSION_MINOR);
  CHECK(patch == CONVGEMM_VERSION_PATCH);
  CHECK(std::string(convgemm_version_string()) == CONVGEMM_VERSION_STRING);

  CHECK(std::string(convgemm_status_name(CONVGEMM_SUCCESS)) == "CONVGEMM_SUCCESS");
  CHECK(std::string(convgemm_status_name(CONVGEMM_INVALID_ARGUMENT)) == "CONVGEMM_INVALID_ARGUMENT");
  CHECK(std::string(convgemm_status_name(CONVGEMM_UNSUPPORTED)) == "CONVGEMM_UNSUPPORTED");
  CHECK(std::string(convgemm_status_name(CONVGEMM_OUT_OF_MEMORY)) == "CONVGEMM_OUT_OF_MEMORY");
  CHECK(std::string(convgemm_status_name(CONVGEMM_INTERNAL_ERROR)) == "CONVGEMM_INTERNAL_ERROR");
  CHECK(std::string(convgemm_status_name(static_cast<convgemm_status>(99))) == "unknown convgemm_status");

  convgemm_conv2d_params p;
  std::memset(&p, 0x7f, sizeof p);
  REQUIRE(convgemm_conv2d_params_init(&p) == CONVGEMM_SUCCESS);
  CHECK((p.batch == 1 && p.stride_height == 1 && p.dilation_width == 1 && p.groups == 1 && p.pad_top == 0 &&
         p.has_bias == 0));
  CHECK(convgemm_conv2d_params_init(nullptr) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("params"));

  // 'same' for a 2x2 kernel on 5x5 puts the odd pixel bottom/right.
  p.in_height = p.in_width = 5;
  p.kernel_height = p.kernel_width = 2;
  REQUIRE(convgemm_conv2d_params_set_same_padding(&p) == CONVGEMM_SUCCESS);
  CHECK((p.pad_top == 0 && p.pad_bottom == 1 && p.pad_left == 0 && p.pad_right == 1));
  CHECK(convgemm_conv2d_params_set_same_padding(nullptr) == CONVGEMM_INVALID_ARGUMENT);
  p.stride_width = 0;
  const convgemm_conv2d_params before = p;
  CHECK(convgemm_conv2d_params_set_same_padding(&p) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("stride"));
  CHECK(std::memcmp(&p, &before, sizeof p) == 0);
}

TEST_CASE("C ABI: plan, workspace query and all four directions match the direct oracle", "[c_api]") {
  const convgemm_conv2d_params cp = example_params();
  for (const int32_t threads : {0, 2}) {
    INFO("threads " << threads);
    convgemm_conv2d_plan* raw = nullptr;
    REQUIRE(convgemm_conv2d_plan_create(&cp, threads, &raw) == CONVGEMM_SUCCESS);
    PlanHandle plan(raw);

    const Conv2dParams params = cpp_params_of(cp);
    const Conv2dShapes s = conv2d_shapes(params);
    int64_t dims[4] = {};
    REQUIRE(convgemm_conv2d_output_dims(plan.get(), dims) == CONVGEMM_SUCCESS);
    CHECK(Shape4{dims[0], dims[1], dims[2], dims[3]} == s.output);

    const Conv2dPlan cpp_plan(params);
    // Each direction's query equals the C++ plan's figure; a workspace of the largest serves every call.
    size_t largest = 0;
    for (const auto& [direction, cpp_direction] :
         {std::pair{CONVGEMM_FORWARD, Conv2dDirection::forward},
          std::pair{CONVGEMM_BACKWARD_DATA, Conv2dDirection::backward_data},
          std::pair{CONVGEMM_BACKWARD_WEIGHTS, Conv2dDirection::backward_weights},
          std::pair{CONVGEMM_BACKWARD_BIAS, Conv2dDirection::backward_bias}}) {
      size_t bytes = 1;
      REQUIRE(convgemm_conv2d_workspace_size(plan.get(), direction, &bytes) == CONVGEMM_SUCCESS);
      CHECK(bytes == Conv2dPlan(params, {.threads = threads}).workspace_bytes(cpp_direction));
      largest = std::max(largest, bytes);
    }
    CHECK(largest > 0);

    std::mt19937_64 rng(9);
    const auto x = convgemm::testing::random_floats(element_count(s.input), rng);
    const auto w = convgemm::testing::random_floats(element_count(s.weights), rng);
    const auto b = convgemm::testing::random_floats(s.bias, rng);
    const auto dy = convgemm::testing::random_floats(element_count(s.output), rng);
    std::vector<std::byte> workspace(largest);

    // The C calls against the same calls made through the C++ API (itself held to the oracle by test_conv2d):
    // the C ABI adds no arithmetic, so the results must be bitwise equal. Then one end-to-end oracle check.
    std::vector<float> y(dy.size()), y_cpp(dy.size());
    REQUIRE(convgemm_conv2d_forward(plan.get(), c_tensor(x, s.input), c_tensor(w, s.weights), b.data(),
                                    static_cast<int64_t>(b.size()), c_tensor(y, s.output), nullptr,
                                    0) == CONVGEMM_SUCCESS);
    cpp_plan.forward({x.data(), s.input}, {w.data(), s.weights}, b, {y_cpp.data(), s.output});
    CHECK(y == y_cpp);
    std::vector<float> y_relu(dy.size(), NAN);
    REQUIRE(convgemm_conv2d_forward_relu(plan.get(), c_tensor(x, s.input), c_tensor(w, s.weights), b.data(),
                                         static_cast<int64_t>(b.size()), c_tensor(y_relu, s.output), nullptr,
                                         0) == CONVGEMM_SUCCESS);
    for (size_t i = 0; i < y.size(); ++i) REQUIRE(y_relu[i] == (y[i] > 0 ? y[i] : 0.0f));
    std::vector<double> y_exact(y.size());
    const auto xd = convgemm::testing::to_double(x), wd = convgemm::testing::to_double(w),
               bd = convgemm::testing::to_double(b);
    direct_conv2d_forward(params, ConstTensorViewF64{xd.data(), s.input}, ConstTensorViewF64{wd.data(), s.weights}, bd,
                          TensorViewF64{y_exact.data(), s.output});
    for (size_t i = 0; i < y.size(); ++i) REQUIRE(std::fabs(y[i] - y_exact[i]) <= 1e-5 * (1 + std::fabs(y_exact[i])));

    std::vector<float> dx(x.size()), dx_cpp(x.size());
    REQUIRE(convgemm_conv2d_backward_data(plan.get(), c_tensor(dy, s.output), c_tensor(w, s.weights),
                                          c_tensor(dx, s.input), workspace.data(),
                                          workspace.size()) == CONVGEMM_SUCCESS);
    cpp_plan.backward_data({dy.data(), s.output}, {w.data(), s.weights}, {dx_cpp.data(), s.input});
    CHECK(dx == dx_cpp);

    std::vector<float> dw(w.size()), dw_cpp(w.size());
    REQUIRE(convgemm_conv2d_backward_weights(plan.get(), c_tensor(x, s.input), c_tensor(dy, s.output),
                                             c_tensor(dw, s.weights), 0, workspace.data(),
                                             workspace.size()) == CONVGEMM_SUCCESS);
    cpp_plan.backward_weights({x.data(), s.input}, {dy.data(), s.output}, {dw_cpp.data(), s.weights});
    CHECK(dw == dw_cpp);
    REQUIRE(convgemm_conv2d_backward_weights(plan.get(), c_tensor(x, s.input), c_tensor(dy, s.output),
                                             c_tensor(dw, s.weights), 1, nullptr, 0) == CONVGEMM_SUCCESS);
    cpp_plan.backward_weights({x.data(), s.input}, {dy.data(), s.output}, {dw_cpp.data(), s.weights},
                              GradientMode::accumulate);
    CHECK(dw == dw_cpp);

    std::vector<float> db(b.size()), db_cpp(b.size());
    REQUIRE(convgemm_conv2d_backward_bias(plan.get(), c_tensor(dy, s.output), db.data(),
                                          static_cast<int64_t>(db.size()), 0) == CONVGEMM_SUCCESS);
    cpp_plan.backward_bias({dy.data(), s.output}, db_cpp);
    CHECK(db == db_cpp);
    REQUIRE(convgemm_conv2d_backward_bias(plan.get(), c_tensor(dy, s.output), db.data(),
                                          static_cast<int64_t>(db.size()), 1) == CONVGEMM_SUCCESS);
    cpp_plan.backward_bias({dy.data(), s.output}, db_cpp, GradientMode::accumulate);
    CHECK(db == db_cpp);
  }
  convgemm_conv2d_plan_destroy(nullptr);  // a no-op, like free(NULL)
}

TEST_CASE("C ABI: bad input returns a status and a message naming it, and writes nothing", "[c_api][errors]") {
  convgemm_conv2d_params cp = example_params();
  convgemm_conv2d_plan* raw = nullptr;
  CHECK(convgemm_conv2d_plan_create(nullptr, 0, &raw) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("params"));
  CHECK(convgemm_conv2d_plan_create(&cp, 0, nullptr) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("plan"));
  CHECK(convgemm_conv2d_plan_create(&cp, -2, &raw) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("threads"));

  convgemm_conv2d_params bad = cp;
  bad.kernel_height = 50;
  CHECK(convgemm_conv2d_plan_create(&bad, 0, &raw) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("kernel_height"));
  bad = cp;
  bad.has_bias = 2;
  CHECK(convgemm_conv2d_plan_create(&bad, 0, &raw) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("has_bias"));
  bad = cp;
  bad.in_channels = 5;
  CHECK(convgemm_conv2d_plan_create(&bad, 0, &raw) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("in_channels"));
  bad = cp;
  bad.batch = INT64_MAX / 2;
  CHECK(convgemm_conv2d_plan_create(&bad, 0, &raw) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("input size"));
  REQUIRE(convgemm_conv2d_params_init(&bad) == CONVGEMM_SUCCESS);
  bad.in_height = bad.in_width = 70000;
  CHECK(convgemm_conv2d_plan_create(&bad, 0, &raw) == CONVGEMM_UNSUPPORTED);
  CHECK(last_error_names("output_height * output_width"));
  CHECK(raw == nullptr);

  REQUIRE(convgemm_conv2d_plan_create(&cp, 0, &raw) == CONVGEMM_SUCCESS);
  PlanHandle plan(raw);
  int64_t dims[4];
  CHECK(convgemm_conv2d_output_dims(nullptr, dims) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("plan"));
  CHECK(convgemm_conv2d_output_dims(plan.get(), nullptr) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("dims"));
  size_t bytes = 0;
  CHECK(convgemm_conv2d_workspace_size(plan.get(), static_cast<convgemm_conv2d_direction>(7), &bytes) ==
        CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("direction"));
  CHECK(convgemm_conv2d_workspace_size(plan.get(), CONVGEMM_FORWARD, nullptr) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("bytes"));

  REQUIRE(convgemm_conv2d_output_dims(plan.get(), dims) == CONVGEMM_SUCCESS);
  const Shape4 input{cp.batch, cp.in_channels, cp.in_height, cp.in_width};
  const Shape4 weights{cp.out_channels, cp.in_channels / cp.groups, cp.kernel_height, cp.kernel_width};
  const Shape4 output{dims[0], dims[1], dims[2], dims[3]};
  const std::vector<float> x(static_cast<size_t>(element_count(input)), 1.0f);
  const std::vector<float> w(static_cast<size_t>(element_count(weights)), 1.0f);
  const std::vector<float> b(static_cast<size_t>(cp.out_channels), 1.0f);
  const std::vector<float> dy(static_cast<size_t>(element_count(output)), 1.0f);
  constexpr float sentinel = -7.0f;
  std::vector<float> y(dy.size(), sentinel), dx(x.size(), sentinel), dw(w.size(), sentinel), db(b.size(), sentinel);
  float workspace[4];
  const Shape4 wrong{1, 1, 1, 1};
  const int64_t bias_size = cp.out_channels;

  CHECK(convgemm_conv2d_forward(nullptr, c_tensor(x, input), c_tensor(w, weights), b.data(), bias_size,
                                c_tensor(y, output), nullptr, 0) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("plan"));
  CHECK(convgemm_conv2d_forward(plan.get(), c_tensor(x, input), c_tensor(w, weights), b.data(), bias_size,
                                c_tensor(y, wrong), nullptr, 0) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("output"));
  CHECK(convgemm_conv2d_forward_relu(plan.get(), c_tensor(x, input), c_tensor(w, weights), b.data(), bias_size,
                                     c_tensor(y, wrong), nullptr, 0) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("output"));
  CHECK(convgemm_conv2d_forward(plan.get(), c_tensor(x, input), c_tensor(w, weights), b.data(), -1, c_tensor(y, output),
                                nullptr, 0) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("bias"));
  CHECK(convgemm_conv2d_forward(plan.get(), c_tensor(x, input), c_tensor(w, weights), nullptr, bias_size,
                                c_tensor(y, output), nullptr, 0) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("bias"));
  CHECK(convgemm_conv2d_forward(plan.get(), c_tensor(x, input), c_tensor(w, weights), b.data(), bias_size,
                                c_tensor(y, output), nullptr, 64) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("workspace"));
  CHECK(convgemm_conv2d_forward(plan.get(), c_tensor(x, input), c_tensor(w, weights), b.data(), bias_size,
                                c_tensor(y, output), workspace, sizeof workspace) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("workspace"));
  CHECK(convgemm_conv2d_backward_data(plan.get(), c_tensor(dy, output), c_tensor(w, wrong), c_tensor(dx, input),
                                      nullptr, 0) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("weights"));
  CHECK(convgemm_conv2d_backward_weights(plan.get(), c_tensor(x, input), c_tensor(dy, output), c_tensor(dw, weights), 2,
                                         nullptr, 0) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("accumulate"));
  CHECK(convgemm_conv2d_backward_weights(plan.get(), c_tensor(x, wrong), c_tensor(dy, output), c_tensor(dw, weights), 0,
                                         nullptr, 0) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("input"));
  CHECK(convgemm_conv2d_backward_bias(plan.get(), c_tensor(dy, output), db.data(), 2, 0) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("bias_grad"));
  CHECK(convgemm_conv2d_backward_bias(plan.get(), c_tensor(dy, output), db.data(), bias_size, 3) ==
        CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("accumulate"));

  for (const auto* buffer : {&y, &dx, &dw, &db}) {
    for (const float v : *buffer) REQUIRE(v == sentinel);
  }
}

TEST_CASE("C ABI: build info, execution options and plan description", "[c_api]") {
  convgemm_build_info info;
  REQUIRE(convgemm_get_build_info(&info) == CONVGEMM_SUCCESS);
  CHECK(std::string(info.version) == CONVGEMM_VERSION_STRING);
  CHECK(std::string(info.blas_vendor) == "OpenBLAS");
  CHECK(std::string(info.blas_config).find("OpenBLAS") != std::string::npos);
  CHECK(std::string(info.blas_kernel) == convgemm::runtime_info().blas_kernel);
  CHECK_FALSE(std::string(info.tbb_version).empty());
  CHECK(info.default_threads >= 1);
  CHECK((info.cpu_has_avx512 == 0 || info.cpu_has_avx512 == 1));
  // Which of the two is test_runtime's business (it checks the CPU and CONVGEMM_KERNELS): here, that C says the same.
  CHECK(std::string(convgemm_conv_gemm_kernel()) == convgemm::runtime_info().conv_gemm_kernel);
  CHECK(convgemm_get_build_info(nullptr) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("info"));

  convgemm_execution_options options;
  std::memset(&options, 0x5a, sizeof options);
  REQUIRE(convgemm_execution_options_init(&options) == CONVGEMM_SUCCESS);
  CHECK((options.threads == 0 && options.parallelism == CONVGEMM_PARALLEL_AUTOMATIC &&
         options.workspace_limit_bytes == 0 && options.output_stores == CONVGEMM_STORES_AUTOMATIC));
  CHECK(convgemm_execution_options_init(nullptr) == CONVGEMM_INVALID_ARGUMENT);

  const convgemm_conv2d_params params = example_params();
  // A cap and an explicit policy reach the plan: its workspace stays within the cap, its results are the C++
  // plan's with the same options.
  convgemm_conv2d_plan* raw = nullptr;
  REQUIRE(convgemm_conv2d_plan_create_with_options(&params, nullptr, &raw) == CONVGEMM_SUCCESS);
  PlanHandle default_plan(raw);
  size_t uncapped = 0;
  REQUIRE(convgemm_conv2d_workspace_size(default_plan.get(), CONVGEMM_FORWARD, &uncapped) == CONVGEMM_SUCCESS);
  CHECK(std::string(convgemm_conv2d_describe(default_plan.get())).find("threads") != std::string::npos);
  CHECK(convgemm_conv2d_describe(nullptr) == nullptr);

  options.threads = 2;
  options.parallelism = CONVGEMM_PARALLEL_WITHIN_SAMPLE;
  options.workspace_limit_bytes = uncapped / 2;
  REQUIRE(convgemm_conv2d_plan_create_with_options(&params, &options, &raw) == CONVGEMM_SUCCESS);
  PlanHandle capped(raw);
  for (const auto direction : {CONVGEMM_FORWARD, CONVGEMM_BACKWARD_DATA, CONVGEMM_BACKWARD_WEIGHTS}) {
    size_t bytes = 0;
    REQUIRE(convgemm_conv2d_workspace_size(capped.get(), direction, &bytes) == CONVGEMM_SUCCESS);
    CHECK(bytes <= options.workspace_limit_bytes);
  }
  const Conv2dParams cpp_params = cpp_params_of(params);
  const Conv2dPlan cpp_plan(cpp_params, {.threads = 2,
                                         .parallelism = Parallelism::within_sample,
                                         .workspace_limit_bytes = options.workspace_limit_bytes});
  CHECK(std::string(convgemm_conv2d_describe(capped.get())) == cpp_plan.describe());

  options.parallelism = static_cast<convgemm_parallelism>(9);
  CHECK(convgemm_conv2d_plan_create_with_options(&params, &options, &raw) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("parallelism"));
  options.parallelism = CONVGEMM_PARALLEL_AUTOMATIC;
  options.workspace_limit_bytes = 0;
  options.output_stores = static_cast<convgemm_output_stores>(3);
  CHECK(convgemm_conv2d_plan_create_with_options(&params, &options, &raw) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("output_stores"));
  options.output_stores = CONVGEMM_STORES_AUTOMATIC;
  options.parallelism = CONVGEMM_PARALLEL_ACROSS_BATCH;
  options.workspace_limit_bytes = 16;
  CHECK(convgemm_conv2d_plan_create_with_options(&params, &options, &raw) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("workspace_limit_bytes"));
  CHECK(convgemm_conv2d_plan_create_with_options(nullptr, &options, &raw) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(convgemm_conv2d_plan_create_with_options(&params, nullptr, nullptr) == CONVGEMM_INVALID_ARGUMENT);
}

TEST_CASE("C ABI: output_stores reaches the plan", "[c_api]") {
  // A 1x1 convolution whose input and output (51 + 13 MB) outgrow the last-level cache streams y around the cache
  // unless told to keep it cached; a small one keeps y cached unless told to stream it. The plan says which in its
  // description, the same as the C++ plan's with the same options (planning allocates nothing).
  convgemm_conv2d_params large;
  REQUIRE(convgemm_conv2d_params_init(&large) == CONVGEMM_SUCCESS);
  large.batch = 16;
  large.in_channels = 256;
  large.in_height = large.in_width = 56;
  large.out_channels = 64;
  const convgemm_conv2d_params small = example_params();
  const std::string streamed = "non-temporal stores of y";
  const auto description = [](const convgemm_conv2d_params& params, convgemm_output_stores stores) {
    convgemm_execution_options options;
    REQUIRE(convgemm_execution_options_init(&options) == CONVGEMM_SUCCESS);
    options.threads = 2;
    options.output_stores = stores;
    convgemm_conv2d_plan* raw = nullptr;
    REQUIRE(convgemm_conv2d_plan_create_with_options(&params, &options, &raw) == CONVGEMM_SUCCESS);
    const PlanHandle plan(raw);
    return std::string(convgemm_conv2d_describe(plan.get()));
  };
  const auto cpp_description = [](const convgemm_conv2d_params& p, OutputStores stores) {
    return Conv2dPlan(cpp_params_of(p), {.threads = 2, .output_stores = stores}).describe();
  };
  CHECK_THAT(description(large, CONVGEMM_STORES_AUTOMATIC), Catch::Matchers::Contains(streamed));
  CHECK_THAT(description(large, CONVGEMM_STORES_CACHED), !Catch::Matchers::Contains(streamed));
  CHECK_THAT(description(small, CONVGEMM_STORES_AUTOMATIC), !Catch::Matchers::Contains(streamed));
  CHECK_THAT(description(small, CONVGEMM_STORES_NON_TEMPORAL), Catch::Matchers::Contains(streamed));
  for (const auto& [stores, cpp_stores] : {std::pair{CONVGEMM_STORES_AUTOMATIC, OutputStores::automatic},
                                           std::pair{CONVGEMM_STORES_CACHED, OutputStores::cached},
                                           std::pair{CONVGEMM_STORES_NON_TEMPORAL, OutputStores::non_temporal}}) {
    CHECK(description(large, stores) == cpp_description(large, cpp_stores));
    CHECK(description(small, stores) == cpp_description(small, cpp_stores));
  }
}

TEST_CASE("C ABI: max and average pooling, the lecture's example", "[c_api][pool2d]") {
  // 4x4 input, 2x2 windows, stride 2: max -> 9 2 / 6 3, average -> the window means.
  const std::vector<float> x = {1, 3, 2, 1, 2, 9, 1, 1, 1, 3, 2, 3, 5, 6, 1, 2};
  const convgemm_pool2d_params params{.batch = 1,
                                      .channels = 1,
                                      .in_height = 4,
                                      .in_width = 4,
                                      .kernel_height = 2,
                                      .kernel_width = 2,
                                      .stride_height = 2,
                                      .stride_width = 2,
                                      .pad_top = 0,
                                      .pad_bottom = 0,
                                      .pad_left = 0,
                                      .pad_right = 0};
  int64_t dims[4] = {};
  REQUIRE(convgemm_pool2d_output_dims(&params, dims) == CONVGEMM_SUCCESS);
  CHECK((dims[0] == 1 && dims[1] == 1 && dims[2] == 2 && dims[3] == 2));
  const Shape4 in_shape{1, 1, 4, 4}, out_shape{1, 1, 2, 2};

  std::vector<float> y(4), dx(16, -1.0f);
  REQUIRE(convgemm_pool2d_forward(CONVGEMM_MAX_POOL, &params, c_tensor(x, in_shape), c_tensor(y, out_shape)) ==
          CONVGEMM_SUCCESS);
  CHECK(y == std::vector<float>{9, 2, 6, 3});
  const std::vector<float> dy = {10, 20, 30, 40};
  REQUIRE(convgemm_pool2d_backward(CONVGEMM_MAX_POOL, &params, c_tensor(x, in_shape), c_tensor(dy, out_shape),
                                   c_tensor(dx, in_shape)) == CONVGEMM_SUCCESS);
  // Each window's gradient lands on its maximum: 9 at (1,1), 2 at (0,2), 6 at (3,1), 3 at (2,3).
  CHECK(dx == std::vector<float>{0, 0, 20, 0, 0, 10, 0, 0, 0, 0, 0, 40, 0, 30, 0, 0});

  REQUIRE(convgemm_pool2d_forward(CONVGEMM_AVERAGE_POOL, &params, c_tensor(x, in_shape), c_tensor(y, out_shape)) ==
          CONVGEMM_SUCCESS);
  CHECK(y == std::vector<float>{15.0f / 4, 5.0f / 4, 15.0f / 4, 8.0f / 4});
  REQUIRE(convgemm_pool2d_backward(CONVGEMM_AVERAGE_POOL, &params, convgemm_const_tensor{nullptr, {0, 0, 0, 0}},
                                   c_tensor(dy, out_shape), c_tensor(dx, in_shape)) == CONVGEMM_SUCCESS);
  CHECK(dx == std::vector<float>{2.5f, 2.5f, 5, 5, 2.5f, 2.5f, 5, 5, 7.5f, 7.5f, 10, 10, 7.5f, 7.5f, 10, 10});

  // Bad input: a status, a message naming it, outputs untouched.
  std::vector<float> untouched(4, -7.0f);
  convgemm_pool2d_params bad = params;
  bad.kernel_height = 9;
  CHECK(convgemm_pool2d_forward(CONVGEMM_MAX_POOL, &bad, c_tensor(x, in_shape), c_tensor(untouched, out_shape)) ==
        CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("kernel_height"));
  CHECK(convgemm_pool2d_forward(static_cast<convgemm_pool_kind>(5), &params, c_tensor(x, in_shape),
                                c_tensor(untouched, out_shape)) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("kind"));
  CHECK(convgemm_pool2d_forward(CONVGEMM_MAX_POOL, &params, c_tensor(x, in_shape),
                                c_tensor(untouched, Shape4{1, 1, 3, 3})) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("output"));
  CHECK(convgemm_pool2d_backward(CONVGEMM_MAX_POOL, nullptr, c_tensor(x, in_shape), c_tensor(dy, out_shape),
                                 c_tensor(untouched, out_shape)) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("params"));
  CHECK(convgemm_pool2d_output_dims(&params, nullptr) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(untouched == std::vector<float>(4, -7.0f));
}

TEST_CASE("C ABI: activations forward and backward against their formulas", "[c_api][activation]") {
  const std::vector<float> x = {-2.0f, -0.5f, 0.0f, 0.25f, 3.0f};
  const std::vector<float> dy = {1.0f, -2.0f, 3.0f, 0.5f, 2.0f};
  const auto n = static_cast<int64_t>(x.size());
  std::vector<float> y(x.size()), dx(x.size());
  for (const convgemm_activation kind : {CONVGEMM_RELU, CONVGEMM_SIGMOID, CONVGEMM_TANH}) {
    INFO("activation " << static_cast<int>(kind));
    REQUIRE(convgemm_activation_forward(kind, x.data(), y.data(), n) == CONVGEMM_SUCCESS);
    REQUIRE(convgemm_activation_backward(kind, y.data(), dy.data(), dx.data(), n) == CONVGEMM_SUCCESS);
    for (size_t i = 0; i < x.size(); ++i) {
      const double xi = x[i];
      const double expected_y = kind == CONVGEMM_RELU      ? std::max(xi, 0.0)
                                : kind == CONVGEMM_SIGMOID ? 1.0 / (1.0 + std::exp(-xi))
                                                           : std::tanh(xi);
      const double derivative = kind == CONVGEMM_RELU      ? (xi > 0 ? 1.0 : 0.0)
                                : kind == CONVGEMM_SIGMOID ? expected_y * (1 - expected_y)
                                                           : 1 - expected_y * expected_y;
      CHECK(y[i] == Approx(expected_y).epsilon(1e-6).margin(1e-7));
      CHECK(dx[i] == Approx(dy[i] * derivative).epsilon(1e-5).margin(1e-6));
    }
  }
  // In place, as the header allows.
  std::vector<float> in_place = x;
  REQUIRE(convgemm_activation_forward(CONVGEMM_RELU, in_place.data(), in_place.data(), n) == CONVGEMM_SUCCESS);
  CHECK(in_place == std::vector<float>{0, 0, 0, 0.25f, 3});

  std::vector<float> untouched(x.size(), -7.0f);
  CHECK(convgemm_activation_forward(static_cast<convgemm_activation>(8), x.data(), untouched.data(), n) ==
        CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("kind"));
  CHECK(convgemm_activation_forward(CONVGEMM_TANH, nullptr, untouched.data(), n) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("input"));
  CHECK(convgemm_activation_backward(CONVGEMM_TANH, x.data(), dy.data(), untouched.data(), -1) ==
        CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("count"));
  CHECK(untouched == std::vector<float>(x.size(), -7.0f));
}

TEST_CASE("C ABI: transposed convolution, every call", "[c_api][conv_transpose2d]") {
  // 2x2 input, 2x2 kernel, stride 2: each input pixel stamps x * W onto its own 2x2 block of the 4x4 output.
  const convgemm_conv_transpose2d_params params{.batch = 1,
                                                .in_channels = 1,
                                                .in_height = 2,
                                                .in_width = 2,
                                                .out_channels = 1,
                                                .kernel_height = 2,
                                                .kernel_width = 2,
                                                .stride_height = 2,
                                                .stride_width = 2,
                                                .pad_top = 0,
                                                .pad_bottom = 0,
                                                .pad_left = 0,
                                                .pad_right = 0,
                                                .output_padding_height = 0,
                                                .output_padding_width = 0,
                                                .dilation_height = 1,
                                                .dilation_width = 1,
                                                .groups = 1,
                                                .has_bias = 1};
  convgemm_conv_transpose2d_plan* raw = nullptr;
  REQUIRE(convgemm_conv_transpose2d_plan_create(&params, nullptr, &raw) == CONVGEMM_SUCCESS);
  const std::unique_ptr<convgemm_conv_transpose2d_plan, decltype(&convgemm_conv_transpose2d_plan_destroy)> plan(
      raw, convgemm_conv_transpose2d_plan_destroy);
  int64_t dims[4] = {};
  REQUIRE(convgemm_conv_transpose2d_output_dims(plan.get(), dims) == CONVGEMM_SUCCESS);
  CHECK((dims[0] == 1 && dims[1] == 1 && dims[2] == 4 && dims[3] == 4));
  CHECK(convgemm_conv_transpose2d_describe(plan.get()) != nullptr);
  CHECK(convgemm_conv_transpose2d_describe(nullptr) == nullptr);
  size_t bytes = 0;
  for (const auto direction : {CONVGEMM_FORWARD, CONVGEMM_BACKWARD_DATA, CONVGEMM_BACKWARD_WEIGHTS})
    CHECK(convgemm_conv_transpose2d_workspace_size(plan.get(), direction, &bytes) == CONVGEMM_SUCCESS);

  const Shape4 x_shape{1, 1, 2, 2}, w_shape{1, 1, 2, 2}, y_shape{1, 1, 4, 4};
  const std::vector<float> x = {1, 2, 3, 4}, w = {1, 10, 100, 1000}, b = {0.5f};
  std::vector<float> y(16);
  REQUIRE(convgemm_conv_transpose2d_forward(plan.get(), c_tensor(x, x_shape), c_tensor(w, w_shape), b.data(), 1,
                                            c_tensor(y, y_shape), nullptr, 0) == CONVGEMM_SUCCESS);
  CHECK(y == std::vector<float>{1.5f, 10.5f, 2.5f, 20.5f, 100.5f, 1000.5f, 200.5f, 2000.5f,  //
                                3.5f, 30.5f, 4.5f, 40.5f, 300.5f, 3000.5f, 400.5f, 4000.5f});

  // The adjoints of that stamping: dx[i] = sum over its block of dy * W; dW[r,s] = sum over pixels of x * dy.
  std::vector<float> ramp(16);
  for (size_t i = 0; i < ramp.size(); ++i) ramp[i] = static_cast<float>(i + 1);
  const std::vector<float> dy = ramp;
  std::vector<float> dx(4), dw(4), db(1);
  REQUIRE(convgemm_conv_transpose2d_backward_data(plan.get(), c_tensor(dy, y_shape), c_tensor(w, w_shape),
                                                  c_tensor(dx, x_shape), nullptr, 0) == CONVGEMM_SUCCESS);
  CHECK(dx == std::vector<float>{1 * 1 + 2 * 10 + 5 * 100 + 6 * 1000, 3 * 1 + 4 * 10 + 7 * 100 + 8 * 1000,
                                 9 * 1 + 10 * 10 + 13 * 100 + 14 * 1000, 11 * 1 + 12 * 10 + 15 * 100 + 16 * 1000});
  REQUIRE(convgemm_conv_transpose2d_backward_weights(plan.get(), c_tensor(x, x_shape), c_tensor(dy, y_shape),
                                                     c_tensor(dw, w_shape), 0, nullptr, 0) == CONVGEMM_SUCCESS);
  CHECK(dw == std::vector<float>{1 * 1 + 2 * 3 + 3 * 9 + 4 * 11, 1 * 2 + 2 * 4 + 3 * 10 + 4 * 12,
                                 1 * 5 + 2 * 7 + 3 * 13 + 4 * 15, 1 * 6 + 2 * 8 + 3 * 14 + 4 * 16});
  REQUIRE(convgemm_conv_transpose2d_backward_bias(plan.get(), c_tensor(dy, y_shape), db.data(), 1, 0) ==
          CONVGEMM_SUCCESS);
  CHECK(db[0] == 136.0f);

  // Bad input: status, message, nothing written.
  convgemm_conv_transpose2d_params bad = params;
  bad.output_padding_height = 2;
  CHECK(convgemm_conv_transpose2d_plan_create(&bad, nullptr, &raw) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("output_padding"));
  std::vector<float> untouched(16, -7.0f);
  CHECK(convgemm_conv_transpose2d_forward(plan.get(), c_tensor(x, x_shape), c_tensor(w, w_shape), b.data(), 1,
                                          c_tensor(untouched, x_shape), nullptr, 0) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("output"));
  CHECK(convgemm_conv_transpose2d_workspace_size(nullptr, CONVGEMM_FORWARD, &bytes) == CONVGEMM_INVALID_ARGUMENT);
  CHECK(last_error_names("plan"));
  CHECK(untouched == std::vector<float>(16, -7.0f));
}
