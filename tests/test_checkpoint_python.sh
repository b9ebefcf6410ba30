#!/bin/sh
# test_checkpoint_python.sh: a checkpoint written by `lcm train` as another program sees it: the Python
# `safetensors` package loads both files, and a CRC-32C written here in plain Python (independent of
# lcm's) reproduces every "crc32c:<tensor>" value in their metadata (docs/checkpoint-format.md).
# Python is found as in test_safetensors_python.sh; without safetensors + numpy: SKIP lines.
set -u
LCM=${LCM_BIN:-build/lcm}
py=""
for p in "${LCM_PYTHON:-}" ./.venv/bin/python /usr/bin/python3 python3; do
  [ -n "$p" ] || continue
  command -v "$p" >/dev/null 2>&1 || continue
  if "$p" -c 'import safetensors, numpy' >/dev/null 2>&1; then py=$p; break; fi
done
if [ -z "$py" ]; then
  echo "SKIP checkpoint_checksums_verified_by_python: no Python with the safetensors and numpy packages"
  exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcm-ckpt-py-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$LCM" data synth model.sonar_dim=16 synth.dim=16 synth.latent_dim=8 synth.train_docs=40 synth.valid_docs=8 \
  -o "$tmp/data" >/dev/null 2>&1 || exit 1
"$LCM" train model.sonar_dim=16 model.model_dim=16 model.num_layers=2 model.num_heads=2 model.ffn_inner_dim=32 \
  data.max_seq_len=16 data.max_tokens=96 data.train="$tmp/data/train.lcmd" trainer.plot=false trainer.devices=cpu \
  optim.warmup_steps=1 trainer.max_steps=2 trainer.output_dir="$tmp/run" >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; exit 1; }
if "$py" - "$tmp"/run/checkpoints/step_000000002/*.safetensors <<'PY'; then
import sys
from safetensors import safe_open
from safetensors.numpy import load_file

table = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    table.append(c)

def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF

assert crc32c(b"123456789") == 0xE3069283
for path in sys.argv[1:]:
    tensors = load_file(path)
    with safe_open(path, "numpy") as f:
        meta = f.metadata()
    assert len(meta["lcm_header_crc32c"]) == 8
    for name, t in tensors.items():
        want = meta["crc32c:" + name]
        got = "%08x" % crc32c(t.tobytes())
        assert got == want, "%s: %s: %s != %s" % (path, name, got, want)
    print("  %s: %d tensors verified" % (path, len(tensors)), file=sys.stderr)
PY
  echo "PASS checkpoint_checksums_verified_by_python"
else
  echo "FAIL checkpoint_checksums_verified_by_python"
fi
