#!/usr/bin/env bash
# gpu_check.sh: the one prepared check for a GPU machine. It runs, in one go:
#   1. lcm info (GPUs, driver, runtime, NCCL)
#   2. the GPU tests: every CUDA op against the CPU backend, a whole model step, a short training run
#      against the CPU's, determinism (tests/gpu/test_*.c)
#   3. the default config trained for 300 steps on every GPU it finds (through NCCL)
#   4. lcm bench on conf/model/toy.ini, medium.ini and base_lcm_1_6b.ini at data.max_tokens 7168
#   5. lcm generate --bench on toy and medium (generation with and without the KV cache)
# and prints a short table last. Logs go to $OUT (or ./gpu-check-out); it fits in about 5 minutes.
#
#   tools/gpu_check.sh --prepare   on a build machine: build for sm_90 into build/gpu and put the
#                                  runtime libraries a bare GPU image lacks (iniparser, OpenBLAS and its
#                                  Fortran runtime; gzip'ed) into build/gpu/lib
#   tools/gpu_check.sh             on the GPU machine: use build/gpu if it is there (carried), else
#                                  build in place (needs nvcc, NCCL headers, iniparser, OpenBLAS)
#
# CUDA's own libraries (cuBLASLt, the runtime, NCCL) are taken from the GPU machine: its toolkit, or
# the nvidia-*-cu13 Python wheels (PyTorch's), found by searching; nothing is downloaded.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=build/gpu
ARCH=${CUDA_ARCH:-90}
# For a rehearsal of the script itself on a machine without a GPU (everything then runs on the CPU):
# GPU_CHECK_MODELS="toy" GPU_CHECK_BENCH_ARGS="data.max_tokens=512 bench.steps=1" GPU_CHECK_TRAIN_ARGS=...
MODELS=${GPU_CHECK_MODELS:-toy medium base_lcm_1_6b}
BENCH_ARGS=${GPU_CHECK_BENCH_ARGS:-}
TRAIN_ARGS=${GPU_CHECK_TRAIN_ARGS:-}

if [ "${1:-}" = "--prepare" ]; then
  make -j"$(nproc)" BUILD="$BUILD" CUDA=1 CUDA_ARCH="$ARCH" "$BUILD/lcm" gpu-tests || exit 1
  mkdir -p "$BUILD/lib"
  for lib in libiniparser.so.1 libopenblas.so.0 libgfortran.so.5 libquadmath.so.0; do
    path=$(ldd "$BUILD/lcm" | awk -v l="$lib" '$1 == l {print $3}')
    [ -n "$path" ] || { echo "gpu_check: $lib is not a dependency of $BUILD/lcm (skipped)"; continue; }
    gzip -9 -c "$(readlink -f "$path")" >"$BUILD/lib/$lib.gz"
  done
  du -sh "$BUILD/lcm" "$BUILD/tests/gpu" "$BUILD/lib"
  echo "gpu_check: prepared $BUILD (carry it: run with carry=[\"$BUILD\"] and command tools/gpu_check.sh)"
  exit 0
fi

OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: >"$LOG"
say() { echo "$*" | tee -a "$LOG"; }
t_start=$(date +%s)

# ---- the binaries ---------------------------------------------------------------------------------
if [ ! -x "$BUILD/lcm" ]; then
  say "== no carried build: building in place (CUDA_ARCH=$ARCH)"
  make -j"$(nproc)" BUILD="$BUILD" CUDA=1 CUDA_ARCH="$ARCH" "$BUILD/lcm" gpu-tests >>"$LOG" 2>&1 ||
    { say "gpu_check: the build failed (see $LOG)"; tail -n 20 "$LOG"; exit 1; }
