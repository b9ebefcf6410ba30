#!/bin/sh
# test_cli_data.sh: `lcm data synth | import | inspect | fit-normalizer`: happy paths, output, exit status
# and one-line error messages. Prints PASS/FAIL/SKIP lines; needs $LCM_BIN (the lcm binary under test)
# and python3 (standard library only: it writes the .npy inputs byte by byte).
set -u
LCM=${LCM_BIN:-build/lcm}
names="help_and_unknown synth_writes_a_dataset synth_same_seed_same_bytes synth_errors import_lengths_and_offsets \
import_errors_leave_nothing inspect_reports inspect_show inspect_damaged_file inspect_nan_fails fit_normalizer"

if ! "$LCM" data --help >/dev/null 2>&1; then
  for n in $names; do echo "SKIP $n: \`lcm data\` is not a command of $LCM yet"; done
  exit 0
fi
if ! command -v python3 >/dev/null 2>&1; then
  for n in $names; do echo "SKIP $n: python3 is needed to write the .npy inputs"; done
  exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcm-cli-data-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failed=0

check() {
  name=$1
  shift
  if "$@"; then echo "PASS $name"; else echo "FAIL $name"; failed=1; fi
}

has() { grep -q -- "$2" "$1"; }
# one_line FILE: exactly one line, starting with "lcm: "
one_line() { [ "$(wc -l <"$1")" -eq 1 ] && grep -q '^lcm: ' "$1"; }

small="model.sonar_dim=16 synth.dim=16 synth.latent_dim=4 synth.train_docs=20 synth.valid_docs=5 synth.min_len=2 synth.max_len=12 synth.mean_len=6 synth.dtype=f32"

help_and_unknown() {
  "$LCM" data --help >"$tmp/h" || return 1
  has "$tmp/h" 'fit-normalizer' || return 1
  for s in synth import inspect fit-normalizer; do "$LCM" data $s --help >"$tmp/h" || return 1; has "$tmp/h" "usage: lcm data $s" || return 1; done
  "$LCM" data frobnicate >"$tmp/o" 2>"$tmp/e"
  [ $? -eq 2 ] && one_line "$tmp/e" && has "$tmp/e" "unknown subcommand 'lcm data frobnicate'"
}

synth_writes_a_dataset() {
  "$LCM" data synth $small synth.with_text=true -o "$tmp/s1" >"$tmp/o" 2>"$tmp/e" || { cat "$tmp/e" >&2; return 1; }
  for f in train.lcmd valid.lcmd train.text valid.text normalizer.safetensors; do [ -s "$tmp/s1/$f" ] || { echo "no $f" >&2; return 1; }; done
  has "$tmp/o" 'train.lcmd: 20 documents' && has "$tmp/o" 'valid.lcmd: 5 documents'
}

synth_same_seed_same_bytes() {
  "$LCM" data synth $small synth.seed=5 -o "$tmp/a" >/dev/null 2>&1 || return 1
  "$LCM" data synth $small synth.seed=5 -o "$tmp/b" >/dev/null 2>&1 || return 1
  "$LCM" data synth $small synth.seed=6 -o "$tmp/c" >/dev/null 2>&1 || return 1
  cmp -s "$tmp/a/train.lcmd" "$tmp/b/train.lcmd" && cmp -s "$tmp/a/valid.lcmd" "$tmp/b/valid.lcmd" &&
    ! cmp -s "$tmp/a/train.lcmd" "$tmp/c/train.lcmd"
}

synth_errors() {
  "$LCM" data synth $small >"$tmp/o" 2>"$tmp/e"
  [ $? -eq 2 ] && one_line "$tmp/e" && has "$tmp/e" '-o DIR' || return 1
  "$LCM" data synth $small synth.latent_dim=17 -o "$tmp/bad" >"$tmp/o" 2>"$tmp/e"
  [ $? -ne 0 ] && one_line "$tmp/e" && has "$tmp/e" 'synth.latent_dim' || return 1
  "$LCM" data synth $small synth.nonsense=1 -o "$tmp/bad" >"$tmp/o" 2>"$tmp/e"
  [ $? -eq 2 ] && one_line "$tmp/e" && has "$tmp/e" 'nonsense'
}

