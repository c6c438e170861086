#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer run of the core suites (the GoogleTest programs of
# tests/): configures a build of its own (./build-sanitize, or $BUILD_DIR) with -DMEMCNN_SANITIZE=ON,
# builds the suites and runs each; any finding (memory error, leak, undefined behaviour) fails it.
# Not part of ctest's run: the sanitized core and suites take long to build.
#   scripts/sanitize.sh                          # every suite of tests/
#   scripts/sanitize.sh test_memory test_wrapper # the ones named
# BUILD_TYPE (default RelWithDebInfo) and JOBS are honoured. Leaks of LibTorch itself, should a
# version have them, go in scripts/sanitize-lsan.supp. About 20 minutes on 2 cores, nearly all of
# it building.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${BUILD_DIR:-$root/build-sanitize}
jobs=${JOBS:-$(nproc)}

if [ $# -gt 0 ]; then
  suites=("$@")
else
  mapfile -t suites < <(cd "$root/tests" && ls test_*.cpp | sed 's/\.cpp$//')
fi

# The suites' tests are listed when they run, not at build time: listing runs the program, which
# the leak checker would fail before the suppressions below apply.
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" -DMEMCNN_SANITIZE=ON \
  -DMEMCNN_BUILD_APPS=OFF -DMEMCNN_BUILD_BENCH=OFF -DMEMCNN_BUILD_PYTHON=OFF \
  -DCMAKE_GTEST_DISCOVER_TESTS_DISCOVERY_MODE=PRE_TEST
cmake --build "$build_dir" -j "$jobs" --target "${suites[@]}"

export ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:check_initialization_order=1:strict_string_checks=1
export LSAN_OPTIONS=suppressions=$root/scripts/sanitize-lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
source "$root/scripts/run-suites.sh"
run_suites sanitize "findings or failures" "$build_dir" "${suites[@]}"
