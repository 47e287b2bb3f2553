#!/usr/bin/env bash
# SIGTERM to `launch/train.sh -n 2` (what a scheduler's cancel or time limit sends, or a terminal's
# Ctrl-C to the whole foreground group): every rank
# stops after its step with a checkpoint saved, and the script exits 0, as one process does
# (mpirun alone exits 1 when it is signalled). Usage: signal_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
build="$1"; src="$2"
command -v mpirun >/dev/null || { echo "SKIPPED: no mpirun"; exit 77; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Twice: the signal to the script alone, then to its whole process group, as a terminal's Ctrl-C
# sends it (SIGINT there; SIGTERM here, since a background job ignores SIGINT). The script runs
# in a session of its own (setsid: its pid is its group's id), and mpirun in another one, so that
# it hears of the signal only through the script.
for target in script group; do
  T6_BUILD_DIR="$build" OMP_NUM_THREADS=1 setsid "$src/launch/train.sh" "$src/configs/demo.yaml" -n 2 \
    --set "train.out_dir=$work/$target" --set train.max_iters=100000 --set train.eval_interval=0 \
    --set sample.max_new_tokens=0 > "$work/log" 2>&1 &
  pid=$!
  for _ in $(seq 1 1200); do  # until the first step is logged (the build check comes first)
    grep -q '"step"' "$work/$target/metrics.jsonl" 2>/dev/null && break
    sleep 0.1
  done
  if [ $target = script ]; then kill -TERM "$pid"; else kill -TERM -- "-$pid"; fi
  wait "$pid"; rc=$?
  tail -n 4 "$work/log"
  [ $rc -eq 0 ] || { echo "FAIL: launch/train.sh exited $rc after SIGTERM to the $target"; exit 1; }
  grep -q "stopped by SIGUSR1 after step" "$work/log" || { echo "FAIL: the ranks did not stop cleanly ($target)"; exit 1; }
  ls -d "$work/$target"/ckpt_* >/dev/null 2>&1 || { echo "FAIL: no checkpoint was saved ($target)"; exit 1; }
done
echo PASS
