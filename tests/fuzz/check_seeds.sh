#!/bin/sh
# check_seeds.sh: the committed seed corpora (tests/fuzz/corpus/) must be
# what fuzz_seeds writes now; `scripts/fuzz --seeds` rewrites them.
# Usage: sh check_seeds.sh FUZZ_SEEDS CORPUS_DIR SCRATCH_DIR
set -u
seeds=$1 corpus=$2 scratch=$3
rm -rf "$scratch" && mkdir -p "$scratch" || exit 2
"$seeds" "$scratch" || exit 1
if ! diff -r "$corpus" "$scratch" >/dev/null; then
  diff -rq "$corpus" "$scratch" | head -5 >&2
  echo "check_seeds: $corpus is stale: run scripts/fuzz --seeds and commit it" >&2
  exit 1
fi
echo "check_seeds: $corpus is current"
