# run_compare.sh: shell functions shared by the tests that train, kill and resume runs
# (test_fault_ckpt.sh, test_fault_run.sh, test_mpi.sh, test_train_cli.sh). Sourced, not run: tests/run.sh
# runs only tests/test_*.sh. same_result uses the caller's $tmp (a scratch directory) and $STEPS.

# newest_checkpoint RUN: the newest committed checkpoint directory of RUN (none: empty)
newest_checkpoint() { ls -d "$1"/checkpoints/step_* 2>/dev/null | grep -v '\.tmp$\|\.old$' | sort | tail -n 1; }

# payload FILE: the data section of a safetensors file (everything after the 8-byte length and the
# header): the tensors' bytes, without the metadata (which holds the run directory and timings).
payload() {
  n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
  tail -c +$((8 + n + 1)) "$1"
}

# same_result RUN_A RUN_B: both runs' newest checkpoints are step $STEPS, their weights and moments are
# identical, and so are the loss and gradient norm logged for each step (the last logged for a step: a
# killed run logs some steps twice).
same_result() {
  a=$(newest_checkpoint "$1") b=$(newest_checkpoint "$2")
  [ "$(basename "$a")" = "$(basename "$b")" ] && [ "$(basename "$a")" = "$(printf 'step_%09d' "$STEPS")" ] ||
    { echo "  newest checkpoints: $a vs $b" >&2; return 1; }
  for f in model.safetensors train_state.safetensors; do
    payload "$a/$f" >"$tmp/a.bin" && payload "$b/$f" >"$tmp/b.bin"
    cmp -s "$tmp/a.bin" "$tmp/b.bin" || { echo "  $f differs between $1 and $2" >&2; return 1; }
  done
  for r in "$1" "$2"; do
    grep '"loss"' "$r/metrics.jsonl" | grep -v '"split"' | sed 's/^{"step":\([0-9]*\),"loss":\([^,]*\),"lr":[^,]*,"grad_norm":\([^,]*\),.*/\1 \2 \3/' |
      sort -s -n -k1,1 | awk '{last[$1] = $2 " " $3} END {for (s in last) print s, last[s]}' | sort -n >"$r.losses"
  done
  [ "$(wc -l <"$1.losses")" -eq "$STEPS" ] && cmp -s "$1.losses" "$2.losses" ||
    { echo "  losses or gradient norms differ:" >&2; diff "$1.losses" "$2.losses" | head -5 >&2; return 1; }
}

# wait_for FILE LINES SECONDS: until FILE has LINES lines (1 when the time is up first)
wait_for() {
  i=0
  while [ "$i" -lt $(($3 * 50)) ]; do
    [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ] && return 0
    sleep 0.02
    i=$((i + 1))
  done
  return 1
}
