# Fails unless libconvgemm.so exports exactly the public API: the convgemm_* C ABI and the C++ names declared with
# CONVGEMM_CXX_API. Internals (convgemm::kernels, WorkspacePool, checked_product, Conv2dPlan::Impl, which would
# inherit the plan's visibility, system-header instantiations) must not appear; the promised entry points must.
# Usage: cmake -DLIBRARY=libconvgemm.so -DNM=nm -DCXXFILT=c++filt -P check_exports.cmake
execute_process(COMMAND ${NM} -D --defined-only ${LIBRARY}
                COMMAND ${CXXFILT}
                OUTPUT_VARIABLE listing RESULT_VARIABLE result COMMAND_ERROR_IS_FATAL ANY)
string(REPLACE "\n" ";" lines "${listing}")

# Public C++ names are whatever lives in namespace convgemm (and the typeinfo/vtables of its classes), except
# the internals below; listing every public function here would only duplicate the headers.
set(public_cxx_regex "(typeinfo for |typeinfo name for |vtable for )?convgemm::")
set(internal_regex "convgemm::kernels::|WorkspacePool|checked_product|Conv2dPlan::Impl|anonymous namespace")

set(exported "")
set(unexpected "")
foreach(line IN LISTS lines)
  # "ADDRESS TYPE NAME", NAME demangled and possibly containing spaces
  if(NOT line MATCHES "^[0-9a-f]+ [A-Za-z] (.+)$")
    continue()
  endif()
  set(name "${CMAKE_MATCH_1}")
  list(APPEND exported "${name}")
  if(name MATCHES "^convgemm_[a-z0-9_]+$" OR
     (name MATCHES "^${public_cxx_regex}" AND NOT name MATCHES "${internal_regex}"))
    continue()
  endif()
  list(APPEND unexpected "${name}")
endforeach()

list(LENGTH exported exported_count)
set(c_symbols ${exported})
list(FILTER c_symbols INCLUDE REGEX "^convgemm_")
list(LENGTH c_symbols c_count)
math(EXPR cxx_count "${exported_count} - ${c_count}")
message(STATUS "${LIBRARY}: ${exported_count} exported symbols, ${c_count} C (convgemm_*), ${cxx_count} C++")

if(unexpected)
  list(JOIN unexpected "\n  " unexpected_text)
  message(FATAL_ERROR "exported but not public API:\n  ${unexpected_text}")
endif()
foreach(required
    "convgemm_conv2d_plan_create" "convgemm_conv2d_forward" "convgemm_conv2d_backward_data"
    "convgemm_conv2d_backward_weights" "convgemm_conv2d_backward_bias" "convgemm_last_error"
    "convgemm::Conv2dPlan::forward" "convgemm::conv2d_shapes" "convgemm::direct_conv2d_forward"
    "convgemm::runtime_info" "convgemm::ensure_fast_blas_kernel" "convgemm::MaxPool2d::forward"
    "convgemm::Dense::forward" "convgemm::softmax_cross_entropy" "convgemm::relu_forward"
    "convgemm::direct_conv2d_forward_optimized" "typeinfo for convgemm::Error")
  set(found ${exported})
  list(FILTER found INCLUDE REGEX "^${required}")
  if(NOT found)
    message(FATAL_ERROR "public symbol not exported: ${required}")
  endif()
endforeach()
foreach(internal "convgemm::kernels::" "WorkspacePool" "checked_product" "Conv2dPlan::Impl")
  set(found ${exported})
  list(FILTER found INCLUDE REGEX "${internal}")
  if(found)
    message(FATAL_ERROR "internal symbol exported: ${found}")
  endif()
endforeach()
