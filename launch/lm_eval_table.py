#!/usr/bin/env python3
"""The T6 paper's downstream table from lm-evaluation-harness results.

usage: launch/lm_eval_table.py RESULTS [RESULTS ...]
  RESULTS  a results JSON written by `lm_eval ... --output_path DIR`, or a directory holding them
           (the newest results_*.json under it). One column per file, headed by its few-shot count.

Prints a markdown table: the paper's nine tasks with the paper's metric for each (acc_norm for
ARC-E, ARC-C, HellaSwag, OBQA, PIQA and SciQ; acc for BoolQ, WinoGrande and MMLU), in percent,
and their average. A task missing from a file shows "–" and leaves that column's average out.
"""
import glob
import json
import os
import sys

TASKS = [  # (lm-eval task, the paper's name, metric)
    ("arc_easy", "ARC-E", "acc_norm"),
    ("arc_challenge", "ARC-C", "acc_norm"),
    ("boolq", "BoolQ", "acc"),
    ("hellaswag", "HellaSwag", "acc_norm"),
    ("openbookqa", "OBQA", "acc_norm"),
    ("piqa", "PIQA", "acc_norm"),
    ("winogrande", "WinoGrande", "acc"),
    ("mmlu", "MMLU", "acc"),
    ("sciq", "SciQ", "acc_norm"),
]


def results_file(path):
    if os.path.isdir(path):
        found = sorted(glob.glob(os.path.join(path, "**", "results*.json"), recursive=True), key=os.path.getmtime)
        if not found:
            sys.exit(f"lm_eval_table: {path}: no results*.json under it")
        return found[-1]
    return path


def metric(entry, name):
    """lm-eval ≥ 0.4 names metrics 'acc,none'; older versions 'acc'."""
    for key in (f"{name},none", name):
        if key in entry and isinstance(entry[key], (int, float)):
            return float(entry[key])
    return None


def column(path):
    try:
        data = json.load(open(path))
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"lm_eval_table: {path}: not a readable results JSON ({e})")
    results = data.get("results", data.get("groups", {}))
    if not isinstance(results, dict) or not results:
        sys.exit(f"lm_eval_table: {path}: no 'results' object (is it lm-eval's output?)")
    merged = {**data.get("groups", {}), **results}
    shots = {v for k, v in data.get("n-shot", {}).items() if any(k == t[0] or k.startswith(t[0] + "_") for t in TASKS)}
    label = f"{shots.pop()}-shot" if len(shots) == 1 else os.path.basename(path)
    values = {task: metric(merged[task], m) if task in merged else None for task, _, m in TASKS}
    return label, values


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    columns = [column(results_file(p)) for p in argv]
    print("| task | metric | " + " | ".join(label for label, _ in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for task, name, m in TASKS:
        cells = ["–" if v[task] is None else f"{100 * v[task]:.2f}" for _, v in columns]
        print(f"| {name} | {m} | " + " | ".join(cells) + " |")
    averages = []
    for _, v in columns:
        vals = [x for x in v.values() if x is not None]
        averages.append(f"{100 * sum(vals) / len(vals):.2f}" if len(vals) == len(TASKS) else
                        f"– ({len(vals)} of {len(TASKS)} tasks)")
    print("| average | | " + " | ".join(averages) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
