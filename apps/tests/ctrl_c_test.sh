#!/usr/bin/env bash
# Ctrl-C during memcnn-train: it saves a checkpoint, exits with 130, and a rerun resumes there.
# Usage: ctrl_c_test.sh MEMCNN_TRAIN RESULTS_DIR
set -u
source "$(dirname "$0")/common.sh"
train=$1
results=$2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$train" revnet38 fashion-mnist --fresh --batch-size 20 --threads 1 --results-dir "$results" > "$log" 2>&1 &
pid=$!
wait_for_iteration "$log" 10 "$pid"
kill -INT "$pid"
wait "$pid"
status=$?
cat "$log"
[ "$status" -eq 130 ] || { echo "FAIL: exit status $status, expected 130"; exit 1; }
iteration=$(sed -n 's/.*interrupted at iteration \([0-9]*\).*/\1/p' "$log")
[ -n "$iteration" ] || { echo "FAIL: no 'interrupted at iteration' line"; exit 1; }
"$train" revnet38 fashion-mnist --batch-size 20 --threads 1 --max-iterations $((iteration + 2)) --results-dir "$results" > "$log" 2>&1
grep -q "resuming from the checkpoint at iteration $iteration" "$log" || { cat "$log"; echo "FAIL: no resume"; exit 1; }
echo "PASS: interrupted at $iteration, resumed there"
