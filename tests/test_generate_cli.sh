#!/bin/sh
# test_generate_cli.sh: `lcm generate` as a user runs it: from a run directory (its newest checkpoint),
# .lcmd and .npy prompts, --with-prompt / --trim / --npy outputs, several CPU workers; and bad input
# (wrong dimension, empty prompt, another architecture, normalizer mismatch, max_gen_len beyond
# model.max_seq_len) gives one line and a non-zero exit. Prints PASS/FAIL lines; needs $LCM_BIN.
set -u
LCM=${LCM_BIN:-build/lcm}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcm-cli-gen-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

check() {
  name=$1
  shift
  if "$@"; then echo "PASS $name"; else echo "FAIL $name"; fi
}

"$LCM" data synth synth.dim=16 synth.latent_dim=8 synth.train_docs=200 synth.valid_docs=20 synth.max_len=40 \
  synth.mean_len=12 -o "$tmp/data" >"$tmp/synth.log" 2>&1 || { cat "$tmp/synth.log"; exit 1; }
tiny="model.sonar_dim=16 model.model_dim=16 model.num_layers=2 model.num_heads=2 model.ffn_inner_dim=32 \
data.max_seq_len=16 data.max_tokens=96 data.train=$tmp/data/train.lcmd data.valid=$tmp/data/valid.lcmd \
trainer.validate_every=0 trainer.plot=false optim.warmup_steps=2 trainer.devices=cpu"
# shellcheck disable=SC2086
"$LCM" train $tiny trainer.max_steps=6 trainer.checkpoint_every=3 trainer.output_dir="$tmp/run" >"$tmp/train.log" 2>&1 ||
  { cat "$tmp/train.log"; exit 1; }

concepts() { "$LCM" data inspect "$1" | awk '$1 == "concepts" {print $2}'; }
documents() { "$LCM" data inspect "$1" | awk '$1 == "documents" {print $2}'; }

from_run_dir_with_and_without_prompt() {
  "$LCM" generate "$tmp/run" --prompts "$tmp/data/valid.lcmd" --prompt-len 4 -o "$tmp/a.lcmd" \
    generate.max_gen_len=6 2>"$tmp/a.err" || { cat "$tmp/a.err" >&2; return 1; }
  grep -q "newest checkpoint of .*step_000000006" "$tmp/a.err" || return 1
  "$LCM" generate "$tmp/run" --prompts "$tmp/data/valid.lcmd" --prompt-len 4 -o "$tmp/b.lcmd" --with-prompt \
    generate.max_gen_len=6 trainer.devices=cpu:3 generate.batch_size=3 2>"$tmp/b.err" || { cat "$tmp/b.err" >&2; return 1; }
  # 20 documents each way; with the prompt, each holds its prompt more (--prompt-len cuts to at most 4;
  # shorter documents stay whole, so the prompts are counted from a run that generates one concept each)
  [ "$(documents "$tmp/a.lcmd")" = 20 ] && [ "$(documents "$tmp/b.lcmd")" = 20 ] || return 1
  "$LCM" generate "$tmp/run" --prompts "$tmp/data/valid.lcmd" --prompt-len 4 -o "$tmp/p.lcmd" --with-prompt \
    generate.max_gen_len=1 generate.eos_threshold=2 2>/dev/null || return 1
  prompts=$(( $(concepts "$tmp/p.lcmd") - 20 ))
  [ "$(concepts "$tmp/b.lcmd")" -eq $(( $(concepts "$tmp/a.lcmd") + prompts )) ]
}

trim_drops_the_eot_concept() {
  "$LCM" generate "$tmp/run" --prompts "$tmp/data/valid.lcmd" --prompt-len 4 -o "$tmp/t0.lcmd" --with-prompt \
    generate.max_gen_len=6 generate.eos_threshold=-1 2>"$tmp/t0.err" || return 1
  "$LCM" generate "$tmp/run" --prompts "$tmp/data/valid.lcmd" --prompt-len 4 -o "$tmp/t1.lcmd" --with-prompt --trim \
    generate.max_gen_len=6 generate.eos_threshold=-1 2>/dev/null || return 1
  "$LCM" generate "$tmp/run" --prompts "$tmp/data/valid.lcmd" --prompt-len 4 -o "$tmp/t2.lcmd" --trim \
    generate.max_gen_len=6 generate.eos_threshold=-1 2>/dev/null || return 1
  # eos_threshold -1: every prompt stops at its first concept by EOT, which --trim leaves out, except
  # where it is all the document holds
  grep -q "stopped by: eot 20," "$tmp/t0.err" &&
    [ "$(concepts "$tmp/t1.lcmd")" -eq $(( $(concepts "$tmp/t0.lcmd") - 20 )) ] && [ "$(concepts "$tmp/t2.lcmd")" = 20 ]
}

