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

# verify.py LCM.safetensors REF.pt BACK.safetensors DTYPE: REF.pt has the reference layout, names and
# dtype; BACK (converted back from REF.pt) has the same names as LCM and its values (rounded to DTYPE).
cat >"$tmp/verify.py" <<'PY'
import sys, torch
from safetensors.torch import load_file
ours, ref_path, back_path, dtype = load_file(sys.argv[1]), sys.argv[2], sys.argv[3], getattr(torch, sys.argv[4])
ck = torch.load(ref_path, map_location="cpu")
assert set(ck) == {"model", "model_key"} and ck["model_key"] == "model", list(ck)
assert sorted(ck["model"]) == sorted(ours), sorted(ck["model"])[:3]
assert all(t.dtype == dtype for t in ck["model"].values())
back = load_file(back_path)
assert sorted(back) == sorted(ours)
for k in ours:
    assert back[k].dtype == torch.float32 and torch.equal(ours[k].to(dtype).to(torch.float32), back[k]), k
PY

check model_round_trip sh -c "\"$py\" $TOOL to-reference \"$weights\" $tmp/ref.pt >$tmp/o 2>&1 && \
  \"$py\" $TOOL to-lcm $tmp/ref.pt $tmp/back.safetensors >$tmp/o 2>&1 && \
  \"$py\" $tmp/verify.py \"$weights\" $tmp/ref.pt $tmp/back.safetensors float32 && \
  \"$py\" -c \"from safetensors.torch import load_file as l; import sys; n = l('$tmp/back.safetensors'); \
sys.exit(0 if 'lcm.layers.1.ffn.gate_proj.weight' in n and 'frontend.sonar_normalizer.scale' in n else 1)\""
check model_f16 sh -c "\"$py\" $TOOL to-reference \"$weights\" $tmp/ref16.pt --dtype f16 >$tmp/o 2>&1 && \
  \"$py\" $TOOL to-lcm $tmp/ref16.pt $tmp/back16.safetensors >$tmp/o 2>&1 && \
  \"$py\" $tmp/verify.py \"$weights\" $tmp/ref16.pt $tmp/back16.safetensors float16"
check lcm_trains_from_converted sh -c "\"$LCM\" train $tiny trainer.max_steps=2 trainer.output_dir=$tmp/run2 \
  trainer.init_from=$tmp/back.safetensors >$tmp/o 2>&1 && grep -q 'initial weights from $tmp/back.safetensors' $tmp/run2/train.log"
check normalizer_round_trip sh -c "\"$py\" $TOOL to-reference $tmp/norm.safetensors $tmp/norm.pt >$tmp/o 2>&1 && \
  grep -q 'normalizer, 2 tensors' $tmp/o && \"$py\" $TOOL to-lcm $tmp/norm.pt $tmp/norm2.safetensors >$tmp/o 2>&1 && \
  \"$py\" $tmp/verify.py $tmp/norm.safetensors $tmp/norm.pt $tmp/norm2.safetensors float32 && \
  \"$LCM\" train $tiny trainer.max_steps=2 trainer.output_dir=$tmp/run3 model.normalizer=$tmp/norm2.safetensors >$tmp/o 2>&1"
"$py" -c "import torch; torch.save({'model': {'center': torch.zeros(4), 'scale': torch.ones(4), 'clip_min': torch.zeros(4)}}, '$tmp/clip.pt')"
check refusals sh -c "\"$py\" $TOOL to-lcm $tmp/clip.pt $tmp/x.safetensors >$tmp/o 2>&1; [ \$? -eq 1 ] && \
  [ \$(wc -l <$tmp/o) -eq 1 ] && grep -q 'clip_min (clipping) has no lcm equivalent' $tmp/o && [ ! -e $tmp/x.safetensors ] && \
  \"$py\" $TOOL to-lcm $tmp/none.pt $tmp/x.safetensors >$tmp/o 2>&1; [ \$? -eq 1 ] && [ \$(wc -l <$tmp/o) -eq 1 ] && grep -q 'none.pt: no such file' $tmp/o"
