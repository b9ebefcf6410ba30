#!/bin/sh
# test_fault_ckpt.sh: checkpoints under faults, end to end through `lcm train` / `lcm eval`:
#   - SIGKILL at random moments (many land inside checkpoint writes), then resume: the final weights,
#     AdamW moments and every step's loss equal those of an uninterrupted run, bit for bit;
#   - disk full during a checkpoint (RLIMIT_FSIZE, which works unprivileged, and a small tmpfs where
#     this machine may mount one): non-zero exit, one line saying what is intact, nothing half-written
#     left, and the run resumes to the same result;
#   - bit flips in a checkpoint's payload: lcm eval fails with one line naming the file and the tensor;
#   - a damaged or empty newest checkpoint: resume=auto skips it with a warning and resumes from the
#     newest that verifies (bit-exact again); none verifies: a one-line error.
# The exhaustive bit-flip and train_state checks are in tests/test_checkpoint.c.
# Prints PASS/FAIL/SKIP lines; needs $LCM_BIN.
set -u
LCM=${LCM_BIN:-build/lcm}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcm-fault-ckpt-XXXXXX")
mnt="$tmp/mnt"
cleanup() {
  if [ -d "$mnt" ] && grep -q " $mnt " /proc/mounts 2>/dev/null; then umount "$mnt" 2>/dev/null; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

check() {
  name=$1
  shift
  if "$@"; then echo "PASS $name"; else echo "FAIL $name"; fi
}

"$LCM" data synth model.sonar_dim=16 synth.dim=16 synth.latent_dim=8 synth.train_docs=200 synth.valid_docs=20 \
  synth.max_len=40 synth.mean_len=12 -o "$tmp/data" >"$tmp/synth.log" 2>&1 || { cat "$tmp/synth.log"; exit 1; }
STEPS=150
tiny="model.sonar_dim=16 model.model_dim=16 model.num_layers=2 model.num_heads=2 model.ffn_inner_dim=32 \
data.max_seq_len=16 data.max_tokens=96 data.train=$tmp/data/train.lcmd data.valid=$tmp/data/valid.lcmd \
trainer.log_every=1 trainer.validate_every=0 trainer.plot=false optim.warmup_steps=2 trainer.devices=cpu:2 \
trainer.checkpoint_every=1 trainer.max_steps=$STEPS"

train() { # train RUN_DIR [key=value ...]: stdout/stderr to RUN_DIR.out/.err
  run=$1
  shift
  # shellcheck disable=SC2086
  "$LCM" train $tiny trainer.output_dir="$run" "$@" >"$run.out" 2>"$run.err"
}

. "$(dirname "$0")/run_compare.sh"

t0=$(date +%s%N)
train "$tmp/ref" || { cat "$tmp/ref.err"; exit 1; }
ref_ms=$((($(date +%s%N) - t0) / 1000000)) # the kill delays scale with it: machines differ 10x in speed

random_ms() { # random_ms LO HI
  r=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
  echo $(($1 + r % ($2 - $1)))
}

sigkill_at_random_moments_then_resume_is_bit_exact() {
  run="$tmp/killed"
  # each run is killed within a quarter of an uninterrupted run's time: it cannot get far, and the kills
  # land anywhere in startup, steps and checkpoint writes. The reference time was measured under this
  # machine's load of the moment; when the load drops and the runs finish before three kills, the
  # whole sequence starts again with delays half as long (at most three rounds).
  lo=$((ref_ms / 20 + 5)) hi=$((ref_ms / 4 + 10))
  for round in 1 2 3; do
    rm -rf "$run"
    kills=0 torn=0 delays=""
    for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do
      [ -d "$(printf '%s/checkpoints/step_%09d' "$run" "$STEPS")" ] && break
      ms=$(random_ms "$lo" "$hi")
      delays="$delays $ms"
      # shellcheck disable=SC2086
      "$LCM" train $tiny trainer.output_dir="$run" >"$run.out" 2>"$run.err" & # (not through train(): $! is lcm's pid)
      pid=$!
      sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
      if kill -9 "$pid" 2>/dev/null; then
        kills=$((kills + 1))
        wait "$pid" 2>/dev/null
      else # it ended by itself: only by finishing
        wait "$pid" || { echo "  run $i failed:" >&2; cat "$run.err" >&2; return 1; }
      fi
      ls -d "$run"/checkpoints/*.tmp >/dev/null 2>&1 && torn=$((torn + 1))
      # the newest checkpoint is always complete: the next start never has to skip one
      if grep -q 'skipping' "$run.err"; then cat "$run.err" >&2; return 1; fi
    done
    echo "  round $round: $kills kills (after$delays ms; an uninterrupted run took $ref_ms ms), $torn inside a checkpoint write" >&2
    [ "$kills" -ge 3 ] && break
    lo=$((lo / 2 + 1)) hi=$((hi / 2 + 2))
  done
  [ "$kills" -ge 3 ] || { echo "  too few kills to mean anything" >&2; return 1; }
  train "$run" || { cat "$run.err" >&2; return 1; }
  grep -q 'skipping' "$run.err" && return 1
  same_result "$tmp/ref" "$run"
}

# fsize_blocks BYTES: the `ulimit -f` value for BYTES in this shell's unit (512 or 1024 bytes).
fsize_unit() {
  (ulimit -f 1 && trap '' XFSZ && head -c 4096 /dev/zero >"$tmp/unit" 2>/dev/null)
  wc -c <"$tmp/unit" | tr -d ' '
}

# After a failed save: exit 1, one error line that names what is intact, no step_N.tmp left, the intact
# checkpoint loads, and the run resumes to the uninterrupted result.
after_failed_save() { # RUN_DIR RC ERRORFILE INTACT_STEP
  [ "$2" -eq 1 ] || { echo "  exit status $2" >&2; cat "$3" >&2; return 1; }
  intact=$(printf '%s/checkpoints/step_%09d' "$1" "$4")
  [ "$(grep -c '^lcm: ' "$3")" -eq 1 ] && grep -q "^lcm: .*is intact (verified)" "$3" && grep -q "$intact" "$3" ||
    { echo "  the error does not say that $intact is intact:" >&2; cat "$3" >&2; return 1; }
  [ -z "$(ls -d "$1"/checkpoints/*.tmp 2>/dev/null)" ] || { echo "  a step_N.tmp was left" >&2; return 1; }
  [ "$(newest_checkpoint "$1")" = "$intact" ] || return 1
  "$LCM" eval "$intact" "$tmp/data/valid.lcmd" >/dev/null 2>"$tmp/eval.err" || { cat "$tmp/eval.err" >&2; return 1; }
}

disk_full_rlimit_fsize() {
  run="$tmp/fsize"
  train "$run" trainer.stop_at_step=3 || { cat "$run.err" >&2; return 1; }
  unit=$(fsize_unit)
  model=$(wc -c <"$run/checkpoints/step_000000003/model.safetensors")
  state=$(wc -c <"$run/checkpoints/step_000000003/train_state.safetensors")
  # room for model.safetensors, not for train_state.safetensors: the save fails half-way through a step
  limit=$(((model + state) / 2 / unit))
  [ $((limit * unit)) -gt "$model" ] && [ $((limit * unit)) -lt "$state" ] || { echo "  bad limit" >&2; return 1; }
  # SIGXFSZ ignored: the write fails with EFBIG, as a full disk fails it with ENOSPC
  (ulimit -f "$limit" && trap '' XFSZ && train "$run")
  rc=$?
  after_failed_save "$run" "$rc" "$run.err" 3 || return 1
  train "$run" || { cat "$run.err" >&2; return 1; }
  same_result "$tmp/ref" "$run"
}

disk_full_tmpfs() {
  mkdir -p "$mnt"
  if ! mount -t tmpfs -o size=1m tmpfs "$mnt" 2>"$tmp/mount.err"; then
    echo "SKIP disk_full_tmpfs: cannot mount a tmpfs here ($(head -n 1 "$tmp/mount.err")); disk_full_rlimit_fsize covers the same path"
    return 2
  fi
  run="$mnt/run"
  train "$run" trainer.stop_at_step=2 trainer.keep_last=1 || { cat "$run.err" >&2; umount "$mnt"; return 1; }
  # fill it up to leave room for model.safetensors, not for train_state.safetensors
  model=$(wc -c <"$run/checkpoints/step_000000002/model.safetensors")
  free_k=$(df -Pk "$mnt" | awk 'NR == 2 {print $4}')
  dd if=/dev/zero of="$mnt/filler" bs=1k count=$((free_k - model / 1024 - 8)) 2>/dev/null
  train "$run" trainer.keep_last=1
  rc=$?
  rm -f "$mnt/filler"
  ok=0
  grep -q 'No space left on device' "$run.err" || { cat "$run.err" >&2; ok=1; }
  [ "$ok" -eq 0 ] && after_failed_save "$run" "$rc" "$run.err" 2 || ok=1
  cp -r "$run" "$tmp/from_tmpfs"
  umount "$mnt"
  [ "$ok" -eq 0 ] || return 1
  train "$tmp/from_tmpfs" || { cat "$tmp/from_tmpfs.err" >&2; return 1; }
  same_result "$tmp/ref" "$tmp/from_tmpfs"
}

# flip_bit FILE BIT
flip_bit() {
  off=$(($2 / 8))
  byte=$(od -An -tu1 -j "$off" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $((byte ^ (1 << ($2 % 8)))))" | dd of="$1" bs=1 seek="$off" conv=notrunc 2>/dev/null
}

payload_bit_flips_are_named_by_eval() {
  ckpt=$(newest_checkpoint "$tmp/ref")
  n=0
  for f in model.safetensors train_state.safetensors; do
    path="$ckpt/$f"
    size=$(wc -c <"$path")
    header=$((8 + $(od -An -tu8 -N8 "$path" | tr -d ' ')))
    for i in 1 2 3 4 5 6 7 8; do
      r=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
      bit=$((8 * header + r % (8 * (size - header))))
      cp "$path" "$tmp/orig"
      flip_bit "$path" "$bit"
      if [ "$f" = model.safetensors ]; then
        "$LCM" eval "$ckpt" "$tmp/data/valid.lcmd" >/dev/null 2>"$tmp/flip.err"
      else # eval reads only the weights; a resume reads the training state
        "$LCM" train $tiny trainer.output_dir="$tmp/ref" trainer.resume="$ckpt" trainer.max_steps=$((STEPS + 1)) \
          >/dev/null 2>"$tmp/flip.err"
      fi
      rc=$?
      cp "$tmp/orig" "$path"
      [ "$rc" -eq 1 ] && [ "$(wc -l <"$tmp/flip.err")" -eq 1 ] &&
        grep -q "$path: tensor '[^']*' fails its checksum" "$tmp/flip.err" ||
        { echo "  bit $bit of $path: status $rc:" >&2; cat "$tmp/flip.err" >&2; return 1; }
      n=$((n + 1))
    done
  done
  echo "  $n random payload bit flips, each reported in one line" >&2
}

resume_skips_damaged_and_empty_newest() {
  run="$tmp/skip"
  train "$run" trainer.stop_at_step=$((STEPS - 3)) trainer.keep_last=5 || { cat "$run.err" >&2; return 1; }
  good=$(printf '%s/checkpoints/step_%09d' "$run" $((STEPS - 4)))
  bad1=$(printf '%s/checkpoints/step_%09d' "$run" $((STEPS - 3)))
  empty=$(printf '%s/checkpoints/step_%09d' "$run" $((STEPS - 2)))
  # a digit of the step in the header (the metadata value "21"): only the header checksum can tell
  off=$(grep -abo '"step":"[0-9]*"' "$bad1/train_state.safetensors" | head -n 1 | cut -d: -f1)
  flip_bit "$bad1/train_state.safetensors" $((8 * (off + 8)))
  mkdir "$empty"
  train "$run" || { cat "$run.err" >&2; return 1; }
  grep -q "warning: resume: skipping $empty: " "$run.err" &&
    grep -q "warning: resume: skipping $bad1: .*train_state.safetensors: the header fails its checksum" "$run.err" &&
    grep -q "resuming from $good " "$run.err" || { cat "$run.err" >&2; return 1; }
  same_result "$tmp/ref" "$run" || return 1
  # none verifies: one line, status 1, nothing trained
  run="$tmp/none"
  train "$run" trainer.stop_at_step=2 || return 1
  for d in "$run"/checkpoints/step_*; do : >"$d/model.safetensors"; done
  train "$run"
  rc=$?
  [ "$rc" -eq 1 ] && [ "$(grep -c '^lcm: ' "$run.err")" -eq 1 ] &&
    grep -q "^lcm: .*none of the 2 checkpoints under $run/checkpoints verifies" "$run.err" ||
    { echo "  status $rc" >&2; cat "$run.err" >&2; return 1; }
}

check sigkill_at_random_moments_then_resume_is_bit_exact sigkill_at_random_moments_then_resume_is_bit_exact
check disk_full_rlimit_fsize disk_full_rlimit_fsize
disk_full_tmpfs
case $? in 0) echo "PASS disk_full_tmpfs" ;; 1) echo "FAIL disk_full_tmpfs" ;; esac
check payload_bit_flips_are_named_by_eval payload_bit_flips_are_named_by_eval
check resume_skips_damaged_and_empty_newest resume_skips_damaged_and_empty_newest
