# Configures tests/consumer/subproject (memcnn through add_subdirectory), builds its one program
# and runs it with ctest there, which must find that program's test and none of memcnn's.
# Variables: SOURCE_DIR, WORK_DIR, and the enclosing build's BUILD_DIR, BUILD_TYPE, SANITIZE,
# LAUNCHER, CXX_COMPILER, PREFIX_PATH, TORCH_DIR (the same compiler command lines).
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

# The core's objects from the enclosing build, when the subproject compiles the core with the same
# compiler, definitions, include paths and flags (its flags.make, as Makefile generators write it,
# equals the enclosing build's): the same sources compiled by the same command again cost a 2-core
# machine 7 minutes, and ccache cannot answer when its base_dir makes the paths relative to two
# different build folders. Otherwise, or with another generator, the core compiles here.
function(reuse_core_objects)
  set(built "${BUILD_DIR}/CMakeFiles/memcnn.dir")
  set(here "${WORK_DIR}/memcnn/CMakeFiles/memcnn.dir")
  if(NOT BUILD_DIR OR NOT EXISTS "${built}/flags.make" OR NOT EXISTS "${here}/flags.make")
    message(STATUS "memcnn as a subproject: no Makefile build of the core to compare with; compiling it")
    return()
  endif()
  # The precompiled header's path names each build's own folder; otherwise the flags must be equal.
  set(built_pch "${BUILD_DIR}/CMakeFiles/memcnn_pch_pic.dir")
  set(here_pch "${WORK_DIR}/memcnn/CMakeFiles/memcnn_pch_pic.dir")
  foreach(dir built here built_pch here_pch)
    set(${dir}_flags "")
    if(EXISTS "${${dir}}/flags.make")
      file(READ "${${dir}}/flags.make" ${dir}_flags)
    endif()
  endforeach()
  # and the comments that name each object relative to the top of its build.
  string(REPLACE "${BUILD_DIR}/" "${WORK_DIR}/memcnn/" built_flags "${built_flags}")
  string(REPLACE "${BUILD_DIR}/" "${WORK_DIR}/memcnn/" built_pch_flags "${built_pch_flags}")
  string(REPLACE "# PCH options: memcnn/" "# PCH options: " here_flags "${here_flags}")
  string(REPLACE "# PCH options: memcnn/" "# PCH options: " here_pch_flags "${here_pch_flags}")
  if(NOT built_flags STREQUAL here_flags OR NOT built_pch_flags STREQUAL here_pch_flags)
    message(STATUS "memcnn as a subproject: the core compiles with other flags here than in ${BUILD_DIR}; compiling it:\n"
                   "${built_flags}\n${here_flags}")
    return()
  endif()
  # The precompiled header first: the objects depend on it, so they must be newer.
  if(EXISTS "${built_pch}/cmake_pch.hxx.gch")
    file(GLOB_RECURSE pch_files RELATIVE "${built_pch}" "${built_pch}/*.gch" "${built_pch}/*.o")
    foreach(file IN LISTS pch_files)
      get_filename_component(folder "${here_pch}/${file}" DIRECTORY)
      file(COPY "${built_pch}/${file}" DESTINATION "${folder}")
      file(TOUCH "${here_pch}/${file}")
    endforeach()
  endif()
  file(GLOB_RECURSE objects RELATIVE "${built}" "${built}/*.o")
  foreach(object IN LISTS objects)
    get_filename_component(folder "${here}/${object}" DIRECTORY)
    # Not their dependency files: ccache writes those with paths relative to the enclosing build.
    file(COPY "${built}/${object}" DESTINATION "${folder}")
    # Newer than the rules configuring just wrote, so make takes them as built.
    file(TOUCH "${here}/${object}")
  endforeach()
  list(LENGTH objects count)
  message(STATUS "memcnn as a subproject: the core compiles with the enclosing build's flags; its ${count} objects reused")
endfunction()

run(configuring ${CMAKE_COMMAND} -S "${SOURCE_DIR}/tests/consumer/subproject" -B "${WORK_DIR}" ${configure_args})
reuse_core_objects()
execute_process(COMMAND ${CMAKE_COMMAND} --build "${WORK_DIR}" --target consumer RESULT_VARIABLE result
                OUTPUT_VARIABLE output ERROR_VARIABLE output)
message("${output}")
if(result)
  message(FATAL_ERROR "memcnn as a subproject: building failed")
endif()
string(REGEX MATCHALL "Building CXX object memcnn/" compiled "${output}")
list(LENGTH compiled compiled)
message(STATUS "memcnn as a subproject: ${compiled} of the core's sources compiled here")
execute_process(COMMAND ${CMAKE_CTEST_COMMAND} -N WORKING_DIRECTORY "${WORK_DIR}" OUTPUT_VARIABLE listed)
if(NOT listed MATCHES "Total Tests: 1\n")
  message(FATAL_ERROR "memcnn as a subproject: the parent's ctest lists tests other than its own:\n${listed}")
endif()
execute_process(COMMAND ${CMAKE_CTEST_COMMAND} --output-on-failure WORKING_DIRECTORY "${WORK_DIR}" RESULT_VARIABLE result)
if(result)
  message(FATAL_ERROR "memcnn as a subproject: running the consumer failed")
endif()
message(STATUS "memcnn as a subproject: ok")
