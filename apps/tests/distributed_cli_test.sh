#!/usr/bin/env bash
# memcnn-train data-parallel end to end, ranks on 127.0.0.1 only.
# Usage: distributed_cli_test.sh MEMCNN_TRAIN WORK_DIR MODE
#   resume    --nproc 2 trains and writes one set of results; resumes with 2 ranks, then with 1;
#             evaluation with 2 ranks gives the accuracy of one process
#   kill      killing one rank mid-run makes the other exit non-zero with a message within the
#             timeout; the run then resumes from its last checkpoint
#   interrupt SIGINT to the launcher: the ranks agree on an iteration, rank 0 checkpoints, all exit
#             130, and the run resumes there
#   orphan    SIGKILL to the launcher, 10 times: both ranks gone within 5 s each time, the rerun
#             resumes from the last checkpoint
#   hung      a rank stopped with SIGSTOP: the launcher exits non-zero within the timeout + 15 s
#   torchrun  the same program under `torchrun --no-python`; then the agent SIGKILLed: its ranks
#             are gone within 5 s (skipped where torchrun is missing)
set -u
source "$(dirname "$0")/common.sh"
train=$1
work=$2
mode=$3
rm -rf "$work"
mkdir -p "$work"
results="$work/results"
experiments="$work/experiments.json"
cat > "$experiments" <<'JSON'
{
  "default": {"batch_size": 20, "max_iterations": 1000, "optimizer": {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.0002},
              "lr_milestones": [500], "lr_gamma": 0.1, "checkpoint_every": 2, "validate_every": 1000,
              "validation_batches": 2, "log_every": 1, "seed": 0, "loader_workers": 1},
  "fashion-mnist": {"base": "default", "dataset": "fashion-mnist", "num_classes": 10, "in_channels": 1},
  "revnet38": {"model": "revnet38", "model_options": {"layers": [1, 1, 1]}}
}
JSON
# One thread per process: ctest runs other tests beside this one, and OpenMP threads that spin on
# oversubscribed cores can slow a step down tenfold.
common=(revnet38 fashion-mnist --experiments-file "$experiments" --results-dir "$results" --dist-timeout 20 --threads 1)
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Starts a fresh 2-rank run in the background (its launcher's pid in $launcher) and returns once
# it has logged iteration $1 (or stopped).
# Reruns the same 2-rank command for two iterations past the last one logged in metrics.csv; it
# must resume from a checkpoint and finish. $1 says after what, for the failure message.
resume_two_more() {
  local last
  last=$(sed -n 's/^\([0-9]*\),.*/\1/p' "$results/revnet38_fashion-mnist/metrics.csv" | tail -n 1)
  "$train" "${common[@]}" --nproc 2 --max-iterations $((last + 2)) > "$work/resume.log" 2>&1 || { cat "$work/resume.log"; fail "resume after $1"; }
  grep -q "resuming from the checkpoint at iteration" "$work/resume.log" || { cat "$work/resume.log"; fail "no resume after $1"; }
}

start_two_ranks_until() {
  "$train" "${common[@]}" --fresh --nproc 2 > "$work/run.log" 2>&1 &
  launcher=$!
  wait_for_iteration "$work/run.log" "$1" "$launcher"
}

case "$mode" in
resume)
  "$train" "${common[@]}" --fresh --nproc 2 --max-iterations 4 > "$work/run1.log" 2>&1 || { cat "$work/run1.log"; fail "2-rank run"; }
  cat "$work/run1.log"
  grep -q "batch 20 (2 ranks x 10, gloo)" "$work/run1.log" || fail "no world size in the header"
  grep -q "world 2  comm .* ms/it, waited" "$work/run1.log" || fail "no communication figures in the progress line"
  out="$results/revnet38_fashion-mnist"
  [ -f "$out/checkpoint.pt" ] && [ -f "$out/metrics.csv" ] && [ -f "$out/metrics.svg" ] || fail "results missing"
  [ "$(ls "$out" | grep -c tmp)" -eq 0 ] || fail "temporary files left in $out"
  [ "$(grep -c '^4,' "$out/metrics.csv")" -eq 1 ] || fail "metrics.csv does not have exactly one row for iteration 4 (two writers?)"
  "$train" "${common[@]}" --nproc 2 --max-iterations 6 > "$work/run2.log" 2>&1 || { cat "$work/run2.log"; fail "2-rank resume"; }
  grep -q "resuming from the checkpoint at iteration 4" "$work/run2.log" || { cat "$work/run2.log"; fail "2 ranks did not resume"; }
  "$train" "${common[@]}" --max-iterations 8 > "$work/run3.log" 2>&1 || { cat "$work/run3.log"; fail "1-process resume"; }
  grep -q "resuming from the checkpoint at iteration 6" "$work/run3.log" || { cat "$work/run3.log"; fail "1 process did not resume"; }
  "$train" "${common[@]}" --evaluate > "$work/eval1.log" 2>&1 || fail "evaluate"
  "$train" "${common[@]}" --evaluate --nproc 2 > "$work/eval2.log" 2>&1 || { cat "$work/eval2.log"; fail "2-rank evaluate"; }
  one=$(sed -n 's/.*test accuracy \([0-9.]*\)%.*/\1/p' "$work/eval1.log")
  two=$(sed -n 's/.*test accuracy \([0-9.]*\)% (2 ranks).*/\1/p' "$work/eval2.log")
  echo "test accuracy: 1 process $one%, 2 ranks $two%"
  [ -n "$one" ] && [ "$one" = "$two" ] || fail "evaluation differs: 1 process '$one', 2 ranks '$two'"
  echo "PASS: 2-rank training, resumed with 2 and 1 ranks, evaluation $one% both ways"
  ;;
