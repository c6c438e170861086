#!/usr/bin/env bash
# Builds the Python package memcnn (the extension memcnn._C over the C++ core) and installs it for
# Debian's python3 (which has python3-torch):
#   python/install.sh               into the user's site-packages (python3 -m site --user-site)
#   python/install.sh --venv DIR    into a virtual environment DIR (created with
#                                   --system-site-packages, so it sees Debian's torch)
# Then: python3 -c "import memcnn". Honours BUILD_DIR (default ./build), JOBS and PYTHON.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=""
case "${1:-}" in
  --venv) venv=${2:?"--venv needs a directory"} ;;
  "") ;;
  *) echo "usage: $0 [--venv DIR]" >&2; exit 2 ;;
esac

"$root/scripts/install-deps.sh"
python=${PYTHON:-/usr/bin/python3}
"$python" -c "import torch" 2>/dev/null || {
  echo "[install] $python cannot import torch; install Debian's python3-torch or set PYTHON" >&2; exit 1; }

build_dir=${BUILD_DIR:-$root/build}
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-Release} -DMEMCNN_BUILD_PYTHON=ON \
      -DPython3_EXECUTABLE="$python" >/dev/null
cmake --build "$build_dir" --target memcnn_python -j "${JOBS:-$(nproc)}"

if [ -n "$venv" ]; then
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv --help >/dev/null 2>&1 || {
      echo "[install] $python has no venv module: apt-get install python3-venv (or install without --venv)" >&2; exit 1; }
    "$python" -m venv --system-site-packages "$venv"
  fi
  python="$venv/bin/python"
  site=$("$python" -c "import sysconfig; print(sysconfig.get_paths()['platlib'])")
else
  site=$("$python" -c "import site; print(site.getusersitepackages())")
fi
mkdir -p "$site"
rm -rf "$site/memcnn"
cp -r "$build_dir/python/site/memcnn" "$site/memcnn"
find "$site/memcnn" -name __pycache__ -prune -exec rm -rf {} +
(cd / && "$python" -c "import memcnn, sys; print('[install] memcnn', memcnn.__version__, 'for', sys.executable, 'in', memcnn.__path__[0])")
