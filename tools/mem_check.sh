#!/bin/sh
# mem_check.sh: the memory plan against the measured peak resident memory, and the step time, of the
# medium model on CPU workers at each trainer.shard level and trainer.recompute mode
# (docs/performance.md, "Measured on CPU workers"). One `lcm train` per cell under /usr/bin/time; the
# plan's process total (`lcm plan`: devices x per-device total + host memory) is what the peak is held
# to. Step time: the mean of the metrics' elapsed_s differences over steps 2 and 4 (step 1 warms up;
# steps 3 and 5 follow a checkpoint). Usage: tools/mem_check.sh [path/to/lcm] [workdir] [devices];
# PLAN_ONLY=1 reuses the runs already in workdir and recomputes the plan columns only.
set -eu
LCM=${1:-./lcm}
WORK=${2:-/tmp/lcm_mem_check}
N=${3:-4}
CFG=conf/model/medium.ini
COMMON="data.max_tokens=512 trainer.devices=cpu:$N trainer.cpu_threads=$N trainer.max_steps=4 \
trainer.checkpoint_every=2 trainer.log_every=1 optim.warmup_steps=1 trainer.validate_every=0 trainer.plot=false"
mkdir -p "$WORK"
if [ ! -f "$WORK/data/train.lcmd" ]; then
  "$LCM" data synth "$CFG" synth.train_docs=300 synth.valid_docs=0 -o "$WORK/data" >/dev/null
fi
echo "| trainer.shard | trainer.recompute | plan per device | plan, process | peak RSS | peak / plan | step time |"
echo "|---:|---|---:|---:|---:|---:|---:|"
for S in 0 1 2; do
  for R in none layer; do
    run="$WORK/run_s${S}_$R"
    if [ "${PLAN_ONLY:-0}" != 1 ]; then
      rm -rf "$run"
      # shellcheck disable=SC2086
      /usr/bin/time -f "peak_rss_kb %M" -o "$WORK/time_s${S}_$R" "$LCM" train "$CFG" \
        data.train="$WORK/data/train.lcmd" $COMMON trainer.shard="$S" trainer.recompute="$R" \
        trainer.output_dir="$run" >"$WORK/log_s${S}_$R" 2>&1
    fi
    # shellcheck disable=SC2086
    "$LCM" plan "$CFG" data.train="$WORK/data/train.lcmd" $COMMON trainer.shard="$S" trainer.recompute="$R" \
      --backend cpu --devices "$N" >"$WORK/plan_s${S}_$R"
    dev=$(awk '$1 == "total" {print $2}' "$WORK/plan_s${S}_$R")
    proc=$(awk '$1 == "process" {print $(NF-1)}' "$WORK/plan_s${S}_$R")
    rss=$(awk '$1 == "peak_rss_kb" {print $2}' "$WORK/time_s${S}_$R")
    step=$(grep -o '"step":[0-9]*,[^}]*"elapsed_s":[0-9.e+-]*' "$run/metrics.jsonl" |
      sed 's/"step":\([0-9]*\),.*"elapsed_s":\(.*\)/\1 \2/' |
      awk '{t[$1] = $2} END {printf "%.2f", ((t[2] - t[1]) + (t[4] - t[3])) / 2}')
    awk -v s="$S" -v r="$R" -v dev="$dev" -v proc="$proc" -v rss="$rss" -v step="$step" 'BEGIN {
      printf "| %s | %s | %.3f GB | %.3f GB | %.3f GB | %.3f | %s s |\n", s, r, dev / 1e9, proc, rss * 1024 / 1e9,
        rss * 1024 / 1e9 / proc, step }'
  done
done
