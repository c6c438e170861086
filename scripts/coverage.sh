#!/usr/bin/env bash
# Line and branch coverage of the test suite, per component. Configures a build of its own
# (./build-coverage, or $BUILD_DIR) compiled by gcc with --coverage at -O0, builds it, runs ctest
# (every test unless told otherwise), then has gcovr (Debian's gcovr, installed when missing) read
# the counters and prints, per component, lines and branches covered of the total:
#   core                 src/, include/memcnn/
#   data                 data/src/, data/include/
#   models               models/src/, models/include/
#   train                train/src/, train/include/, apps/ (memcnn-train and the examples)
#   distributed          distributed/src/, distributed/include/
#   python bindings      python/src/ (the extension memcnn._C, counted while pytest imports it)
#   bench                bench/ (memcnn-bench, run by the bench_*_smoke tests)
# Test code (tests/, */tests/), generated files, system headers and LibTorch are left out.
#
#   scripts/coverage.sh                      # everything: about 1 h 30 on 2 cores (see docs/coverage.md)
#   scripts/coverage.sh -R 'Readers|Loader'  # arguments go to ctest: a part of the suite
#   COVERAGE_TARGETS="memcnn_data test_data" scripts/coverage.sh -R '^(Readers|Nifti)'
#                                            # build only these targets (the default builds all)
#
# Reports, in $BUILD_DIR/coverage/: index.html (per file, with every line and branch: the place to
# find what is not covered), summary.json (the figures per file) and coverage.txt (lines per file,
# with the uncovered line numbers).
#
# Branches are gcc's, as gcov counts them, less two kinds that no test can or need take: the edges
# to exception handlers that every call which may throw carries (--exclude-throw-branches), and
# those gcc marks unreachable (--exclude-unreachable-branches). The branch figure is still the
# noisier one: an `a && b` or a destructor's cleanup path counts too.
#
# Nothing is excluded by marker. The code that only a GPU runs is compiled only with CUDA
# (#ifdef MEMCNN_WITH_CUDA, in src/memory.cpp): a CPU build does not count it. Elsewhere the CUDA
# case is one line (`device.is_cuda() ? ... : ...`) that runs either way, so it shows as a branch
# not taken, not as a line.
#
# Counters from an earlier run are cleared first, so the figures are those of this run. BUILD_DIR,
# JOBS and COVERAGE_TARGETS are honoured; COVERAGE_REPORT_ONLY=1 only reports the counters the
# build folder holds (after running some tests by hand, say). ctest's failures are reported after
# the figures and make the exit status 1; the report is written either way.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${BUILD_DIR:-$root/build-coverage}
jobs=${JOBS:-$(nproc)}
report_dir=$build_dir/coverage

"$root/scripts/install-deps.sh"
if ! command -v gcovr >/dev/null; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "[coverage] installing gcovr"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q gcovr
fi
# -O0, so that every line of the source is a line of the program (an inlined or folded line would
# count as never run). Atomic counters: the data loader's and LibTorch's threads run our code at
# the same time, and plain counters then lose increments, which gcov shows as negative counts
# (gcovr stops at them). ccache stays on: with --coverage it hashes the build folder, so a cached
# object writes its counters into this build. The use_as_subproject and install_and_find_package
# tests are skipped (unless ctest's arguments hold an -E of their own): they configure and build
# other projects from the installed or copied sources, without these flags, which measures
# nothing and takes long.
configure_build_and_test() {
  cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Coverage \
    -DCMAKE_CXX_FLAGS_COVERAGE="-O0 --coverage -fprofile-update=atomic" \
    -DCMAKE_EXE_LINKER_FLAGS_COVERAGE="--coverage" \
    -DCMAKE_SHARED_LINKER_FLAGS_COVERAGE="--coverage" \
    -DCMAKE_MODULE_LINKER_FLAGS_COVERAGE="--coverage" \
    -DMEMCNN_SANITIZE=OFF
  if [ -n "${COVERAGE_TARGETS:-}" ]; then
    read -r -a targets <<<"$COVERAGE_TARGETS"
    cmake --build "$build_dir" -j "$jobs" --target "${targets[@]}"
  else
    cmake --build "$build_dir" -j "$jobs"
  fi

  find "$build_dir" -name '*.gcda' -delete
  local skip_build_tests=(-E '^(use_as_subproject|install_and_find_package)$')
  for argument in "$@"; do
    case $argument in -E | --exclude-regex | -E*) skip_build_tests=() ;; esac
  done
  local start=$SECONDS
  ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" "${skip_build_tests[@]}" "$@" || ctest_status=$?
  echo "[coverage] ctest took $((SECONDS - start)) s (exit status $ctest_status)"
}

