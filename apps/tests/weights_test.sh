#!/usr/bin/env bash
# memcnn-train's weight files (torch.save state dicts with the Python twin's names), on the
# checkpoint of train_cli_short_run (revnet38 on Fashion-MNIST, 4 iterations):
# --export-weights writes it; --evaluate --weights gives the checkpoint's own accuracy and, with
# --logits, the same logits as a second evaluation; --weights starts a new run (refused where
# checkpoints exist); --optimizer-state needs --weights; a foreign or another model's file is a
# clear error. Usage: weights_test.sh MEMCNN_TRAIN RESULTS_DIR(of the checkpoint) WORK_DIR
set -u
train=$1 results=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
run() { "$train" "$@" --threads 1 2>&1; }

out=$(run revnet38 fashion-mnist --results-dir "$results" --export-weights "$work/w.pt") || fail "export: $out"
echo "$out"
[[ "$out" == *"wrote 207 tensors of revnet38 at iteration 4"* ]] || fail "export did not report 207 tensors"

checkpoint=$(run revnet38 fashion-mnist --results-dir "$results" --evaluate) || fail "evaluate: $checkpoint"
from_file=$(run revnet38 fashion-mnist --results-dir "$work/none" --evaluate --weights "$work/w.pt" --logits "$work/l1.pt") ||
  fail "evaluate --weights: $from_file"
echo "$checkpoint"; echo "$from_file"
accuracy() { sed -n 's/.*test accuracy \([0-9.]*%\).*/\1/p' <<<"$1" | tail -n 1; }
[ -n "$(accuracy "$checkpoint")" ] && [ "$(accuracy "$checkpoint")" = "$(accuracy "$from_file")" ] ||
  fail "accuracy of the exported weights $(accuracy "$from_file") differs from the checkpoint's $(accuracy "$checkpoint")"
[[ "$from_file" == *"test logits [10000, 10] and labels"* ]] || fail "no logits written"

# A new run from the weights (fine-tuning), then the same again where its checkpoints now are.
out=$(run revnet38 fashion-mnist --results-dir "$work/tune" --weights "$work/w.pt" --max-iterations 1 --batch-size 50) ||
  fail "fine-tuning: $out"
[[ "$out" == *"weights: 207 tensors from"* && "$out" == *"done:"* ]] || fail "fine-tuning did not start from the weights: $out"
out=$(run revnet38 fashion-mnist --results-dir "$work/tune" --weights "$work/w.pt" --max-iterations 2 --batch-size 50) &&
  fail "fine-tuning over existing checkpoints was not refused"
[[ "$out" == *"holds checkpoints of an earlier run; add --fresh"* ]] || fail "unclear refusal: $out"

out=$(run revnet38 fashion-mnist --results-dir "$work/x" --optimizer-state "$work/w.pt") && fail "--optimizer-state alone was taken"
[[ "$out" == *"--optimizer-state requires --weights"* ]] || fail "unclear error for --optimizer-state alone: $out"
# The weights as an optimizer state: not an optimizer's state_dict.
out=$(run revnet38 fashion-mnist --results-dir "$work/y" --weights "$work/w.pt" --optimizer-state "$work/w.pt" --max-iterations 1) &&
  fail "weights taken as an optimizer state"
[[ "$out" == *"is not an optimizer's state_dict: it has no 'state'"* ]] || fail "unclear error for a foreign optimizer state: $out"

# Another model's weights, and a file that is no torch.save file.
out=$(run resnet32 fashion-mnist --results-dir "$work/none" --evaluate --weights "$work/w.pt") && fail "revnet38's weights taken by resnet32"
[[ "$out" == *"w.pt' does not match the module"*"missing keys"* ]] || fail "unclear error for another model's weights: $out"
echo "not a torch file" > "$work/text.pt"
out=$(run revnet38 fashion-mnist --results-dir "$work/none" --evaluate --weights "$work/text.pt") && fail "a text file was taken"
[[ "$out" == *"text.pt' as a torch.save file: it is not a zip archive"* ]] || fail "unclear error for a text file: $out"
echo "PASS: weights exported, evaluated, fine-tuned and refused where they should be"
