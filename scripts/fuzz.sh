#!/usr/bin/env bash
# Fuzzes memcnn's readers with libFuzzer under AddressSanitizer and UBSan (docs/fuzzing.md).
#   scripts/fuzz.sh                 # every target for 600 s, one after another
#   scripts/fuzz.sh nifti 60        # one target (nifti cifar_batch cifar_targz idx checkpoint
#                                   # experiments) for 60 s; "all" for every one
# Installs clang and its sanitizer and libFuzzer runtimes from Debian when missing, builds the
# targets with -DMEMCNN_FUZZ=ON into ./build-fuzz ($BUILD_DIR), and runs each on one core over
# its working corpus, build-fuzz/corpus/<target>, which starts from fuzz/corpus/<target> and
# fuzz/regressions/<target> and keeps what the fuzzer finds. Every input that crashed, leaked,
# hung (over $TIMEOUT s, default 20), went over the memory limits ($MALLOC_LIMIT_MB for one
# allocation, default 1024; $RSS_LIMIT_MB in all, default 2560) or tripped UBSan is copied to
# fuzz/regressions/<target>/, which the default ctest run replays; after a finding the target is
# restarted until its time is spent. Prints per target: executions, seconds, corpus, findings.
# Exit status 1 when anything was found. JOBS (build) is honoured.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${BUILD_DIR:-$root/build-fuzz}
jobs=${JOBS:-$(nproc)}
all_targets=(nifti cifar_batch cifar_targz idx checkpoint experiments torch_file)
which_target=${1:-all}
seconds=${2:-600}
timeout=${TIMEOUT:-20}
malloc_limit_mb=${MALLOC_LIMIT_MB:-1024}
rss_limit_mb=${RSS_LIMIT_MB:-2560}

if [ "$which_target" = all ]; then
  targets=("${all_targets[@]}")
elif [[ " ${all_targets[*]} " == *" $which_target "* ]]; then
  targets=("$which_target")
else
  echo "fuzz.sh: unknown target '$which_target'; targets: ${all_targets[*]} (or all)" >&2
  exit 2
fi
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "fuzz.sh: SECONDS must be a positive whole number, not '$seconds'" >&2
  exit 2
fi

# clang, its libFuzzer and sanitizer runtimes (libclang-rt-14-dev), and what memcnn builds with.
"$root/scripts/install-deps.sh"
compiler=""
for candidate in clang++-14 clang++; do
  if command -v "$candidate" >/dev/null; then compiler=$(command -v "$candidate"); break; fi
done
fuzzer_runtime=$(ls /usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a 2>/dev/null | head -n 1 || true)
if [ -z "$compiler" ] || [ -z "$fuzzer_runtime" ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "[fuzz] installing clang-14 and libclang-rt-14-dev"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q clang-14 libclang-rt-14-dev
  compiler=$(command -v clang++-14)
fi

cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$compiler" \
  -DMEMCNN_FUZZ=ON -DMEMCNN_BUILD_TESTS=OFF -DMEMCNN_BUILD_APPS=OFF -DMEMCNN_BUILD_BENCH=OFF \
  -DMEMCNN_BUILD_PYTHON=OFF -DMEMCNN_INSTALL=OFF >/dev/null
cmake --build "$build_dir" -j "$jobs" --target "${targets[@]/#/fuzz_}"

# Leaks are findings; LibTorch's own (none with Debian 12's 1.13) would go in the suppressions.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:check_initialization_order=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/scripts/sanitize-lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
# The targets' files go to a tmpfs folder of this run's own, removed at the end.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/memcnn-fuzz-XXXXXX")
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  rmdir "$scratch"
  scratch=$(mktemp -d /dev/shm/memcnn-fuzz-XXXXXX)
fi
trap 'rm -rf "$scratch"' EXIT
export MEMCNN_FUZZ_SCRATCH=$scratch

summary=()
found_any=0
for target in "${targets[@]}"; do
  corpus=$build_dir/corpus/$target
  findings=$build_dir/findings/$target
  regressions=$root/fuzz/regressions/$target
  mkdir -p "$corpus" "$findings" "$regressions"
  log=$build_dir/fuzz-$target.log
  : >"$log"
  echo "=== $target: fuzzing for $seconds s (log: $log)"
  executions=0
  found=()
  # The regression inputs are replayed first; after a finding the target restarts without them,
  # so that one still failing does not stop it again at once.
  seeds=("$root/fuzz/corpus/$target" "$regressions")
  start=$SECONDS
  while [ $((SECONDS - start)) -lt "$seconds" ]; do
    left=$((seconds - (SECONDS - start)))
    status=0
    "$build_dir/fuzz/fuzz_$target" "$corpus" "${seeds[@]}" \
      -max_total_time="$left" -timeout="$timeout" -malloc_limit_mb="$malloc_limit_mb" \
      -rss_limit_mb="$rss_limit_mb" -artifact_prefix="$findings/" -close_fd_mask=3 \
      -print_final_stats=1 >"$scratch/run.log" 2>&1 || status=$?
    # Executions of this run: libFuzzer's final count, or its last progress line after a finding.
    run=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$scratch/run.log" | tail -n 1 | grep -o '[0-9]*$' || true)
    [ -n "$run" ] || run=$(grep -o '^#[0-9]*' "$scratch/run.log" | tail -n 1 | tr -d '#' || true)
    executions=$((executions + ${run:-0}))
    cat "$scratch/run.log" >>"$log"
    echo "--- run ended (status $status, ${run:-0} executions)" >>"$log"
    if [ "$status" -eq 0 ]; then break; fi
    artifact=$(grep -o 'Test unit written to .*' "$scratch/run.log" | tail -n 1 | sed 's/^Test unit written to //' || true)
    if [ -z "$artifact" ] || [ ! -f "$artifact" ]; then
      echo "fuzz.sh: $target stopped (status $status) without leaving an input; see $log" >&2
      found+=("status-$status-without-input")
      break
    fi
    name=$(basename "$artifact")
    if [ -f "$regressions/$name" ]; then
      found+=("$name (a regression input, failing again)")
    else
      cp "$artifact" "$regressions/$name"
      found+=("$name")
    fi
    seeds=("$root/fuzz/corpus/$target")
  done
  elapsed=$((SECONDS - start))
  inputs=$(find "$corpus" -type f | wc -l)
  kib=$(du -sk "$corpus" | cut -f1)
  line="$target: $executions executions in $elapsed s, corpus $inputs inputs ($kib KiB), ${#found[@]} findings"
  [ ${#found[@]} -eq 0 ] || line+=" (${found[*]}; copied to fuzz/regressions/$target/)"
  [ ${#found[@]} -eq 0 ] || found_any=1
  echo "=== $line"
  summary+=("$line")
done
echo "fuzz summary ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)):"
printf '  %s\n' "${summary[@]}"
exit $found_any
