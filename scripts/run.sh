#!/usr/bin/env bash
# The main job: installs dependencies, builds, and runs the README example in C++.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
"${BUILD_DIR:-$root/build}/memcnn-readme-example"