ctest_status=0
if [ -z "${COVERAGE_REPORT_ONLY:-}" ]; then
  configure_build_and_test "$@"
fi

# gcov must be that of the compiler that wrote the counters.
compiler_file=$(ls "$build_dir"/CMakeFiles/*/CMakeCXXCompiler.cmake | head -n 1)
compiler_id=$(sed -n 's/^set(CMAKE_CXX_COMPILER_ID "\(.*\)")$/\1/p' "$compiler_file")
compiler_version=$(sed -n 's/^set(CMAKE_CXX_COMPILER_VERSION "\(.*\)")$/\1/p' "$compiler_file")
if [ "$compiler_id" != GNU ]; then
  echo "coverage: the compiler is $compiler_id; this script reads gcc's gcov counters (configure with CXX=g++)" >&2
  exit 2
fi
gcov_program=gcov
if command -v "gcov-${compiler_version%%.*}" >/dev/null; then gcov_program=gcov-${compiler_version%%.*}; fi

mkdir -p "$report_dir"
rm -f "$report_dir"/*.html "$report_dir"/*.css
cd "$root"
# Paths are matched relative to the source folder (the current directory). The counters name
# sources relative to the folder each file was compiled in (ccache's base_dir makes them so); gcovr
# finds that folder by walking up from each .gcda file, which it does only when the build folder is
# given as a search path, not as --object-directory.
gcovr --root "$root" --gcov-executable "$gcov_program" -j "$jobs" \
  --filter 'src/' --filter 'include/memcnn/' --filter '(data|models|train|distributed)/(src|include)/' \
  --filter 'apps/' --filter 'python/src/' --filter 'bench/' \
  --exclude '(.*/)?tests/' \
  --exclude-throw-branches --exclude-unreachable-branches \
  --html-details "$report_dir/index.html" --json-summary-pretty --json-summary "$report_dir/summary.json" \
  --txt "$report_dir/coverage.txt" "$build_dir"

python3 - "$report_dir/summary.json" <<'PYTHON'
import json
import re
import sys

COMPONENTS = [("core", r"(src|include/memcnn)/"), ("data", r"data/"), ("models", r"models/"),
              ("train", r"(train|apps)/"), ("distributed", r"distributed/"), ("python bindings", r"python/src/"),
              ("bench", r"bench/")]
totals = {name: [0, 0, 0, 0] for name, _ in COMPONENTS}
for entry in json.load(open(sys.argv[1]))["files"]:
    name = next(name for name, pattern in COMPONENTS if re.match(pattern, entry["filename"]))
    for i, key in enumerate(["line_covered", "line_total", "branch_covered", "branch_total"]):
        totals[name][i] += entry[key]


def ratio(covered, total):
    return "{:>6} / {:<6} {:>6}".format(covered, total, "{:.1f}%".format(100.0 * covered / total) if total else "-")


print("\n{:<16} {:>22}   {:>22}".format("component", "lines", "branches"))
for name, _ in COMPONENTS:
    lines_covered, lines, branches_covered, branches = totals[name]
    if lines:
        print("{:<16} {}   {}".format(name, ratio(lines_covered, lines), ratio(branches_covered, branches)))
sums = [sum(column) for column in zip(*totals.values())]
print("{:<16} {}   {}".format("all", ratio(sums[0], sums[1]), ratio(sums[2], sums[3])))
PYTHON
echo "branches: gcc's, less exception-handler edges and those gcc marks unreachable" \
     "(gcovr --exclude-throw-branches --exclude-unreachable-branches)"
echo "per file, with the lines not covered: $report_dir/coverage.txt; every line: $report_dir/index.html"
if [ "$ctest_status" -ne 0 ]; then
  echo "coverage: ctest failed (exit status $ctest_status); the figures are of the tests that ran" >&2
  exit 1
fi
