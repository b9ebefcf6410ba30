#!/usr/bin/env bash
# gpu_check.sh: the one prepared check for a GPU machine, made so that it can fail. In one call of at
# most 540 s on one H200 it runs:
#   info      lcm info: CUDA must be usable (a driver CUDA cannot use is a failure, with its reason)
#   tests     every GPU test binary (tests/gpu/test_*): CUDA ops against the CPU backend, a model step,
#             training against the CPU and determinism, generation, NCCL. A test may skip only when it
#             needs more GPUs than the machine has ("needs K GPU(s), N visible" with K > GPUs here).
#   collective  the one-rank NCCL test (test_nccl_shard: nccl_one_rank_collectives_run) must pass, so a
#             collective runs even on one GPU
#   memcheck, racecheck  compute-sanitizer on the op tests (test_cuda_ops), where the machine has it
#             (said so in the table where it does not)
#   train     the embedded default config (300 steps) on every GPU: it must have run on the GPUs, and
#             where nvidia-smi works metrics.jsonl must carry the NVML figures ("gpus")
#   bench     lcm bench on toy, medium and base_lcm_1_6b at data.max_tokens 7168 with
#             model.attention=cudnn and =native: it must run on the GPUs; its MFU is recorded, not judged
# Each check has a time budget (below; they sum to at most 540 s); a check over its budget fails. The
# table comes last; the exit status is 0 only when every check passed.
#
#   tools/gpu_check.sh --prepare   on a build machine: build for sm_90 into build/gpu (lcm, the GPU
#                                  tests) and put the runtime libraries a bare GPU image lacks
#                                  (iniparser, OpenBLAS and its Fortran runtime; gzip'ed) into
#                                  build/gpu/lib. Carry build/gpu to the GPU machine.
#   tools/gpu_check.sh --plan      print the checks and budgets; fails when they do not fit in 540 s
#   tools/gpu_check.sh             on the GPU machine: use build/gpu if it is there, else build in place
#
# Environment: OUT (where logs go; default ./gpu-check-out), GPU_CHECK_BUILD (default build/gpu),
# GPU_CHECK_BUDGET ("name=seconds,..." overriding budgets), GPU_CHECK_SANITIZER (the compute-sanitizer
# to use, or "none"; default: searched). tests/test_gpu_check.sh uses the last three.
# CUDA's own libraries (cuBLASLt, the runtime, NCCL) are taken from the GPU machine: its toolkit, or
# the nvidia-*-cu13 Python wheels (PyTorch's), found by searching; nothing is downloaded.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
BUILD=${GPU_CHECK_BUILD:-build/gpu}
ARCH=${CUDA_ARCH:-90}
LIMIT=540
MODELS="toy medium base_lcm_1_6b"
ATTENTIONS="cudnn native"

# ---- budgets (seconds) ------------------------------------------------------------------------------
declare -A BUDGET=(
  [info]=10
  [test_cuda_ops]=45 [test_cuda_model]=75 [test_cuda_generate]=30 [test_nccl_shard]=30
  [memcheck]=60 [racecheck]=45
  [train]=60
  [bench_toy]=15 [bench_medium]=20 [bench_base_lcm_1_6b]=45
)
IFS=',' read -r -a overrides <<<"${GPU_CHECK_BUDGET:-}"
for o in "${overrides[@]}"; do
  [ -n "$o" ] && BUDGET[${o%%=*}]=${o#*=}
done
# What the whole run may take: every budget once, each bench budget once per attention.
planned_total() {
  local t=0 k
  for k in "${!BUDGET[@]}"; do
    case $k in bench_*) t=$((t + BUDGET[$k] * $(wc -w <<<"$ATTENTIONS"))) ;; *) t=$((t + BUDGET[$k])) ;; esac
  done
  echo "$t"
}

if [ "${1:-}" = "--plan" ]; then
  for k in $(printf '%s\n' "${!BUDGET[@]}" | sort); do printf '%-22s %4d s\n' "$k" "${BUDGET[$k]}"; done
  total=$(planned_total)
  echo "total (bench budgets x $(wc -w <<<"$ATTENTIONS") attentions): $total s of $LIMIT s"
  [ "$total" -le "$LIMIT" ] || { echo "gpu_check: the budgets add up to $total s, over $LIMIT s"; exit 1; }
  exit 0
