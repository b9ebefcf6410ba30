#!/usr/bin/env bash
# install-deps.sh: install the Debian packages that building lcm needs, if any are missing.
#
#   tools/install-deps.sh            install what is missing (as root, or through sudo)
#   tools/install-deps.sh --check    only say what is missing; exit 1 if anything is
#   tools/install-deps.sh --python   what the Python interop tests need (`make test` runs this):
#                                    Debian's python3-torch python3-numpy python3-matplotlib python3-venv,
#                                    and a .venv (over the system packages) with pyarrow<26, safetensors
#                                    and tensorboard from PyPI. An existing .venv is never changed.
#                                    Without root, prints the one command that does it; never fails.
#   tools/install-deps.sh --cudnn-frontend
#                                    the cuDNN frontend's headers (NVIDIA's header-only C++ API over cuDNN,
#                                    used by src/backend/cuda/cuda_cudnn.cpp for fused attention) from
#                                    the PyPI wheel nvidia-cudnn-frontend, unpacked into
#                                    build/cudnn-frontend/include, where the Makefile looks. Needs pip.
#
# Build needs: a C compiler, make, iniparser (configuration), OpenBLAS (CPU matmuls).
# The CUDA toolkit is not installed here: it comes from NVIDIA, and the CUDA backend is built only
# when the Makefile finds it.
set -u
# The frontend version cuda_cudnn.cpp is written and compiled against.
CUDNN_FRONTEND_VERSION=1.32.0
if [ "${1:-}" = "--cudnn-frontend" ]; then
  cd "$(dirname "$0")/.." || exit 1
  dest=build/cudnn-frontend
  [ -f "$dest/include/cudnn_frontend.h" ] && exit 0
  py=python3
  [ -x .venv/bin/python ] && py=.venv/bin/python
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcm-cudnn-fe-XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching the cuDNN frontend headers (nvidia-cudnn-frontend==$CUDNN_FRONTEND_VERSION) into $dest" >&2
  "$py" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "nvidia-cudnn-frontend==$CUDNN_FRONTEND_VERSION" ||
    { echo "pip download nvidia-cudnn-frontend failed: the build goes without cuDNN (make CUDNN=0)" >&2; exit 1; }
  # only the headers: the wheel's Python module is not used
  "$py" - "$tmp" "$dest" <<'PY' || { echo "unpacking the cuDNN frontend wheel failed" >&2; exit 1; }
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("include/")])
PY
  exit 0
fi
if [ "${1:-}" = "--python" ]; then
  cd "$(dirname "$0")/.." || exit 0
  py_packages=(python3-torch python3-numpy python3-matplotlib python3-venv)
  pip_line="'pyarrow<26' safetensors tensorboard"
  command -v dpkg-query >/dev/null 2>&1 || exit 0 # not Debian: the tests that need Python say SKIP
  need=()
  for p in "${py_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ] || [ ! -e .venv ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "make test: the Python interop tests will be skipped; to run them: sudo apt-get install -y ${py_packages[*]} &&" \
        "/usr/bin/python3 -m venv --system-site-packages .venv && .venv/bin/pip install $pip_line" >&2
      exit 0
    fi
    if [ ${#need[@]} -gt 0 ]; then
      echo "installing for the Python tests: ${need[*]}" >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; } ||
        echo "apt-get install ${need[*]} failed: the tests that need them will be skipped" >&2
    fi
    if [ ! -e .venv ]; then
      echo "creating .venv with $pip_line" >&2
      /usr/bin/python3 -m venv --system-site-packages .venv && .venv/bin/pip install -q 'pyarrow<26' safetensors tensorboard ||
        echo "pip install into .venv failed: the tests that need it will be skipped" >&2
    fi
  fi
  exit 0
fi
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