kill)
  start_two_ranks_until 6
  ranks=$(pgrep -P "$launcher")
  [ "$(echo "$ranks" | wc -w)" -eq 2 ] || { cat "$work/run.log"; fail "expected 2 rank processes, found: $ranks"; }
  victim=$(echo "$ranks" | tail -n 1)
  start=$(date +%s)
  kill -KILL "$victim"
  wait "$launcher"
  status=$?
  elapsed=$(( $(date +%s) - start ))
  cat "$work/run.log"
  [ "$status" -ne 0 ] || fail "the launcher exited 0 after a rank was killed"
  grep -q "was killed by signal 9" "$work/run.log" || fail "the launcher did not say which rank was killed"
  grep -q "memcnn-train: rank [01] of 2: .* failed" "$work/run.log" || fail "the surviving rank gave no message"
  [ "$elapsed" -le 50 ] || fail "the surviving rank took $elapsed s to stop (timeout 20 s)"
  pgrep -P "$launcher" > /dev/null && fail "ranks left running"
  resume_two_more "the kill"
  echo "PASS: killed rank $victim; the other stopped with a message after $elapsed s; resumed"
  ;;
interrupt)
  start_two_ranks_until 5
  kill -INT "$launcher"  # as Ctrl-C would (a terminal signals every process of the job)
  wait "$launcher"
  status=$?
  cat "$work/run.log"
  [ "$status" -eq 130 ] || fail "exit status $status after SIGINT, expected 130"
  iteration=$(sed -n 's/.*interrupted at iteration \([0-9]*\).*/\1/p' "$work/run.log")
  [ -n "$iteration" ] || fail "no 'interrupted at iteration' line"
  "$train" "${common[@]}" --nproc 2 --max-iterations $((iteration + 2)) > "$work/resume.log" 2>&1 || { cat "$work/resume.log"; fail "resume"; }
  grep -q "resuming from the checkpoint at iteration $iteration" "$work/resume.log" || { cat "$work/resume.log"; fail "no resume at $iteration"; }
  echo "PASS: SIGINT stopped both ranks at iteration $iteration with a checkpoint; resumed there"
  ;;
orphan)
  # SIGKILL to the launcher (an OOM kill, a closed terminal): the ranks must not train on unseen,
  # holding the results lock. Each rerun of the same command resumes from the last checkpoint.
  tries=${ORPHAN_TRIES:-10}
  worst_ms=0
  for try in $(seq 1 "$tries"); do
    fresh=(); [ "$try" -eq 1 ] && fresh=(--fresh)
    "$train" "${common[@]}" "${fresh[@]}" --nproc 2 > "$work/run.log" 2>&1 &
    launcher=$!
    if [ "$try" -eq 1 ]; then
      wait_for_iteration "$work/run.log" 3 "$launcher" || { cat "$work/run.log"; fail "try 1: no iteration 3"; }
    else
      wait_for_text "$work/run.log" "resuming from the checkpoint" "$launcher" || { cat "$work/run.log"; fail "try $try did not resume"; }
      wait_for_text "$work/run.log" " it [0-9]*/" "$launcher" || { cat "$work/run.log"; fail "try $try: no iteration"; }
    fi
    sleep "0.$((RANDOM % 10))"  # some moment within a step
    ranks=$(pgrep -P "$launcher" | tr '\n' ' ')
    [ "$(echo $ranks | wc -w)" -eq 2 ] || { cat "$work/run.log"; fail "try $try: expected 2 ranks, found '$ranks'"; }
    kill -KILL "$launcher"
    start=$(date +%s%N)
    wait "$launcher" 2>/dev/null
    # shellcheck disable=SC2086
    wait_until_gone "$start" 7 $ranks || { cat "$work/run.log"; fail "try $try: ranks $ranks still alive 7 s after their launcher was killed"; }
    echo "try $try: both ranks gone ${gone_ms} ms after the launcher's SIGKILL"
    [ "$gone_ms" -gt "$worst_ms" ] && worst_ms=$gone_ms
  done
  [ "$worst_ms" -le 5000 ] || fail "ranks took up to $worst_ms ms to go (at most 5 s)"
  resume_two_more "$tries launcher kills"
  echo "PASS: launcher SIGKILLed $tries times; both ranks gone within $worst_ms ms every time; every rerun resumed and the last finished"
  ;;
