#!/bin/sh
# test_mpi.sh: `lcm train` as several processes under mpirun (README "Several machines"), CPU workers:
#   - mpirun -np 2 ... trainer.devices=cpu:2 gives bit for bit the weights, moments and losses of
#     trainer.devices=cpu:4 in one process, unsharded and with trainer.shard=2;
#   - only process 0 writes (one log, one metrics file, one summary);
#   - a run stopped at a step and resumed under mpirun equals the uninterrupted one;
#   - SIGTERM to process 1 alone stops every process after the same step, with a checkpoint, and the
#     resumed run equals one that was never stopped (same max_steps, so the same schedule);
#   - a process killed (SIGKILL) or stopped (SIGSTOP, a hung node) ends the whole run within the
#     watchdog's timeout, with one line naming the process, node and ranks (the hang) or mpirun's
#     line naming the rank (the death); the last checkpoint still loads;
#   - a process stuck at start-up (an open() that never returns: tests/shim/hang_open.c) is named by
#     the others after trainer.hang_timeout_s, and the run ends;
#   - processes that disagree on the config or on the dataset stop with a message naming process 1.
# SKIP when this lcm was built without MPI or mpirun is missing. Prints PASS/FAIL/SKIP lines; needs
# $LCM_BIN.
set -u
LCM=${LCM_BIN:-build/lcm}
LCM=$(cd "$(dirname "$LCM")" && pwd)/$(basename "$LCM") # absolute: some processes start in other directories
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcm-mpi-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

check() {
  name=$1
  shift
  if "$@"; then echo "PASS $name"; else echo "FAIL $name"; fi
}

names="bitwise_equal_to_one_process bitwise_equal_sharded only_process_0_writes resume_across_processes
signal_to_one_process_stops_all killed_process_stops_the_run hung_process_is_named_by_the_watchdog
process_stuck_at_start_up_is_named config_disagreement_names_the_process dataset_disagreement_names_the_process"
if ! "$LCM" config keys >/dev/null 2>&1; then echo "FAIL test_mpi: $LCM does not run"; exit 1; fi
if ! command -v mpirun >/dev/null 2>&1; then
  for n in $names; do echo "SKIP $n: no mpirun in PATH (apt-get install openmpi-bin libopenmpi-dev)"; done
  exit 0
fi
# Built without MPI, lcm does not link libmpi (and refuses a launch of several processes: test_comm_mpi).
if ! ldd "$LCM" 2>/dev/null | grep -q 'libmpi\.'; then
  for n in $names; do echo "SKIP $n: this lcm was built without MPI (make MPI=1 with libopenmpi-dev)"; done
  exit 0
fi

# Root (CI) needs Open MPI's consent; more processes x threads than cores need --oversubscribe.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN="mpirun --oversubscribe"
# Under ASan: Open MPI keeps allocations to the end (its plugins are unloaded at MPI_Finalize, so
# LeakSanitizer cannot name them for a suppression); leaks are checked by the one-process tests.
MPIRUN="env ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 $MPIRUN"
# Under TSan: Open MPI's TCP transport takes two of its own mutexes in both orders (reported inside
# mca_btl_tcp); one machine needs only shared memory.
if ldd "$LCM" 2>/dev/null | grep -q libtsan; then export OMPI_MCA_btl=${OMPI_MCA_btl:-self,vader}; fi

"$LCM" data synth model.sonar_dim=16 synth.dim=16 synth.latent_dim=8 synth.train_docs=200 synth.valid_docs=20 \
  synth.max_len=40 synth.mean_len=12 -o "$tmp/data" >"$tmp/synth.log" 2>&1 || { cat "$tmp/synth.log"; exit 1; }
# The open() shim, built here (it needs only a C compiler).
hang_shim=""
if cc -shared -fPIC -O1 -o "$tmp/hang_open.so" tests/shim/hang_open.c -ldl 2>"$tmp/shim.err"; then
  hang_shim=$tmp/hang_open.so
fi
# BLAS threads per worker fixed at 1 (trainer.cpu_threads = workers per process), so both sides compute alike.
tiny="model.sonar_dim=16 model.model_dim=16 model.num_layers=2 model.num_heads=2 model.ffn_inner_dim=32 \
data.max_seq_len=16 data.max_tokens=96 data.train=$tmp/data/train.lcmd data.valid=$tmp/data/valid.lcmd \
trainer.log_every=1 trainer.validate_every=4 trainer.plot=false optim.warmup_steps=2 trainer.hang_timeout_s=5"
STEPS=8

