#!/usr/bin/env python3
"""torch_ref.py: Base-LCM in PyTorch, written independently of lcm's C code, for the parity test.

Reads (all safetensors, parsed here with numpy so that no extra package is needed):
  --weights W   the model's parameters under the reference state-dict names (fp32)
  --batch X     tensors x [B, T, D] raw embeddings (fp32), lens [B] (int32), center [D], scale [D]
                and metadata: num_heads, rope_theta, norm_eps, dropout, n_targets, and for dropout
                seed, step, microbatch (the counter-based mask key)
Writes --out G: "loss" (scalar, the objective: summed squared error / n_targets) and the gradient of
every parameter under its name.
With --generate P instead of --batch: continues the prompts in P by the reference generator's rules
(see generate() below) and writes the generated concepts, their counts and stop reasons.

The model follows docs/model.md; module names reproduce the reference state dict
(frontend.pre_linear, lcm.layers.{i}.self_attn.q_proj, ..., postnet.fc) and load_state_dict(strict=True)
checks that our checkpoint names match it. Residual-dropout masks are recomputed here from the same
Philox4x32-10 counters as lcm's (include/lcm/philox.h), so dropout is checked too.
"""
import argparse
import json
import math
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64, "F16": np.float16}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = blob[8 + n:]
    tensors = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        tensors[name] = arr.copy()
    return tensors, meta


def write_safetensors(path, tensors):
    header, chunks, off = {}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        raw = arr.tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for c in chunks:
            f.write(c)


# ---- Philox4x32-10, vectorised: the same counters as lcm_dropout_keep --------------------------
M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32(c0, c1, c2, c3, key):
    c = [np.asarray(v, dtype=np.uint64) & MASK32 for v in (c0, c1, c2, c3)]
    k0, k1 = key & 0xFFFFFFFF, (key >> 32) & 0xFFFFFFFF
    for _ in range(10):
        p0 = M0 * c[0]
        p1 = M1 * c[2]
        hi0, lo0 = p0 >> np.uint64(32), p0 & MASK32
        hi1, lo1 = p1 >> np.uint64(32), p1 & MASK32
        c = [hi1 ^ c[1] ^ np.uint64(k0), lo1, hi0 ^ c[3] ^ np.uint64(k1), lo0]
        k0 = (k0 + W0) & 0xFFFFFFFF
        k1 = (k1 + W1) & 0xFFFFFFFF
    return c


def dropout_keep(n, p, seed, step, microbatch, layer, site):
    """Keep mask of n elements, identical to lcm_dropout_keep over element indices 0..n-1."""
    threshold = min(int(p * 4294967296.0), 0xFFFFFFFF)
    idx = np.arange(n, dtype=np.uint64)
    c0 = idx >> np.uint64(2)
    c1 = (idx >> np.uint64(34)) | np.uint64((site << 30) & 0xFFFFFFFF)
    c2 = np.full(n, step & 0xFFFFFFFF, dtype=np.uint64)
    c3 = np.full(n, ((microbatch << 8) | (layer & 0xFF)) & 0xFFFFFFFF, dtype=np.uint64)
    r = philox4x32(c0, c1, c2, c3, seed)
    lane = (idx & np.uint64(3)).astype(np.int64)
    word = np.choose(lane, r)
    return word >= np.uint64(threshold)


# ---- the model, with the reference module names -------------------------------------------------
class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.H = H
        self.q_proj, self.k_proj, self.v_proj, self.output_proj = (nn.Linear(C, C) for _ in range(4))


class FFN(nn.Module):
    def __init__(self, C, Fdim):
        super().__init__()
        self.gate_proj = nn.Linear(C, Fdim)
        self.inner_proj = nn.Linear(C, Fdim)
        self.output_proj = nn.Linear(Fdim, C)


class Layer(nn.Module):
    def __init__(self, C, H, Fdim, eps):
        super().__init__()
        self.self_attn_layer_norm = RMSNorm(C, eps)
        self.self_attn = Attention(C, H)
        self.ffn_layer_norm = RMSNorm(C, eps)
        self.ffn = FFN(C, Fdim)


