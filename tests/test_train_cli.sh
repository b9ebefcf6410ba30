#!/bin/sh
# test_train_cli.sh: `lcm train` and `lcm eval` as a user runs them: SIGTERM writes a checkpoint and
# exits 0, the run resumes; SIGKILL during checkpoint writes never leaves a damaged newest checkpoint;
# bad input gives one line and a non-zero exit. Prints PASS/FAIL/SKIP lines; needs $LCM_BIN.
set -u
LCM=${LCM_BIN:-build/lcm}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcm-cli-train-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

check() {
  name=$1
  shift
  if "$@"; then echo "PASS $name"; else echo "FAIL $name"; fi
}

# A tiny model on a tiny synthetic dataset (D 16), far more steps than the test lets it run.
"$LCM" data synth model.sonar_dim=16 synth.dim=16 synth.latent_dim=8 synth.train_docs=200 synth.valid_docs=20 \
  synth.max_len=40 synth.mean_len=12 -o "$tmp/data" >"$tmp/synth.log" 2>&1 || { cat "$tmp/synth.log"; exit 1; }
tiny="model.sonar_dim=16 model.model_dim=16 model.num_layers=2 model.num_heads=2 model.ffn_inner_dim=32 \
data.max_seq_len=16 data.max_tokens=96 data.train=$tmp/data/train.lcmd data.valid=$tmp/data/valid.lcmd \
trainer.log_every=1 trainer.validate_every=0 trainer.plot=false optim.warmup_steps=2 trainer.devices=cpu:2"

. "$(dirname "$0")/run_compare.sh" # newest_checkpoint, wait_for

sigterm_checkpoints_and_resume_continues() {
  run="$tmp/term"
  # shellcheck disable=SC2086
  "$LCM" train $tiny trainer.max_steps=1000000 trainer.checkpoint_every=0 trainer.output_dir="$run" \
    >"$tmp/term.out" 2>"$tmp/term.err" &
  pid=$!
  wait_for "$run/metrics.jsonl" 20 60 || { kill -9 "$pid"; return 1; }
  kill -TERM "$pid"
  wait "$pid"
  rc=$?
  [ "$rc" -eq 0 ] || { echo "  exit status $rc after SIGTERM; its stderr ends:" >&2; tail -n 30 "$tmp/term.err" >&2; return 1; }
  grep -q 'stopped at step' "$tmp/term.out" || return 1
  ckpt=$(newest_checkpoint "$run")
  [ -n "$ckpt" ] || return 1
  step=$(basename "$ckpt" | sed 's/^step_0*//')
  "$LCM" eval "$ckpt" "$tmp/data/valid.lcmd" >"$tmp/term.eval" 2>&1 || { cat "$tmp/term.eval" >&2; return 1; }
  # the run directory means its newest checkpoint: the same numbers, and the baseline beside the loss
  "$LCM" eval "$run" "$tmp/data/valid.lcmd" >"$tmp/term.evalrun" 2>"$tmp/term.evalrun.err" ||
    { cat "$tmp/term.evalrun.err" >&2; return 1; }
  a=$(grep '^{' "$tmp/term.eval" | sed 's/"checkpoint":"[^"]*",//')
  b=$(grep '^{' "$tmp/term.evalrun" | sed 's/"checkpoint":"[^"]*",//')
  [ -n "$a" ] && [ "$a" = "$b" ] || { echo "  run dir eval differs: $a vs $b" >&2; return 1; }
  echo "$b" | grep -q '"baseline":[0-9]' && echo "$b" | grep -q '"par":[0-9]' &&
    grep -q "predict-the-mean baseline" "$tmp/term.evalrun.err" || return 1
  # resume: same command, a few more steps
  # shellcheck disable=SC2086
  "$LCM" train $tiny trainer.max_steps=$((step + 3)) trainer.output_dir="$run" >"$tmp/resume.out" 2>"$tmp/resume.err" ||
    { cat "$tmp/resume.err" >&2; return 1; }
  grep -q "resuming from .*step_0*$step (step $step)" "$tmp/resume.err" && grep -q "done: step $((step + 3))" "$tmp/resume.out"
}

