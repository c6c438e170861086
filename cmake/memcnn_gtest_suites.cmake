# memcnn_add_gtest_suites(TARGET [TIMEOUT seconds]): registers each GoogleTest *suite* of a test
# program as one ctest test (`program/Suite`, running `program --gtest_filter=Suite.*`), instead of one
# process per test case as gtest_discover_tests does. Every process loads LibTorch first (about
# half a second of a 2-core machine), which made 473 of 692 tests take longer to start than to
# run; a suite per process keeps ctest's parallelism and its names readable (a failure still names
# the case in the output: --output-on-failure) at a quarter of the start-ups.
# The suites are listed when ctest starts (program --gtest_list_tests), so sanitized and
# cross-built programs are not run at build time. A suite whose cases all skip (GTEST_SKIP, e.g.
# CUDA-only on a CPU machine) is reported as skipped.
set(MEMCNN_GTEST_SUITES_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/memcnn_gtest_suites_list.cmake)

function(memcnn_add_gtest_suites target)
  cmake_parse_arguments(ARG "" "TIMEOUT" "" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 600)
  endif()
  set(include_file "${CMAKE_CURRENT_BINARY_DIR}/${target}_suites.cmake")
  file(GENERATE OUTPUT "${include_file}" CONTENT
"set(MEMCNN_SUITES_PROGRAM [==[$<TARGET_FILE:${target}>]==])
set(MEMCNN_SUITES_TARGET [==[${target}]==])
set(MEMCNN_SUITES_TIMEOUT [==[${ARG_TIMEOUT}]==])
set(MEMCNN_SUITES_WORKING_DIRECTORY [==[${CMAKE_CURRENT_BINARY_DIR}]==])
include([==[${MEMCNN_GTEST_SUITES_SCRIPT}]==])
")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${include_file}")
endfunction()
