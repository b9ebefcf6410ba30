#!/bin/sh
# test_plan_cli.sh: `lcm plan` (the memory plan per device and class, a hypothetical device, the advice
# line) and lcm train's memory check (the total printed at start, the refusal before allocating).
# Prints PASS/FAIL lines; needs $LCM_BIN (the lcm binary under test).
set -u
LCM=${LCM_BIN:-build/lcm}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcm-plan-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failed=0
BIG=conf/model/base_lcm_1_6b.ini

check() {
  name=$1
  shift
  if "$@"; then echo "PASS $name"; else echo "FAIL $name"; failed=1; fi
}

# bytes of a class line of a plan output
bytes() { grep "^    $2 " "$1" | awk '{print $(NF-3)}'; }

# The figures follow from the parameter count, not from the program's own numbers: on two devices at
# shard 2 a device holds slice = ceil(P / 2) rounded up to 64 elements of fp32 master weights, gradients
# and two moments, and the whole bf16 compute copy; the classes add up to the total.
hypothetical_device_shard2() {
  "$LCM" plan "$BIG" --devices 2 --shard 2 trainer.recompute=layer --device-memory 24GB >"$tmp/p" || return 1
  grep -q '^memory plan: cuda backend, 2 devices, shard 2, recompute layer' "$tmp/p" || return 1
  P=$(grep '^  parameters' "$tmp/p" | awk '{print $2}')
  # rank 0's slice (the largest): ceil(P/2) rounded up to 64 elements (include/lcm/shard.h)
  S=$(( (P + 1) / 2 )); S=$(( (S + 63) / 64 * 64 ))
  # the bf16 compute copy carries the weights, so the fp32 master is the slice AdamW updates, like the moments
  [ "$(bytes "$tmp/p" 'master weights')" -eq $((4 * S)) ] || return 1
  [ "$(bytes "$tmp/p" 'AdamW moments')" -eq $((8 * S)) ] || return 1
  [ "$(bytes "$tmp/p" 'compute weights')" -eq $((2 * P)) ] || return 1
  # gradients: the slice plus a window of one bucket (a layer, or the pre/postnet: well under P/16)
  g=$(bytes "$tmp/p" 'gradients')
  [ "$g" -gt $((4 * S)) ] && [ "$g" -lt $((4 * S + 4 * P / 16)) ] || return 1
  sum=$(grep '^    ' "$tmp/p" | grep -v ' total ' | awk '{s += $(NF-3)} END {printf "%.0f", s}')
  [ "$(bytes "$tmp/p" 'total')" -eq "$sum" ] || return 1
  grep -q '24.000 GB per device (--device-memory): fits$' "$tmp/p"
}

# Recomputation leaves one layer's inner activations: at least L-1 = 31 layers' worth less.
recompute_shrinks_activations() {
  "$LCM" plan "$BIG" --devices 2 --device-memory 24GB >"$tmp/none" || return 1
  "$LCM" plan "$BIG" --devices 2 --device-memory 24GB trainer.recompute=layer >"$tmp/layer" || return 1
  a=$(bytes "$tmp/none" activations); b=$(bytes "$tmp/layer" activations)
  [ "$b" -gt 0 ] && [ "$((a / b))" -ge 5 ]
}

# The advice names a change, and planning with that change fits.
advice_line_fits_when_followed() {
  "$LCM" plan "$BIG" --devices 2 --device-memory 24GB >"$tmp/a" || return 1
  level=$(sed -n 's/.*does NOT fit; trainer.shard=\([12]\) trainer.recompute=layer needs [0-9.]* GB$/\1/p' "$tmp/a")
  [ -n "$level" ] || return 1
  "$LCM" plan "$BIG" --devices 2 --shard "$level" trainer.recompute=layer --device-memory 24GB | grep -q ': fits$'
}

# (model.attention=native: the figures then do not depend on whether this lcm was built with cuDNN)
advice_with_smaller_micro_batches() {
  "$LCM" plan conf/model/medium.ini --devices 1 --device-memory 3GB model.attention=native >"$tmp/m" || return 1
  line=$(grep 'does NOT fit' "$tmp/m") || return 1
  mt=$(echo "$line" | sed -n 's/.*data.max_tokens=\([0-9]*\) with grad_accum \([0-9]*\).*/\1/p')
  ga=$(echo "$line" | sed -n 's/.*data.max_tokens=\([0-9]*\) with grad_accum \([0-9]*\).*/\2/p')
  [ -n "$mt" ] && [ $((mt * ga)) -eq 7168 ] || return 1
  "$LCM" plan conf/model/medium.ini --devices 1 --device-memory 3GB trainer.recompute=layer \
    data.max_tokens="$mt" trainer.grad_accum="$ga" model.attention=native | grep -q ': fits$'
}

# Issue 10's goal, by the plan: base_lcm_1_6b at data.max_tokens 7168 with shard 2 and recompute = layer
# fits 24 GB cards on two devices and 16 GB cards on four.
goal_fits_16gb_on_4_and_24gb_on_2() {
  "$LCM" plan "$BIG" --devices 4 --shard 2 trainer.recompute=layer data.max_tokens=7168 --device-memory 16GB |
    grep -q '16.000 GB per device (--device-memory): fits$' || return 1
  "$LCM" plan "$BIG" --devices 2 --shard 2 trainer.recompute=layer data.max_tokens=7168 --device-memory 24GB |
    grep -q '24.000 GB per device (--device-memory): fits$'
}