sigkill_during_checkpoint_writes_keeps_the_newest_loadable() {
  run="$tmp/kill"
  # A model large enough that writing a checkpoint (3 x 14 MB, fsync'ed) takes a good part of each step,
  # and a checkpoint after every step: most kills land in the middle of a write (a step_N.tmp is left).
  big="model.model_dim=256 model.num_layers=4 model.num_heads=4 model.ffn_inner_dim=768 trainer.keep_last=2"
  # shellcheck disable=SC2086
  "$LCM" train $tiny $big trainer.max_steps=1000000 trainer.stop_at_step=2 trainer.checkpoint_every=1 \
    trainer.output_dir="$run" >/dev/null 2>"$tmp/kill.err" || { cat "$tmp/kill.err" >&2; return 1; }
  torn=0
  for delay in 1.3 0.7 1.9 0.9 1.6; do
    # shellcheck disable=SC2086
    "$LCM" train $tiny $big trainer.max_steps=1000000 trainer.checkpoint_every=1 trainer.output_dir="$run" \
      >/dev/null 2>"$tmp/kill.err" &
    pid=$!
    sleep "$delay"
    kill -9 "$pid"
    wait "$pid" 2>/dev/null
    [ -n "$(ls -d "$run"/checkpoints/*.tmp 2>/dev/null)" ] && torn=$((torn + 1))
    ckpt=$(newest_checkpoint "$run")
    "$LCM" eval "$ckpt" "$tmp/data/valid.lcmd" >"$tmp/kill.eval" 2>&1 ||
      { echo "  newest checkpoint $ckpt does not load after kill -9:" >&2; cat "$tmp/kill.eval" >&2; return 1; }
  done
  echo "  $torn of 5 kills interrupted a checkpoint write" >&2
  # a resumed run goes on from the newest checkpoint and cleans up half-written step_N.tmp directories
  step=$(basename "$(newest_checkpoint "$run")" | sed 's/^step_0*//')
  # shellcheck disable=SC2086
  "$LCM" train $tiny $big trainer.max_steps=$((step + 1)) trainer.checkpoint_every=1 trainer.output_dir="$run" \
    >/dev/null 2>"$tmp/kill.resume" || { cat "$tmp/kill.resume" >&2; return 1; }
  [ -z "$(ls -d "$run"/checkpoints/*.tmp 2>/dev/null)" ]
}

# one_line_error EXPECTED_STATUS PATTERN -- ARGS...: the command fails with that status and prints one
# line on stderr that matches PATTERN.
one_line_error() {
  want=$1 pattern=$2
  shift 3
  "$LCM" "$@" >/dev/null 2>"$tmp/err"
  rc=$?
  [ "$rc" -eq "$want" ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q -- "$pattern" "$tmp/err" ||
    { echo "  lcm $*: status $rc, stderr:" >&2; cat "$tmp/err" >&2; return 1; }
}

bad_input_is_one_line_and_non_zero() {
  one_line_error 2 "did you mean trainer.max_steps" -- train trainer.max_step=5 &&
    one_line_error 2 "model.num_heads" -- train model.num_heads=abc &&
    one_line_error 2 "not found" -- train /nonexistent/config.ini &&
    one_line_error 1 "does not exist" -- train trainer.output_dir="$tmp/x" data.train=/nonexistent/train.lcmd &&
    one_line_error 1 "does not exist" -- eval /nonexistent/ckpt "$tmp/data/valid.lcmd" &&
    one_line_error 2 "expected a checkpoint and a dataset" -- eval onlyone &&
    one_line_error 2 "only one config file is accepted, got 'a.ini' and 'b.ini'; to combine them, .*\[config\] base = a.ini" -- train a.ini b.ini
}

# model.attention: native is the CPU's only attention; cudnn asked of the CPU is a config error (exit 2,
# its one line last, after the run's start-up lines) naming the key, before any step; auto and native train.
attention_key_on_the_cpu() {
  # shellcheck disable=SC2086
  "$LCM" train $tiny trainer.max_steps=3 trainer.output_dir="$tmp/attn_cudnn" model.attention=cudnn \
    >/dev/null 2>"$tmp/err"
  rc=$?
  [ "$rc" -eq 2 ] && tail -n 1 "$tmp/err" | grep -q "^lcm: config error: model.attention = cudnn, but the CPU backend has \
only the native attention: set model.attention=auto (or native)" && [ "$(grep -c error "$tmp/err")" -eq 1 ] ||
    { echo "  status $rc, stderr:" >&2; cat "$tmp/err" >&2; return 1; }
  [ -z "$(newest_checkpoint "$tmp/attn_cudnn")" ] &&
    one_line_error 2 "model.attention = 'flash': expected one of auto, cudnn, native" -- train model.attention=flash &&
    # shellcheck disable=SC2086
    "$LCM" train $tiny trainer.max_steps=3 trainer.output_dir="$tmp/attn_native" model.attention=native \
      >"$tmp/attn.log" 2>&1 && [ -d "$(newest_checkpoint "$tmp/attn_native")" ] ||
    { cat "$tmp/attn.log" >&2; return 1; }
}

corrupt_checkpoint_is_reported_by_train_and_eval() {
  run="$tmp/term"
  ckpt=$(newest_checkpoint "$run")
  [ -n "$ckpt" ] || return 1
  head -c 5000 "$ckpt/model.safetensors" >"$tmp/trunc" && cp "$tmp/trunc" "$ckpt/model.safetensors"
  # resume=auto would skip it and take an older one (tests/test_fault_ckpt.sh); named explicitly, it is an error
  # shellcheck disable=SC2086
  one_line_error 1 "model.safetensors" -- train $tiny trainer.max_steps=100000000 trainer.output_dir="$run" \
    trainer.resume="$ckpt" &&
    one_line_error 1 "model.safetensors" -- eval "$ckpt" "$tmp/data/valid.lcmd"
}

check sigterm_checkpoints_and_resume_continues sigterm_checkpoints_and_resume_continues
check sigkill_during_checkpoint_writes_keeps_the_newest_loadable sigkill_during_checkpoint_writes_keeps_the_newest_loadable
check bad_input_is_one_line_and_non_zero bad_input_is_one_line_and_non_zero
check attention_key_on_the_cpu attention_key_on_the_cpu
check corrupt_checkpoint_is_reported_by_train_and_eval corrupt_checkpoint_is_reported_by_train_and_eval
