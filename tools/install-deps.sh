#!/usr/bin/env bash
# install-deps.sh: install the Debian packages that building lcm needs, if any are missing.
#
#   tools/install-deps.sh            install what is missing (as root, or through sudo)
#   tools/install-deps.sh --check    only say what is missing; exit 1 if anything is
#
# Build needs: a C compiler, make, iniparser (configuration), OpenBLAS (CPU matmuls).
# The CUDA toolkit is not installed here: it comes from NVIDIA, and the CUDA backend is built only
# when the Makefile finds it.
set -u
packages=(libiniparser-dev libopenblas-dev)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v make >/dev/null 2>&1 || missing+=(make)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "missing packages: ${missing[*]}" >&2
  exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
  runner=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  runner=(sudo)
else
  echo "lcm needs these Debian packages: ${missing[*]}" >&2
  echo "install them with:  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! "${runner[@]}" apt-get install -y --no-install-recommends "${missing[@]}"; then
  "${runner[@]}" apt-get update && "${runner[@]}" apt-get install -y --no-install-recommends "${missing[@]}" || {
    echo "apt-get failed; install by hand: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  }
fi