# CPU workers are the host: the process holds devices x the per-device total plus its own buffers (the
# initial weights, rank 0's checkpoint staging of weights and both moments, and the mapped read-back of
# the checkpoint written: 7 P fp32).
cpu_process_total() {
  "$LCM" plan conf/model/medium.ini --backend cpu --devices 3 --shard 1 data.max_tokens=512 >"$tmp/c" || return 1
  P=$(grep '^  parameters' "$tmp/c" | awk '{print $2}')
  t=$(bytes "$tmp/c" total)
  proc=$(grep '^  process total (3 CPU workers' "$tmp/c" | awk '{print $(NF-3)}')
  [ -n "$proc" ] && [ "$proc" -eq $((3 * t + 28 * P)) ]
}

# Recomputation only buys memory: when the run without it fits, a note says so (the plan still fits:
# a note, not a refusal); when only the recomputed run fits, no note.
recompute_not_needed_note() {
  "$LCM" plan conf/model/medium.ini --devices 2 --device-memory 80GB trainer.recompute=layer >"$tmp/n1" || return 1
  grep -q ': fits$' "$tmp/n1" || return 1
  grep -q '^  note: trainer.recompute=layer is not needed here: without it this run needs [0-9.]* GB per device'     "$tmp/n1" || return 1
  "$LCM" plan conf/model/medium.ini --devices 2 --device-memory 80GB >"$tmp/n2" || return 1
  ! grep -q 'note:' "$tmp/n2" || return 1
  # the 1.6B model at 7168 tokens, shard 2 on two 24 GB cards: fits only with recomputation
  "$LCM" plan "$BIG" --devices 2 --shard 2 trainer.recompute=layer --device-memory 24GB >"$tmp/n3" || return 1
  grep -q ': fits$' "$tmp/n3" && ! grep -q 'note:' "$tmp/n3"
}

nothing_fits_says_so() {
  "$LCM" plan "$BIG" --devices 1 --device-memory 16GB | grep -q 'does NOT fit; no cheaper setting fits'
}

bad_arguments_exit_2() {
  "$LCM" plan --device-memory lots >/dev/null 2>"$tmp/e1"; [ $? -eq 2 ] || return 1
  grep -q "device-memory 'lots' is not a size" "$tmp/e1" || return 1
  "$LCM" plan --devices 1 --shard 2 >/dev/null 2>"$tmp/e2"; [ $? -eq 2 ] || return 1
  grep -q 'shard 2 on one device' "$tmp/e2" || return 1
  "$LCM" plan data.global_batch_tokens=1000 --devices 2 >/dev/null 2>"$tmp/e3"; [ $? -eq 2 ] || return 1
  grep -q 'global_batch_tokens = 1000' "$tmp/e3"
}

# lcm train prints the plan's total, and a run the host cannot hold stops before allocating, in one
# line naming the device, what it needs and what is free.
train_prints_and_refuses() {
  common="trainer.devices=cpu:1 synth.train_docs=40 synth.valid_docs=0 trainer.max_steps=2 optim.warmup_steps=1 \
trainer.plot=false trainer.output_dir=$tmp/run"
  # shellcheck disable=SC2086
  "$LCM" train $common >"$tmp/ok" 2>&1 || return 1
  grep -q 'memory plan: [0-9.]* GB per device' "$tmp/ok" || return 1
  ! grep -q 'recompute=layer is not needed' "$tmp/ok" || return 1
  # the toy model on the host does not need recomputation: one notice line, and the run goes on
  # shellcheck disable=SC2086
  "$LCM" train $common trainer.output_dir="$tmp/rc" trainer.recompute=layer >"$tmp/rc.out" 2>&1 || return 1
  [ "$(grep -c 'note: trainer.recompute=layer is not needed here' "$tmp/rc.out")" -eq 1 ] || return 1
  grep -q 'step 2/2' "$tmp/rc.out" || return 1
  # shellcheck disable=SC2086
  "$LCM" train $common trainer.output_dir="$tmp/huge" data.max_tokens=4000000000 >"$tmp/huge.out" 2>&1
  rc=$?
  [ $rc -ne 0 ] || return 1
  [ "$(grep -c '^lcm: ' "$tmp/huge.out")" -eq 1 ] || return 1
  grep -q '^lcm: .*the host (1 CPU worker) needs [0-9.]* GB for this run but has [0-9.]* GB free; ' "$tmp/huge.out" || return 1
  ! grep -q 'step 1' "$tmp/huge.out"
}

check hypothetical_device_shard2 hypothetical_device_shard2
check recompute_shrinks_activations recompute_shrinks_activations
check advice_line_fits_when_followed advice_line_fits_when_followed
check advice_with_smaller_micro_batches advice_with_smaller_micro_batches
check goal_fits_16gb_on_4_and_24gb_on_2 goal_fits_16gb_on_4_and_24gb_on_2
check cpu_process_total cpu_process_total
check recompute_not_needed_note recompute_not_needed_note
check nothing_fits_says_so nothing_fits_says_so
check bad_arguments_exit_2 bad_arguments_exit_2
check train_prints_and_refuses train_prints_and_refuses
exit $failed
