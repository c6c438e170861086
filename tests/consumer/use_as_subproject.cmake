# Configures tests/consumer/subproject (memcnn through add_subdirectory), builds its one program
# and runs it with ctest there, which must find that program's test and none of memcnn's.
# Variables: SOURCE_DIR, WORK_DIR, and the enclosing build's BUILD_TYPE, SANITIZE, LAUNCHER,
# CXX_COMPILER, PREFIX_PATH, TORCH_DIR (the same compiler command lines let ccache answer).
file(REMOVE_RECURSE "${WORK_DIR}")
set(configure_args -DMEMCNN_SOURCE_DIR=${SOURCE_DIR} -DCMAKE_BUILD_TYPE=${BUILD_TYPE}
                   -DMEMCNN_SANITIZE=${SANITIZE} -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
if(LAUNCHER)
  list(APPEND configure_args -DCMAKE_CXX_COMPILER_LAUNCHER=${LAUNCHER})
endif()
if(PREFIX_PATH)
  list(APPEND configure_args "-DCMAKE_PREFIX_PATH=${PREFIX_PATH}")
endif()
if(TORCH_DIR)
  list(APPEND configure_args -DTorch_DIR=${TORCH_DIR})
endif()

function(run step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result)
  if(result)
    message(FATAL_ERROR "memcnn as a subproject: ${step} failed")
  endif()
endfunction()

run(configuring ${CMAKE_COMMAND} -S "${SOURCE_DIR}/tests/consumer/subproject" -B "${WORK_DIR}" ${configure_args})
run(building ${CMAKE_COMMAND} --build "${WORK_DIR}" --target consumer)
execute_process(COMMAND ${CMAKE_CTEST_COMMAND} -N WORKING_DIRECTORY "${WORK_DIR}" OUTPUT_VARIABLE listed)
if(NOT listed MATCHES "Total Tests: 1\n")
  message(FATAL_ERROR "memcnn as a subproject: the parent's ctest lists tests other than its own:\n${listed}")
endif()
execute_process(COMMAND ${CMAKE_CTEST_COMMAND} --output-on-failure WORKING_DIRECTORY "${WORK_DIR}" RESULT_VARIABLE result)
if(result)
  message(FATAL_ERROR "memcnn as a subproject: running the consumer failed")
endif()
message(STATUS "memcnn as a subproject: ok")
