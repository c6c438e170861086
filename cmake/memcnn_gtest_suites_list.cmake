# Run by ctest (through a TEST_INCLUDE_FILES entry written by memcnn_add_gtest_suites): lists the
# program's suites and adds one test per suite. Inputs: MEMCNN_SUITES_PROGRAM, _TARGET, _TIMEOUT,
# _WORKING_DIRECTORY.
if(NOT EXISTS "${MEMCNN_SUITES_PROGRAM}")
  add_test("${MEMCNN_SUITES_TARGET}_NOT_BUILT" "${MEMCNN_SUITES_TARGET}_NOT_BUILT")
else()
  execute_process(COMMAND "${MEMCNN_SUITES_PROGRAM}" --gtest_list_tests
                  WORKING_DIRECTORY "${MEMCNN_SUITES_WORKING_DIRECTORY}"
                  OUTPUT_VARIABLE listing ERROR_VARIABLE listing_errors RESULT_VARIABLE listed TIMEOUT 120)
  if(NOT listed EQUAL 0)
    # A test that fails and says why, rather than a suite that silently disappears.
    add_test("${MEMCNN_SUITES_TARGET}_LIST_FAILED" "${CMAKE_COMMAND}" -E echo
             "${MEMCNN_SUITES_PROGRAM} --gtest_list_tests failed (${listed}): ${listing_errors}")
    set_tests_properties("${MEMCNN_SUITES_TARGET}_LIST_FAILED" PROPERTIES WILL_FAIL FALSE
                         FAIL_REGULAR_EXPRESSION "failed")
  else()
    string(REPLACE "\n" ";" lines "${listing}")
    foreach(line IN LISTS lines)
      # A suite's line: its name and a dot at the start, then maybe "  # TypeParam = ...".
      if(line MATCHES "^([A-Za-z_][A-Za-z0-9_/]*)\\.( .*)?$")
        set(suite "${CMAKE_MATCH_1}")
        # Named program/suite: two programs may hold suites of the same name.
        set(name "${MEMCNN_SUITES_TARGET}/${suite}")
        add_test("${name}" "${MEMCNN_SUITES_PROGRAM}" "--gtest_filter=${suite}.*")
        set_tests_properties("${name}" PROPERTIES
                             TIMEOUT "${MEMCNN_SUITES_TIMEOUT}"
                             WORKING_DIRECTORY "${MEMCNN_SUITES_WORKING_DIRECTORY}"
                             LABELS "gtest;${MEMCNN_SUITES_TARGET}"
                             SKIP_REGULAR_EXPRESSION "\\[  PASSED  \\] 0 tests")
      endif()
    endforeach()
  endif()
endif()
