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
cases="plot_written plot_default_output missing_file_fails no_data_fails resume_marked_ca_fixed_scale tensorboard_events"
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
  echo '{"step":0,"event":"start","experiment":"exp"}'
  echo '{"baseline": 1.02, "n_targets": 4096}'
  i=1
  while [ $i -le 40 ]; do
    loss=$(awk "BEGIN { printf \"%.6f\", 1.2 / (1 + 0.1 * $i) }")
    echo "{\"step\": $i, \"loss\": $loss, \"lr\": $(awk "BEGIN { print 1e-5 * $i }"), \"grad_norm\": 3.1, \"concepts_per_s\": 5000, \"elapsed_s\": $i, \"mfu\": 0.31, \"mem_gb\": 12.5, \"future_key\": [1, 2]}"
    if [ $i -eq 20 ]; then echo '{"step":20,"event":"resume"}'; fi
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

# A resume is a dotted vertical line at its step on every panel; the accuracy axis is 0..1 whatever the data.
if "$py" - "$run" >"$tmp/log" 2>&1 <<'PY'
import sys
sys.path.insert(0, "tools")
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import plot_metrics as pm
figs = []
plt.close = figs.append
train, valid, baseline, resumes = pm.read_metrics(sys.argv[1] + "/metrics.jsonl")
assert resumes == [20.0], resumes
assert all(p["loss"] is not None for p in train[:-1]), "an event line was read as a training point"
pm.plot(train, valid, baseline, resumes, sys.argv[1] + "/m.png", "t")
fig = [f for f in figs if hasattr(f, "axes")][0]
marks = [ax for ax in fig.axes if any(list(l.get_xdata()) == [20.0, 20.0] and l.get_linestyle() == ":" for l in ax.lines)]
assert len(marks) == 3, f"resume marked on {len(marks)} panels"
assert any(ax.get_ylim() == (0.0, 1.0) and "accuracy" in ax.get_ylabel() for ax in fig.axes), "accuracy axis not 0..1"
PY
then echo "PASS resume_marked_ca_fixed_scale"; else echo "FAIL resume_marked_ca_fixed_scale"; cat "$tmp/log" >&2; fi

# tools/metrics_to_tensorboard.py: the scalars read back with TensorBoard's own reader.
tb_py=""
for cand in "${LCM_PYTHON:-}" ./.venv/bin/python /usr/bin/python3 python3; do
  [ -n "$cand" ] || continue
  if "$cand" -c 'import tensorboard' >/dev/null 2>&1; then tb_py=$cand; break; fi
done
if [ -z "$tb_py" ]; then
  echo "SKIP tensorboard_events: no Python with the tensorboard package (tools/install-deps.sh --python)"
elif "$tb_py" tools/metrics_to_tensorboard.py "$run" -o "$tmp/tb" >"$tmp/log" 2>&1 && "$tb_py" - "$tmp/tb" >>"$tmp/log" 2>&1 <<'PY'
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator(sys.argv[1]).Reload()
loss = ea.Scalars("train/loss")
assert len(loss) == 40 and loss[0].step == 1 and abs(loss[0].value - 1.2 / 1.1) < 1e-5, loss[:2]
ca = ea.Scalars("valid/ca")
assert [e.step for e in ca] == [10, 20, 30, 40], ca
assert abs(ea.Scalars("valid/baseline")[0].value - 1.02) < 1e-6
PY
then echo "PASS tensorboard_events"; else echo "FAIL tensorboard_events"; cat "$tmp/log" >&2; fi
