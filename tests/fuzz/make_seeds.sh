#!/bin/sh
# make_seeds.sh LCM OUT: write the seed corpora of the fuzz harnesses into OUT/<target>/, from files
# that lcm itself writes (a synthetic dataset, an import from .npy, a training checkpoint of the tiny
# model in tests/fuzz/tiny.ini) and from the conf/ files. Run by `make fuzz` (tests/fuzz/run.sh), so
# no binary seed is committed; the committed inputs of tests/fuzz/seeds/ are the crash regressions.
set -eu
LCM=$1
OUT=$2
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/lcm-seeds-XXXXXX")
trap 'rm -rf "$work"' EXIT
for t in config npy lcmd safetensors json; do mkdir -p "$OUT/$t"; done
sep='
=====
'

# config: conf/ files as they are; a three-file base chain with overrides (parts split at the
# separator line: top file, base 1, base 2, then one override per line).
for f in "$root"/conf/*.ini "$root"/conf/model/*.ini; do cp "$f" "$OUT/config/$(basename "$f")"; done
printf '[config]\nbase = b1.ini\n[trainer]\nmax_steps = 50\n%s[config]\nbase = b2.ini\n[model]\nnum_layers = 2\n%s[config]\nbase = model/toy.ini\n[optim]\nlr = 3e-4\n%strainer.seed=7\n++data.max_tokens = 512\n' \
  "$sep" "$sep" "$sep" >"$OUT/config/chain"

# lcmd and safetensors: a synthetic dataset with its normalizer.
"$LCM" data synth "$here/tiny.ini" -o "$work/synth" >/dev/null
cp "$work/synth/train.lcmd" "$OUT/lcmd/synth_train.lcmd"
cp "$work/synth/valid.lcmd" "$OUT/lcmd/synth_valid.lcmd"
{ printf '\001'; cat "$work/synth/normalizer.safetensors"; } >"$OUT/safetensors/normalizer"

# npy and lcmd: .npy files written by numpy (the project's .venv, else the system python), imported
# by lcm (f16 with offsets, EOT and source ids; bf16).
py=python3
[ -x "$root/.venv/bin/python" ] && py="$root/.venv/bin/python"
if "$py" -c 'import numpy' 2>/dev/null; then
  "$py" - "$work" <<'PY'
import sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(0)
np.save(f"{d}/emb.npy", rng.standard_normal((10, 4)).astype(np.float32))
np.save(f"{d}/emb16.npy", rng.standard_normal((10, 4)).astype(np.float16))
np.save(f"{d}/len.npy", np.array([3, 4, 3], dtype=np.int64))
np.save(f"{d}/len32.npy", np.array([3, 4, 3], dtype=np.int32))
np.save(f"{d}/off.npy", np.array([0, 3, 7, 10], dtype=np.uint64))
np.save(f"{d}/eot.npy", np.ones(4, dtype=np.float32))
np.save(f"{d}/ids.npy", np.array([5, 6, 7], dtype=np.uint32))
PY
  for f in emb emb16 len len32 off eot ids; do cp "$work/$f.npy" "$OUT/npy/$f.npy"; done
  "$LCM" data import "$work/emb.npy" "$work/len.npy" -o "$work/imp.lcmd" >/dev/null
  "$LCM" data import "$work/emb16.npy" "$work/off.npy" --offsets --eot "$work/eot.npy" --source-ids "$work/ids.npy" \
    --dtype f16 -o "$work/imp16.lcmd" >/dev/null
  "$LCM" data import "$work/emb.npy" "$work/len32.npy" --dtype bf16 -o "$work/impbf.lcmd" >/dev/null
  cp "$work/imp.lcmd" "$work/imp16.lcmd" "$work/impbf.lcmd" "$OUT/lcmd/"
else
  echo "make_seeds.sh: no numpy (neither $root/.venv nor python3): no .npy seeds" >&2
fi

# safetensors: a checkpoint of the tiny model (weights, weights through the model-loading path, the
# whole checkpoint directory as model + separator + train state), then its headers for the JSON parser.
"$LCM" train "$here/tiny.ini" trainer.output_dir="$work/run" data.train="$work/synth/train.lcmd" \
  data.valid= data.synthesize=false model.normalizer="$work/synth/normalizer.safetensors" >/dev/null 2>&1
ck=$(ls -d "$work"/run/checkpoints/step_* | tail -n 1)
{ printf '\000'; cat "$ck/model.safetensors"; } >"$OUT/safetensors/plain_model"
{ printf '\000'; cat "$ck/train_state.safetensors"; } >"$OUT/safetensors/plain_state"
{ printf '\002'; cat "$ck/model.safetensors"; } >"$OUT/safetensors/weights"
{ printf '\003'; cat "$ck/model.safetensors"; printf '%s' "$sep"; cat "$ck/train_state.safetensors"; } \
  >"$OUT/safetensors/checkpoint"
for f in "$ck/model.safetensors" "$ck/train_state.safetensors" "$work/synth/normalizer.safetensors"; do
  python3 -c 'import sys,struct; b=open(sys.argv[1],"rb").read(); n=struct.unpack("<Q",b[:8])[0]; sys.stdout.buffer.write(b[8:8+n])' \
    "$f" >"$OUT/json/$(basename "$(dirname "$f")")_$(basename "$f" .safetensors).json"
done

for t in config npy lcmd safetensors json; do printf '%s: %s seeds\n' "$t" "$(ls "$OUT/$t" | wc -l)"; done
