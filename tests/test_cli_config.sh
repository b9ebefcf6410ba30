#!/bin/sh
# test_cli_config.sh: `lcm config keys` and `lcm config show`: output, exit status, error lines.
# Prints PASS/FAIL/SKIP lines; needs $LCM_BIN (the lcm binary under test).
set -u
LCM=${LCM_BIN:-build/lcm}
names="keys_lists_every_key keys_markdown_is_a_table show_default show_applies_overrides_and_origins \
show_output_loads_back unknown_key_exit_2_with_suggestion missing_file_exit_2 bad_arguments_are_usage_errors help \
long_section_name_exit_2 hostile_config_text_one_line override_with_spaces"

if ! "$LCM" config --help >/dev/null 2>&1; then
  for n in $names; do echo "SKIP $n: \`lcm config\` is not a command of $LCM yet"; done
  exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcm-cli-config-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failed=0

# check NAME CONDITION...: PASS when the condition (a shell command) succeeds.
check() {
  name=$1
  shift
  if "$@"; then echo "PASS $name"; else echo "FAIL $name"; failed=1; fi
}

has() { grep -q -- "$2" "$1"; }

keys_lists_every_key() {
  "$LCM" config keys >"$tmp/keys" || return 1
  has "$tmp/keys" '^model.num_heads ' && has "$tmp/keys" '^optim.warmup_steps ' && has "$tmp/keys" '^bench.peak_tflops '
}

keys_markdown_is_a_table() {
  "$LCM" config keys --markdown >"$tmp/md" || return 1
  head -n 1 "$tmp/md" | grep -q '^| key | type | default | allowed | description |$' || return 1
  # every line is a table row, and there are as many rows as plain `keys` lines (minus its header)
  [ "$(grep -vc '^|' "$tmp/md")" -eq 0 ] || return 1
  [ "$(($(wc -l <"$tmp/md") - 2))" -eq "$(($(wc -l <"$tmp/keys") - 1))" ]
}

show_default() {
  "$LCM" config show >"$tmp/default.ini" || return 1
  has "$tmp/default.ini" '^model_dim = 256 .*# <embedded>/model/toy.ini:' && has "$tmp/default.ini" '^synthesize = true'
}

show_applies_overrides_and_origins() {
  "$LCM" config show conf/pretrain_mse.ini trainer.max_steps=77777 +optim.lr=0.001 ++model.dropout=0 >"$tmp/o.ini" || return 1
  has "$tmp/o.ini" '^max_steps = 77777 .*# command line' && has "$tmp/o.ini" '^lr = 0.001 .*# command line' &&
    has "$tmp/o.ini" '^dropout = 0 .*# command line' && has "$tmp/o.ini" '^model_dim = 2048 .*base_lcm_1_6b.ini:'
}

show_output_loads_back() {
  "$LCM" config show conf/pretrain_mse.ini trainer.output_dir='runs/a #1' >"$tmp/first.ini" || return 1
  "$LCM" config show "$tmp/first.ini" >"$tmp/second.ini" || return 1
  # the values are the same; only the origin comments differ
  strip() { grep -v '^#' "$1" | sed 's/  *# [^#]*$//'; }
  strip "$tmp/first.ini" >"$tmp/a" && strip "$tmp/second.ini" >"$tmp/b" && cmp -s "$tmp/a" "$tmp/b" &&
    has "$tmp/second.ini" '^output_dir = "runs/a #1"'
}

unknown_key_exit_2_with_suggestion() {
  "$LCM" config show trainer.max_step=5 >/dev/null 2>"$tmp/err"
  [ $? -eq 2 ] && has "$tmp/err" 'unknown key trainer.max_step (command line); did you mean trainer.max_steps?'
}

missing_file_exit_2() {
  "$LCM" config show "$tmp/nope.ini" >/dev/null 2>"$tmp/err"
  [ $? -eq 2 ] && has "$tmp/err" 'nope.ini not found'
}

bad_arguments_are_usage_errors() {
  "$LCM" config show stray >/dev/null 2>"$tmp/err"
  [ $? -eq 2 ] && has "$tmp/err" "usage error: 'stray' is neither a config file" || return 1
  "$LCM" config keys --json >/dev/null 2>&1
  [ $? -eq 2 ] || return 1
  "$LCM" config frobnicate >/dev/null 2>&1
  [ $? -eq 2 ]
}

help() {
  "$LCM" config --help >"$tmp/help" && has "$tmp/help" 'usage: lcm config keys' && "$LCM" config show --help >/dev/null
}

# Issue 9 item 2: a [section] name of 128 bytes or more crashed the did-you-mean code (SIGSEGV).
long_section_name_exit_2() {
  python3 -c "print('['+'x'*128+']')" >"$tmp/l.ini"
  "$LCM" train "$tmp/l.ini" >/dev/null 2>"$tmp/err"
  [ $? -eq 2 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && has "$tmp/err" 'unknown section \[xxxxxxxx.*l.ini:1)'
}

# Issue 9 item 4: config text with a newline-forging value and an ESC byte gives one escaped line.
hostile_config_text_one_line() {
  printf '[model]\nnum_layers = 2\033[2J\n' >"$tmp/esc.ini"
  "$LCM" config show "$tmp/esc.ini" >/dev/null 2>"$tmp/err"
  [ $? -eq 2 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && ! grep -q "$(printf '\033')" "$tmp/err" &&
    has "$tmp/err" "model.num_layers = '2\\\\x1b\\[2J'"
}

# Issue 9 item 14: "trainer.max_steps = 5" as one argument is the override it looks like.
override_with_spaces() {
  "$LCM" config show "trainer.max_steps = 12345" >"$tmp/sp.ini" 2>"$tmp/err" && has "$tmp/sp.ini" '^max_steps = 12345 '
}

for n in $names; do check "$n" "$n"; done
exit $failed
