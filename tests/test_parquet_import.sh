#!/bin/sh
# test_parquet_import.sh: tools/parquet_to_lcmd.py on small parquet files built here with pyarrow (both
# embedding list layouts, fp32 and fp16, with and without a split column): the files it writes read
# back (by an independent reader following docs/dataset-format.md) to exactly the input, they are byte
# for byte what `lcm data import` writes from the same arrays, and `lcm data inspect` accepts them.
# Python with pyarrow: $LCM_PYTHON, ./.venv/bin/python, /usr/bin/python3, python3 (first that works).
set -u
LCM=${LCM_BIN:-build/lcm}
names="fixed_size_list_f32 list_of_lists_f16_with_split errors_are_one_line same_bytes_as_lcm_import inspect_accepts_output"

PY=
for p in "${LCM_PYTHON:-}" ./.venv/bin/python /usr/bin/python3 python3; do
  [ -n "$p" ] || continue
  if "$p" -c 'import pyarrow, numpy' >/dev/null 2>&1; then PY=$p; break; fi
done
if [ -z "$PY" ]; then
  for n in $names; do echo "SKIP $n: no python with pyarrow and numpy (set LCM_PYTHON, or create .venv: see .ci/run)"; done
  exit 0
fi
have_cli=0
"$LCM" data --help >/dev/null 2>&1 && have_cli=1

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcm-parquet-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failed=0
TOOL=tools/parquet_to_lcmd.py

check() {
  name=$1
  shift
  if "$@"; then echo "PASS $name"; else echo "FAIL $name"; failed=1; fi
}
needs_cli() {
  if [ $have_cli -eq 0 ]; then echo "SKIP $1: \`lcm data\` is not a command of $LCM yet"; return 1; fi
}

# The inputs: make.py writes parquet files and the same data as .npy arrays.
cat >"$tmp/make.py" <<'EOF'
import sys
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

out, layout, ftype, with_split = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "split"
D = 8
rng = np.random.default_rng(3)
lengths = [3, 1, 4, 0, 2, 5, 1]  # document 3 is empty: skipped
n = sum(lengths)
emb = (rng.standard_normal((n, D)) * 0.01).astype(np.float32)
# values that sit on f16 / bf16 rounding ties and in the f16 subnormal range
emb[0, :4] = [1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 2.0 ** -20, -3.0 * 2.0 ** -25]
emb[1, :2] = [1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8]
if ftype == "f16":
    emb = emb.astype(np.float16)
vt = pa.float16() if ftype == "f16" else pa.float32()
inner = pa.list_(vt, D) if layout == "fixed" else pa.list_(vt)
rows, texts, at = [], [], 0
for d, l in enumerate(lengths):
    rows.append([emb[at + i].tolist() for i in range(l)])
    texts.append([f"Sentence {i} of document {d}, naïve ünïcödé." for i in range(l)])
    at += l
cols = {"text_sentences": pa.array(texts, pa.list_(pa.string())),
        "text_sentences_sonar_emb": pa.array(rows, pa.list_(inner))}
split = ["train", "validation", "train", "train", "valid", "train", "dev"]
if with_split:
    cols["split"] = pa.array(split)
pq.write_table(pa.table(cols), out + ".parquet", row_group_size=3)
# The same data as numpy arrays, per output file (train / valid), without the empty document.
keep = [d for d in range(len(lengths)) if lengths[d] > 0]
groups = {"train": keep} if not with_split else {
    "train": [d for d in keep if split[d] == "train"], "valid": [d for d in keep if split[d] != "train"]}
starts = np.concatenate([[0], np.cumsum(lengths)])
for g, docs in groups.items():
    np.save(f"{out}.{g}.emb.npy", np.concatenate([emb[starts[d]:starts[d + 1]] for d in docs]))
    np.save(f"{out}.{g}.lens.npy", np.array([lengths[d] for d in docs], dtype=np.int64))
    np.save(f"{out}.{g}.ids.npy", np.array(docs, dtype=np.uint64))
    with open(f"{out}.{g}.sentences", "w") as f:
        f.write("\n".join(t for d in docs for t in texts[d]))
np.save(out + ".eot.npy", (np.arange(D, dtype=np.float32) - 3.5) * 0.01)
EOF

# check.py FILE.lcmd PREFIX DTYPE: an independent reader; compares with PREFIX.{emb,lens,ids}.npy, .eot.npy
cat >"$tmp/check.py" <<'EOF'
import struct, sys, zlib
import numpy as np

