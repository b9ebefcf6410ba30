#!/bin/sh
# test_convert_reference.sh: tools/convert_reference.py moves a trained lcm model and an lcm normalizer
# to the reference's fairseq2 checkpoint layout ({"model": state_dict, "model_key": "model"}, the
# reference parameter names) and back, bit for bit in f32 (f16 rounds as torch rounds); lcm trains from
# the converted-back weights; a clipping normalizer and a missing file are one-line errors.
# Needs $LCM_BIN and a Python with torch + safetensors (else SKIP).
set -u
LCM=${LCM_BIN:-build/lcm}
TOOL=tools/convert_reference.py
py=""
for p in "${LCM_PYTHON:-}" ./.venv/bin/python /usr/bin/python3 python3; do
  [ -n "$p" ] || continue
  if "$p" -c 'import torch, safetensors.torch' >/dev/null 2>&1; then py=$p; break; fi
done
cases="model_round_trip model_f16 lcm_trains_from_converted normalizer_round_trip refusals"
if [ -z "$py" ]; then
  for c in $cases; do echo "SKIP $c: no Python with torch and safetensors (tools/install-deps.sh --python)"; done
  exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcm-convert-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
check() {
  name=$1
  shift
  if "$@"; then echo "PASS $name"; else echo "FAIL $name"; fi
}

"$LCM" data synth model.sonar_dim=16 synth.dim=16 synth.latent_dim=8 synth.train_docs=40 synth.valid_docs=0 \
  -o "$tmp/data" >/dev/null 2>&1 || exit 1
"$LCM" data fit-normalizer "$tmp/data/train.lcmd" -o "$tmp/norm.safetensors" >/dev/null 2>&1 || exit 1
tiny="model.sonar_dim=16 model.model_dim=16 model.num_layers=2 model.num_heads=2 data.max_seq_len=16 data.max_tokens=96 \
data.train=$tmp/data/train.lcmd trainer.plot=false trainer.devices=cpu optim.warmup_steps=1 model.normalizer=$tmp/norm.safetensors"
"$LCM" train $tiny trainer.max_steps=2 trainer.output_dir="$tmp/run" >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; exit 1; }
weights="$tmp/run/checkpoints/step_000000002/model.safetensors"

# compare.py A.safetensors B.safetensors [f16]: same names, values equal (after rounding A to f16)
cat >"$tmp/compare.py" <<'PY'
import sys, torch
from safetensors.torch import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
assert sorted(a) == sorted(b), (sorted(a)[:3], sorted(b)[:3])
for k in a:
    want = a[k].to(torch.float16).to(torch.float32) if len(sys.argv) > 3 else a[k]
    assert b[k].dtype == torch.float32 and torch.equal(want, b[k]), k
PY
# layout.py REF.pt WEIGHTS.safetensors DTYPE: the reference layout, names and dtype
cat >"$tmp/layout.py" <<'PY'
import sys, torch
from safetensors.torch import load_file
ck = torch.load(sys.argv[1], map_location="cpu")
assert set(ck) == {"model", "model_key"} and ck["model_key"] == "model", list(ck)
names = sorted(load_file(sys.argv[2]))
assert sorted(ck["model"]) == names, sorted(ck["model"])[:3]
assert all(t.dtype == getattr(torch, sys.argv[3]) for t in ck["model"].values())
PY

check model_round_trip sh -c "\"$py\" $TOOL to-reference \"$weights\" $tmp/ref.pt >$tmp/o 2>&1 && \
  \"$py\" $tmp/layout.py $tmp/ref.pt \"$weights\" float32 && \
  \"$py\" -c \"import torch,sys; sd=torch.load('$tmp/ref.pt')['model']; sys.exit(0 if 'lcm.layers.1.ffn.gate_proj.weight' in sd and 'frontend.sonar_normalizer.scale' in sd else 1)\" && \
  \"$py\" $TOOL to-lcm $tmp/ref.pt $tmp/back.safetensors >$tmp/o 2>&1 && \"$py\" $tmp/compare.py \"$weights\" $tmp/back.safetensors"
check model_f16 sh -c "\"$py\" $TOOL to-reference \"$weights\" $tmp/ref16.pt --dtype f16 >$tmp/o 2>&1 && \
  \"$py\" $tmp/layout.py $tmp/ref16.pt \"$weights\" float16 && \
  \"$py\" $TOOL to-lcm $tmp/ref16.pt $tmp/back16.safetensors >$tmp/o 2>&1 && \"$py\" $tmp/compare.py \"$weights\" $tmp/back16.safetensors f16"
check lcm_trains_from_converted sh -c "\"$LCM\" train $tiny trainer.max_steps=2 trainer.output_dir=$tmp/run2 \
  trainer.init_from=$tmp/back.safetensors >$tmp/o 2>&1 && grep -q 'initial weights from $tmp/back.safetensors' $tmp/run2/train.log"
check normalizer_round_trip sh -c "\"$py\" $TOOL to-reference $tmp/norm.safetensors $tmp/norm.pt >$tmp/o 2>&1 && \
  grep -q 'normalizer, 2 tensors' $tmp/o && \"$py\" $TOOL to-lcm $tmp/norm.pt $tmp/norm2.safetensors >$tmp/o 2>&1 && \
  \"$py\" $tmp/compare.py $tmp/norm.safetensors $tmp/norm2.safetensors && \
  \"$LCM\" train $tiny trainer.max_steps=2 trainer.output_dir=$tmp/run3 model.normalizer=$tmp/norm2.safetensors >$tmp/o 2>&1"
"$py" -c "import torch; torch.save({'model': {'center': torch.zeros(4), 'scale': torch.ones(4), 'clip_min': torch.zeros(4)}}, '$tmp/clip.pt')"
check refusals sh -c "\"$py\" $TOOL to-lcm $tmp/clip.pt $tmp/x.safetensors >$tmp/o 2>&1; [ \$? -eq 1 ] && \
  [ \$(wc -l <$tmp/o) -eq 1 ] && grep -q 'clip_min (clipping) has no lcm equivalent' $tmp/o && [ ! -e $tmp/x.safetensors ] && \
  \"$py\" $TOOL to-lcm $tmp/none.pt $tmp/x.safetensors >$tmp/o 2>&1; [ \$? -eq 1 ] && [ \$(wc -l <$tmp/o) -eq 1 ] && grep -q 'none.pt: no such file' $tmp/o"
