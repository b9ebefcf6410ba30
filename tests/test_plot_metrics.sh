#!/bin/sh
# test_plot_metrics.sh: tools/plot_metrics.py turns a metrics.jsonl (training, validation and baseline
# lines, unknown keys, a last line cut short) into a PNG, and fails with a clear message on a missing
# file or a file without data. Needs a Python with matplotlib ($LCM_PYTHON, ./.venv/bin/python,
# /usr/bin/python3, python3, the first that has it); without one every case prints SKIP.
set -u
tool=tools/plot_metrics.py

py=""
for cand in "${LCM_PYTHON:-}" ./.venv/bin/python /usr/bin/python3 python3; do
  [ -n "$cand" ] || continue
  if "$cand" -c 'import matplotlib' >/dev/null 2>&1; then py=$cand; break; fi
done
cases="plot_written plot_default_output missing_file_fails no_data_fails"
if [ -z "$py" ]; then
  for c in $cases; do echo "SKIP $c: no Python with matplotlib (set LCM_PYTHON)"; done
  exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcm-plot-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# The PNG signature: \211 P N G \r \n \032 \n
is_png() { [ -s "$1" ] && [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ]; }

run="$tmp/run"
mkdir -p "$run"
{
  echo '{"baseline": 1.02, "n_targets": 4096}'
  i=1
  while [ $i -le 40 ]; do
    loss=$(awk "BEGIN { printf \"%.6f\", 1.2 / (1 + 0.1 * $i) }")
    echo "{\"step\": $i, \"loss\": $loss, \"lr\": $(awk "BEGIN { print 1e-5 * $i }"), \"grad_norm\": 3.1, \"concepts_per_s\": 5000, \"elapsed_s\": $i, \"mfu\": 0.31, \"mem_gb\": 12.5, \"future_key\": [1, 2]}"
    if [ $((i % 10)) -eq 0 ]; then
      echo "{\"split\": \"valid\", \"step\": $i, \"loss\": $loss, \"l2\": 0.3, \"ca\": 0.6$i, \"n_targets\": 512}"
    fi
    i=$((i + 1))
  done
  printf '{"step": 41, "loss": 0.2, "lr'
} >"$run/metrics.jsonl"

out="$tmp/custom.png"
if "$py" "$tool" "$run" -o "$out" >"$tmp/log" 2>&1 && is_png "$out"; then
  echo "PASS plot_written"
else
  echo "FAIL plot_written"; cat "$tmp/log" >&2
fi

if "$py" "$tool" "$run" >"$tmp/log" 2>&1 && is_png "$run/metrics.png"; then
  echo "PASS plot_default_output"
else
  echo "FAIL plot_default_output"; cat "$tmp/log" >&2
fi

mkdir -p "$tmp/empty_run"
if "$py" "$tool" "$tmp/empty_run" >"$tmp/log" 2>&1; then
  echo "FAIL missing_file_fails: exited 0"
elif grep -q "metrics.jsonl: no such file" "$tmp/log"; then
  echo "PASS missing_file_fails"
else
  echo "FAIL missing_file_fails: message was: $(cat "$tmp/log")"
fi

mkdir -p "$tmp/no_data"
printf '{"baseline": 1.0}\n{"step": 1, "loss": nu' >"$tmp/no_data/metrics.jsonl"
if "$py" "$tool" "$tmp/no_data" >"$tmp/log" 2>&1; then
  echo "FAIL no_data_fails: exited 0"
elif grep -q "no training or validation loss" "$tmp/log" && [ ! -e "$tmp/no_data/metrics.png" ]; then
  echo "PASS no_data_fails"
else
  echo "FAIL no_data_fails: message was: $(cat "$tmp/log")"
fi
