#!/usr/bin/env bash
# Installs every Debian 12 package memcnn needs to build, test and train.
# Safe to rerun: it only calls apt when something is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ccache
  libtorch-dev            # LibTorch 1.13 (CPU)
  libgtest-dev            # GoogleTest
  libbenchmark-dev        # Google Benchmark
  libcli11-dev            # command-line parsing
  nlohmann-json3-dev      # experiment configuration
  dataset-fashion-mnist   # training data that needs no download
  zlib1g-dev              # data: gzip'd IDX files and .tar.gz archives
  nettle-dev pkg-config   # data: MD5 of downloaded archives (nettle)
  libarchive-dev          # data: extracting CIFAR's .tar.gz archives
  libcurl4-openssl-dev    # data: CIFAR download (optional: -DMEMCNN_WITH_DOWNLOAD=OFF)
  libgloo-dev             # distributed: Gloo's headers, for c10d's ProcessGroupGloo
  python3 python3-dev     # python: Debian's interpreter (not another python3 first on PATH)
  python3-torch           # python: PyTorch 1.13 on the same LibTorch as libtorch-dev; ships torchrun
  pybind11-dev            # python: the extension module
  python3-pytest          # python: the package's tests
  python3-venv            # python: python/install.sh --venv DIR
  python3-pip python3-setuptools python3-wheel  # python: pip install ./python (offline, no build isolation)
  python3-torchvision     # python: MemCNN's test suite imports it (test_amp.py)
  libnifti2-dev           # data: NIfTI volumes through nifticlib (find_package(NIFTI))
  mricron-data            # data: real MRI volumes (/usr/share/mricron/templates) for the 3-D iUNet job
  librsvg2-bin            # tests: metrics.svg rendered to PNG (rsvg-convert)
  doxygen python3-sphinx python3-breathe python3-myst-parser furo python3-sphinxcontrib.programoutput  # docs: the site (scripts/docs.sh)
  chromium                # docs: the site opened in a real browser (headless) by its tests
  libopenblas0-openmp     # fast BLAS for LibTorch's matrix products (Debian's default, netlib's reference BLAS, made transformer steps 12x slower)
)

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "[install-deps] all packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "[install-deps] installing: ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
