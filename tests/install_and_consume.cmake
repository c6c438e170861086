# Installs the built memcnn into a scratch prefix, checks the programs are there, then builds and
# runs tests/consumer (the core and every component) against it with find_package(memcnn).
# Variables: BUILD_DIR, SOURCE_DIR, WORK_DIR; PROGRAMS: the programs the build installs.
file(REMOVE_RECURSE "${WORK_DIR}")
execute_process(COMMAND ${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${WORK_DIR}/prefix"
                RESULT_VARIABLE result)
if(result)
  message(FATAL_ERROR "install failed")
endif()
foreach(program IN LISTS PROGRAMS)
  if(NOT EXISTS "${WORK_DIR}/prefix/bin/${program}")
    message(FATAL_ERROR "${program} was not installed into bin/")
  endif()
endforeach()
# Components load in dependency order whatever order they are asked in, and `train` alone brings
# what it is built on (configure and generate only: a missing target fails generation).
foreach(ask "train;models;data;distributed" "train" "distributed;train;data" "data;models" "models;data;distributed;train")
  string(REPLACE ";" "_" name "${ask}")
  execute_process(COMMAND ${CMAKE_COMMAND} -S "${SOURCE_DIR}/tests/consumer/components" -B "${WORK_DIR}/components_${name}"
                          "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix" "-DMEMCNN_ASK=${ask}"
                  RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output)
  if(result)
    message(FATAL_ERROR "find_package(memcnn REQUIRED COMPONENTS ${ask}) failed:\n${output}")
  endif()
endforeach()
execute_process(COMMAND ${CMAKE_COMMAND} -S "${SOURCE_DIR}/tests/consumer" -B "${WORK_DIR}/build"
                        "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix" RESULT_VARIABLE result)
if(result)
  message(FATAL_ERROR "configuring the consumer with find_package(memcnn) failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build "${WORK_DIR}/build" RESULT_VARIABLE result)
if(result)
  message(FATAL_ERROR "building the consumer failed")
endif()
execute_process(COMMAND "${WORK_DIR}/build/consumer" RESULT_VARIABLE result)
if(result)
  message(FATAL_ERROR "the consumer program failed")
endif()
message(STATUS "find_package(memcnn) consumer built and ran")
