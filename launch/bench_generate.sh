#!/usr/bin/env bash
# Generation speed: prefill and decode tokens/s and the key/value cache, over configs × batches ×
# prompt lengths, one table (t6-generate --benchmark: random prompts, weights from model.seed).
# Usage: launch/bench_generate.sh [CONFIG.yaml ...] [--batch "1 16"] [--prompt "1000"] [--new N | --context "C ..."]
#                                  [t6-generate args]
#   CONFIG    default: configs/t6-small-{tpa,tpa_kvonly,mha,gqa,mqa}.yaml, one parameter budget, so
#             the cache column compares TPA's factors with dense, grouped and single-head keys/values
#   --batch   sequences decoded together (default "1 16")
#   --prompt  prompt lengths in tokens, each at most the model's block_size (default "1000")
#   --new N   decode steps timed after the prefill (default 32)
#   --context contexts to decode up to instead: the new tokens are each context minus the prompt
#             (issue 11's grid: configs/t6-{small,medium}-tpa.yaml --prompt 512 --context "1024 4096 16384")
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
configs=(); batches="1 16"; prompts="1000"; new=32; contexts=""; args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --batch) batches="$2"; shift 2 ;;
    --prompt) prompts="$2"; shift 2 ;;
    --new) new="$2"; shift 2 ;;
    --context) contexts="$2"; shift 2 ;;
    --*) args+=("$1" "$2"); shift 2 ;;
    *) configs+=("$1"); shift ;;
  esac
done
if [ ${#configs[@]} -eq 0 ]; then
  for v in tpa tpa_kvonly mha gqa mqa; do configs+=("$root/configs/t6-small-$v.yaml"); done
fi
"$root/launch/setup.sh" >/dev/null
"$root/launch/build.sh" >/dev/null
bin="${T6_BUILD_DIR:-$root/build}/trainer/t6-generate"
header=1
for config in "${configs[@]}"; do
  for batch in $batches; do
    for prompt in $prompts; do
      for steps in $( [ -n "$contexts" ] && for c in $contexts; do echo $((c - prompt)); done || echo "$new"); do
        if [ "$steps" -lt 1 ]; then
          echo "bench_generate.sh: a context must be longer than the prompt of $prompt tokens" >&2; exit 2
        fi
        # the header and separator once, then each run's row
        "$bin" --config "$config" --benchmark "$prompt" --batch "$batch" --max-new-tokens "$steps" "${args[@]}" |
          if [ $header -eq 1 ]; then cat; else tail -n 1; fi
        header=0
      done
    done
  done
done
