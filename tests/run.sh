#!/bin/sh
# run.sh: run test binaries (arguments) and the shell tests tests/test_*.sh, count their
# PASS / FAIL / SKIP lines, and end with the line "N passed, N failed".
# A binary that exits non-zero without printing a FAIL line (a crash, a sanitizer report) counts as
# one failure. Logs go to $TEST_LOG_DIR (default build/test-logs).
# Environment: LCM_BIN (the lcm binary under test).
set -u
log_dir=${TEST_LOG_DIR:-build/test-logs}
mkdir -p "$log_dir"
pass=0 fail=0 skip=0
failed_names=""

run_one() {
  eval "last=\${$#}"; name=$(basename "$last")
  log="$log_dir/$name.log"
  start=$(date +%s)
  "$@" >"$log.out" 2>"$log.err"
  rc=$?
  end=$(date +%s)
  p=$(grep -c '^PASS ' "$log.out")
  f=$(grep -c '^FAIL ' "$log.out")
  s=$(grep -c '^SKIP ' "$log.out")
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1
    echo "FAIL $name: exited with status $rc without reporting a failure (crash?)" >>"$log.out"
  fi
  pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
  printf '%-34s %3d passed %3d failed %3d skipped  (%ds)\n' "$name" "$p" "$f" "$s" $((end - start))
  grep '^SKIP ' "$log.out" | sed 's/^/    /'
  if [ "$f" -gt 0 ]; then
    failed_names="$failed_names $name"
    grep '^FAIL ' "$log.out" | sed 's/^/    /'
    echo "    --- stderr (last 40 lines) of $name:"
    tail -n 40 "$log.err" | sed 's/^/    /'
  fi
}

for t in "$@"; do
  run_one "$t"
done
for t in tests/test_*.sh; do
  [ -f "$t" ] || continue
  case " ${TEST_SH_SKIP:-} " in *" $(basename "$t") "*) continue ;; esac
  run_one sh "$t"
done

[ "$skip" -gt 0 ] && echo "$skip skipped (see the SKIP lines above for why)"
[ -n "$failed_names" ] && echo "failing:$failed_names (logs in $log_dir)"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
