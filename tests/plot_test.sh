#!/usr/bin/env bash
# launch/plot.py on a real run's metrics and on a hand-made resumed run (repeated steps keep
# their last record). Skips (exit 77) where matplotlib is not installed.
# Usage: tests/plot_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build="$1"; src="$2"
py=""
for p in python3 /usr/bin/python3; do
  if "$p" -c "import matplotlib" 2>/dev/null; then py="$p"; break; fi
done
if [ -z "$py" ]; then echo "plot_test: SKIPPED: matplotlib is not installed (Debian: python3-matplotlib)"; exit 77; fi
dir="$(mktemp -d)"; trap 'rm -rf "$dir"' EXIT
"$build/trainer/t6-train" --config "$src/configs/demo.yaml" --set train.out_dir="$dir/run" --set model.n_layer=1 \
  --set model.n_embd=32 --set model.n_head=2 --set model.head_dim=16 --set model.block_size=32 \
  --set train.batch_size=4 --set train.max_iters=30 --set train.eval_interval=10 --set train.eval_iters=2 \
  --set sample.max_new_tokens=0 --set train.log_interval=100 > "$dir/train.log"
# A resumed run: steps 0-5, then 4-7 again after a restart from step 4 (the later records win).
mkdir "$dir/resumed"
for s in 0 1 2 3 4 5; do echo "{\"step\": $s, \"loss\": 9, \"lr\": 0.1, \"grad_norm\": 1, \"tokens_per_sec\": 5, \"ms\": 1}"; done > "$dir/resumed/metrics.jsonl"
for s in 4 5 6 7; do echo "{\"step\": $s, \"loss\": 2, \"lr\": 0.1, \"grad_norm\": 1, \"tokens_per_sec\": 5, \"ms\": 1}"; done >> "$dir/resumed/metrics.jsonl"
echo '{"step": 8, "loss": null, "lr": 0.1, "grad_norm": null, "skipped": "non-finite loss"}' >> "$dir/resumed/metrics.jsonl"
echo '{"step": 7, "val_loss": 3.5}' >> "$dir/resumed/metrics.jsonl"
echo '{"step": 7, "mc_acc": 0.5, "mc_acc_norm": 0.25}' >> "$dir/resumed/metrics.jsonl"
out=$("$py" "$src/launch/plot.py" "$dir/run" "$dir/resumed" --out "$dir/both.png" --summary)
echo "$out"
# 30 training steps and 3 evaluations (steps 9, 19, 29); the resumed run: 8 steps (a ninth,
# skipped with a non-finite loss, is left out), 1 evaluation
# with a multiple-choice score (its panel appears because one run has one).
echo "$out" | grep -q "run: loss 30, val_loss 3, lr 30, grad_norm 30, tokens_per_sec 30; last step 29"
echo "$out" | grep -q "resumed: loss 8, val_loss 1, mc_acc 1, lr 8, grad_norm 8, tokens_per_sec 8, mc_acc_norm 1; last step 7"
"$py" -c "
import sys; sys.path.insert(0, '$src/launch'); import plot
s = plot.read_run('$dir/resumed')
assert s['loss'] == [(0, 9), (1, 9), (2, 9), (3, 9), (4, 2), (5, 2), (6, 2), (7, 2)], s['loss']
"
# A PNG, of a plausible size for five panels.
head -c 8 "$dir/both.png" | od -An -c | grep -q "P   N   G"
[ "$(stat -c %s "$dir/both.png")" -gt 20000 ]
echo "plot_test: ok"
