#!/usr/bin/env bash
# Installs the Python package memcnn with pip (python/pyproject.toml: memcnn._C is compiled by CMake
# against the torch that the installing interpreter imports), after the Debian packages it needs:
#   python/install.sh               for the current user (pip install --user; Debian marks its python3
#                                   "externally managed", so this passes --break-system-packages: only
#                                   memcnn is installed, its dependencies torch and numpy are Debian's)
#   python/install.sh --venv DIR    into a virtual environment DIR (created with --system-site-packages,
#                                   so it sees Debian's torch)
# The same by hand: docs/getting-started.md, "pip install". Honours PYTHON (default /usr/bin/python3) and
# JOBS (parallel compile jobs).
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
export MEMCNN_JOBS=${JOBS:-${MEMCNN_JOBS:-$(nproc)}}

if [ -n "$venv" ]; then
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv --system-site-packages "$venv"
  fi
  python="$venv/bin/python"
  "$python" -m pip install --no-build-isolation "$root/python"
else
  "$python" -m pip install --user --break-system-packages --no-build-isolation "$root/python"
fi
(cd / && "$python" -c "import memcnn, sys; print('[install] memcnn', memcnn.__version__, 'for', sys.executable, 'in', memcnn.__path__[0])")
