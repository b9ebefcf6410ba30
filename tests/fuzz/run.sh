#!/bin/sh
# run.sh BUILD_DIR TARGET...: run the libFuzzer harnesses BUILD_DIR/fuzz_<target> for FUZZ_SECONDS
# each (default 60), print one PASS/FAIL line per target with its executions, and end with
# "N passed, N failed" (the line .ci/run counts). A crash, a leak, a timeout (FUZZ_TIMEOUT seconds for
# one input, default 10) or an out-of-memory input fails the target; the input that did it is kept in
# BUILD_DIR/artifacts/<target>/ and named in the FAIL line.
# Seeds: tests/fuzz/make_seeds.sh (files lcm writes; needs LCM_BIN, default build/lcm) into
# BUILD_DIR/seeds/, written once per build directory; each target's growing corpus is BUILD_DIR/corpus/<target>/.
# The inputs of tests/fuzz/seeds/<target>/ (known crashes, fixed) run first in every run: a regression
# among them fails the target at once.
set -u
dir=$1
shift
secs=${FUZZ_SECONDS:-60}
tmo=${FUZZ_TIMEOUT:-10}
lcm=${LCM_BIN:-build/lcm}
here=$(cd "$(dirname "$0")" && pwd)
pass=0 fail=0

if [ ! -f "$dir/seeds/.done" ]; then
  rm -rf "$dir/seeds"
  if ! sh "$here/make_seeds.sh" "$lcm" "$dir/seeds" >"$dir/seeds.log" 2>&1; then
    echo "FAIL seeds: tests/fuzz/make_seeds.sh failed:"
    sed 's/^/    /' "$dir/seeds.log"
    echo "0 passed, 1 failed"
    exit 1
  fi
  touch "$dir/seeds/.done"
fi

for t in "$@"; do
  bin=$dir/fuzz_$t
  mkdir -p "$dir/corpus/$t" "$dir/artifacts/$t"
  log=$dir/fuzz_$t.log
  # -rss_limit_mb: more than any input should need (a few MB), far below the machine.
  # timeout: libFuzzer's own -timeout did not end an input blocked in read() (a config base naming a
  # pipe, issue 9); a harness still running well past its time is stopped and fails.
  timeout -k 10 $((secs + 120)) "$bin" -max_total_time="$secs" -timeout="$tmo" -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/$t/" "$dir/corpus/$t" "$dir/seeds/$t" $(ls -d "$here/seeds/$t" 2>/dev/null) \
    >"$log" 2>&1
  rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$')
  if [ "$rc" -eq 0 ]; then
    echo "PASS fuzz_$t: ${runs:-?} executions in ${secs}s (${rate:-?}/s), corpus $(ls "$dir/corpus/$t" | wc -l) inputs"
    pass=$((pass + 1))
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "FAIL fuzz_$t: still running $((secs + 120))s after its start (an input that blocks?); log: $log"
    fail=$((fail + 1))
  else
    art=$(ls -t "$dir/artifacts/$t" 2>/dev/null | head -n 1)
    echo "FAIL fuzz_$t: exit $rc after ${runs:-?} executions; input: $dir/artifacts/$t/$art; log: $log"
    grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)' "$log" | head -n 5 | sed 's/^/    /'
    fail=$((fail + 1))
  fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