npy_prompts_and_outputs() {
  "$LCM" generate "$tmp/run" --prompts "$tmp/data/valid.lcmd" --prompt-len 3 --npy "$tmp/o.npy" \
    generate.max_gen_len=5 2>/dev/null || return 1
  [ -f "$tmp/o.npy" ] && [ -f "$tmp/o.lengths.npy" ] || return 1
  # the .npy output is what `lcm data import` takes, and as prompts it is accepted
  "$LCM" data import "$tmp/o.npy" "$tmp/o.lengths.npy" -o "$tmp/o.lcmd" >/dev/null 2>&1 || return 1
  [ "$(documents "$tmp/o.lcmd")" = 20 ] || return 1
  "$LCM" generate "$tmp/run" --prompts "$tmp/o.npy" --lengths "$tmp/o.lengths.npy" -o "$tmp/o2.lcmd" \
    generate.max_gen_len=2 --eot none 2>/dev/null && [ "$(concepts "$tmp/o2.lcmd")" = 40 ]
}

# expect_error NEEDLE CMD...: fails with exit status 1 or 2 and one "lcm: ..." line containing NEEDLE
expect_error() {
  needle=$1
  shift
  "$@" >"$tmp/e.out" 2>"$tmp/e.err"
  rc=$?
  if [ "$rc" -ne 1 ] && [ "$rc" -ne 2 ]; then echo "  exit status $rc: $*" >&2; return 1; fi
  grep '^lcm: ' "$tmp/e.err" >"$tmp/e.lines"
  if [ "$(wc -l <"$tmp/e.lines")" -ne 1 ] || ! grep -q -e "$needle" "$tmp/e.lines"; then
    echo "  expected one line with '$needle', got:" >&2
    cat "$tmp/e.err" >&2
    return 1
  fi
}

# numpy writes the .npy files of the empty-prompt case; without it that case is not run
numpy_python() {
  for py in "${LCM_PYTHON:-}" ./.venv/bin/python python3; do
    [ -n "$py" ] && "$py" -c 'import numpy' >/dev/null 2>&1 && { echo "$py"; return 0; }
  done
  return 1
}

bad_input_is_one_line() {
  ok=0
  "$LCM" data synth synth.dim=8 synth.latent_dim=4 synth.train_docs=5 synth.valid_docs=1 -o "$tmp/d8" >/dev/null 2>&1
  expect_error "8-dimensional" "$LCM" generate "$tmp/run" --prompts "$tmp/d8/train.lcmd" -o "$tmp/x.lcmd" || ok=1
  if py=$(numpy_python); then
    "$py" -c "import numpy as np; np.save('$tmp/e.npy', np.ones((3, 16), np.float32)); np.save('$tmp/l.npy', np.array([3, 0]))"
    # `lcm data import` refuses an empty document itself: the same check, the same one line
    expect_error "empty" "$LCM" generate "$tmp/run" --prompts "$tmp/e.npy" --lengths "$tmp/l.npy" -o "$tmp/x.lcmd" || ok=1
  fi
  expect_error "model.safetensors does not match the model config" "$LCM" generate "$tmp/run" \
    --prompts "$tmp/data/valid.lcmd" -o "$tmp/x.lcmd" model.model_dim=32 || ok=1
  "$LCM" data fit-normalizer "$tmp/d8/train.lcmd" -o "$tmp/n8.safetensors" >/dev/null 2>&1
  expect_error "dimension\\|dim" "$LCM" generate "$tmp/run" --prompts "$tmp/data/valid.lcmd" -o "$tmp/x.lcmd" \
    --normalizer "$tmp/n8.safetensors" || ok=1
  "$LCM" data fit-normalizer "$tmp/data/valid.lcmd" -o "$tmp/n16.safetensors" >/dev/null 2>&1
  expect_error "differs from the normalizer stored" "$LCM" generate "$tmp/run" --prompts "$tmp/data/valid.lcmd" \
    -o "$tmp/x.lcmd" --normalizer "$tmp/n16.safetensors" || ok=1
  expect_error "generate.max_gen_len = 5000" "$LCM" generate "$tmp/run" --prompts "$tmp/data/valid.lcmd" \
    -o "$tmp/x.lcmd" generate.max_gen_len=5000 || ok=1
  expect_error "does not exist" "$LCM" generate "$tmp/nope" --prompts "$tmp/data/valid.lcmd" -o "$tmp/x.lcmd" || ok=1
  expect_error "give the prompts with --prompts" "$LCM" generate "$tmp/run" -o "$tmp/x.lcmd" || ok=1
  expect_error "unknown option '--frobnicate'" "$LCM" generate "$tmp/run" --prompts "$tmp/data/valid.lcmd" \
    -o "$tmp/x.lcmd" --frobnicate || ok=1
  [ ! -f "$tmp/x.lcmd" ] && [ "$ok" -eq 0 ]
}

check from_run_dir_with_and_without_prompt from_run_dir_with_and_without_prompt
check trim_drops_the_eot_concept trim_drops_the_eot_concept
check npy_prompts_and_outputs npy_prompts_and_outputs
check bad_input_is_one_line bad_input_is_one_line
