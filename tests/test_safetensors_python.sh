#!/bin/sh
# test_safetensors_python.sh: safetensors interop with the Python `safetensors` package, both ways.
#   1. lcm writes a file (test_safetensors interop_write); tools/st_check.py reads it with the package's
#      strict reader and with safetensors.numpy and compares layout, values and metadata.
#   2. tools/st_check.py writes files with the package; lcm reads them (test_safetensors interop_read).
# Needs a Python with safetensors and numpy: $LCM_PYTHON, ./.venv/bin/python, /usr/bin/python3 or
# python3 (CI: python3 -m venv .venv && .venv/bin/pip install safetensors pyarrow). Without one it
# prints SKIP lines, never PASS. The test binary is found beside $LCM_BIN (build/tests/...).
set -u
here=$(dirname "$0")
checker="$here/../tools/st_check.py"
bin="$(dirname "${LCM_BIN:-build/lcm}")/tests/test_safetensors"

py=""
for p in "${LCM_PYTHON:-}" ./.venv/bin/python /usr/bin/python3 python3; do
  [ -n "$p" ] || continue
  command -v "$p" >/dev/null 2>&1 || continue
  if "$p" -c 'import safetensors, numpy' >/dev/null 2>&1; then py=$p; break; fi
done
if [ -z "$py" ]; then
  why="no Python with the safetensors and numpy packages (set LCM_PYTHON, or create .venv:"
  why="$why python3 -m venv --system-site-packages .venv && .venv/bin/pip install safetensors pyarrow)"
  echo "SKIP lcm_file_read_by_python: $why"
  echo "SKIP python_file_read_by_lcm: no Python with the safetensors and numpy packages"
  exit 0
fi
if [ ! -x "$bin" ]; then
  echo "FAIL python_interop: test binary $bin not built (make builds it)"
  exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcm-st-py-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failed=0

show() { sed 's/^/    /' "$@"; }

# 1. lcm writes, Python reads.
LCM_ST_INTEROP_WRITE="$tmp/lcm.safetensors" "$bin" interop_write >"$tmp/w.out" 2>&1
if grep -q '^PASS interop_write$' "$tmp/w.out" && "$py" "$checker" check "$tmp/lcm.safetensors" >"$tmp/c.out" 2>&1; then
  echo "PASS lcm_file_read_by_python"
else
  echo "FAIL lcm_file_read_by_python"
  show "$tmp/w.out" "$tmp/c.out" 2>/dev/null
  failed=1
fi

# 2. Python writes, lcm reads.
if ! "$py" "$checker" write "$tmp" >"$tmp/written" 2>"$tmp/write.err"; then
  echo "FAIL python_file_read_by_lcm: tools/st_check.py write failed"
  show "$tmp/write.err"
  exit 1
fi
n_files=0
while read -r kind file names; do
  case $kind in
  FILE)
    n_files=$((n_files + 1))
    name=$(basename "$file" .safetensors)
    LCM_ST_INTEROP_READ="$file" LCM_ST_INTEROP_NAMES="$names" "$bin" interop_read >"$tmp/r.out" 2>&1
    if grep -q '^PASS interop_read$' "$tmp/r.out"; then
      echo "PASS python_file_read_by_lcm_$name"
    else
      echo "FAIL python_file_read_by_lcm_$name"
      show "$tmp/r.out"
      failed=1
    fi
    ;;
  SKIP) echo "SKIP python_file_read_by_lcm_bf16: $file $names" ;;
  esac
done <"$tmp/written"
if [ "$n_files" -eq 0 ]; then
  echo "FAIL python_file_read_by_lcm: tools/st_check.py wrote no files"
  failed=1
fi
exit $failed