path, prefix, dtype, group = sys.argv[1:5]
b = open(path, "rb").read()
f = struct.unpack_from("<8sIIIIQQQQQQQQQQQII", b, 0)
magic, ver, dt, dim, flags, ndocs, nconc, poff, psize, ooff, osize, soff, ssize, eoff, esize, fsize, tcrc, hcrc = f
page = bytearray(b[:4096]); page[116:120] = bytes(4)
assert magic == b"LCM-DATA" and ver == 1 and fsize == len(b), "header"
assert hcrc == zlib.crc32(bytes(page)) and tcrc == zlib.crc32(b[ooff:]), "crc"
assert dt == {"f32": 1, "f16": 2, "bf16": 3}[dtype], "dtype"
emb = np.load(f"{prefix}.{group}.emb.npy")
lens = np.load(f"{prefix}.{group}.lens.npy")
assert (ndocs, nconc, dim) == (len(lens), emb.shape[0], emb.shape[1]), "counts"
offs = np.frombuffer(b, "<u8", ndocs + 1, ooff)
assert (offs == np.concatenate([[0], np.cumsum(lens)])).all(), "offsets"
raw = b[poff:poff + psize]
if dtype == "f32":
    got = np.frombuffer(raw, "<f4").reshape(nconc, dim)
    want = emb.astype(np.float32)
elif dtype == "f16":
    got = np.frombuffer(raw, "<f2").reshape(nconc, dim)
    want = emb.astype(np.float16)
else:  # bf16: the top 16 bits of the fp32 value, rounded to nearest even
    got = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(nconc, dim)
    u = emb.astype(np.float32).view(np.uint32).astype(np.uint64)
    want = (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)
assert np.array_equal(got, want), "payload"
assert flags & 1 and (np.frombuffer(b, "<u8", ndocs, soff) == np.load(f"{prefix}.{group}.ids.npy")).all(), "ids"
assert flags & 2 and (np.frombuffer(b, "<f4", dim, eoff) == np.load(prefix + ".eot.npy")).all(), "eot"
t = open(path[:-5] + ".text", "rb").read()
n, tb, toff, tsize, bcrc, thc = struct.unpack_from("<QQQQII", t, 16)
th = bytearray(t[:64]); th[52:56] = bytes(4)
assert t[:8] == b"LCM-TEXT" and tsize == len(t) and n == nconc and thc == zlib.crc32(bytes(th)), "text header"
assert bcrc == zlib.crc32(t[64:]), "text crc"
o = [int(v) for v in np.frombuffer(t, "<u8", n + 1, toff)]
sent = [t[64 + o[i]:64 + o[i + 1]].decode() for i in range(n)]
assert sent == open(f"{prefix}.{group}.sentences").read().split("\n"), "sentences"
EOF

fixed_size_list_f32() {
  "$PY" "$tmp/make.py" "$tmp/a" fixed f32 nosplit || return 1
  "$PY" $TOOL "$tmp/a.parquet" -o "$tmp/a.lcmd" --eot "$tmp/a.eot.npy" --row-ids >"$tmp/o" 2>"$tmp/e" || { cat "$tmp/e" >&2; return 1; }
  grep -q '6 documents, 16 concepts, dim 8, f32 (1 empty documents skipped)' "$tmp/o" || { cat "$tmp/o" >&2; return 1; }
  "$PY" "$tmp/check.py" "$tmp/a.lcmd" "$tmp/a" f32 train || return 1
  for dt in f16 bf16; do
    "$PY" $TOOL "$tmp/a.parquet" -o "$tmp/a.lcmd" --eot "$tmp/a.eot.npy" --row-ids --dtype $dt >/dev/null || return 1
    "$PY" "$tmp/check.py" "$tmp/a.lcmd" "$tmp/a" $dt train || return 1
  done
}

list_of_lists_f16_with_split() {
  "$PY" "$tmp/make.py" "$tmp/b" list f16 split || return 1
  "$PY" $TOOL "$tmp/b.parquet" -o "$tmp/b.lcmd" --valid-out "$tmp/b-valid.lcmd" --eot "$tmp/b.eot.npy" --row-ids >"$tmp/o" 2>"$tmp/e" || { cat "$tmp/e" >&2; return 1; }
  grep -q 'b.lcmd: 3 documents, 12 concepts, dim 8, f16 (1 empty' "$tmp/o" && grep -q 'b-valid.lcmd: 3 documents, 4 concepts' "$tmp/o" || { cat "$tmp/o" >&2; return 1; }
  "$PY" "$tmp/check.py" "$tmp/b.lcmd" "$tmp/b" f16 train && "$PY" "$tmp/check.py" "$tmp/b-valid.lcmd" "$tmp/b" f16 valid || return 1
  # fixed-size lists of fp16 and a bf16 store; validation rows need --valid-out (nothing is written
  # without it); output directories that do not exist are created
  "$PY" "$tmp/make.py" "$tmp/c" fixed f16 split || return 1
  if "$PY" $TOOL "$tmp/c.parquet" -o "$tmp/cnone/train.lcmd" --eot "$tmp/c.eot.npy" >"$tmp/o" 2>&1; then return 1; fi
  grep -q 'give --valid-out FILE.lcmd' "$tmp/o" && [ ! -e "$tmp/cnone/valid.lcmd" ] && [ ! -e "$tmp/cnone/train.lcmd" ] || { cat "$tmp/o" >&2; return 1; }
  "$PY" $TOOL "$tmp/c.parquet" -o "$tmp/cdir/new/train.lcmd" --valid-out "$tmp/vdir/valid.lcmd" --eot "$tmp/c.eot.npy" --row-ids --dtype bf16 >/dev/null || return 1
  "$PY" "$tmp/check.py" "$tmp/cdir/new/train.lcmd" "$tmp/c" bf16 train && "$PY" "$tmp/check.py" "$tmp/vdir/valid.lcmd" "$tmp/c" bf16 valid
}

