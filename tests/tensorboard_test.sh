#!/usr/bin/env bash
# train.tensorboard: a tiny run's event file, read by an independent reader (framing, CRCs,
# protobuf fields), holds every number metrics.jsonl holds. Usage: BUILD_DIR SOURCE_DIR
set -euo pipefail
build="$1"; src="$2"
dir="$(mktemp -d)"; trap 'rm -rf "$dir"' EXIT
# T6_TEST_NAN_STEP: step 5's gradient is made non-finite, so its record has nulls and a reason.
T6_TEST_NAN_STEP=5 "$build/trainer/t6-train" --config "$src/configs/demo.yaml" --set train.out_dir="$dir/run" --set model.n_layer=1 \
  --set model.n_embd=32 --set model.n_head=2 --set model.head_dim=16 --set model.block_size=32 \
  --set train.batch_size=4 --set train.max_iters=20 --set train.eval_interval=10 --set train.eval_iters=2 \
  --set sample.max_new_tokens=0 --set train.log_interval=100 --set train.tensorboard="$dir/tb" > "$dir/train.log"
files=("$dir"/tb/events.out.tfevents.*)
[ "${#files[@]}" -eq 1 ]
python3 "$src/tests/tensorboard_read.py" "${files[0]}" "$dir/run/metrics.jsonl"
