#!/bin/sh
# test_fault_run.sh: whole runs under faults (docs/reliability.md, "Runs: lock, watchdog, signals"): the
# plot helper is never started through a shell; two trainers on one run directory; a stale lock; a
# worker hung inside BLAS (an LD_PRELOAD shim, tests/shim/hang_sgemm.c); SIGINT/SIGTERM from `timeout`,
# duplicated and repeated; trainer.stop_at_step; metrics.jsonl after a resume; write errors on the log
# and metrics (/dev/full); SIGTERM during `lcm data synth` and `lcm data import`. Prints PASS/FAIL/SKIP
# lines; needs $LCM_BIN.
set -u
LCM=${LCM_BIN:-build/lcm}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcm-fault-run-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

check() {
  name=$1
  shift
  if "$@"; then echo "PASS $name"; else echo "FAIL $name"; fi
}

"$LCM" data synth model.sonar_dim=16 synth.dim=16 synth.latent_dim=8 synth.train_docs=200 synth.valid_docs=20 \
  synth.max_len=40 synth.mean_len=12 -o "$tmp/data" >"$tmp/synth.log" 2>&1 || { cat "$tmp/synth.log"; exit 1; }
tiny="model.sonar_dim=16 model.model_dim=16 model.num_layers=2 model.num_heads=2 model.ffn_inner_dim=32 \
data.max_seq_len=16 data.max_tokens=96 data.train=$tmp/data/train.lcmd data.valid=$tmp/data/valid.lcmd \
trainer.log_every=1 trainer.validate_every=0 trainer.plot=false optim.warmup_steps=2 trainer.devices=cpu:2"

# The shim: built here, so that the test needs nothing but a C compiler and the OpenBLAS headers the
# build itself uses. Under ASan the sanitizer runtime insists on coming first in the library list;
# the shim does not touch memory it does not own, so that check is switched off for these runs.
shim=""
if cc -shared -fPIC -O1 -o "$tmp/shim.so" tests/shim/hang_sgemm.c -ldl -pthread 2>"$tmp/cc.err"; then
  shim=$tmp/shim.so
fi
asan_opts="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

. "$(dirname "$0")/run_compare.sh"

step_of() { basename "$1" | sed 's/^step_0*//'; }
loads() { "$LCM" eval "$1" "$tmp/data/valid.lcmd" >"$tmp/eval.out" 2>&1 || { cat "$tmp/eval.out" >&2; return 1; }; }

# ---- the plot helper gets the run directory as an argument, never through a shell -------------------

plot_output_dir_is_not_shell_code() {
  # LCM_PYTHON=true: "matplotlib is there" and the plot "succeeds", so both helper calls are made.
  run="$tmp/plot'\$(touch $tmp/pwned)'"
  # shellcheck disable=SC2086
  LCM_PYTHON=true "$LCM" train $tiny trainer.max_steps=3 trainer.plot=true "trainer.output_dir=$run" \
    >"$tmp/plot.out" 2>"$tmp/plot.err" || { cat "$tmp/plot.err" >&2; return 1; }
  grep -qF "plot:        $run/metrics.png" "$tmp/plot.out" || { echo "  the plot helper was not run" >&2; return 1; }
  [ ! -e "$tmp/pwned" ] || { echo "  trainer.output_dir was run as shell code" >&2; return 1; }
  [ -d "$run/checkpoints" ]
}

# ---- one trainer per run directory -------------------------------------------------------------------

