#!/usr/bin/env bash
# Builds the documentation site, offline, into BUILD/docs/html (open BUILD/docs/html/index.html):
# Doxygen reads the public headers (an undocumented public symbol is an error), Sphinx renders the
# guides, tutorials (shown from examples/), command-line pages (the programs' own --help) and the
# C++ and Python API reference, with warnings as errors; then every link inside the site is checked.
#
#   scripts/docs.sh [BUILD_DIR]      BUILD_DIR: default $BUILD_DIR, else build/
#
# It needs the build's programs (memcnn-train, memcnn-bench, memcnn-bench-distributed) and Python
# package (BUILD/python/site): scripts/build.sh builds them. The tools come from Debian's packages
# (scripts/install-deps.sh): doxygen, python3-sphinx, python3-breathe, python3-myst-parser, furo,
# python3-sphinxcontrib.programoutput.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-${BUILD_DIR:-$root/build}}" && pwd)
out=$build/docs
python=/usr/bin/python3   # Debian's interpreter: the one with Sphinx and torch (another may be first on PATH)

fail() { echo "[docs] error: $*" >&2; exit 1; }

command -v doxygen >/dev/null || fail "doxygen is not installed: run scripts/install-deps.sh (or apt-get install doxygen)"
for module in sphinx breathe myst_parser furo sphinxcontrib.programoutput; do
  "$python" -c "import $module" 2>/dev/null ||
    fail "Python module $module is missing from $python: run scripts/install-deps.sh"
done
for program in memcnn-train memcnn-bench memcnn-bench-distributed; do
  [ -x "$build/$program" ] ||
    fail "$build/$program is not built (the command-line pages run it): cmake --build $build --target $program"
done
[ -d "$build/python/site/memcnn" ] ||
  fail "the Python package is not built in $build/python/site (the Python API pages import it): cmake --build $build"

echo "[docs] C++ API: Doxygen over the public headers"
rm -rf "$out/doxygen" && mkdir -p "$out/doxygen"
warnings=$out/doxygen-warnings.log
MEMCNN_SOURCE=$root MEMCNN_DOXYGEN_OUT=$out/doxygen MEMCNN_DOXYGEN_WARN=$warnings doxygen "$root/docs/Doxyfile"
if [ -s "$warnings" ]; then
  cat "$warnings" >&2
  fail "Doxygen: $(wc -l < "$warnings") warnings above (every public class, function and option needs a /// comment)"
fi
"$python" "$root/docs/tools/api_pages.py" --check
"$python" "$root/docs/tools/api_coverage.py" "$root" "$out/coverage" | tee "$out/api-coverage.txt"

echo "[docs] Python API: docstrings"
PYTHONPATH=$build/python/site "$python" "$root/python/tools/check_docstrings.py"

echo "[docs] Sphinx: the site (warnings are errors)"
rm -rf "$out/html"
PATH=$build:$PATH PYTHONPATH=$build/python/site PYTHONDONTWRITEBYTECODE=1 MEMCNN_DOXYGEN_XML=$out/doxygen/xml \
  "$python" -m sphinx -W --keep-going -q -b html -d "$out/doctrees" "$root/docs" "$out/html"

echo "[docs] links inside the site"
"$python" "$root/docs/tools/check_links.py" "$out/html"
echo "[docs] done: $(find "$out/html" -name '*.html' | wc -l) pages in $out/html (open $out/html/index.html)"
