#!/bin/sh
# test_cli_data_batches.sh: `lcm data batches`: the printed plan agrees with itself (micro-batch count,
# rows, padding within data.max_tokens, step and device of each micro-batch), is deterministic for a
# seed, shows the validation split in dataset order, and reports usage errors in one line.
# Prints PASS/FAIL/SKIP lines; needs $LCM_BIN (the lcm binary under test).
set -u
LCM=${LCM_BIN:-build/lcm}
names="help plan_is_consistent device_columns deterministic_for_a_seed valid_in_dataset_order errors"

if ! "$LCM" data batches --help >/dev/null 2>&1; then
  for n in $names; do echo "SKIP $n: \`lcm data batches\` is not a command of $LCM yet"; done
  exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcm-cli-batches-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

check() {
  name=$1
  shift
  if "$@"; then echo "PASS $name"; else echo "FAIL $name"; fi
}

has() { grep -q -- "$2" "$1"; }
one_line() { [ "$(wc -l <"$1")" -eq 1 ] && grep -q '^lcm: ' "$1"; }

small="model.sonar_dim=16 synth.dim=16 synth.latent_dim=4 synth.train_docs=60 synth.valid_docs=12 synth.min_len=1 synth.max_len=40 synth.mean_len=12 synth.dtype=f16"
if ! "$LCM" data synth $small -o "$tmp/d" >"$tmp/synth.out" 2>&1; then
  cat "$tmp/synth.out" >&2
  for n in $names; do echo "FAIL $n: could not synthesize the test dataset"; done
  exit 0
fi
data="model.sonar_dim=16 synth.dim=16 data.train=$tmp/d/train.lcmd data.valid=$tmp/d/valid.lcmd data.max_seq_len=16 data.max_tokens=48 data.bucket_factor=2"

# The micro-batch lines: "index rows T padded targets fill% [step device] doc:start+len ...".
batch_lines() { awk '$1 ~ /^[0-9]+$/ && $5 ~ /^[0-9]+$/' "$1"; }

help() {
  "$LCM" data batches --help >"$tmp/h" && has "$tmp/h" 'usage: lcm data batches' && has "$tmp/h" '--devices'
}

plan_is_consistent() {
  "$LCM" data batches $data --epoch 1 --limit 0 >"$tmp/o" 2>"$tmp/e" || { cat "$tmp/e" >&2; return 1; }
  rows=$(sed -n 's/^rows: \([0-9]*\) .*/\1/p' "$tmp/o")
  total=$(sed -n 's/^epoch 1 total: \([0-9]*\) micro-batches, \([0-9]*\) rows.*/\1 \2/p' "$tmp/o")
  [ -n "$rows" ] && [ -n "$total" ] || return 1
  # indices 0..n-1 in order, padded = rows x T <= max_tokens, targets < padded, counts match the totals
  batch_lines "$tmp/o" | awk -v total="$total" -v rows="$rows" '
    { if ($1 != NR - 1 || $4 != $2 * $3 || $4 > 48 || $5 >= $4 || $3 > 16) bad = 1; n++; r += $2 }
    END { split(total, t, " "); exit !(bad == 0 && n == t[1] && r == t[2] && r == rows) }'
}

device_columns() {
  # 3 devices x grad_accum 2: global micro-batch g (counted from epoch 0) is step g/6, device (g%6)/2.
  "$LCM" data batches $data trainer.grad_accum=2 --devices 3 --limit 0 >"$tmp/o0" 2>"$tmp/e" || return 1
  "$LCM" data batches $data trainer.grad_accum=2 --devices 3 --limit 0 --epoch 1 >"$tmp/o1" 2>"$tmp/e" || return 1
  n0=$(batch_lines "$tmp/o0" | wc -l)
  batch_lines "$tmp/o0" | awk '{ g = $1; if ($7 != int(g / 6) || $8 != int((g % 6) / 2)) bad = 1 } END { exit bad }' || return 1
  batch_lines "$tmp/o1" | awk -v off="$n0" '{ g = $1 + off; if ($7 != int(g / 6) || $8 != int((g % 6) / 2)) bad = 1 } END { exit bad }'
}

deterministic_for_a_seed() {
  "$LCM" data batches $data trainer.seed=3 --limit 0 >"$tmp/a" 2>&1 || return 1
  "$LCM" data batches $data trainer.seed=3 --limit 0 >"$tmp/b" 2>&1 || return 1
  "$LCM" data batches $data trainer.seed=4 --limit 0 >"$tmp/c" 2>&1 || return 1
  cmp -s "$tmp/a" "$tmp/b" && ! cmp -s "$tmp/a" "$tmp/c"
}

valid_in_dataset_order() {
  "$LCM" data batches $data --split valid --limit 0 >"$tmp/o" 2>"$tmp/e" || { cat "$tmp/e" >&2; return 1; }
  has "$tmp/o" 'plan: eval' || return 1
  # The first row of each micro-batch comes after the first row of the one before (doc, then start).
  batch_lines "$tmp/o" | awk '{ split($7, a, /[:+]/); k = a[1] * 100000 + a[2]; if (NR > 1 && k <= prev) bad = 1; prev = k }
    END { exit !(NR > 1 && !bad) }'
}

errors() {
  "$LCM" data batches $data --frobnicate >"$tmp/o" 2>"$tmp/e"
  [ $? -eq 2 ] && one_line "$tmp/e" && has "$tmp/e" "unknown option '--frobnicate'; see \`lcm data batches --help\`" || return 1
  "$LCM" data batches $data --epoch x >"$tmp/o" 2>"$tmp/e"
  [ $? -eq 2 ] && one_line "$tmp/e" && has "$tmp/e" "--epoch needs a whole number" || return 1
  "$LCM" data batches $data data.valid= --split valid >"$tmp/o" 2>"$tmp/e"
  [ $? -eq 2 ] && one_line "$tmp/e" && has "$tmp/e" "data.valid is not set" || return 1
  "$LCM" data batches $data data.train="$tmp/none.lcmd" >"$tmp/o" 2>"$tmp/e"
  [ $? -eq 1 ] && one_line "$tmp/e" && has "$tmp/e" "none.lcmd"
}

for n in $names; do check "$n" "$n"; done
