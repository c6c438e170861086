#!/usr/bin/env bash
# Run on the GPU machine (device tool, `carry: [".device"]`, after scripts/device-prepare.sh
# here): builds memcnn against that machine's PyTorch (LibTorch 2.x with CUDA), runs the whole
# test suite (the CUDA tests too), pip-installs the Python package and runs its tests, the
# benchmark on the GPU and a short CUDA training run.
# What it prints goes to at most 7 files under $OUT (default ./device-out; the device tool
# returns 8 at most) and a summary per stage to stdout. Stages after the build run on even when
# one of them fails.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/device-out}
deps=$root/.device/root
build=${BUILD_DIR:-$root/build-device}
jobs=${JOBS:-$(nproc)}
mkdir -p "$out"
cd "$root"

stage() {  # stage NAME LOG COMMAND...: runs it, appending to $out/LOG, and prints a summary
  local name=$1 log=$out/$2; shift 2
  local started=$SECONDS
  echo "===== $name: $*" >> "$log"
  "$@" >> "$log" 2>&1
  local rc=$?
  echo "[$name] rc=$rc in $((SECONDS - started)) s; last lines of $(basename "$log"):"
  tail -n 4 "$log" | sed 's/^/    /'
  return $rc
}

[ -d "$deps/usr" ] || { echo "no $deps: run scripts/device-prepare.sh here first and carry .device"; exit 2; }

# TORCH_PREFIX (a LibTorch's CMake prefix) replaces python3's PyTorch, for a dry run elsewhere.
environment() {
  if [ -z "${TORCH_PREFIX:-}" ]; then
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'cxx11_abi', torch._C._GLIBCXX_USE_CXX11_ABI, 'device', torch.cuda.get_device_name(0))" || return 1
    python3 -c "import torch, sys; sys.exit(0 if torch._C._GLIBCXX_USE_CXX11_ABI else 1)" ||
      { echo "this PyTorch uses the old C++ ABI; Debian's GoogleTest cannot link with it"; return 1; }
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  command -v nvcc && nvcc --version | tail -n 2
  cmake --version | head -n 1; command -v ninja; g++ --version | head -n 1
  echo "curl headers: $(ls /usr/include/curl/curl.h /usr/include/*/curl/curl.h 2>/dev/null | head -n 1)"
  return 0
}
stage environment build.log environment || exit 1

# Tests and the training run read Fashion-MNIST where Debian installs it.
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  mkdir -p /usr/share/datasets && cp -r "$deps/usr/share/datasets/fashion-mnist" /usr/share/datasets/
fi