second_trainer_stops_at_once_and_the_first_is_intact() {
  run="$tmp/lock"
  # 1500 steps: long enough that the first is still training when the second (a CUDA build takes
  # 0.2 s to start) reaches the lock, even on a loaded machine.
  # shellcheck disable=SC2086
  "$LCM" train $tiny trainer.max_steps=1500 trainer.checkpoint_every=500 trainer.output_dir="$run" \
    >"$tmp/lock1.out" 2>"$tmp/lock1.err" &
  pid=$!
  wait_for "$run/metrics.jsonl" 5 60 || { kill -9 "$pid"; return 1; }
  t0=$(now)
  # shellcheck disable=SC2086
  "$LCM" train $tiny trainer.max_steps=1500 trainer.checkpoint_every=500 trainer.output_dir="$run" \
    >"$tmp/lock2.out" 2>"$tmp/lock2.err"
  rc=$?
  took=$(elapsed "$t0" "$(now)")
  running=0
  kill -0 "$pid" 2>/dev/null && running=1
  wait "$pid"
  rc1=$?
  [ "$rc" -eq 1 ] && [ "$(wc -l <"$tmp/lock2.err")" -eq 1 ] &&
    grep -q "$run is in use by another lcm train (pid $pid)" "$tmp/lock2.err" ||
    { echo "  second trainer: status $rc, stderr:" >&2; tail -n 3 "$tmp/lock2.err" >&2; return 1; }
  [ "$running" -eq 1 ] || { echo "  the first trainer ended before the second stopped: nothing tested" >&2; return 1; }
  echo "  the second trainer stopped after ${took}s" >&2
  [ "$rc1" -eq 0 ] || { echo "  first trainer: status $rc1" >&2; cat "$tmp/lock1.err" >&2; return 1; }
  # The first run's checkpoints are exactly those of the same run made alone.
  # shellcheck disable=SC2086
  "$LCM" train $tiny trainer.max_steps=1500 trainer.checkpoint_every=500 trainer.output_dir="$tmp/alone" \
    >/dev/null 2>"$tmp/alone.err" || { cat "$tmp/alone.err" >&2; return 1; }
  ls "$run/checkpoints" | grep -q . || return 1
  for s in $(ls "$run/checkpoints" | sed 's/^step_//'); do
    loads "$run/checkpoints/step_$s" && sed 's/"checkpoint":"[^"]*",//' "$tmp/eval.out" | tail -n 1 >"$tmp/a" &&
      loads "$tmp/alone/checkpoints/step_$s" && sed 's/"checkpoint":"[^"]*",//' "$tmp/eval.out" | tail -n 1 >"$tmp/b" &&
      cmp -s "$tmp/a" "$tmp/b" || { echo "  step $s differs from the run made alone" >&2; return 1; }
  done
}

stale_lock_of_a_killed_run_does_not_block() {
  run="$tmp/stale"
  # shellcheck disable=SC2086
  "$LCM" train $tiny trainer.max_steps=1000000 trainer.checkpoint_every=50 trainer.output_dir="$run" \
    >/dev/null 2>&1 &
  pid=$!
  wait_for "$run/metrics.jsonl" 60 60 || { kill -9 "$pid"; return 1; }
  kill -9 "$pid"
  wait "$pid" 2>/dev/null
  grep -q "^$pid\$" "$run/.lock" || { echo "  the lock file does not name the killed run" >&2; return 1; }
  step=$(step_of "$(newest_checkpoint "$run")")
  # shellcheck disable=SC2086
  "$LCM" train $tiny trainer.max_steps=$((step + 2)) trainer.output_dir="$run" >"$tmp/stale.out" 2>"$tmp/stale.err" ||
    { cat "$tmp/stale.err" >&2; return 1; }
  grep -q "done: step $((step + 2))" "$tmp/stale.out"
}

# ---- the watchdog ------------------------------------------------------------------------------------

