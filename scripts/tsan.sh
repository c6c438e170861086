#!/usr/bin/env bash
# ThreadSanitizer run of the concurrency suite (tests/test_concurrency.cpp: threads sharing one
# module): configures a build of its own (./build-tsan, or $BUILD_DIR) with -fsanitize=thread,
# builds the suites and runs each; any data race reported fails it. Not part of ctest's run: the
# instrumented core takes long to build (85 minutes with JOBS=1 on a busy 2-core machine).
#   scripts/tsan.sh                    # test_concurrency
#   scripts/tsan.sh test_concurrency test_wrapper
# BUILD_TYPE (default RelWithDebInfo) and JOBS are honoured.
#
# LibTorch, its OpenMP runtime and GoogleTest are not instrumented: TSan sees memcnn's own
# accesses (and the tensor handles LibTorch's headers inline into memcnn's code), not those inside
# LibTorch's kernels or its autograd engine. With LibTorch 1.13 that needs no suppressions; should
# a LibTorch or OpenMP version report races in its own frames only, list them in a file given by
# TSAN_OPTIONS=suppressions=FILE.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${BUILD_DIR:-$root/build-tsan}
jobs=${JOBS:-$(nproc)}

if [ $# -gt 0 ]; then
  suites=("$@")
else
  suites=(test_concurrency)
fi

# The suites' tests are listed when they run, not at build time (as in scripts/sanitize.sh).
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" \
  -DCMAKE_CXX_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread" \
  -DMEMCNN_BUILD_APPS=OFF -DMEMCNN_BUILD_BENCH=OFF -DMEMCNN_BUILD_PYTHON=OFF -DMEMCNN_INSTALL=OFF \
  -DCMAKE_GTEST_DISCOVER_TESTS_DISCOVERY_MODE=PRE_TEST
cmake --build "$build_dir" -j "$jobs" --target "${suites[@]}"

export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
source "$root/scripts/run-suites.sh"
run_suites tsan "races or failures" "$build_dir" "${suites[@]}"