# npy NAME DESCR SHAPE STRUCTFMT VALUES...: write $tmp/NAME with the Python standard library.
npy() {
  python3 - "$tmp/$1" "$2" "$3" "$4" "$5" <<'EOF'
import struct, sys
path, descr, shape, fmt, values = sys.argv[1:6]
vals = [float(v) if fmt in "ef" else int(v) for v in values.split(",")]
d = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
h = d + " " * (63 - (10 + len(d)) % 64) + "\n"
with open(path, "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode())
    f.write(struct.pack("<%d%s" % (len(vals), fmt), *vals))
EOF
}

make_inputs() {
  vals=$(python3 -c 'print(",".join(str(0.01 * ((i * 7) % 13) - 0.05) for i in range(40)))')
  npy emb.npy '<f4' '(10, 4)' f "$vals"
  npy lens.npy '<i4' '(3,)' i "4,1,5"
  npy offs.npy '<i8' '(4,)' q "0,4,5,10"
  npy eot.npy '<f4' '(4,)' f "0.1,0.2,0.3,0.4"
  npy bad_lens.npy '<i8' '(3,)' q "4,2,5"
  npy eot3.npy '<f4' '(3,)' f "0.1,0.2,0.3"
}

import_lengths_and_offsets() {
  make_inputs
  "$LCM" data import "$tmp/emb.npy" "$tmp/lens.npy" --eot "$tmp/eot.npy" -o "$tmp/i1.lcmd" >"$tmp/o" 2>"$tmp/e" || { cat "$tmp/e" >&2; return 1; }
  has "$tmp/o" '3 documents, 10 concepts, dim 4, f32' || return 1
  "$LCM" data import "$tmp/emb.npy" "$tmp/offs.npy" --offsets --eot="$tmp/eot.npy" -o "$tmp/i2.lcmd" >/dev/null 2>&1 || return 1
  cmp -s "$tmp/i1.lcmd" "$tmp/i2.lcmd" || return 1
  # without --eot the output says how to train on it
  "$LCM" data import "$tmp/emb.npy" "$tmp/lens.npy" --dtype bf16 -o "$tmp/i3.lcmd" >"$tmp/o" 2>&1 || return 1
  has "$tmp/o" 'data.append_eot=false'
}

import_errors_leave_nothing() {
  make_inputs
  "$LCM" data import "$tmp/emb.npy" "$tmp/bad_lens.npy" -o "$tmp/x.lcmd" >"$tmp/o" 2>"$tmp/e"
  [ $? -eq 1 ] && one_line "$tmp/e" && has "$tmp/e" 'lengths sum to 11' && [ ! -e "$tmp/x.lcmd" ] || return 1
  "$LCM" data import "$tmp/emb.npy" "$tmp/lens.npy" --eot "$tmp/eot3.npy" -o "$tmp/x.lcmd" >"$tmp/o" 2>"$tmp/e"
  [ $? -eq 1 ] && one_line "$tmp/e" && has "$tmp/e" 'dimension 3' && [ ! -e "$tmp/x.lcmd" ] || return 1
  "$LCM" data import "$tmp/emb.npy" "$tmp/lens.npy" --dtype f64 -o "$tmp/x.lcmd" >"$tmp/o" 2>"$tmp/e"
  [ $? -eq 2 ] && one_line "$tmp/e" || return 1
  "$LCM" data import "$tmp/emb.npy" -o "$tmp/x.lcmd" >"$tmp/o" 2>"$tmp/e"
  [ $? -eq 2 ] && one_line "$tmp/e"
}

inspect_reports() {
  [ -s "$tmp/i1.lcmd" ] || return 1
  "$LCM" data inspect "$tmp/i1.lcmd" >"$tmp/o" 2>"$tmp/e" || return 1
  has "$tmp/o" 'documents      3' && has "$tmp/o" 'dim            4' && has "$tmp/o" '0 NaN, 0 Inf' &&
    has "$tmp/o" 'EOT            present' && has "$tmp/o" 'text           absent' && has "$tmp/o" '\[4, 8) '
}

# A dataset holding a NaN is a failed inspection, with the line that names where the NaN is. (Import
# refuses NaN, so one value of a good file is overwritten: value 22 is document 2's first concept.)
inspect_nan_fails() {
  make_inputs
  npy ramp.npy '<f4' '(10, 4)' f "$(python3 -c 'print(",".join(str(i + 0.25) for i in range(40)))')"
  "$LCM" data import "$tmp/ramp.npy" "$tmp/lens.npy" -o "$tmp/ramp.lcmd" >/dev/null 2>&1 || return 1
  python3 - "$tmp/ramp.lcmd" "$tmp/nan.lcmd" <<'EOF'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
i = b.find(struct.pack("<f", 22.25))
b[i:i + 4] = struct.pack("<I", 0x7fc00000)
open(sys.argv[2], "wb").write(b)
EOF
  "$LCM" data inspect "$tmp/nan.lcmd" >"$tmp/o" 2>"$tmp/e"
  [ $? -eq 1 ] && has "$tmp/o" '1 NaN, 0 Inf' && one_line "$tmp/e" &&
    has "$tmp/e" 'document 2, concept 0 of 5 (concept 5 of the file), dimension 2 is NaN'
}

inspect_show() {
  "$LCM" data inspect "$tmp/s1/train.lcmd" --show 1 >"$tmp/o" 2>"$tmp/e" || return 1
  has "$tmp/o" '^document 1 of 20' && [ "$(grep -c '\.$' "$tmp/o")" -ge 2 ] || return 1
  "$LCM" data inspect "$tmp/s1/train.lcmd" --show 20 >"$tmp/o" 2>"$tmp/e"
  [ $? -eq 2 ] && one_line "$tmp/e" && has "$tmp/e" 'documents 0..19'
}

inspect_damaged_file() {
  head -c 5000 "$tmp/s1/train.lcmd" >"$tmp/cut.lcmd"
  "$LCM" data inspect "$tmp/cut.lcmd" >"$tmp/o" 2>"$tmp/e"
  [ $? -eq 1 ] && one_line "$tmp/e" && has "$tmp/e" 'truncated: the header says' || return 1
  "$LCM" data inspect "$tmp/nothere.lcmd" >"$tmp/o" 2>"$tmp/e"
  [ $? -eq 1 ] && one_line "$tmp/e" && has "$tmp/e" 'nothere.lcmd'
}

fit_normalizer() {
  "$LCM" data fit-normalizer "$tmp/s1/train.lcmd" -o "$tmp/n.safetensors" --max-samples 50 --seed 3 >"$tmp/o" 2>"$tmp/e" || return 1
  [ -s "$tmp/n.safetensors" ] && has "$tmp/o" 'from 50 of' || return 1
  "$LCM" data fit-normalizer "$tmp/s1/train.lcmd" --max-samples x >"$tmp/o" 2>"$tmp/e"
  [ $? -eq 2 ] && one_line "$tmp/e"
}

for n in $names; do check "$n" "$n"; done
exit $failed
