# Shared by the command-line test scripts (sourced).

# wait_for_iteration LOG N PID: returns once memcnn-train's LOG shows iteration N, or once PID has
# ended, or after 3 minutes.
wait_for_iteration() {
  for _ in $(seq 1 900); do
    grep -q " it $2/" "$1" && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

# wait_for_text LOG REGEX PID: returns once LOG matches REGEX (grep), or once PID has ended, or
# after 3 minutes.
wait_for_text() {
  for _ in $(seq 1 900); do
    grep -q "$2" "$1" && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

fail() { echo "FAIL: $*"; exit 1; }
