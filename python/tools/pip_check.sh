#!/usr/bin/env bash
# The pip route of the README, checked from nothing: python/tools/pip_check.sh WORK
#   1. a fresh virtual environment WORK/venv (--system-site-packages: it sees the system's torch),
#   2. `pip install --no-build-isolation ./python` into it (memcnn._C compiled by CMake against the
#      torch that venv imports, in a fresh CMake folder WORK/cmake; ccache keeps that to minutes),
#   3. `import memcnn` from another folder: the installed copy, a memory-saving training step,
#      `python -m memcnn.train --help`,
#   4. `pip wheel --no-build-isolation ./python` into WORK/wheels: one wheel with memcnn._C and the
#      experiments file.
# Prints the time of each step. PYTHON: the interpreter to start from (default python3).
# Extra arguments are passed to both pip commands (e.g. --quiet).
set -euo pipefail
python_dir=$(cd "$(dirname "$0")/.." && pwd)
root=$(dirname "$python_dir")
work=${1:?"usage: $0 WORK_DIR [pip arguments]"}
shift
python=${PYTHON:-python3}
rm -rf "$work" && mkdir -p "$work"
work=$(cd "$work" && pwd)
export MEMCNN_CMAKE_BUILD_DIR=$work/cmake
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

step() { echo "[pip-check] $1: $2 s"; }
started=$SECONDS
"$python" -m venv --system-site-packages "$work/venv"
step "venv" $((SECONDS - started))

started=$SECONDS
(cd "$root" && "$work/venv/bin/pip" install --no-build-isolation "$@" ./python)
step "pip install --no-build-isolation ./python" $((SECONDS - started))

started=$SECONDS
(cd "$work" && "$work/venv/bin/python" - <<'PY'
import os
import sys

import torch

import memcnn

location = os.path.realpath(memcnn.__file__)
assert location.startswith(os.path.realpath(sys.prefix)), "memcnn imported from {}, not the venv {}".format(
    location, sys.prefix)
coupling = memcnn.AdditiveCoupling(torch.nn.Conv2d(2, 2, 3, padding=1))
wrapper = memcnn.InvertibleModuleWrapper(coupling, keep_input=False)
x = torch.randn(2, 4, 8, 8, requires_grad=True)
inner = x * 1.0
y = wrapper(inner)
assert memcnn.is_freed(inner), "the wrapper did not free its input"
y.sum().backward()
assert x.grad is not None and torch.isfinite(x.grad).all()
from memcnn.models.resnet import ResNet, RevBasicBlock  # noqa: F401
from memcnn.config import Config
assert os.path.isfile(os.path.join(Config.get_dir(), "experiments.json"))
print("[pip-check] import memcnn {} from {} (torch {}): a memory-saving step works".format(
    memcnn.__version__, os.path.dirname(location), torch.__version__))
PY
)
(cd "$work" && "$work/venv/bin/python" -m memcnn.train --help > "$work/train-help.txt")
grep -q -- "--fresh" "$work/train-help.txt"
step "import memcnn and a step" $((SECONDS - started))

started=$SECONDS
(cd "$root" && "$work/venv/bin/pip" wheel --no-build-isolation --no-deps "$@" -w "$work/wheels" ./python)
step "pip wheel --no-build-isolation ./python" $((SECONDS - started))
wheels=("$work"/wheels/memcnn-*.whl)
[ ${#wheels[@]} -eq 1 ] && [ -f "${wheels[0]}" ] || { echo "[pip-check] expected one memcnn wheel in $work/wheels"; exit 1; }
"$work/venv/bin/python" - "${wheels[0]}" <<'PY'
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
for wanted in ("memcnn/_C.", "memcnn/config/experiments.json", "memcnn/models/resnet.py", "memcnn/train.py"):
    assert any(n.startswith(wanted) for n in names), "{} lacks {}".format(sys.argv[1], wanted)
print("[pip-check] wheel {} ({} files)".format(sys.argv[1].rsplit("/", 1)[-1], len(names)))
PY
echo "[pip-check] ok"
