#!/usr/bin/env bash
# Fault soak of data-parallel training: a `memcnn-train --nproc 2` run that checkpoints every 2
# iterations is SIGKILLed again and again at random moments (one rank, the launcher, or the whole
# process group) and rerun with the same command each time. Every rerun must resume from a
# checkpoint, no process may outlive a kill by more than 5 s, and the finished run must reach the
# test accuracy of an uninterrupted 2-rank run. Ranks talk on 127.0.0.1 only.
#   scripts/fault-soak.sh [KILLS]        # default 20 kills; about 10 s each on 2 cores
# MEMCNN_TRAIN (default build/memcnn-train) and WORK_DIR (default a temporary folder) are honoured.
# Not part of ctest's run (minutes long); CLI tests cover the single cases.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
train=${MEMCNN_TRAIN:-$root/build/memcnn-train}
kills=${1:-20}
work=${WORK_DIR:-$(mktemp -d)}
[ -x "$train" ] || { echo "fault-soak: $train not found; build first (scripts/build.sh)"; exit 2; }
mkdir -p "$work"
experiments="$work/experiments.json"
cat > "$experiments" <<'JSON'
{
  "default": {"batch_size": 20, "max_iterations": 1000, "optimizer": {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.0002},
              "lr_milestones": [800], "lr_gamma": 0.1, "checkpoint_every": 2, "validate_every": 1000,
              "validation_batches": 2, "log_every": 1, "seed": 0, "loader_workers": 1},
  "fashion-mnist": {"base": "default", "dataset": "fashion-mnist", "num_classes": 10, "in_channels": 1},
  "revnet38": {"model": "revnet38", "model_options": {"layers": [1, 1, 1]}}
}
JSON
common=(revnet38 fashion-mnist --experiments-file "$experiments" --dist-timeout 20 --threads 1 --nproc 2)
source "$root/apps/tests/common.sh"  # fail, wait_for_text, wait_until_gone

accuracy_of() {  # results dir -> test accuracy of its checkpoint, evaluated by 2 ranks
  "$train" "${common[@]}" --results-dir "$1" --evaluate 2>&1 | sed -n 's/.*test accuracy \([0-9.]*\)%.*/\1/p'
}

# The processes of a run: the launcher (its own process group, so the group can be killed) and
# the ranks it started.
processes_of() { echo "$1 $(pgrep -P "$1" | tr '\n' ' ')"; }

echo "== reference: an uninterrupted 2-rank run"
"$train" "${common[@]}" --results-dir "$work/reference" --fresh > "$work/reference.log" 2>&1 || { cat "$work/reference.log"; fail "reference run"; }
reference=$(accuracy_of "$work/reference")
[ -n "$reference" ] || fail "no accuracy for the reference run"
echo "reference test accuracy: $reference%"

echo "== soak: $kills kills"
results="$work/soak"
fresh=(--fresh)
worst_ms=0
for k in $(seq 1 "$kills"); do
  setsid "$train" "${common[@]}" --results-dir "$results" "${fresh[@]}" > "$work/run.log" 2>&1 &
  launcher=$!
  fresh=()
  if [ "$k" -gt 1 ]; then
    wait_for_text "$work/run.log" "resuming from the checkpoint" "$launcher" || { cat "$work/run.log"; fail "rerun $k did not resume"; }
  fi
  wait_for_text "$work/run.log" " it [0-9]*/" "$launcher"
  sleep "$((RANDOM % 3)).$((RANDOM % 10))"
  if ! kill -0 "$launcher" 2>/dev/null; then
    grep -q "done:" "$work/run.log" && { echo "kill $k: the run finished first"; break; }
    cat "$work/run.log"; fail "run $k ended by itself without finishing"
  fi
  all=$(processes_of "$launcher")
  case $((RANDOM % 3)) in
    0) victim=$(pgrep -P "$launcher" | shuf -n 1); what="rank $victim"; kill -KILL "$victim" ;;
    1) what="launcher $launcher"; kill -KILL "$launcher" ;;
    2) what="process group $launcher"; kill -KILL -- "-$launcher" ;;
  esac
  start=$(date +%s%N)
  wait "$launcher" 2>/dev/null
  # A killed rank's peer stops at once; an orphaned rank within 3 s; the launcher kills a hung one
  # 10 s after the first failure: everything is gone well within 15 s.
  # shellcheck disable=SC2086
  wait_until_gone "$start" 15 $all || fail "kill $k ($what): processes still alive 15 s later: $all"
  [ "$gone_ms" -gt "$worst_ms" ] && worst_ms=$gone_ms
  last=$(sed -n 's/^\([0-9]*\),.*/\1/p' "$results/revnet38_fashion-mnist/metrics.csv" 2>/dev/null | tail -n 1)
  echo "kill $k: $what at iteration ${last:-0}; every process gone after ${gone_ms} ms"
done

echo "== finishing the soaked run"
"$train" "${common[@]}" --results-dir "$results" > "$work/final.log" 2>&1 || { cat "$work/final.log"; fail "the final rerun"; }
soaked=$(accuracy_of "$results")
echo "soaked run: test accuracy $soaked% (uninterrupted: $reference%); slowest shutdown after a kill ${worst_ms} ms"
[ "$soaked" = "$reference" ] || fail "the soaked run's accuracy $soaked% differs from the uninterrupted run's $reference%"
echo "PASS: $kills kills, every rerun resumed, accuracy $soaked% as uninterrupted"
