# Build time: a precompiled <torch/torch.h> for every C++ target of memcnn's directories, and the
# test programs at -O1 (below).
#
# Parsing LibTorch's headers is most of the time a translation unit takes here (about 12 s of a
# 15-20 s compile on one core); the build has about 170 of them. Two targets compile the header
# once, one for position-independent code (the libraries) and one for the programs (GCC refuses a
# precompiled header made under another -fpic/-fpie setting), and every other target reuses the
# one that matches (REUSE_FROM). A target whose flags differ in another way that matters gets no
# use of it: GCC then reads the headers as text, so the build stays correct, only slower.
#
# Off for clang (its precompiled headers are an error, not a fallback, when flags differ: the fuzz
# build) and with -DMEMCNN_PRECOMPILED_HEADERS=OFF.

if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  set(memcnn_pch_default ON)
else()
  set(memcnn_pch_default OFF)
endif()
option(MEMCNN_PRECOMPILED_HEADERS "Precompile <torch/torch.h> once and reuse it in every target (GCC)"
       ${memcnn_pch_default})

# The build-system targets defined in `directory` and below it.
function(memcnn_targets_below directory out)
  get_property(targets DIRECTORY ${directory} PROPERTY BUILDSYSTEM_TARGETS)
  get_property(subdirectories DIRECTORY ${directory} PROPERTY SUBDIRECTORIES)
  foreach(subdirectory ${subdirectories})
    memcnn_targets_below(${subdirectory} below)
    list(APPEND targets ${below})
  endforeach()
  set(${out} ${targets} PARENT_SCOPE)
endfunction()

# Whether `target` links LibTorch's `torch` target, directly or through targets it links (only
# those get LibTorch's include paths and definitions, which the precompiled header needs).
function(memcnn_links_torch target out)
  set(${out} OFF PARENT_SCOPE)
  get_target_property(aliased ${target} ALIASED_TARGET)
  if(aliased)
    set(target ${aliased})
  endif()
  if(target STREQUAL "torch")
    set(${out} ON PARENT_SCOPE)
    return()
  endif()
  get_target_property(imported ${target} IMPORTED)
  if(imported)
    return()
  endif()
  get_target_property(libraries ${target} LINK_LIBRARIES)
  foreach(library ${libraries})
    if(TARGET ${library})
      memcnn_links_torch(${library} found)
      if(found)
        set(${out} ON PARENT_SCOPE)
        return()
      endif()
    endif()
  endforeach()
endfunction()

# Call once, after every target exists.
function(memcnn_use_precompiled_headers)
  if(NOT MEMCNN_PRECOMPILED_HEADERS)
    return()
  endif()
  set(source ${PROJECT_SOURCE_DIR}/cmake/memcnn_pch.cpp)
  add_library(memcnn_pch_programs OBJECT ${source})
  add_library(memcnn_pch_pic OBJECT ${source})
  set_target_properties(memcnn_pch_pic PROPERTIES POSITION_INDEPENDENT_CODE ON)
  foreach(provider memcnn_pch_programs memcnn_pch_pic)
    target_link_libraries(${provider} PRIVATE torch)
    target_precompile_headers(${provider} PRIVATE <torch/torch.h>)
  endforeach()
  memcnn_targets_below(${PROJECT_SOURCE_DIR} targets)
  foreach(target ${targets})
    get_target_property(type ${target} TYPE)
    if(NOT type MATCHES "^(EXECUTABLE|STATIC_LIBRARY|SHARED_LIBRARY|MODULE_LIBRARY|OBJECT_LIBRARY)$"
       OR target MATCHES "^memcnn_pch_")
      continue()
    endif()
    memcnn_links_torch(${target} uses_torch)
    if(NOT uses_torch)
      continue()
    endif()
    get_target_property(pic ${target} POSITION_INDEPENDENT_CODE)
    if(pic OR type MATCHES "^(SHARED_LIBRARY|MODULE_LIBRARY)$")
      target_precompile_headers(${target} REUSE_FROM memcnn_pch_pic)
    else()
      target_precompile_headers(${target} REUSE_FROM memcnn_pch_programs)
    endif()
  endforeach()
endfunction()

# The test, example and fuzz-replay programs compile at -O1 in a Release build: their own code is
# a few calls into the libraries (compiled at -O3) and LibTorch, so -O3's inlining and
# vectorisation buy them nothing at run time, while -O1 saves about a third of each compile
# (tests/test_wrapper.cpp: 43 s against 65 s, two compiles at once). Floating-point semantics are
# the same at every level (no -ffast-math), so the tests check the same thing.
function(memcnn_compile_test_programs_lighter)
  memcnn_targets_below(${PROJECT_SOURCE_DIR} targets)
  foreach(target ${targets})
    get_target_property(type ${target} TYPE)
    if(type STREQUAL "EXECUTABLE" AND target MATCHES "^(test_|memcnn-example-|fuzz_|distributed_test_rank$)")
      target_compile_options(${target} PRIVATE $<$<CONFIG:Release>:-O1>)
    endif()
  endforeach()
endfunction()