hung_worker_is_named_and_the_run_ends() {
  run="$tmp/hang"
  # Checkpoints at steps 5 and 10 first; the 4500th sgemm of the process comes two steps later (about
  # 190 calls per worker per step at these sizes) and never returns.
  t0=$(now)
  # shellcheck disable=SC2086
  LD_PRELOAD=$shim ASAN_OPTIONS=$asan_opts LCM_TEST_HANG_SGEMM=4500 LCM_TEST_HANG_MARK="$tmp/hang.mark" timeout -s KILL 60 \
    "$LCM" train $tiny trainer.max_steps=100000 trainer.checkpoint_every=5 trainer.hang_timeout_s=1 \
    trainer.output_dir="$run" >"$tmp/hang.out" 2>"$tmp/hang.err"
  rc=$?
  t1=$(now)
  took=$(elapsed "$t0" "$t1")
  [ -e "$tmp/hang.mark" ] || { echo "  the shim did not hang (status $rc)" >&2; return 1; }
  hang_to_exit=$(elapsed "$(date -r "$tmp/hang.mark" +%s.%N)" "$t1")
  last=$(grep '^step ' "$tmp/hang.err" | tail -n 1 | sed 's/^step \([0-9]*\)\/.*/\1/')
  [ "$rc" -ne 0 ] && [ "$rc" -ne 137 ] || { echo "  status $rc (137: still hung after 60 s)" >&2; return 1; }
  tail -n 1 "$tmp/hang.err" >"$tmp/hang.last"
  # the worker named is the one whose thread hung (the shim wrote that thread's name, lcm-cpu<N>)
  who=$(sed -n 's/^lcm-cpu\([0-9]*\)$/\1/p' "$tmp/hang.mark")
  [ -n "$who" ] || { echo "  the hung thread is $(cat "$tmp/hang.mark"), not a worker" >&2; return 1; }
  grep -q "^lcm: device error: watchdog: CPU worker $who made no progress for [0-9.]* s in phase \(forward\|backward\) of step $((last + 1)) " "$tmp/hang.last" ||
    { echo "  status $rc, last lines:" >&2; tail -n 3 "$tmp/hang.err" >&2; return 1; }
  [ "$(grep -c 'watchdog' "$tmp/hang.err")" -eq 1 ] || return 1
  ckpt=$(newest_checkpoint "$run")
  [ -n "$ckpt" ] && [ "$(step_of "$ckpt")" -le "$last" ] && loads "$ckpt" || return 1
  echo "  hung at step $((last + 1)); status $rc ${hang_to_exit}s after the hang, ${took}s in all (hang_timeout_s=1)" >&2
  # detection after hang_timeout_s (1 s), then the 3 s grace, then the exit: about 4 s (5 s under
  # TSan); 8 s leaves room for a loaded machine, and is far below the 60 s a hang would take
  awk -v t="$hang_to_exit" 'BEGIN { exit !(t < 8) }' 
}

# ---- signals -----------------------------------------------------------------------------------------

# timeout sends its signal to lcm and then to the whole process group: two copies within microseconds.
timeout_signals_checkpoint_and_resume() {
  for sig in INT TERM INT TERM; do
    run="$tmp/timeout-$sig"
    # shellcheck disable=SC2086
    timeout -s "$sig" 2 "$LCM" train $tiny trainer.max_steps=1000000 trainer.checkpoint_every=0 \
      trainer.output_dir="$run" >"$tmp/to.out" 2>"$tmp/to.err"
    rc=$?
    [ "$rc" -eq 124 ] && grep -q 'stopped at step [0-9]* by a signal' "$tmp/to.out" ||
      { echo "  timeout -s $sig: status $rc" >&2; tail -n 3 "$tmp/to.err" >&2; return 1; }
    ckpt=$(newest_checkpoint "$run")
    step=$(step_of "$ckpt")
    grep -q "checkpoint:  $ckpt" "$tmp/to.out" || return 1
    # shellcheck disable=SC2086
    "$LCM" train $tiny trainer.max_steps=$((step + 2)) trainer.output_dir="$run" >"$tmp/to2.out" 2>"$tmp/to2.err" ||
      { cat "$tmp/to2.err" >&2; return 1; }
    grep -q "resuming from .*step_0*$step (step $step)" "$tmp/to2.err" || return 1
    rm -rf "$run"
  done
  # lcm's own status, which timeout replaces by 124: 0 after a stop with a checkpoint
  # shellcheck disable=SC2086
  timeout --preserve-status -s INT 1 "$LCM" train $tiny trainer.max_steps=1000000 trainer.output_dir="$tmp/to3" \
    >/dev/null 2>"$tmp/to3.err" || { echo "  lcm's own status is $? after timeout -s INT" >&2; return 1; }
  [ -n "$(newest_checkpoint "$tmp/to3")" ]
}

