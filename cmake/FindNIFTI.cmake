# find_package(NIFTI): nifticlib, NIfTI's reference C library, as the targets its own CMake package
# names: NIFTI::nifti2 (reads NIfTI-1 and NIfTI-2) on NIFTI::znz (its gzip-aware file layer).
#
# A find module rather than nifticlib's NIFTIConfig.cmake because Debian 12's copy of that file
# (libnifti2-dev 3.0.1-9) cannot be loaded: it points at /usr/lib/libznz.so.3.0.0 instead of the
# multiarch /usr/lib/x86_64-linux-gnu/ and at nifti_tool binaries from another package, so
# find_package stops with a FATAL_ERROR. When the targets already exist (a working NIFTIConfig
# loaded by the project), they are used as they are.
#
# Sets NIFTI_FOUND, NIFTI_INCLUDE_DIR, NIFTI_LIBRARY, NIFTI_ZNZ_LIBRARY.
if(TARGET NIFTI::nifti2 AND TARGET NIFTI::znz)
  set(NIFTI_FOUND TRUE)
  return()
endif()

find_path(NIFTI_INCLUDE_DIR nifti2_io.h PATH_SUFFIXES nifti)
find_library(NIFTI_LIBRARY nifti2)
find_library(NIFTI_ZNZ_LIBRARY znz)
find_package(ZLIB QUIET)

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(NIFTI
  REQUIRED_VARS NIFTI_LIBRARY NIFTI_ZNZ_LIBRARY NIFTI_INCLUDE_DIR ZLIB_FOUND
  REASON_FAILURE_MESSAGE "install nifticlib (Debian: apt-get install libnifti2-dev)")
mark_as_advanced(NIFTI_INCLUDE_DIR NIFTI_LIBRARY NIFTI_ZNZ_LIBRARY)

if(NIFTI_FOUND)
  if(NOT TARGET NIFTI::znz)
    add_library(NIFTI::znz UNKNOWN IMPORTED)
    # nifticlib is built with zlib (for .nii.gz): code that includes znzlib.h must see the same
    # struct znzptr, which has its gzFile member only under HAVE_ZLIB.
    set_target_properties(NIFTI::znz PROPERTIES
      IMPORTED_LOCATION "${NIFTI_ZNZ_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${NIFTI_INCLUDE_DIR}"
      INTERFACE_COMPILE_DEFINITIONS HAVE_ZLIB
      INTERFACE_LINK_LIBRARIES ZLIB::ZLIB)
  endif()
  if(NOT TARGET NIFTI::nifti2)
    add_library(NIFTI::nifti2 UNKNOWN IMPORTED)
    set_target_properties(NIFTI::nifti2 PROPERTIES
      IMPORTED_LOCATION "${NIFTI_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${NIFTI_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES "NIFTI::znz;m")
  endif()
endif()
