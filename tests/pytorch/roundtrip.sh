#!/usr/bin/env bash
# Export → load in PyTorch → and back, for each attention variant: a T6 trained briefly by
# t6-train is exported with t6-export; an independent PyTorch implementation of the spec
# (t6_reference.py) must get the loss t6-eval reports, and weights it writes must load back into
# t6-eval with the loss PyTorch computes for them. The exported folder's own Hugging Face model
# (modeling_t6.py, through hf_check.py: transformers' Auto classes where transformers is
# installed, else a stand-in for its base classes) must get that loss too.
# Skipped (exit 77) without Debian's python3-torch (or the PyTorch of $T6_PYTHON, when set).
# Usage: [T6_PYTHON=python3] roundtrip.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build="$1"; src="$2"
py="${T6_PYTHON:-/usr/bin/python3}"
if ! "$py" -c "import torch, numpy" 2>/dev/null; then
  echo "SKIPPED: PyTorch is not installed (apt-get install python3-torch)"
  exit 77
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
bin="$build/trainer"
# A byte-level corpus from the repository's own docs; the first document (README.md) is validation.
"$bin/t6-prepare" --out "$work/data" --tokenizer byte --val-tokens 1 \
  "$src/README.md" "$src/configs/README.md" "$src/data/README.md" >/dev/null
close() {  # |a − b| ≤ 1e-5·|b|
  awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; exit !(d <= 1e-5 * m) }'
}
for variant in tpa tpa_kvonly mha gqa mqa; do
  extra=()
  [ "$variant" = gqa ] && extra=(--set model.n_kv_head=2)
  "$bin/t6-train" --config "$src/configs/demo.yaml" --set model.attention=$variant "${extra[@]}" \
    --set model.n_layer=2 --set model.n_embd=64 --set model.n_head=4 --set model.head_dim=16 \
    --set model.block_size=32 --set train.batch_size=4 --set train.max_iters=15 --set optim.warmup_iters=3 \
    --set checkpoint.interval=0 --set sample.max_new_tokens=0 --set "data.train=$work/data/train_*.h5" \
    --set "data.val=$work/data/val_*.h5" --set "train.out_dir=$work/run_$variant" >/dev/null
  "$bin/t6-export" "$work/run_$variant/ckpt_15" --out "$work/export_$variant" >/dev/null
  ours=$("$bin/t6-eval" --weights "$work/export_$variant/model.safetensors" --data "$work/data/val_*.h5" --batch 1 | awk '{print $2}')
  theirs=$("$py" "$src/tests/pytorch/t6_reference.py" "$work/export_$variant" "$src/README.md" 32 \
             --write-back "$work/back_$variant.safetensors")
  torch_loss=$(echo "$theirs" | awk '/^pytorch_loss /{print $2}')
  torch_back=$(echo "$theirs" | awk '/^pytorch_loss_back /{print $2}')
  back=$("$bin/t6-eval" --weights "$work/back_$variant.safetensors" --config "$work/run_$variant/config.yaml" \
           --data "$work/data/val_*.h5" --batch 1 | awk '{print $2}')
  hf=$("$py" "$src/tests/pytorch/hf_check.py" "$work/export_$variant" "$src/README.md" 32)
  hf_loss=$(echo "$hf" | awk '/^hf_loss /{print $2}')
  echo "$variant: t6-eval $ours, PyTorch $torch_loss, Hugging Face model ($(echo "$hf" | awk '/^hf_path /{print $2}')) $hf_loss; written by PyTorch: PyTorch $torch_back, t6-eval $back"
  close "$ours" "$torch_loss" || { echo "FAIL: $variant export differs"; exit 1; }
  close "$ours" "$hf_loss" || { echo "FAIL: $variant exported Hugging Face model differs"; exit 1; }
  close "$back" "$torch_back" || { echo "FAIL: $variant weights from PyTorch differ"; exit 1; }
done
echo "PASS"