# Steps of about 0.3 s that cost no CPU (every sgemm sleeps 1 ms): two SIGINTs 50 ms apart land in one
# step. The second is within the repeat window: each try must end with a checkpoint and status 0.
two_signals_50ms_apart_still_checkpoint() {
  run="$tmp/double"
  ok=0
  for try in 1 2 3 4 5 6 7 8 9 10; do
    before=$(step_of "$(newest_checkpoint "$run")" 2>/dev/null)
    # shellcheck disable=SC2086
    LD_PRELOAD=$shim ASAN_OPTIONS=$asan_opts LCM_TEST_SLOW_SGEMM_US=1000 "$LCM" train $tiny trainer.max_steps=1000000 \
      trainer.checkpoint_every=0 trainer.output_dir="$run" >"$tmp/double.out" 2>"$tmp/double.err" &
    pid=$!
    # the run is stepping once the metrics file has a line past the ones kept from the last try
    have=$(cat "$run/metrics.jsonl" 2>/dev/null | wc -l)
    wait_for "$run/metrics.jsonl" $((have + 2)) 60 || { kill -9 "$pid"; return 1; }
    kill -INT "$pid"
    sleep 0.05
    kill -INT "$pid"
    wait "$pid"
    rc=$?
    after=$(step_of "$(newest_checkpoint "$run")")
    if [ "$rc" -eq 0 ] && grep -q 'stopped at step' "$tmp/double.out" && [ "$after" -gt "${before:-0}" ]; then
      ok=$((ok + 1))
    else
      echo "  try $try: status $rc, newest checkpoint step $after (was ${before:-none})" >&2
      tail -n 2 "$tmp/double.err" >&2
    fi
  done
  echo "  $ok of 10 tries wrote their checkpoint" >&2
  [ "$ok" -eq 10 ]
}

# A person's second Ctrl-C, well after the window, still ends the run at once (steps of about 2.7 s).
second_signal_after_the_window_exits_now() {
  run="$tmp/again"
  # shellcheck disable=SC2086
  LD_PRELOAD=$shim ASAN_OPTIONS=$asan_opts LCM_TEST_SLOW_SGEMM_US=10000 "$LCM" train $tiny trainer.max_steps=1000000 \
    trainer.output_dir="$run" >"$tmp/again.out" 2>"$tmp/again.err" &
  pid=$!
  wait_for "$run/metrics.jsonl" 1 60 || { kill -9 "$pid"; return 1; }
  # SIGINT (bit 0x2) and SIGTERM (0x4000) are blocked in every worker and loader thread, not in main
  if [ -r "/proc/$pid/task/$pid/status" ]; then
    for task in /proc/"$pid"/task/*; do
      tname=$(cat "$task/comm" 2>/dev/null) || continue
      blk=$(sed -n 's/^SigBlk:[[:space:]]*//p' "$task/status")
      both=$(( 0x$blk & 0x4002 ))
      case $tname in
        lcm-cpu* | lcm-load*) want=16386 ;;
        *) [ "$task" = "/proc/$pid/task/$pid" ] && want=0 || continue ;;
      esac
      [ "$both" -eq "$want" ] || { kill -9 "$pid"; echo "  thread $tname: SigBlk $blk" >&2; return 1; }
    done
  fi
  kill -INT "$pid"
  sleep 0.5
  t0=$(now)
  kill -INT "$pid"
  wait "$pid"
  rc=$?
  took=$(elapsed "$t0" "$(now)")
  [ "$rc" -eq 130 ] && grep -q 'second signal: exiting now' "$tmp/again.err" &&
    awk -v t="$took" 'BEGIN { exit !(t < 1.5) }' ||
    { echo "  status $rc after ${took}s" >&2; tail -n 2 "$tmp/again.err" >&2; return 1; }
}

