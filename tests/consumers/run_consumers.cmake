# The consumer test: installs the build into a fresh prefix, then configures, builds and runs the two out-of-tree
# projects beside this script against it (C++ through find_package, C through pkg-config), plus the plain
# command line `cc main.c $(pkg-config --cflags --libs convgemm)`. Any failed step fails the test.
# Usage: cmake -DBUILD_DIR= -DWORK_DIR= -DLIBDIR= -DC_COMPILER= -DCXX_COMPILER= -DBUILD_TYPE= -DGENERATOR=
#              [-DSANITIZE_FLAGS=] -P run_consumers.cmake
set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output)
  if(NOT result EQUAL 0)
    list(JOIN ARGN " " command)
    message(FATAL_ERROR "failed (${result}): ${command}\n${output}")
  endif()
  string(STRIP "${output}" output)
  if(output MATCHES "consumer:")
    message(STATUS "${output}")
  endif()
  set(run_output "${output}" PARENT_SCOPE)
endfunction()

run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})

# An instrumented library needs instrumented users (and the sanitizer runtime first in the link).
set(flags -DCMAKE_C_FLAGS=${SANITIZE_FLAGS} -DCMAKE_CXX_FLAGS=${SANITIZE_FLAGS}
          -DCMAKE_EXE_LINKER_FLAGS=${SANITIZE_FLAGS})
set(common -G ${GENERATOR} -DCMAKE_BUILD_TYPE=${BUILD_TYPE} ${flags})

run(${CMAKE_COMMAND} -S ${CMAKE_CURRENT_LIST_DIR}/cpp -B ${WORK_DIR}/cpp ${common}
    -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_PREFIX_PATH=${prefix})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/cpp)
run(${WORK_DIR}/cpp/cpp_consumer_shared)
run(${WORK_DIR}/cpp/cpp_consumer_static)

set(ENV{PKG_CONFIG_PATH} ${prefix}/${LIBDIR}/pkgconfig)
run(${CMAKE_COMMAND} -S ${CMAKE_CURRENT_LIST_DIR}/c -B ${WORK_DIR}/c ${common} -DCMAKE_C_COMPILER=${C_COMPILER})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/c)
run(${WORK_DIR}/c/c_consumer_shared)
run(${WORK_DIR}/c/c_consumer_static)

# Each executable must have linked the library it was meant to: libconvgemm.so.0 exactly when shared.
foreach(program cpp/cpp_consumer_shared cpp/cpp_consumer_static c/c_consumer_shared c/c_consumer_static)
  run(readelf -d ${WORK_DIR}/${program})
  string(FIND "${run_output}" "[libconvgemm.so.0]" position)
  set(needs_shared_library FALSE)
  if(NOT position EQUAL -1)
    set(needs_shared_library TRUE)
  endif()
  set(meant_shared FALSE)
  if(program MATCHES "_shared$")
    set(meant_shared TRUE)
  endif()
  if(NOT needs_shared_library STREQUAL meant_shared)
    message(FATAL_ERROR "${program}: NEEDED libconvgemm.so.0 is ${needs_shared_library}\n${run_output}")
  endif()
endforeach()

# The plain command line a C user types, run with the library found through LD_LIBRARY_PATH.
run(pkg-config --cflags --libs convgemm)
separate_arguments(pkg_flags UNIX_COMMAND "${run_output}")
separate_arguments(sanitize UNIX_COMMAND "${SANITIZE_FLAGS}")
run(${C_COMPILER} -std=c99 -pedantic-errors -Wall -Wextra -Werror ${sanitize} ${CMAKE_CURRENT_LIST_DIR}/c/main.c
    ${pkg_flags} -lm -o ${WORK_DIR}/c_plain)
run(${CMAKE_COMMAND} -E env LD_LIBRARY_PATH=${prefix}/${LIBDIR} ${WORK_DIR}/c_plain)
