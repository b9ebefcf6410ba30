#!/bin/sh
# bench_data.sh: throughput of `lcm data synth`, `lcm data import` and `lcm data fit-normalizer` on a few
# hundred MB (MB/s of embedding payload written or read; MB = 10^6 bytes). Wall-clock times include the
# fsync of the written file.
#
#   tools/bench_data.sh [MB]        default 300; needs about 4 x MB of free space under $TMPDIR (or /tmp)
#
# The import inputs are made from a synthetic f32 dataset (its payload and offsets table become
# emb.npy and offsets.npy), so nothing but lcm and a POSIX shell is needed.
set -eu
LCM=${LCM_BIN:-build/lcm}
MB=${1:-300}
D=1024
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcm-bench-data-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

now() { date +%s.%N; }
# quiet CMD...: run it with its progress lines kept out of the figures (shown only if it fails)
quiet() { "$@" >/dev/null 2>"$tmp/stderr" || { cat "$tmp/stderr" >&2; exit 1; }; }
# rate NAME BYTES T0 T1
rate() { awk -v n="$1" -v b="$2" -v t0="$3" -v t1="$4" 'BEGIN { t = t1 - t0; printf "%-34s %8.1f MB in %6.2f s = %7.1f MB/s\n", n, b / 1e6, t, b / 1e6 / t }'; }
u64_at() { od -An -t u8 -j "$2" -N 8 "$1" | tr -d ' '; }
payload_of() { u64_at "$1" 48; }

echo "lcm data benchmark: $MB MB of payload, dim $D, $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
# documents of mean length 30 (the synth default): MB * 1e6 / (30 * D * bytes per value)
docs16=$((MB * 1000000 / (30 * D * 2)))
docs32=$((MB * 1000000 / (30 * D * 4)))
common="model.sonar_dim=$D synth.dim=$D synth.valid_docs=0"

t0=$(now); quiet "$LCM" data synth $common synth.train_docs=$docs16 synth.dtype=f16 -o "$tmp/s16"; t1=$(now)
rate "synth f16 (incl. normalizer fit)" "$(payload_of "$tmp/s16/train.lcmd")" "$t0" "$t1"
t0=$(now); quiet "$LCM" data synth $common synth.train_docs=$docs32 synth.dtype=f32 -o "$tmp/s32"; t1=$(now)
bytes32=$(payload_of "$tmp/s32/train.lcmd")
rate "synth f32 (incl. normalizer fit)" "$bytes32" "$t0" "$t1"
t0=$(now); quiet "$LCM" data fit-normalizer "$tmp/s16/train.lcmd" -o "$tmp/n.safetensors"; t1=$(now)
n16=$(u64_at "$tmp/s16/train.lcmd" 32)
rate "fit-normalizer ($n16 concepts, f16)" "$(payload_of "$tmp/s16/train.lcmd")" "$t0" "$t1"

# emb.npy [N, D] float32 and offsets.npy [n_docs + 1] uint64, cut out of the f32 dataset.
src="$tmp/s32/train.lcmd"
n=$(u64_at "$src" 32); ndocs=$(u64_at "$src" 24); toff=$(u64_at "$src" 56)
npy_header() { # DESCR SHAPE: a version 1.0 header padded to 128 bytes
  d="{'descr': '$1', 'fortran_order': False, 'shape': $2, }"
  printf '\223NUMPY\001\000\166\000%-117s\n' "$d"
}
{ npy_header '<f4' "($n, $D)"; tail -c +4097 "$src" | head -c "$bytes32"; } >"$tmp/emb.npy"
{ npy_header '<u8' "($((ndocs + 1)),)"; tail -c +$((toff + 1)) "$src" | head -c $(((ndocs + 1) * 8)); } >"$tmp/offsets.npy"
sync
for dt in f32 f16 bf16; do
  t0=$(now); quiet "$LCM" data import "$tmp/emb.npy" "$tmp/offsets.npy" --offsets --dtype $dt -o "$tmp/i.lcmd"; t1=$(now)
  rate "import f32 -> $dt (MB read)" "$bytes32" "$t0" "$t1"
  rm -f "$tmp/i.lcmd"
done