fi

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
[ $# -eq 0 ] || { echo "usage: tools/gpu_check.sh [--prepare | --plan]" >&2; exit 2; }

OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: >"$LOG"
say() { echo "$*" | tee -a "$LOG"; }
t_start=$(date +%s)

# ---- the table: one row per check ----------------------------------------------------------------
rows=()
failed=()
# row NAME RESULT SECONDS BUDGET DETAIL   (RESULT: PASS, FAIL or N/A)
row() {
  rows+=("$(printf '%-26s %-6s %5s %6s  %s' "$1" "$2" "$3" "$4" "$5")")
  [ "$2" = FAIL ] && failed+=("$1")
  say "-- $1: $2 ($3 s of $4) $5"
}
print_table() {
  local total=$(( $(date +%s) - t_start ))
  local over=""
  if [ "$total" -gt "$LIMIT" ]; then
    failed+=("total time")
    over=" (over $LIMIT s)"
  fi
  {
    echo
    echo "==== lcm GPU check, $(date -u +%Y-%m-%d), ${ngpu:-0} GPU(s): ${gpu_name:-none}, driver ${driver:-?}, ${total} s of ${LIMIT} s${over}"
    printf '%-26s %-6s %5s %6s  %s\n' check result s budget detail
    printf '%s\n' "${rows[@]}"
    if [ ${#failed[@]} -eq 0 ]; then echo "RESULT: PASS"
    else echo "RESULT: FAIL (${#failed[@]}: ${failed[*]})"
    fi
  } | tee -a "$LOG"
}
finish() {
  print_table
  [ ${#failed[@]} -eq 0 ]
  exit $?
}

# timed NAME CMD...: runs CMD within BUDGET[NAME]; sets rc (124: over its budget) and secs.
timed() {
  local name=$1
  shift
  local t0
  t0=$(date +%s)
  timeout -k 5 "${BUDGET[$name]}" "$@"
  rc=$?
  secs=$(( $(date +%s) - t0 ))
}

# ---- the binaries ---------------------------------------------------------------------------------
if [ ! -x "$BUILD/lcm" ]; then
  say "== no carried build: building in place (CUDA_ARCH=$ARCH)"
  make -j"$(nproc)" BUILD="$BUILD" CUDA=1 CUDA_ARCH="$ARCH" "$BUILD/lcm" gpu-tests >>"$LOG" 2>&1 ||
    { row build FAIL - - "the build failed (see $LOG)"; finish; }
fi
libdir=$(mktemp -d /tmp/lcm-gpu-libs.XXXXXX)
for gz in "$BUILD"/lib/*.gz; do [ -f "$gz" ] && gunzip -c "$gz" >"$libdir/$(basename "$gz" .gz)"; done
# CUDA 13 libraries: the toolkit's, or those of the NVIDIA wheels in any Python environment. cuDNN and
# NVRTC are opened at run time (model.attention), so ldd below does not see them: they are looked for too.
cuda_dirs=""
for lib in libcublasLt.so.13 libcudart.so.13 libnccl.so.2 libcudnn.so.9 libnvrtc.so.13; do
  dir=$(find /usr/local/cuda/lib64 /usr/local/cuda/targets /usr/lib/x86_64-linux-gnu /opt /usr/local/lib \
    -name "$lib*" -print 2>/dev/null | head -n 1 | xargs -r dirname)
  [ -n "$dir" ] && cuda_dirs="$cuda_dirs:$dir"
done
export LD_LIBRARY_PATH="$libdir$cuda_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
missing=$(ldd "$BUILD/lcm" 2>/dev/null | grep 'not found' || true)
if [ -n "$missing" ]; then
  row libraries FAIL - - "missing for $BUILD/lcm: $(echo "$missing" | awk '{print $1}' | tr '\n' ' ')"
  finish
fi
case $BUILD in /*) LCM="$BUILD/lcm" ;; *) LCM="$PWD/$BUILD/lcm" ;; esac

# ---- info: CUDA must be usable --------------------------------------------------------------------
ngpu_smi=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)
say "== lcm info"
timed info "$LCM" info >"$OUT/info.log" 2>&1
tee -a "$LOG" <"$OUT/info.log"
ngpu=$(sed -n 's/^GPUs: \([0-9][0-9]*\) visible.*/\1/p' "$OUT/info.log")
gpus_line=$(grep '^GPUs:' "$OUT/info.log" | head -n 1)
if [ "$rc" -eq 124 ]; then
  row info FAIL "$secs" "${BUDGET[info]}" "over its time"
  finish
elif [ -z "$ngpu" ]; then
  # nothing else can mean anything: stop here
  ngpu=0
  row info FAIL "$secs" "${BUDGET[info]}" "no usable GPU (nvidia-smi lists ${ngpu_smi}): ${gpus_line:-lcm info exited $rc}"
  finish
elif [ "$ngpu_smi" -gt 0 ] && [ "$ngpu" -ne "$ngpu_smi" ]; then
  row info FAIL "$secs" "${BUDGET[info]}" "lcm sees $ngpu GPU(s), nvidia-smi lists $ngpu_smi (CUDA_VISIBLE_DEVICES?)"
else
  row info PASS "$secs" "${BUDGET[info]}" "$ngpu GPU(s) visible"
fi

# ---- GPU tests --------------------------------------------------------------------------------------
# judge LOG NAME: one row from a test log; a skip passes only as "needs K GPU(s), N visible", K > ngpu.
judge() {
  local log=$1 name=$2 p f s bad_skips na
  p=$(grep -c '^PASS ' "$log"); f=$(grep -c '^FAIL ' "$log"); s=$(grep -c '^SKIP ' "$log")
  bad_skips=$(grep '^SKIP ' "$log" | awk -v g="$ngpu" '
    { if (match($0, /needs [0-9]+ GPU\(s\)/)) { k = substr($0, RSTART + 6, RLENGTH - 13) + 0; if (k > g) next }
      sub(/^SKIP /, ""); print }')
  na=$((s - $(printf '%s' "$bad_skips" | grep -c .)))
  local detail="$p passed, $f failed, $s skipped"
  [ "$na" -gt 0 ] && detail="$detail ($na need more GPUs than $ngpu)"
  if [ "$rc" -eq 124 ]; then
    row "$name" FAIL "$secs" "${BUDGET[$name]}" "over its time; $detail"
  elif [ "$f" -gt 0 ] || [ "$rc" -ne 0 ]; then
    row "$name" FAIL "$secs" "${BUDGET[$name]}" "$detail, exit $rc: $(grep '^FAIL ' "$log" | head -n 3 | tr '\n' ' ')"
    grep -v '^PASS ' "$log" | head -n 30 >>"$LOG"
  elif [ -n "$bad_skips" ]; then
    row "$name" FAIL "$secs" "${BUDGET[$name]}" "$detail; skipped on a GPU machine: $(echo "$bad_skips" | head -n 2 | tr '\n' ' ')"
  elif [ "$p" -eq 0 ]; then
    row "$name" FAIL "$secs" "${BUDGET[$name]}" "no test ran"
  else
    row "$name" PASS "$secs" "${BUDGET[$name]}" "$detail"
  fi
}

say "== GPU tests"
ran_tests=0
for t in "$BUILD"/tests/gpu/test_*; do
  if [ ! -x "$t" ] || [ "${t%.d}" != "$t" ]; then continue; fi
  name=$(basename "$t")
  [ -n "${BUDGET[$name]:-}" ] || BUDGET[$name]=30
  timed "$name" "$t" >"$OUT/$name.log" 2>&1
  judge "$OUT/$name.log" "$name"
  ran_tests=$((ran_tests + 1))
done
[ "$ran_tests" -gt 0 ] || row tests FAIL - - "no GPU test binary in $BUILD/tests/gpu"
if grep -q '^PASS nccl_one_rank_collectives_run' "$OUT/test_nccl_shard.log" 2>/dev/null; then
  row collective PASS - - "one-rank NCCL all-reduce, reduce-scatter, all-gather"
else
  row collective FAIL - - "nccl_one_rank_collectives_run did not pass: no collective ran"
fi

# ---- compute-sanitizer on the op tests ---------------------------------------------------------------
sanitizer=${GPU_CHECK_SANITIZER:-$(command -v compute-sanitizer ||
  find /usr/local/cuda*/bin -maxdepth 1 -name compute-sanitizer 2>/dev/null | head -n 1)}
[ "$sanitizer" = none ] && sanitizer=""
# The op tests, less the two that provoke a CUDA error on purpose (the sanitizer would rightly report it).
op_tests=$(grep -o '^TEST([a-z_0-9]*' tests/gpu/test_cuda_ops.c | sed 's/^TEST(//' |
  grep -v -e '^cuda_failed_op_is_reported_by_sync$' -e '^cuda_out_of_memory_is_reported_and_survived$' | tr '\n' ' ')
for tool in memcheck racecheck; do
  tests=$op_tests
  # racecheck looks for shared-memory hazards: in our kernels, not in cuBLASLt's (and it is slow there)
  [ "$tool" = racecheck ] && tests=$(tr ' ' '\n' <<<"$op_tests" | grep -v '^cuda_linear_matches_cpu$' | tr '\n' ' ')
  if [ -z "$sanitizer" ]; then
    row "$tool" N/A - "${BUDGET[$tool]}" "compute-sanitizer is not on this machine (PATH, /usr/local/cuda*/bin)"
    continue
  fi
  say "== compute-sanitizer --tool $tool"
  # --target-processes all: the test may re-exec itself to pick OpenBLAS kernels (blas_kernels.h)
  # shellcheck disable=SC2086 # tests is a list of test names
  timed "$tool" "$sanitizer" --tool "$tool" --error-exitcode 97 --target-processes all \
    "$BUILD/tests/gpu/test_cuda_ops" $tests \
    >"$OUT/$tool.log" 2>&1
  summary=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/$tool.log" | tail -n 1)
  if [ "$rc" -eq 124 ]; then
    row "$tool" FAIL "$secs" "${BUDGET[$tool]}" "over its time"
  elif [ "$rc" -ne 0 ] || ! grep -q '^PASS ' "$OUT/$tool.log"; then
    row "$tool" FAIL "$secs" "${BUDGET[$tool]}" "exit $rc: ${summary:-no summary} (see $tool.log)"
  else
    row "$tool" PASS "$secs" "${BUDGET[$tool]}" "$(grep -c '^PASS ' "$OUT/$tool.log") op tests; ${summary:-clean}"
  fi
done

# ---- the default config on every GPU ------------------------------------------------------------------
say "== train: the embedded default on all GPUs"
run=$(mktemp -d /tmp/lcm-gpu-run.XXXXXX)
timed train "$LCM" train trainer.output_dir="$run" trainer.plot=false >"$OUT/train.log" 2>&1
cp "$run/metrics.jsonl" "$OUT/metrics.jsonl" 2>/dev/null
devices=$(grep -m 1 'devices:' "$OUT/train.log" | sed 's/.*devices: *//')
valid=$(grep '^validation:' "$OUT/train.log" | sed 's/^validation: *//')
if [ "$rc" -eq 124 ]; then
  row train FAIL "$secs" "${BUDGET[train]}" "over its time"
elif [ "$rc" -ne 0 ]; then
  row train FAIL "$secs" "${BUDGET[train]}" "exit $rc: $(tail -n 1 "$OUT/train.log")"
elif ! grep -q 'devices: [0-9]* GPU' "$OUT/train.log"; then
  row train FAIL "$secs" "${BUDGET[train]}" "ran on the CPU: ${devices:-no devices line}"
elif [ "$ngpu_smi" -gt 0 ] && ! grep -q '"gpus":\[{' "$OUT/metrics.jsonl" 2>/dev/null; then
  row train FAIL "$secs" "${BUDGET[train]}" "no NVML figures in metrics.jsonl: $(grep -m 1 'GPU monitoring' "$OUT/train.log")"
else
  row train PASS "$secs" "${BUDGET[train]}" "$devices; ${valid:-no validation line}"
fi
rm -rf "$run"

# ---- benchmarks: MFU recorded, the device judged ----------------------------------------------------------
say "== bench"
for cfg in $MODELS; do
  for attn in $ATTENTIONS; do
    f="$OUT/bench_${cfg}_$attn.txt"
    timed "bench_$cfg" "$LCM" bench "conf/model/$cfg.ini" data.max_tokens=7168 bench.warmup_steps=2 bench.steps=5 \
      "model.attention=$attn" >"$f" 2>&1
    dev=$(sed -n 's/^bench: .*device[s]* (\(.*\))$/\1/p' "$f")
    step=$(awk '/step time/ {print $3}' "$f")
    mfu=$(awk '/^  MFU/ {print $2}' "$f")
    tf=$(awk '/TFLOP\/s achieved/ {print $(NF-2)}' "$f")
    mem=$(awk '/^  memory/ {print $2}' "$f")
    figures="MFU ${mfu:-?} | ${step:-?} s/step | ${tf:-?} TFLOP/s | ${mem:-?} GB | ${dev:-?}"
    if [ "$rc" -eq 124 ]; then
      row "bench $cfg $attn" FAIL "$secs" "${BUDGET[bench_$cfg]}" "over its time"
    elif [ "$rc" -ne 0 ]; then
      row "bench $cfg $attn" FAIL "$secs" "${BUDGET[bench_$cfg]}" "exit $rc: $(tail -n 1 "$f")"
    elif [ -z "$dev" ] || [[ "$dev" == CPU* ]]; then
      row "bench $cfg $attn" FAIL "$secs" "${BUDGET[bench_$cfg]}" "not on a GPU: $figures"
    elif [ -z "$mfu" ]; then
      row "bench $cfg $attn" PASS "$secs" "${BUDGET[bench_$cfg]}" "$figures (MFU: no peak known for this GPU; set bench.peak_tflops)"
    else
      row "bench $cfg $attn" PASS "$secs" "${BUDGET[bench_$cfg]}" "$figures"
    fi
  done
done

finish