# ---- trainer.stop_at_step -----------------------------------------------------------------------------

stop_at_step_says_so_and_a_rerun_does_nothing() {
  run="$tmp/stopat"
  # shellcheck disable=SC2086
  "$LCM" train $tiny trainer.max_steps=100 trainer.stop_at_step=4 trainer.output_dir="$run" >"$tmp/sa1.out" 2>&1 ||
    return 1
  grep -q 'stopped at step 4 by trainer.stop_at_step' "$tmp/sa1.out" || { cat "$tmp/sa1.out" >&2; return 1; }
  # shellcheck disable=SC2086
  "$LCM" train $tiny trainer.max_steps=100 trainer.stop_at_step=4 trainer.output_dir="$run" >"$tmp/sa2.out" 2>&1 ||
    return 1
  grep -q 'nothing to do: stop_at_step 4 reached; raise it or remove it to continue' "$tmp/sa2.out" ||
    { cat "$tmp/sa2.out" >&2; return 1; }
  [ "$(step_of "$(newest_checkpoint "$run")")" -eq 4 ] && ! grep -q '"step":5,' "$run/metrics.jsonl"
}

# ---- metrics.jsonl and train.log ----------------------------------------------------------------------

# Lines past the newest checkpoint (a run that died before checkpointing them) are written again by the
# resumed run: the old ones must go.
metrics_past_the_checkpoint_are_dropped_on_resume() {
  run="$tmp/metrics"
  # shellcheck disable=SC2086
  "$LCM" train $tiny trainer.max_steps=8 trainer.stop_at_step=5 trainer.output_dir="$run" >/dev/null 2>&1 || return 1
  for s in 6 7; do printf '{"step":%d,"loss":1,"lr":1,"grad_norm":1}\n' "$s" >>"$run/metrics.jsonl"; done
  printf '{"step":8,"lo' >>"$run/metrics.jsonl" # torn by the crash
  # shellcheck disable=SC2086
  "$LCM" train $tiny trainer.max_steps=8 trainer.output_dir="$run" >/dev/null 2>&1 || return 1
  for s in 1 2 3 4 5 6 7 8; do
    n=$(grep -c "^{\"step\":$s,\"loss\"" "$run/metrics.jsonl")
    [ "$n" -eq 1 ] || { echo "  step $s: $n training lines" >&2; return 1; }
  done
  [ "$(grep -c '"lo$\|"lo{' "$run/metrics.jsonl")" -eq 0 ]
}

write_errors_on_log_and_metrics_are_reported() {
  [ -w /dev/full ] || { echo "  (no /dev/full)" >&2; return 0; }
  run="$tmp/full"
  mkdir -p "$run"
  ln -s /dev/full "$run/metrics.jsonl"
  ln -s /dev/full "$run/train.log"
  # shellcheck disable=SC2086
  "$LCM" train $tiny trainer.max_steps=6 trainer.output_dir="$run" >"$tmp/full.out" 2>"$tmp/full.err"
  rc=$?
  [ "$rc" -eq 1 ] || { echo "  status $rc" >&2; return 1; }
  [ "$(grep -c "warning: cannot write $run/metrics.jsonl: No space left on device" "$tmp/full.err")" -eq 1 ] &&
    [ "$(grep -c "warning: cannot write the log file $run/train.log: No space left on device" "$tmp/full.err")" -eq 1 ] &&
    grep -q "^lcm: I/O error: .*$run/metrics.jsonl could not be written" "$tmp/full.err" ||
    { cat "$tmp/full.err" >&2; return 1; }
  # the training itself went on to its end, checkpoint included
  grep -q 'done: step 6 of 6' "$tmp/full.out" && loads "$(newest_checkpoint "$run")"
}

