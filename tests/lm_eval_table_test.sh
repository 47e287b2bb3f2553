#!/usr/bin/env bash
# launch/lm_eval_table.py on hand-made lm-eval results (the 0.4 format with a group for MMLU, and
# the older metric names): the paper's metric per task, in percent, and the average (computed by
# hand: (55 + 30 + 62 + 45 + 33 + 70 + 52 + 26 + 74) / 9 = 49.67); a partial file's average says
# how many tasks it had. Usage: lm_eval_table_test.sh SOURCE_DIR
set -euo pipefail
src="$1"
command -v python3 >/dev/null || { echo "SKIPPED: no python3"; exit 77; }
out=$(python3 "$src/launch/lm_eval_table.py" "$src/tests/lm_eval/results_0shot.json" \
        "$src/tests/lm_eval/results_2shot_old_format.json")
echo "$out"
expect() { grep -qF -- "$1" <<<"$out" || { echo "FAIL: no line with: $1"; exit 1; }; }
expect "| task | metric | 0-shot | 2-shot |"
expect "| ARC-E | acc_norm | 55.00 | 57.00 |"
expect "| ARC-C | acc_norm | 30.00 | – |"
expect "| BoolQ | acc | 62.00 | 58.00 |"
expect "| HellaSwag | acc_norm | 45.00 | 46.00 |"
expect "| MMLU | acc | 26.00 | – |"
expect "| SciQ | acc_norm | 74.00 | – |"
expect "| average | | 49.67 | – (3 of 9 tasks) |"
if python3 "$src/launch/lm_eval_table.py" "$src/README.md" 2>/dev/null; then echo "FAIL: a non-JSON file was accepted"; exit 1; fi
echo PASS
