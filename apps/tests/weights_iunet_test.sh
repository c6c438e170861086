#!/usr/bin/env bash
# iunet3d's weight files, on train_cli_iunet3d's checkpoint: exported with the Python twin's names
# (memcnn.IUNet inside stem and head), evaluated from the file with the checkpoint's own Dice.
# Usage: weights_iunet_test.sh MEMCNN_TRAIN EXPERIMENTS_FILE RESULTS_DIR WORK_DIR
set -u
train=$1 experiments=$2 results=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
run() { "$train" iunet3d brain-extraction --experiments-file "$experiments" --threads 1 "$@" 2>&1; }
out=$(run --results-dir "$results" --export-weights "$work/w.pt") || fail "export: $out"
[[ "$out" =~ wrote\ [0-9]+\ tensors\ of\ iunet3d ]] || fail "export: $out"
checkpoint=$(run --results-dir "$results" --evaluate) || fail "evaluate: $checkpoint"
from_file=$(run --results-dir "$work/none" --evaluate --weights "$work/w.pt") || fail "evaluate --weights: $from_file"
echo "$checkpoint"; echo "$from_file"
dice() { grep -o "held-out Dice [0-9.]*, whole-volume Dice [0-9.]*" <<<"$1"; }
[ -n "$(dice "$checkpoint")" ] && [ "$(dice "$checkpoint")" = "$(dice "$from_file")" ] ||
  fail "the exported weights give '$(dice "$from_file")', the checkpoint '$(dice "$checkpoint")'"
echo "PASS: iunet3d weights exported and evaluated"
