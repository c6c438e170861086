#!/usr/bin/env bash
# Run here, before a session on the GPU machine (which reaches no package registry): fetches the
# Debian packages the build needs beyond that machine's PyTorch and CUDA (GoogleTest, CLI11,
# nlohmann-json, zlib's and Gloo's headers) and Fashion-MNIST, unpacked under .device/root (git-ignored,
# about 35 MB). Pass `.device` in the device tool's `carry`; scripts/device-check.sh uses it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/.device
packages=(libgtest-dev libcli11-dev nlohmann-json3-dev zlib1g-dev libgloo-dev dataset-fashion-mnist)
rm -rf "$dest" && mkdir -p "$dest/debs" "$dest/root"
(cd "$dest/debs" && apt-get download "${packages[@]}")
for deb in "$dest"/debs/*.deb; do dpkg-deb -x "$deb" "$dest/root"; done
rm -rf "$dest/debs" "$dest/root/usr/share/doc" "$dest/root/usr/share/man"
# zlib: link against the GPU machine's own libz.so.1 (its Python needs one) rather than a copy.
lib=$dest/root/usr/lib/x86_64-linux-gnu
rm -f "$lib/libz.a" && ln -sf /usr/lib/x86_64-linux-gnu/libz.so.1 "$lib/libz.so"
# Gloo: only its headers (c10d's Gloo process group is compiled into LibTorch itself).
rm -f "$lib"/libgloo*
du -sh "$dest"
