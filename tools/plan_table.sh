#!/bin/sh
# plan_table.sh: the memory plan of a config (default conf/model/base_lcm_1_6b.ini) on the CUDA backend
# at 1, 2, 4 and 8 devices x shard 0/1/2 x recompute none/layer x data.max_tokens 7168 and 2048, as a
# markdown table of GB per device (docs/performance.md). Usage: tools/plan_table.sh [path/to/lcm] [config]
set -eu
LCM=${1:-./lcm}
CFG=${2:-conf/model/base_lcm_1_6b.ini}
echo "| data.max_tokens | recompute | shard | 1 device | 2 devices | 4 devices | 8 devices |"
echo "|---:|---|---:|---:|---:|---:|---:|"
for mt in 7168 2048; do
  for rc in none layer; do
    for sh in 0 1 2; do
      row="| $mt | $rc | $sh |"
      for n in 1 2 4 8; do
        if [ "$n" -eq 1 ] && [ "$sh" -gt 0 ]; then
          row="$row — |"
          continue
        fi
        gb=$("$LCM" plan "$CFG" --backend cuda --devices "$n" --shard "$sh" trainer.recompute="$rc" \
          data.max_tokens="$mt" | awk '$1 == "total" {print $(NF-1)}')
        row="$row $gb |"
      done
      echo "$row"
    done
  done
done
