# Sourced by scripts/sanitize.sh and scripts/tsan.sh: runs each GoogleTest suite of
# BUILD_DIR/tests one after another and reports which failed.
#   run_suites TOOL WHAT BUILD_DIR SUITE...
# prints "=== SUITE: clean (N s)" or "FAILED" per suite, then "TOOL: WHAT in: ..." and returns 1
# when any failed, else "TOOL: N suites clean".
run_suites() {
  local tool=$1 what=$2 build_dir=$3
  shift 3
  local failed=() suite start
  for suite in "$@"; do
    echo "=== $suite"
    start=$SECONDS
    if "$build_dir/tests/$suite"; then
      echo "=== $suite: clean ($((SECONDS - start)) s)"
    else
      echo "=== $suite: FAILED ($((SECONDS - start)) s)"
      failed+=("$suite")
    fi
  done
  if [ ${#failed[@]} -gt 0 ]; then
    echo "$tool: $what in: ${failed[*]}"
    return 1
  fi
  echo "$tool: $# suites clean"
}