fi
libdir=/tmp/lcm-gpu-libs
mkdir -p "$libdir"
for gz in "$BUILD"/lib/*.gz; do [ -f "$gz" ] && gunzip -c "$gz" >"$libdir/$(basename "$gz" .gz)"; done
# CUDA 13 libraries: the toolkit's, or those of the NVIDIA wheels in any Python environment.
cuda_dirs=""
for lib in libcublasLt.so.13 libcudart.so.13 libnccl.so.2; do
  dir=$(find /usr/local/cuda/lib64 /usr/local/cuda/targets /usr/lib/x86_64-linux-gnu /opt /usr/local/lib \
    -name "$lib*" -print 2>/dev/null | head -n 1 | xargs -r dirname)
  [ -n "$dir" ] && cuda_dirs="$cuda_dirs:$dir"
done
export LD_LIBRARY_PATH="$libdir$cuda_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
missing=$(ldd "$BUILD/lcm" | grep 'not found' || true)
if [ -n "$missing" ]; then
  say "gpu_check: libraries missing for $BUILD/lcm:"
  say "$missing"
  exit 1
fi
LCM="$PWD/$BUILD/lcm"

# ---- 1. the machine -------------------------------------------------------------------------------
say "== lcm info"
"$LCM" info 2>&1 | tee -a "$LOG"
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)

# ---- 2. GPU tests -----------------------------------------------------------------------------------
say "== GPU tests"
tests_pass=0 tests_fail=0 tests_skip=0
for t in "$BUILD"/tests/gpu/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  timeout 240 "$t" >"$OUT/$name.log" 2>&1
  rc=$?
  p=$(grep -c '^PASS ' "$OUT/$name.log"); f=$(grep -c '^FAIL ' "$OUT/$name.log"); s=$(grep -c '^SKIP ' "$OUT/$name.log")
  [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  tests_pass=$((tests_pass + p)); tests_fail=$((tests_fail + f)); tests_skip=$((tests_skip + s))
  say "$name: $p passed, $f failed, $s skipped (exit $rc)"
  grep -E '^(FAIL|SKIP) ' "$OUT/$name.log" | tee -a "$LOG"
  [ "$f" -gt 0 ] && grep -v '^PASS ' "$OUT/$name.log" | head -n 30 | tee -a "$LOG"
done

# ---- 3. the default config, 300 steps, on every GPU ----------------------------------------------------
say "== train: the embedded default on all GPUs"
run=/tmp/lcm-gpu-run
rm -rf "$run"
t0=$(date +%s)
timeout 300 "$LCM" train trainer.output_dir="$run" trainer.plot=false $TRAIN_ARGS >"$OUT/train.log" 2>&1
train_rc=$?
train_s=$(( $(date +%s) - t0 ))
cp "$run/metrics.jsonl" "$OUT/metrics.jsonl" 2>/dev/null
grep -E 'devices:|validation at step|^done|checkpoint:' "$OUT/train.log" | tail -n 6 | tee -a "$LOG"
valid=$(grep '^validation:' "$OUT/train.log" | sed 's/^validation: *//')

# ---- 4. benchmarks ------------------------------------------------------------------------------------
say "== bench"
: >"$OUT/bench.log"
declare -A bench_line
for cfg in $MODELS; do
  timeout 240 "$LCM" bench "conf/model/$cfg.ini" data.max_tokens=7168 $BENCH_ARGS >"$OUT/bench_$cfg.txt" 2>&1
  rc=$?
  cat "$OUT/bench_$cfg.txt" >>"$OUT/bench.log"
  rm -f "$OUT/bench_$cfg.txt"
  step=$(grep -A12 "bench: conf/model/$cfg.ini" "$OUT/bench.log" | awk '/step time/ {print $3}')
  cps=$(grep -A12 "bench: conf/model/$cfg.ini" "$OUT/bench.log" | awk '/throughput/ {print $2}')
  tf=$(grep -A12 "bench: conf/model/$cfg.ini" "$OUT/bench.log" | awk '/TFLOP\/s achieved/ {print $(NF-2)}')
  mfu=$(grep -A12 "bench: conf/model/$cfg.ini" "$OUT/bench.log" | awk '/MFU/ {print $2}')
  mem=$(grep -A12 "bench: conf/model/$cfg.ini" "$OUT/bench.log" | awk '/memory/ {print $2}')
  bench_line[$cfg]="${step:-?} s/step | ${cps:-?} concepts/s | ${tf:-?} TFLOP/s | MFU ${mfu:-?} | ${mem:-?} GB (exit $rc)"
  say "$cfg: ${bench_line[$cfg]}"
  [ "$rc" -ne 0 ] && tail -n 3 "$OUT/bench.log" | tee -a "$LOG"
done

# ---- 5. generation speed with and without the KV cache (docs/performance.md, "Generation") --------------
say "== generate --bench"
for cfg in toy medium; do
  timeout 120 "$LCM" generate --bench "conf/model/$cfg.ini" trainer.devices=0 generate.batch_size=16 \
    generate.max_gen_len=128 --prompt-len 16 2>&1 | tee -a "$LOG" "$OUT/generate_bench.txt"
done

# ---- the table -----------------------------------------------------------------------------------------
total_s=$(( $(date +%s) - t_start ))
{
  echo
  echo "==== lcm GPU check ($(date -u +%Y-%m-%d), ${ngpu} GPU(s): $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1), ${total_s}s)"
  echo "GPU tests:      $tests_pass passed, $tests_fail failed, $tests_skip skipped"
  echo "train default:  exit $train_rc, ${train_s} s; ${valid:-no validation line}"
  for cfg in $MODELS; do printf 'bench %-13s %s\n' "$cfg:" "${bench_line[$cfg]}"; done
} | tee -a "$LOG"
[ "$tests_fail" -eq 0 ] && [ "$train_rc" -eq 0 ]