class Decoder(nn.Module):
    def __init__(self, C, L, H, Fdim, eps):
        super().__init__()
        self.layers = nn.ModuleList(Layer(C, H, Fdim, eps) for _ in range(L))
        self.layer_norm = RMSNorm(C, eps)


class Frontend(nn.Module):
    def __init__(self, D, C):
        super().__init__()
        self.pre_linear = nn.Linear(D, C)


class PostNet(nn.Module):
    def __init__(self, C, D):
        super().__init__()
        self.fc = nn.Linear(C, D)


class BaseLCM(nn.Module):
    def __init__(self, D, C, L, H, Fdim, eps):
        super().__init__()
        self.frontend = Frontend(D, C)
        self.lcm = Decoder(C, L, H, Fdim, eps)
        self.postnet = PostNet(C, D)


def rope_table(T, hd, theta):
    """[T, hd/2, 2]: cos and sin of t * theta^(-2i/hd) as fairseq2's RotaryEncoder builds its table,
    each step an fp32 tensor operation."""
    freqs = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    angles = torch.outer(torch.arange(T, dtype=torch.float32), freqs)
    return torch.view_as_real(torch.polar(torch.ones_like(angles), angles))


def rope(x, theta):
    """x [B, H, T, hd]: rotate interleaved pairs (2i, 2i+1) by the table's angles."""
    B, H, T, hd = x.shape
    rot = torch.view_as_complex(rope_table(T, hd, theta).contiguous())
    xc = torch.view_as_complex(x.float().reshape(B, H, T, hd // 2, 2).contiguous())
    return torch.view_as_real(xc * rot).reshape(B, H, T, hd)


def predictions(model, x, lens, center, scale, meta):
    """The model's output y [B, T, D] (normalized space) and the normalized input xn."""
    B, T, D = x.shape
    H = int(meta["num_heads"])
    theta = float(meta["rope_theta"])
    p = float(meta.get("dropout", "0"))
    seed, step, mb = int(meta.get("seed", "0")), int(meta.get("step", "0")), int(meta.get("microbatch", "0"))
    xn = (x - center) / scale
    h = model.frontend.pre_linear(xn)
    C = h.shape[-1]
    hd = C // H
    pos = torch.arange(T)
    allowed = (pos[None, :] <= pos[:, None])[None, :, :] & (pos[None, None, :] < lens[:, None, None])  # [B, Tq, Tk]

    def drop(branch, layer, site):
        if p == 0:
            return branch
        keep = dropout_keep(B * T * C, p, seed, step, mb, layer, site).reshape(B, T, C)
        return branch * torch.from_numpy(keep.astype(np.float32)) / (1 - p)

    for l, layer in enumerate(model.lcm.layers):
        a = layer.self_attn_layer_norm(h)
        att = layer.self_attn
        q, k, v = (proj(a).view(B, T, H, hd).transpose(1, 2) for proj in (att.q_proj, att.k_proj, att.v_proj))
        q, k = rope(q, theta), rope(k, theta)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
        scores = scores.masked_fill(~allowed[:, None, :, :], float("-inf"))
        o = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
        h = h + drop(att.output_proj(o), l, 0)
        f = layer.ffn_layer_norm(h)
        s = F.silu(layer.ffn.gate_proj(f)) * layer.ffn.inner_proj(f)
        h = h + drop(layer.ffn.output_proj(s), l, 1)
    y = model.postnet.fc(model.lcm.layer_norm(h))
    return y, xn


def forward(model, x, lens, center, scale, meta):
    B, T, D = x.shape
    y, xn = predictions(model, x, lens, center, scale, meta)
    pos = torch.arange(T)
    # next-concept targets in normalized space; row b has lens[b] - 1 of them
    tmask = (pos[None, :] < (lens[:, None] - 1)).float()  # [B, T]
    target = torch.zeros_like(xn)
    target[:, :-1] = xn[:, 1:]
    err = ((y - target) ** 2).sum(-1) * tmask
    return err.sum() / float(meta["n_targets"])


def generate(model, prompts, center, scale, eot, meta):
    """The reference generator's rules, one prompt at a time and without a cache: the prediction for the
    next position from a full forward over the prefix, denormalized and appended, until the cosine to
    the EOT embedding reaches eos_threshold or to the previous concept reaches repetition_threshold
    (both only after min_gen_len concepts), max_gen_len concepts, or max_seq_len positions in all.
    Temperature 0 (no noise). Returns (concepts, reason) per prompt; reasons as lcm_stop_reason."""
    max_gen, min_gen = int(meta["max_gen_len"]), int(meta["min_gen_len"])
    eos_thr, rep_thr = float(meta["eos_threshold"]), float(meta["repetition_threshold"])
    max_seq = int(meta["max_seq_len"])
    out = []
    for p in prompts:
        seq = p.clone()
        gen, reason = [], None
        while reason is None:
            T = seq.shape[0]
            y, _ = predictions(model, seq[None], torch.tensor([T]), center, scale, meta)
            new = y[0, -1].double() * scale.double() + center.double()
            new = new.float()
            gen.append(new)
            n = len(gen)
            cos = lambda a, b: float(F.cosine_similarity(a.double()[None], b.double()[None])[0])
            if n >= min_gen and eot is not None and cos(new, eot) >= eos_thr:
                reason = 0
            elif n >= min_gen and rep_thr > 0 and cos(new, seq[-1]) >= rep_thr:
                reason = 1
            elif n >= max_gen:
                reason = 2
            elif T + 1 >= max_seq:
                reason = 3
            seq = torch.cat([seq, new[None]], 0)
        out.append((torch.stack(gen), reason))
    return out


def main_generate(args, model):
    batch, meta = read_safetensors(args.generate)
    x = torch.from_numpy(batch["prompts"].astype(np.float32))
    lens = batch["lens"].astype(np.int64)
    eot = torch.from_numpy(batch["eot"].astype(np.float32)) if "eot" in batch else None
    center, scale = torch.from_numpy(batch["center"]), torch.from_numpy(batch["scale"])
    with torch.no_grad():
        res = generate(model, [x[i, :lens[i]] for i in range(len(lens))], center, scale, eot, meta)
    D = x.shape[-1]
    max_gen = int(meta["max_gen_len"])
    gen = np.zeros((len(res), max_gen, D), dtype=np.float32)
    for i, (g, _) in enumerate(res):
        gen[i, :g.shape[0]] = g.numpy()
    write_safetensors(args.out, {"gen": gen, "gen_len": np.array([g.shape[0] for g, _ in res], dtype=np.float32),
                                 "reason": np.array([r for _, r in res], dtype=np.float32)})
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--batch", help="a training batch: write the loss and every gradient")
    ap.add_argument("--generate", help="prompts (prompts [n, P, D] right-padded, lens [n], center, scale, "
                    "optional eot; metadata num_heads, rope_theta, norm_eps, max_gen_len, min_gen_len, "
                    "eos_threshold, repetition_threshold, max_seq_len): write gen [n, max_gen_len, D], gen_len, reason")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if (args.batch is None) == (args.generate is None):
        ap.error("give one of --batch and --generate")
    torch.manual_seed(0)
    weights, _ = read_safetensors(args.weights)
    batch, meta = read_safetensors(args.batch or args.generate)
    D = weights["frontend.pre_linear.weight"].shape[1]
    C = weights["frontend.pre_linear.weight"].shape[0]
    L = 1 + max(int(k.split(".")[2]) for k in weights if k.startswith("lcm.layers."))
    Fdim = weights["lcm.layers.0.ffn.gate_proj.weight"].shape[0]
    model = BaseLCM(D, C, L, int(meta["num_heads"]), Fdim, float(meta["norm_eps"]))
    state = {k: torch.from_numpy(v.astype(np.float32)) for k, v in weights.items()
             if not k.startswith("frontend.sonar_normalizer.")}
    model.load_state_dict(state, strict=True)
    if args.generate:
        return main_generate(args, model)
    x = torch.from_numpy(batch["x"].astype(np.float32))
    lens = torch.from_numpy(batch["lens"].astype(np.int64))
    loss = forward(model, x, lens, torch.from_numpy(batch["center"]), torch.from_numpy(batch["scale"]), meta)
    loss.backward()
    out = {"loss": np.array(loss.item(), dtype=np.float32)}
    for name, prm in model.named_parameters():
        out[name] = prm.grad.numpy()
    write_safetensors(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