hung)
  # A stopped rank (SIGSTOP: a stuck filesystem): the other times out after --dist-timeout T = 20 s,
  # and the launcher ends the stopped one after its grace: exit non-zero within T + 15 s.
  start_two_ranks_until 3
  victim=$(pgrep -P "$launcher" | tail -n 1)
  kill -STOP "$victim"
  start=$(date +%s)
  wait "$launcher"
  status=$?
  elapsed=$(( $(date +%s) - start ))
  cat "$work/run.log"
  [ "$status" -ne 0 ] || fail "the launcher exited 0 with a stopped rank"
  kill -0 "$victim" 2>/dev/null && { kill -KILL "$victim"; fail "the stopped rank was left behind"; }
  [ "$elapsed" -le 35 ] || fail "the launcher took $elapsed s to end (timeout 20 s + 15 s)"
  echo "PASS: a stopped rank; the launcher exited $status after $elapsed s (timeout 20 s)"
  ;;
torchrun)
  if ! command -v torchrun > /dev/null; then echo "SKIPPED: torchrun is not installed (Debian package python3-torch)"; exit 0; fi
  port=$(free_port)
  # Underscored options: torchrun 1.13 knows only these (2.x takes both spellings). Debian's 1.13
  # under Python 3.11 cannot parse its own defaults for --redirects/--tee ("0"), so they are given.
  torchrun --no_python --nnodes 1 --nproc_per_node 2 --master_addr 127.0.0.1 --master_port "$port" \
    --redirects 1 --tee 1 \
    "$train" "${common[@]}" --fresh --max-iterations 2 > "$work/run.log" 2>&1 || { cat "$work/run.log"; fail "torchrun"; }
  cat "$work/run.log"
  grep -q "(2 ranks x 10, gloo)" "$work/run.log" || fail "torchrun's ranks did not form one job"
  [ -f "$results/revnet38_fashion-mnist/checkpoint.pt" ] || fail "no checkpoint"
  # torchrun's agent SIGKILLed: its ranks stop by themselves (they watch their parent).
  port=$(free_port)
  torchrun --no_python --nnodes 1 --nproc_per_node 2 --master_addr 127.0.0.1 --master_port "$port" \
    --redirects 1 --tee 1 "$train" "${common[@]}" > "$work/agent.log" 2>&1 &
  agent=$!
  wait_for_text "$work/agent.log" " it [0-9]*/" "$agent" || { cat "$work/agent.log"; fail "torchrun's second run did not train"; }
  ranks=$(pgrep -P "$agent" | tr '\n' ' ')
  [ "$(echo $ranks | wc -w)" -eq 2 ] || { cat "$work/agent.log"; fail "expected 2 ranks under the agent, found '$ranks'"; }
  kill -KILL "$agent"
  start=$(date +%s%N)
  wait "$agent" 2>/dev/null
  # shellcheck disable=SC2086
  wait_until_gone "$start" 10 $ranks || { for pid in $ranks; do kill -KILL "$pid" 2>/dev/null; done; fail "torchrun's ranks outlived their agent by 10 s"; }
  [ "$gone_ms" -le 5000 ] || fail "torchrun's ranks took $gone_ms ms to go after their agent's SIGKILL"
  echo "PASS: torchrun --no-python --nproc-per-node 2; after the agent's SIGKILL its ranks were gone in $gone_ms ms"
  ;;
*) fail "unknown mode $mode" ;;
esac