# ---- lcm data synth and import under SIGTERM -------------------------------------------------------------

# term_when_tmp_appears DIR PID: SIGTERM to PID once DIR holds a *.tmp.* file; then no *.tmp.* may be
# left, and the status is 143 (128 + SIGTERM).
term_when_tmp_appears() {
  i=0
  while [ -z "$(ls "$1" 2>/dev/null | grep '\.tmp\.')" ] && [ "$i" -lt 500 ]; do
    sleep 0.02
    i=$((i + 1))
  done
  [ -n "$(ls "$1" 2>/dev/null | grep '\.tmp\.')" ] || { kill -9 "$2"; echo "  no temporary file appeared" >&2; return 1; }
  kill -TERM "$2"
  wait "$2"
  rc=$?
  left=$(ls "$1" | grep '\.tmp\.')
  [ "$rc" -eq 143 ] && [ -z "$left" ] || { echo "  status $rc, left: $left" >&2; return 1; }
}

sigterm_during_synth_and_import_leaves_no_temporary_files() {
  out="$tmp/synth-term"
  "$LCM" data synth model.sonar_dim=256 synth.dim=256 synth.train_docs=2000000 synth.valid_docs=0 -o "$out" \
    >/dev/null 2>&1 &
  term_when_tmp_appears "$out" $! || return 1
  command -v python3 >/dev/null 2>&1 || { echo "  (import not tested: no python3 to write the .npy headers)" >&2; return 0; }
  # 1M x 256 float32 zeros, as a sparse file: nothing to write but the header
  python3 - "$tmp/big.npy" "$tmp/biglens.npy" <<'EOF'
import struct, sys
def header(path, descr, shape):
    d = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    h = d + " " * (63 - (10 + len(d)) % 64) + "\n"
    f = open(path, "wb")
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode())
    return f
f = header(sys.argv[1], "<f4", "(1000000, 256)")
f.truncate(f.tell() + 1000000 * 256 * 4)
f.close()
f = header(sys.argv[2], "<i4", "(1000,)")
f.write(struct.pack("<1000i", *([1000] * 1000)))
f.close()
EOF
  mkdir -p "$tmp/import-term"
  "$LCM" data import "$tmp/big.npy" "$tmp/biglens.npy" -o "$tmp/import-term/big.lcmd" >/dev/null 2>&1 &
  term_when_tmp_appears "$tmp/import-term" $! || return 1
  rm -f "$tmp/big.npy"
}

check plot_output_dir_is_not_shell_code plot_output_dir_is_not_shell_code
check second_trainer_stops_at_once_and_the_first_is_intact second_trainer_stops_at_once_and_the_first_is_intact
check stale_lock_of_a_killed_run_does_not_block stale_lock_of_a_killed_run_does_not_block
for t in hung_worker_is_named_and_the_run_ends two_signals_50ms_apart_still_checkpoint \
  second_signal_after_the_window_exits_now; do
  if [ -n "$shim" ]; then check "$t" "$t"; else echo "SKIP $t: cannot build tests/shim/hang_sgemm.c: $(head -n 1 "$tmp/cc.err")"; fi
done
check timeout_signals_checkpoint_and_resume timeout_signals_checkpoint_and_resume
check stop_at_step_says_so_and_a_rerun_does_nothing stop_at_step_says_so_and_a_rerun_does_nothing
check metrics_past_the_checkpoint_are_dropped_on_resume metrics_past_the_checkpoint_are_dropped_on_resume
check write_errors_on_log_and_metrics_are_reported write_errors_on_log_and_metrics_are_reported
check sigterm_during_synth_and_import_leaves_no_temporary_files sigterm_during_synth_and_import_leaves_no_temporary_files
