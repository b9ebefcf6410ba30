#!/usr/bin/env python3
"""metrics_to_tensorboard.py: TensorBoard event files from a run's metrics.jsonl.

    tools/metrics_to_tensorboard.py RUN_DIR [-o LOGDIR]

Reads RUN_DIR/metrics.jsonl as `lcm train` writes it and writes TensorBoard scalars to LOGDIR
(default RUN_DIR/tensorboard): train/loss, train/lr, train/grad_norm, train/concepts_per_s,
train/mfu, train/mem_gb, valid/loss, valid/l2, valid/ca, and the predict-the-mean baseline as
valid/baseline. The experiment name (trainer.experiment_name) and each start or resume are written as
text. Run it again after more training: the old event files in LOGDIR are replaced. Needs the
`tensorboard` package (PyPI); exits 1 with a one-line message when the file is missing or unreadable.
"""
import argparse
import glob
import json
import math
import os
import sys

TRAIN_KEYS = ("loss", "lr", "grad_norm", "concepts_per_s", "mfu", "mem_gb")
VALID_KEYS = ("loss", "l2", "ca", "par")


def fail(msg):
    print(f"metrics_to_tensorboard: {msg}", file=sys.stderr)
    sys.exit(1)


def number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def main():
    ap = argparse.ArgumentParser(description="TensorBoard event files from an lcm run's metrics.jsonl")
    ap.add_argument("run_dir")
    ap.add_argument("-o", "--logdir", help="where the event files go (default RUN_DIR/tensorboard)")
    args = ap.parse_args()
    path = os.path.join(args.run_dir, "metrics.jsonl")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        fail(f"{path}: no such file; give the run directory that `lcm train` wrote")
    except OSError as e:
        fail(f"{path}: cannot read: {e.strerror}")
    try:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
    except ImportError:
        fail("needs the tensorboard package: pip install tensorboard")
    logdir = args.logdir or os.path.join(args.run_dir, "tensorboard")
    os.makedirs(logdir, exist_ok=True)
    for old in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        os.remove(old)
    writer = EventFileWriter(logdir)

    def scalar(tag, step, value):
        writer.add_event(Event(step=int(step), summary=Summary(value=[Summary.Value(tag=tag, simple_value=value)])))

    def text(tag, step, s):
        from tensorboard.plugins.text.summary_v2 import text_pb

        writer.add_event(Event(step=int(step), summary=text_pb(tag, s)))

    n = 0
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
            continue
        if number(rec.get("baseline")) is not None:  # written before the first step; may lack "step"
            scalar("valid/baseline", number(rec.get("step")) or 0, number(rec["baseline"]))
            continue
        step = number(rec.get("step"))
        if step is None:
            continue
        if "event" in rec:
            name = rec.get("experiment")
            text("run", step, f"{rec['event']} at step {int(step)}" + (f" ({name})" if name else ""))
        elif rec.get("split") == "valid":
            for k in VALID_KEYS:
                if number(rec.get(k)) is not None:
                    scalar(f"valid/{k}", step, number(rec[k]))
                    n += 1
        elif rec.get("split", "train") == "train":
            for k in TRAIN_KEYS:
                if number(rec.get(k)) is not None:
                    scalar(f"train/{k}", step, number(rec[k]))
                    n += 1
    writer.close()
    print(f"{logdir}: {n} scalars (tensorboard --logdir {logdir})")


if __name__ == "__main__":
    main()
