# Shared by the command-line test scripts (sourced).

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

# wait_for_iteration LOG N PID: returns once memcnn-train's LOG shows iteration N (see wait_for_text).
wait_for_iteration() { wait_for_text "$1" " it $2/" "$3"; }

# wait_until_gone START_NS SECONDS PID...: returns once none of the processes is alive, or fails
# after SECONDS; sets gone_ms to the milliseconds since START_NS (date +%s%N).
wait_until_gone() {
  local start=$1 limit=$2 alive pid
  shift 2
  for _ in $(seq 1 $((limit * 20))); do
    alive=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && break
    sleep 0.05
  done
  gone_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  [ "$alive" -eq 0 ]
}

fail() { echo "FAIL: $*"; exit 1; }