torch_prefix=${TORCH_PREFIX:-$(python3 -c "import torch; print(torch.utils.cmake_prefix_path)")}
curl_header=$(ls /usr/include/curl/curl.h /usr/include/*/curl/curl.h 2>/dev/null | head -n 1)
download=ON; [ -n "$curl_header" ] || download=OFF
generator=(); command -v ninja > /dev/null && generator=(-G Ninja)
cuda_root=(); [ -d /usr/local/cuda ] && cuda_root=(-DCUDAToolkit_ROOT=/usr/local/cuda)
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
stage configure build.log cmake -S "$root" -B "$build" "${generator[@]}" "${cuda_root[@]}" -DCMAKE_BUILD_TYPE=Release \
  "-DCMAKE_PREFIX_PATH=$deps/usr;$torch_prefix" "-DCMAKE_INCLUDE_PATH=$deps/usr/include" \
  "-DCMAKE_LIBRARY_PATH=$deps/usr/lib/x86_64-linux-gnu" -DMEMCNN_WITH_DOWNLOAD=$download \
  -DMEMCNN_BUILD_PYTHON=OFF || exit 1   # the Python package is built by pip below, as its users build it
grep -E "^(TORCH_CXX_FLAGS|Torch_DIR|GTest_DIR|CLI11_DIR|nlohmann_json_DIR|ZLIB_LIBRARY_RELEASE|MEMCNN_WITH_DOWNLOAD)" "$build/CMakeCache.txt" >> "$out/build.log"
echo "memcnn built with CUDA statistics: $(grep -rl MEMCNN_WITH_CUDA "$build" --include=build.ninja --include=flags.make | head -n 1)" >> "$out/build.log"
stage build build.log cmake --build "$build" -j "$jobs" || exit 1
# Several test programs at once, each with a few threads, rather than each with every core.
stage ctest ctest.log env OMP_NUM_THREADS=2 ctest --test-dir "$build" -j $(( jobs / 2 > 1 ? jobs / 2 : 1 )) --output-on-failure --timeout 600
# The Python package as its users install it: `pip install --no-build-isolation ./python` with this
# machine's python3, so memcnn._C is compiled by CMake against its PyTorch (2.x, CUDA); `pip wheel` too;
# then the package's tests (python/tests) and a memory-saving step on the GPU. Into a folder on
# PYTHONPATH (--target): this machine's python3 is itself a venv, whose torch a nested venv would not see.
python_package() {
  local site=/tmp/memcnn-site wheels=/tmp/memcnn-wheels
  rm -rf "$site" "$wheels"
  local started=$SECONDS
  MEMCNN_JOBS=$jobs MEMCNN_CMAKE_BUILD_DIR=$root/build-device-pip CMAKE_ARGS="${cuda_root[*]}" \
    python3 -m pip install --no-build-isolation --no-deps --target "$site" ./python || return 1
  echo "pip install --no-build-isolation ./python: $((SECONDS - started)) s"
  MEMCNN_JOBS=$jobs MEMCNN_CMAKE_BUILD_DIR=$root/build-device-pip CMAKE_ARGS="${cuda_root[*]}" \
    python3 -m pip wheel --no-build-isolation --no-deps -w "$wheels" ./python || return 1
  ls "$wheels"
  (cd /tmp && PYTHONPATH=$site python3 -c "
import torch, memcnn
print('memcnn', memcnn.__version__, 'from', memcnn.__file__, 'torch', torch.__version__)
x = torch.randn(8, 4, 16, 16, device='cuda', requires_grad=True)
w = memcnn.InvertibleModuleWrapper(memcnn.AdditiveCoupling(torch.nn.Conv2d(2, 2, 3, padding=1)).cuda())
h = x * 1.0
y = w(h)
assert memcnn.is_freed(h)
y.sum().backward()
print('a memory-saving step on', torch.cuda.get_device_name(0), 'ok')") || return 1
  (cd "$root" && PYTHONPATH=$site OMP_NUM_THREADS=2 python3 -m pytest -q -p no:cacheprovider python/tests)
}
if [ -z "${TORCH_PREFIX:-}" ]; then
  stage python-pip ctest.log python_package
fi
figures() {
  for program in tests/test_gradients tests/test_memory tests/test_cuda tests/test_wrapper tests/test_checkpoint tests/test_hardening tests/test_resampling models/test_models; do
    "$build/$program" --gtest_filter='*Cuda*' 2>&1 | grep -E '\[figure\]|FAILED|SKIPPED|PASSED'
  done
}
stage figures figures.log figures
stage bench bench.log "$build/bench/memcnn-bench" --cuda --batch 512 --output "$out/benchmarks-cuda.md"
stage bench-iunet bench.log "$build/bench/memcnn-bench" --cuda --sections iunet --iunet-size 64 --output "$out/benchmarks-iunet-cuda.md"
# Data-parallel on the GPU: NCCL with the one GPU there is (a job of one rank), to see it runs.
stage bench-nccl bench.log "$build/bench/memcnn-bench-distributed" --cuda --nproc 1 --batch 256 \
  --output "$out/benchmarks-nccl.md"
stage train train.log "$build/memcnn-train" revnet38 fashion-mnist --fresh --max-iterations "${TRAIN_ITERATIONS:-1000}" --results-dir /tmp/memcnn-train-cuda
cp /tmp/memcnn-train-cuda/revnet38_fashion-mnist/metrics.csv "$out/" 2>/dev/null
stage train-bfloat16 train.log "$build/memcnn-train" revnet38 fashion-mnist --fresh --autocast bfloat16 \
  --max-iterations "${TRAIN_ITERATIONS:-1000}" --results-dir /tmp/memcnn-train-cuda-bf16
echo "done; files in $out: $(ls "$out" | tr '\n' ' ')"
