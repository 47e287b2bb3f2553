#!/usr/bin/env python3
"""Plots training runs from their metrics.jsonl: training loss (raw and smoothed), validation
loss, multiple-choice accuracy (when train.eval_mc is set: acc solid, acc_norm dashed), learning
rate, gradient norm and tokens/s, one panel each, runs overlaid.

usage: launch/plot.py RUN_DIR [RUN_DIR ...] [--out FILE.png] [--summary]
  RUN_DIR    a run's out_dir (or its metrics.jsonl)
  --out      the image to write (default: RUN_DIR/metrics.png for one run, runs.png for several)
  --summary  also print, per run, how many points each panel got and the last step

A resumed run repeats the steps after its checkpoint: each step keeps its last record. Skipped
updates (a non-finite or outlier loss) are left out.
Needs matplotlib (Debian: python3-matplotlib).
"""
import json
import math
import os
import sys

PANELS = [("loss", "training loss"), ("val_loss", "validation loss"), ("mc_acc", "multiple-choice accuracy"),
          ("lr", "learning rate"), ("grad_norm", "gradient norm"), ("tokens_per_sec", "tokens/s")]
EXTRA = {"mc_acc": "mc_acc_norm"}  # drawn dashed in the same panel


def read_run(path):
    """{metric: [(step, value), …]} in step order, the last record of each step winning."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    series = {key: {} for key, _ in PANELS}
    series.update({key: {} for key in EXTRA.values()})
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"plot.py: {path}:{n}: not JSON ({e})")
            if "step" not in record or "skipped" in record:  # a skipped update changed nothing
                continue
            for key in series:
                value = record.get(key)
                if isinstance(value, (int, float)) and math.isfinite(value):  # (a non-finite loss is logged as null)
                    series[key][record["step"]] = value
    return {key: sorted(points.items()) for key, points in series.items()}


def smooth(values, weight=0.9):
    """Exponential moving average, bias-corrected so it starts at the first value."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** i))
    return out


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    runs, out, summary = [], None, False
    i = 0
    while i < len(argv):
        if argv[i] == "--out":
            if i + 1 == len(argv):
                sys.exit("plot.py: --out needs a file name")
            out, i = argv[i + 1], i + 2
        elif argv[i] == "--summary":
            summary, i = True, i + 1
        elif argv[i].startswith("--"):
            sys.exit(f"plot.py: unknown option {argv[i]}")
        else:
            runs.append(argv[i])
            i += 1
    for run in runs:
        if not os.path.exists(os.path.join(run, "metrics.jsonl") if os.path.isdir(run) else run):
            sys.exit(f"plot.py: {run}: no metrics.jsonl there (a run's out_dir holds one)")
    data = [(run.rstrip("/"), read_run(run)) for run in runs]
    if out is None:
        out = os.path.join(runs[0], "metrics.png") if len(runs) == 1 and os.path.isdir(runs[0]) else "runs.png"
    if summary:
        for name, series in data:
            counts = ", ".join(f"{key} {len(points)}" for key, points in series.items() if points)
            last = max((p[-1][0] for p in series.values() if p), default=None)
            print(f"{name}: {counts}; last step {last}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot.py: matplotlib is not installed (Debian: apt-get install python3-matplotlib)")
    panels = [(key, title) for key, title in PANELS if any(series[key] for _, series in data)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.4 * len(panels)), sharex=True, squeeze=False)
    axes = axes[:, 0]
    for ax, (key, title) in zip(axes, panels):
        for name, series in data:
            points = series[key]
            if not points:
                continue
            steps, values = zip(*points)
            label = os.path.basename(name) or name
            if key == "loss":
                line, = ax.plot(steps, values, alpha=0.3, linewidth=0.8)
                ax.plot(steps, smooth(values), color=line.get_color(), label=label)
            else:
                line, = ax.plot(steps, values, marker="o" if key in ("val_loss", "mc_acc") else None, markersize=3,
                                label=label)
                if key in EXTRA and series[EXTRA[key]]:
                    s2, v2 = zip(*series[EXTRA[key]])
                    ax.plot(s2, v2, linestyle="--", marker="o", markersize=3, color=line.get_color())
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    axes[0].legend(fontsize=8)
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"plot.py: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
