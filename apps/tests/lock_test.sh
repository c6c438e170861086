#!/usr/bin/env bash
# The same experiment started twice: the second memcnn-train stops at once, naming the folder and
# the running process; once the first is killed, a new run takes its lock over.
# Usage: lock_test.sh MEMCNN_TRAIN WORK_DIR
set -u
source "$(dirname "$0")/common.sh"
train=$1
work=$2
rm -rf "$work" && mkdir -p "$work"
common=(revnet38 fashion-mnist --batch-size 20 --threads 1 --results-dir "$work/results")
"$train" "${common[@]}" --fresh > "$work/first.log" 2>&1 &
first=$!
wait_for_iteration "$work/first.log" 10 "$first"
start=$(date +%s)
"$train" "${common[@]}" --fresh > "$work/second.log" 2>&1
status=$?
elapsed=$(( $(date +%s) - start ))
cat "$work/second.log"
kill -0 "$first" 2>/dev/null || fail "the first run stopped (it should still be training)"
[ "$status" -ne 0 ] || fail "the second run was allowed to start"
grep -q "the results folder .*revnet38_fashion-mnist is in use by another trainer (process $first" "$work/second.log" \
  || fail "the message does not name the folder and process $first"
[ "$elapsed" -le 60 ] || fail "the second run took $elapsed s to stop"
kill -KILL "$first"
wait "$first" 2>/dev/null
"$train" "${common[@]}" --max-iterations 2 --fresh > "$work/third.log" 2>&1 || { cat "$work/third.log"; fail "the run after the kill"; }
grep -q "took over .*revnet38_fashion-mnist.lock from process $first" "$work/third.log" || { cat "$work/third.log"; fail "stale lock not reported as taken over"; }
echo "PASS: second run refused in $elapsed s; the killed run's lock taken over"
