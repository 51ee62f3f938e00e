#!/usr/bin/env bash
# Installs what dsckpt needs to build and test on a fresh Debian 12 machine (as root,
# or with sudo available): the C toolchain and libraries from Debian, and a Python
# virtual environment (.venv, in the checkout) with the official `safetensors`
# package and numpy, which the tests use as an independent reader of our outputs.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PKGS=(build-essential cmake pkg-config libzstd-dev libcjson-dev libssl-dev libcunit1-dev zlib1g-dev
      openmpi-bin libopenmpi-dev
      clang python3 python3-venv python3-pip
      libopenblas-dev # the training step's GEMMs (DSCKPT_BLAS, on when found)
      gcc-aarch64-linux-gnu libc6-dev-arm64-cross) # cross-compile check of the portable kernels (scripts/check_portable.sh)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python3 ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python3 -c "import safetensors, numpy" 2>/dev/null; then
  echo "setup: installing safetensors and numpy into .venv"
  .venv/bin/python3 -m pip install -q --disable-pip-version-check "safetensors>=0.4" numpy
fi
echo "setup: ok"
