#!/bin/sh
# test_no_fp64.sh: no CUDA kernel does fp64 arithmetic. Consumer GPUs run fp64 at 1/64 of the fp32
# rate (the RoPE kernel once cost ~100 ms a micro-batch there), so every kernel works in fp32 and any
# double-precision constant is computed on the host. Compiles each src/backend/cuda/*.cu to PTX and
# looks for .f64 instructions. Prints PASS/FAIL/SKIP lines; needs nvcc ($CUDA_HOME/bin/nvcc).
set -u
NVCC=${NVCC:-${CUDA_HOME:-/usr/local/cuda}/bin/nvcc}
if [ ! -x "$NVCC" ]; then
  echo "SKIP cuda_kernels_use_no_fp64: no nvcc at $NVCC (set CUDA_HOME)"
  exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcm-fp64-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
bad=""
for cu in src/backend/cuda/*.cu; do
  ptx="$tmp/$(basename "$cu" .cu).ptx"
  if ! "$NVCC" -std=c++17 -O3 -Iinclude -DLCM_WITH_CUDA=1 --expt-relaxed-constexpr -arch=compute_80 -ptx \
       -o "$ptx" "$cu" 2>"$tmp/err"; then
    echo "FAIL cuda_kernels_use_no_fp64"
    echo "  nvcc could not compile $cu to PTX:" >&2
    cat "$tmp/err" >&2
    exit 0
  fi
  n=$(grep -c '\.f64' "$ptx")
  [ "$n" -gt 0 ] && bad="$bad $cu ($n lines, e.g. $(grep -m1 '\.f64' "$ptx" | tr -s ' \t' ' '))"
done
if [ -z "$bad" ]; then echo "PASS cuda_kernels_use_no_fp64"; else
  echo "FAIL cuda_kernels_use_no_fp64"
  echo "  fp64 in PTX:$bad" >&2
fi