errors_are_one_line() {
  "$PY" - "$tmp/bad" <<'EOF' || return 1
import sys, pyarrow as pa, pyarrow.parquet as pq
p = sys.argv[1]
e = pa.array([[[0.1, 0.2]], [[0.3, 0.4]]], pa.list_(pa.list_(pa.float32(), 2)))
pq.write_table(pa.table({"text_sentences": pa.array([["a", "b"], ["c"]]), "text_sentences_sonar_emb": e}), p + "1.parquet")
pq.write_table(pa.table({"text_sentences": pa.array([["a"], ["c"]]), "text_sentences_sonar_emb": e,
                         "split": pa.array(["train", "holdout"])}), p + "2.parquet")
pq.write_table(pa.table({"text_sentences_sonar_emb": pa.array([[[1e6, 0.0]]], pa.list_(pa.list_(pa.float32(), 2)))}), p + "3.parquet")
EOF
  "$PY" $TOOL "$tmp/bad1.parquet" -o "$tmp/x.lcmd" >"$tmp/o" 2>"$tmp/e"
  [ $? -eq 1 ] && [ "$(wc -l <"$tmp/e")" -eq 1 ] && grep -q 'row 0: 2 sentences but 1 embeddings' "$tmp/e" && [ ! -e "$tmp/x.lcmd" ] || return 1
  "$PY" $TOOL "$tmp/bad2.parquet" -o "$tmp/x.lcmd" >"$tmp/o" 2>"$tmp/e"
  [ $? -eq 1 ] && grep -q "row 1 has split 'holdout'" "$tmp/e" && [ ! -e "$tmp/x.lcmd" ] || return 1
  "$PY" $TOOL "$tmp/bad3.parquet" -o "$tmp/x.lcmd" --no-text --dtype f16 >"$tmp/o" 2>"$tmp/e"
  [ $? -eq 1 ] && grep -q 'too large for f16' "$tmp/e" && [ ! -e "$tmp/x.lcmd" ] || return 1
  "$PY" $TOOL "$tmp/bad3.parquet" -o "$tmp/x.lcmd" >"$tmp/o" 2>"$tmp/e"
  [ $? -eq 1 ] && grep -q 'no column text_sentences; give --no-text' "$tmp/e"
}

same_bytes_as_lcm_import() {
  needs_cli same_bytes_as_lcm_import || return 0
  for src in a b; do
    for dt in f32 f16 bf16; do
      "$PY" $TOOL "$tmp/$src.parquet" -o "$tmp/p.lcmd" --valid-out "$tmp/p-valid.lcmd" --eot "$tmp/$src.eot.npy" --row-ids --dtype $dt --no-text >/dev/null || return 1
      "$LCM" data import "$tmp/$src.train.emb.npy" "$tmp/$src.train.lens.npy" --eot "$tmp/$src.eot.npy" \
        --source-ids "$tmp/$src.train.ids.npy" --dtype $dt -o "$tmp/i.lcmd" >/dev/null || return 1
      cmp "$tmp/p.lcmd" "$tmp/i.lcmd" >&2 || { echo "differ: $src $dt" >&2; return 1; }
    done
  done
}

inspect_accepts_output() {
  needs_cli inspect_accepts_output || return 0
  "$PY" $TOOL "$tmp/a.parquet" -o "$tmp/a.lcmd" --eot "$tmp/a.eot.npy" --row-ids >/dev/null || return 1
  "$LCM" data inspect "$tmp/a.lcmd" >"$tmp/o" 2>"$tmp/e" || { cat "$tmp/e" >&2; return 1; }
  grep -q 'documents      6' "$tmp/o" && grep -q 'source ids     present' "$tmp/o" && grep -q 'text           present' "$tmp/o" || return 1
  "$LCM" data inspect "$tmp/a.lcmd" --show 2 >"$tmp/o" || return 1
  grep -q 'Sentence 3 of document 2, naïve' "$tmp/o"
}

for n in $names; do
  case $n in
    same_bytes_as_lcm_import | inspect_accepts_output) [ $have_cli -eq 1 ] || { needs_cli $n; continue; } ;;
  esac
  check "$n" "$n"
done
exit $failed
