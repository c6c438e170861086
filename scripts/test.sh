#!/usr/bin/env bash
# One command for the test suite: installs dependencies, builds, runs the tests with ctest.
#
#   scripts/test.sh            every test but those labelled slow (a few minutes on 2 cores)
#   scripts/test.sh --all      all of them, the slow ones too (packaging, data-parallel failure drills)
#   scripts/test.sh -R Wrapper other arguments go to ctest
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
selection=(-LE slow)
if [ "${1:-}" = "--all" ]; then
  selection=()
  shift
fi
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
cd "${BUILD_DIR:-$root/build}"
ctest --output-on-failure -j "${JOBS:-$(nproc)}" "${selection[@]}" "$@"
