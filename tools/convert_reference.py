#!/usr/bin/env python3
"""convert_reference.py: move weights and normalizers between the reference LCM (fairseq2 / PyTorch
checkpoints, .pt) and lcm (safetensors), both ways.

    convert_reference.py to-lcm IN.pt OUT.safetensors
    convert_reference.py to-reference IN.safetensors OUT.pt [--dtype f32|f16|bf16]

What is converted (docs/model.md, "Parameter names"):
  a model      the state dict of a Base-LCM (frontend.pre_linear.weight, lcm.layers.0..., postnet.fc...,
               and frontend.sonar_normalizer.{center,scale} when present); the names are the same on
               both sides, so only the container and the dtype change. lcm reads the result with
               trainer.init_from=OUT.safetensors, `lcm eval` and `lcm generate`.
  a normalizer the reference's SonarNormalizer buffers "center" and "scale" (its released normalizer);
               lcm's normalizer file holds the same two tensors (model.normalizer=OUT.safetensors).
The reference side is a fairseq2 checkpoint: torch.save of {"model": state_dict} (a "model_key" entry
naming another key is followed; a bare state dict is read too). to-reference writes
{"model": state_dict, "model_key": "model"}. lcm's side is F32 safetensors; to-lcm widens f16/bf16 to
f32 exactly. A normalizer that clips (clip_min/clip_max buffers) or uses the FFT option has no lcm
equivalent and is refused. Needs PyTorch and the safetensors package.
"""
import argparse
import sys

NORMALIZER_KEYS = {"center", "scale"}
NOT_CONVERTIBLE = {"clip_min", "clip_max"}


def fail(msg):
    print(f"convert_reference: {msg}", file=sys.stderr)
    sys.exit(1)


def state_dict_of(obj, path):
    """The state dict inside a fairseq2 checkpoint (or a bare state dict)."""
    import torch

    if isinstance(obj, dict) and "model_key" in obj and isinstance(obj.get(obj["model_key"]), dict):
        obj = obj[obj["model_key"]]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        fail(f"{path}: not a fairseq2 checkpoint or state dict of tensors (expected {{'model': {{name: tensor}}}})")
    return obj


def to_lcm(src, dst):
    import torch
    from safetensors.torch import save_file

    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        fail(f"{src}: no such file")
    except Exception as e:  # a pickle torch refuses, a truncated file: one line, the file named
        fail(f"{src}: cannot read as a PyTorch checkpoint: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    sd = state_dict_of(obj, src)
    bad = sorted(NOT_CONVERTIBLE & set(sd))
    if bad:
        fail(f"{src}: a normalizer with {', '.join(bad)} (clipping) has no lcm equivalent")
    out = {}
    for name, t in sd.items():
        if not t.is_floating_point():
            fail(f"{src}: tensor {name} is {t.dtype}, not floating point")
        out[name] = t.detach().to(torch.float32).contiguous()
    save_file(out, dst, metadata={"format": "pt", "producer": "tools/convert_reference.py"})
    kind = "normalizer" if set(sd) == NORMALIZER_KEYS else "model"
    return f"{dst}: {kind}, {len(out)} tensors, {sum(t.numel() for t in out.values())} values (f32)"


def to_reference(src, dst, dtype):
    import torch
    from safetensors.torch import load_file

    try:
        sd = load_file(src)
    except FileNotFoundError:
        fail(f"{src}: no such file")
    except Exception as e:
        fail(f"{src}: cannot read as safetensors: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    want = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    out = {name: t.to(want).contiguous() for name, t in sd.items()}
    torch.save({"model": out, "model_key": "model"}, dst)
    kind = "normalizer" if set(sd) == NORMALIZER_KEYS else "model"
    return f"{dst}: {kind}, {len(out)} tensors ({dtype}), fairseq2 checkpoint layout"


def main():
    ap = argparse.ArgumentParser(description="Convert weights and normalizers between the reference LCM and lcm.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("to-lcm", help="fairseq2/PyTorch .pt -> lcm safetensors")
    a.add_argument("src")
    a.add_argument("dst")
    b = sub.add_parser("to-reference", help="lcm safetensors -> fairseq2/PyTorch .pt")
    b.add_argument("src")
    b.add_argument("dst")
    b.add_argument("--dtype", choices=("f32", "f16", "bf16"), default="f32")
    args = ap.parse_args()
    try:
        import safetensors  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        fail(f"needs PyTorch and the safetensors package ({e.name} is missing)")
    if args.cmd == "to-lcm":
        print(to_lcm(args.src, args.dst))
    else:
        print(to_reference(args.src, args.dst, args.dtype))


if __name__ == "__main__":
    main()
