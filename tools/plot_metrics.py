#!/usr/bin/env python3
"""plot_metrics.py: plot a run's metrics.jsonl into one PNG.

    tools/plot_metrics.py RUN_DIR [-o OUT.png]

Reads RUN_DIR/metrics.jsonl, one JSON object per line, as `lcm train` writes it:
  training lines    {"step", "loss", "lr", "grad_norm", "concepts_per_s", "elapsed_s", ["mfu", "mem_gb"]}
  validation lines  {"split": "valid", "step", "loss", "l2", "ca"}
  a baseline line   {"baseline": <predict-the-mean loss>, ...}
  start lines       {"step", "event": "start" | "resume", ["experiment"]}: resumes are marked
Unknown keys are ignored, and so is a last line cut short (the run may still be writing the file).
Writes RUN_DIR/metrics.png (or OUT.png): training and validation loss against step (log scale) with
the baseline as a horizontal line, the learning rate, and the validation l2 and contrastive accuracy
(on a fixed 0-100% scale, chance 50% marked) when the file has them; a dotted vertical line marks each
resume. Exits non-zero with a one-line message when the file is missing or holds no
data.
"""
import argparse
import json
import math
import os
import sys


def fail(msg):
    print(f"plot_metrics: {msg}", file=sys.stderr)
    sys.exit(1)


def number(v):
    """v as a finite float, or None (a missing key, null, NaN or Inf: not plottable)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def read_metrics(path):
    """Training points, validation points, the baseline (or None) and the resume steps from a metrics.jsonl."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        fail(f"{path}: no such file; give the run directory that `lcm train` wrote (it holds metrics.jsonl)")
    except OSError as e:
        fail(f"{path}: cannot read: {e.strerror}")
    train, valid, baseline, resumes = [], [], None, []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                continue  # the line being written when we read
            fail(f"{path}:{i + 1}: not a JSON object: {line[:80]!r}")
        if not isinstance(rec, dict):
            fail(f"{path}:{i + 1}: not a JSON object: {line[:80]!r}")
        if "baseline" in rec and number(rec["baseline"]) is not None:
            baseline = number(rec["baseline"])
            continue
        step = number(rec.get("step"))
        if step is None:
            continue
        if "event" in rec:
            if rec["event"] == "resume":
                resumes.append(step)
            continue
        split = rec.get("split", "train")
        if split == "valid":
            valid.append({"step": step, **{k: number(rec.get(k)) for k in ("loss", "l2", "ca")}})
        elif split == "train":
            train.append({"step": step, **{k: number(rec.get(k)) for k in ("loss", "lr")}})
    return train, valid, baseline, resumes


def series(points, key):
    xs = [p["step"] for p in points if p[key] is not None]
    ys = [p[key] for p in points if p[key] is not None]
    return xs, ys


def plot(train, valid, baseline, resumes, out, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    has_l2 = any(p["l2"] is not None for p in valid)
    has_ca = any(p["ca"] is not None for p in valid)
    n_panels = 2 + (1 if has_l2 or has_ca else 0)
    fig, axes = plt.subplots(n_panels, 1, figsize=(9, 3.2 * n_panels), sharex=True, squeeze=False)
    axes = axes[:, 0]

    ax = axes[0]
    xs, ys = series(train, "loss")
    positive = [(x, y) for x, y in zip(xs, ys) if y > 0]  # a log axis shows positive values only
    if positive:
        ax.plot(*zip(*positive), lw=1, label="train loss")
    xs, ys = series(valid, "loss")
    positive = [(x, y) for x, y in zip(xs, ys) if y > 0]
    if positive:
        ax.plot(*zip(*positive), "o-", ms=4, label="valid loss")
    if baseline is not None and baseline > 0:
        ax.axhline(baseline, color="gray", ls="--", lw=1, label=f"predict-the-mean baseline ({baseline:.4g})")
    ax.set_yscale("log")
    ax.set_ylabel("loss (per concept)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best")
    ax.set_title(title)

    ax = axes[1]
    xs, ys = series(train, "lr")
    if xs:
        ax.plot(xs, ys, lw=1, color="tab:green")
    ax.set_ylabel("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(True, alpha=0.3)

    if n_panels == 3:
        ax = axes[2]
        if has_l2:
            ax.plot(*series(valid, "l2"), "o-", ms=4, color="tab:orange", label="valid l2 (raw space)")
            ax.set_ylabel("l2")
            ax.legend(loc="upper left")
        if has_ca:
            ax_ca = ax.twinx() if has_l2 else ax
            ax_ca.plot(*series(valid, "ca"), "s-", ms=4, color="tab:purple", label="valid contrastive accuracy")
            ax_ca.set_ylabel("contrastive accuracy")
            ax_ca.set_ylim(0, 1)  # fixed: runs compare at a glance; 0.5 is chance
            ax_ca.axhline(0.5, color="tab:purple", ls=":", lw=1)
            ax_ca.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
            ax_ca.legend(loc="lower right")
        ax.grid(True, alpha=0.3)
    for i, step in enumerate(resumes):
        for ax in axes:
            ax.axvline(step, color="gray", ls=":", lw=1, label="resumed" if i == 0 and ax is axes[0] else None)
    if resumes:
        axes[0].legend(loc="best")
    axes[-1].set_xlabel("step")

    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description="Plot RUN_DIR/metrics.jsonl into a PNG.")
    ap.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (holds metrics.jsonl)")
    ap.add_argument("-o", "--out", help="output PNG (default RUN_DIR/metrics.png)")
    args = ap.parse_args()

    if not os.path.isdir(args.run_dir):
        fail(f"{args.run_dir}: not a directory; give the run directory that `lcm train` wrote")
    path = os.path.join(args.run_dir, "metrics.jsonl")
    train, valid, baseline, resumes = read_metrics(path)
    if not any(p["loss"] is not None for p in train + valid):
        fail(f"{path}: no training or validation loss yet; wait for the first logged step")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        fail(f"matplotlib is not installed for {sys.executable}; install it (pip install matplotlib) "
             "or run the tool with a Python that has it")
    out = args.out or os.path.join(args.run_dir, "metrics.png")
    try:
        plot(train, valid, baseline, resumes, out, os.path.basename(os.path.abspath(args.run_dir)))
    except OSError as e:
        fail(f"{out}: cannot write: {e.strerror}")
    print(out)


if __name__ == "__main__":
    main()
