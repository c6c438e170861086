#!/usr/bin/env bash
# The main job: installs dependencies, builds, trains RevNet-38 on Fashion-MNIST with the short
# schedule, and reports accuracy, time and activation memory beside ResNet-32's.
# Extra arguments go to memcnn-train (e.g. --fresh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
cd "$root"
"${BUILD_DIR:-$root/build}/memcnn-train" revnet38 fashion-mnist --results-dir "$root/results" "$@"