. "$(dirname "$0")/run_compare.sh"

# train RUN_DIR DEVICES [key=value ...]: one process
train() {
  run=$1 dev=$2
  shift 2
  # shellcheck disable=SC2086
  "$LCM" train $tiny trainer.max_steps=$STEPS trainer.devices=$dev trainer.cpu_threads=${dev#cpu:} \
    trainer.output_dir="$run" "$@" >"$run.out" 2>"$run.err" || { cat "$run.err" >&2; return 1; }
}

# mtrain NP RUN_DIR DEVICES [key=value ...]: NP processes under mpirun
mtrain() {
  np=$1 run=$2 dev=$3
  shift 3
  # shellcheck disable=SC2086
  $MPIRUN -np "$np" "$LCM" train $tiny trainer.max_steps=$STEPS trainer.devices=$dev trainer.cpu_threads=${dev#cpu:} \
    trainer.output_dir="$run" "$@" >"$run.out" 2>"$run.err" || { cat "$run.err" >&2; return 1; }
}

bitwise_equal_to_one_process() {
  train "$tmp/one" cpu:4 && mtrain 2 "$tmp/two" cpu:2 && same_result "$tmp/one" "$tmp/two"
}

bitwise_equal_sharded() {
  train "$tmp/one_s2" cpu:4 trainer.shard=2 && mtrain 2 "$tmp/two_s2" cpu:2 trainer.shard=2 &&
    same_result "$tmp/one_s2" "$tmp/two_s2"
}

only_process_0_writes() {
  [ -d "$tmp/two" ] || return 1
  [ "$(grep -c '^done: step 8 of 8' "$tmp/two.out")" -eq 1 ] || { echo "  summaries: $(grep -c '^done:' "$tmp/two.out")" >&2; return 1; }
  [ "$(grep -c '"event":"start"' "$tmp/two/metrics.jsonl")" -eq 1 ] || return 1
  [ "$(grep -c '^.*training .* for 8 steps (4 devices' "$tmp/two/train.log")" -eq 1 ] ||
    { echo "  train.log does not say 4 devices once" >&2; return 1; }
  grep -q 'process 0 of 2 (node [^)]*): devices 0-1 of 4' "$tmp/two/train.log"
}

resume_across_processes() {
  mtrain 2 "$tmp/resume" cpu:2 trainer.stop_at_step=4 && [ "$(basename "$(newest_checkpoint "$tmp/resume")")" = step_000000004 ] &&
    mtrain 2 "$tmp/resume" cpu:2 && same_result "$tmp/one" "$tmp/resume"
}

# The pids of the lcm processes under mpirun PID, in rank order (Open MPI gives each its rank in
# OMPI_COMM_WORLD_RANK).
rank_pid() {
  for p in $(pgrep -P "$1" -x lcm; for d in $(pgrep -P "$1"); do pgrep -P "$d" -x lcm; done); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" && { echo "$p"; return 0; }
  done
  return 1
}

# start_long_run RUN LINES [key=value ...]: a long two-process run of cpu:2 each in the background (its
# mpirun's pid in $mp) until RUN/metrics.jsonl has LINES lines; rank 1's process in $p1.
start_long_run() {
  run=$1 lines=$2
  shift 2
  # shellcheck disable=SC2086
  $MPIRUN -np 2 "$LCM" train $tiny trainer.max_steps=100000 trainer.devices=cpu:2 trainer.cpu_threads=2 \
    trainer.output_dir="$run" "$@" >"$run.out" 2>"$run.err" &
  mp=$!
  wait_for "$run/metrics.jsonl" "$lines" 60 || { echo "  $run: no $lines lines of metrics in 60 s" >&2; kill "$mp"; return 1; }
  p1=$(rank_pid "$mp" 1) || { echo "  no process of rank 1 under mpirun $mp" >&2; kill "$mp"; return 1; }
}

signal_to_one_process_stops_all() {
  run="$tmp/sig"
  start_long_run "$run" 6 || return 1
  kill -TERM "$p1"
  wait "$mp"
  rc=$?
  [ "$rc" -eq 0 ] || { echo "  mpirun exited $rc" >&2; cat "$run.err" >&2; return 1; }
  grep -q 'stopped at step [0-9]* by a signal' "$run.out" || { echo "  no stop summary" >&2; return 1; }
  grep -q 'stopped by a signal to another process after step' "$run/train.log" || return 1
  last=$(grep '"loss"' "$run/metrics.jsonl" | grep -v split | tail -n 1 | sed 's/^{"step":\([0-9]*\),.*/\1/')
  [ "$(basename "$(newest_checkpoint "$run")")" = "$(printf 'step_%09d' "$last")" ] ||
    { echo "  newest checkpoint $(newest_checkpoint "$run") is not the last step $last" >&2; return 1; }
  # Resumed for two more steps, it has the bits of a run that was never stopped: one process, the same
  # max_steps (the learning-rate schedule follows it), stopped by trainer.stop_at_step after those steps.
  to=$((last + 2))
  mtrain 2 "$run" cpu:2 trainer.max_steps=100000 trainer.stop_at_step=$to &&
    train "$tmp/sigref" cpu:4 trainer.max_steps=100000 trainer.stop_at_step=$to || return 1
  steps=$STEPS STEPS=$to
  echo "  stopped after step $last; compared at step $to" >&2
  same_result "$tmp/sigref" "$run"
  rc=$? STEPS=$steps
  return $rc
}

# The newest checkpoint of RUN loads (lcm eval verifies every tensor's checksum).
loads() {
  c=$(newest_checkpoint "$1")
  [ -n "$c" ] && "$LCM" eval "$c" "$tmp/data/valid.lcmd" >"$1.eval" 2>&1 || { echo "  $c does not load" >&2; cat "$1.eval" >&2; return 1; }
}

killed_process_stops_the_run() {
  run="$tmp/kill"
  start_long_run "$run" 8 trainer.checkpoint_every=3 || return 1
  t0=$(date +%s)
  kill -KILL "$p1"
  wait "$mp"
  rc=$? took=$(($(date +%s) - t0))
  [ "$rc" -ne 0 ] || { echo "  mpirun exited 0" >&2; return 1; }
  echo "  SIGKILL of rank 1's process: mpirun ended ${took}s later, status $rc" >&2
  [ "$took" -le 20 ] || { echo "  the run took ${took}s to stop" >&2; return 1; }
  grep -q 'rank 1 .*exited on signal 9\|rank 1 with PID .* exited on signal 9' "$run.err" ||
    { echo "  no line naming rank 1:" >&2; tail -n 12 "$run.err" >&2; return 1; }
  loads "$run"
}

hung_process_is_named_by_the_watchdog() {
  run="$tmp/hang"
  start_long_run "$run" 8 trainer.checkpoint_every=3 || return 1
  t0=$(date +%s)
  kill -STOP "$p1"
  i=0
  while kill -0 "$mp" 2>/dev/null && [ "$i" -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
  took=$(($(date +%s) - t0))
  kill -KILL "$p1" 2>/dev/null # in case mpirun left it stopped
  kill -CONT "$p1" 2>/dev/null
  if kill -0 "$mp" 2>/dev/null; then kill -KILL "$mp"; echo "  mpirun still runs after ${took}s" >&2; return 1; fi
  wait "$mp"
  rc=$?
  [ "$rc" -ne 0 ] || { echo "  mpirun exited 0" >&2; return 1; }
  echo "  SIGSTOP of rank 1's process: mpirun ended ${took}s later, status $rc" >&2
  # hang_timeout_s=5: the watchdog fires after 5 s, the process ends 3 s (grace) later at most
  [ "$took" -le 25 ] || { echo "  the run took ${took}s to stop" >&2; return 1; }
  [ "$(grep -c 'watchdog: .* it waits for process 1 (node [^,]*, ranks 2-3)' "$run.err")" -eq 1 ] ||
    { echo "  no one line naming process 1:" >&2; tail -n 12 "$run.err" >&2; return 1; }
  loads "$run"
}

# MPMD: process 0 and process 1 with different arguments (-wdir: each its own working directory).
config_disagreement_names_the_process() {
  run="$tmp/cfg"
  # shellcheck disable=SC2086
  $MPIRUN -np 1 "$LCM" train $tiny trainer.devices=cpu:1 trainer.output_dir="$run" optim.lr=0.001 : \
    -np 1 "$LCM" train $tiny trainer.devices=cpu:1 trainer.output_dir="$run" optim.lr=0.002 >"$run.out" 2>"$run.err"
  rc=$?
  [ "$rc" -ne 0 ] && grep -q 'the effective config differs on process 1 (node [^)]*) from process 0' "$run.err" ||
    { echo "  rc $rc:" >&2; head -n 5 "$run.err" >&2; return 1; }
  [ -z "$(newest_checkpoint "$run")" ]
}

dataset_disagreement_names_the_process() {
  run="$tmp/ds"
  mkdir -p "$tmp/n0" "$tmp/n1"
  for n in 0 1; do
    "$LCM" data synth model.sonar_dim=16 synth.dim=16 synth.latent_dim=8 synth.train_docs=200 synth.valid_docs=20 \
      synth.max_len=40 synth.mean_len=12 synth.seed=$((n + 5)) -o "$tmp/n$n/data" >/dev/null 2>&1 || return 1
  done
  # the same relative path, a different file on each "node"
  # shellcheck disable=SC2086
  $MPIRUN -np 1 -wdir "$tmp/n0" "$LCM" train $tiny data.train=data/train.lcmd data.valid=data/valid.lcmd \
    trainer.devices=cpu:1 trainer.output_dir="$run" : -np 1 -wdir "$tmp/n1" "$LCM" train $tiny \
    data.train=data/train.lcmd data.valid=data/valid.lcmd trainer.devices=cpu:1 trainer.output_dir="$run" \
    >"$run.out" 2>"$run.err"
  rc=$?
  [ "$rc" -ne 0 ] && grep -q 'the dataset (header checksum of data.train and data.valid) differs on process 1 (node' "$run.err" ||
    { echo "  rc $rc:" >&2; head -n 5 "$run.err" >&2; return 1; }
}

# Process 1 hangs in open() of its dataset (before the agreements on the config and the data); process 0
# waits there, names it after hang_timeout_s=5, and the run ends. Before the start-up waits had a
# deadline, process 0 waited for ever (the loop below gives up after 60 s).
process_stuck_at_start_up_is_named() {
  [ -n "$hang_shim" ] || { echo "  cannot build tests/shim/hang_open.c:" >&2; cat "$tmp/shim.err" >&2; return 1; }
  run="$tmp/boot"
  t0=$(date +%s)
  # shellcheck disable=SC2086
  $MPIRUN -np 1 "$LCM" train $tiny trainer.devices=cpu:2 trainer.cpu_threads=2 trainer.output_dir="$run" : \
    -np 1 env LD_PRELOAD="$hang_shim" LCM_TEST_HANG_OPEN=train.lcmd \
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0:verify_asan_link_order=0" \
    "$LCM" train $tiny trainer.devices=cpu:2 trainer.cpu_threads=2 trainer.output_dir="$run" \
    >"$run.out" 2>"$run.err" &
  mp=$!
  i=0
  while kill -0 "$mp" 2>/dev/null && [ "$i" -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
  took=$(($(date +%s) - t0))
  if kill -0 "$mp" 2>/dev/null; then
    kill -KILL "$mp"
    echo "  mpirun still runs after ${took}s:" >&2
    tail -n 5 "$run.err" >&2
    return 1
  fi
  wait "$mp"
  rc=$?
  [ "$rc" -ne 0 ] || { echo "  mpirun exited 0" >&2; return 1; }
  echo "  process 1 stuck in open(): mpirun ended ${took}s after its start, status $rc" >&2
  grep -q 'start-up: process 1 (node [^)]*) did not reach the effective config within 5 s (trainer.hang_timeout_s)' \
    "$run.err" || { echo "  no line naming process 1:" >&2; tail -n 12 "$run.err" >&2; return 1; }
}

check bitwise_equal_to_one_process bitwise_equal_to_one_process
check bitwise_equal_sharded bitwise_equal_sharded
check only_process_0_writes only_process_0_writes
check resume_across_processes resume_across_processes
check signal_to_one_process_stops_all signal_to_one_process_stops_all
check killed_process_stops_the_run killed_process_stops_the_run
check hung_process_is_named_by_the_watchdog hung_process_is_named_by_the_watchdog
check process_stuck_at_start_up_is_named process_stuck_at_start_up_is_named
check config_disagreement_names_the_process config_disagreement_names_the_process
check dataset_disagreement_names_the_process dataset_disagreement_names_the_process
