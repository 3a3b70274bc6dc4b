#!/bin/sh
# check_experiments.sh: fails when a committed experiment CSV is no longer
# what the code prints. Reruns every command that DIR/check.txt lists (the
# small check set and the cheap full runs, which scripts/experiments writes)
# and compares each output with the committed file, byte for byte; prints
# the file and the first line that differs. Every mode is deterministic, so
# a difference means the code changed the numbers: rerun scripts/experiments
# and update docs/EXPERIMENTS.md.
#   usage: check_experiments.sh DHT_SIM DIR   (DIR: docs/experiments)
set -u
sim=$1
dir=$2
list=$dir/check.txt
[ -f "$list" ] || { echo "check_experiments: $list is missing"; exit 1; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

stale=0
checked=0
# Each line: a CSV relative to DIR, then dht-sim's arguments.
while read -r file args; do
  case "$file" in ''|'#'*) continue ;; esac
  checked=$((checked + 1))
  # shellcheck disable=SC2086 # the arguments are words
  if ! "$sim" $args < /dev/null > "$tmp/out.csv" 2> "$tmp/err"; then
    echo "check_experiments: dht-sim $args failed:"
    cat "$tmp/err"
    stale=1
    continue
  fi
  if [ ! -f "$dir/$file" ]; then
    echo "check_experiments: $file is listed but not committed"
    stale=1
  elif ! cmp -s "$dir/$file" "$tmp/out.csv"; then
    # The first line that differs, with both versions.
    line=$(awk 'NR == FNR { a[FNR] = $0; n = FNR; next }
                { if (!(FNR in a) || a[FNR] != $0) { print FNR; found = 1; exit } }
                END { if (!found && FNR < n) print FNR + 1 }' \
               "$dir/$file" "$tmp/out.csv")
    [ -n "$line" ] || line=1
    echo "check_experiments: STALE docs/experiments/$file: line $line differs from: dht-sim $args"
    echo "  committed: $(sed -n "${line}p" "$dir/$file")"
    echo "  now:       $(sed -n "${line}p" "$tmp/out.csv")"
    stale=1
  fi
done < "$list"

if [ "$stale" != 0 ]; then
  echo "check_experiments: the committed experiments are stale: run scripts/experiments"
  echo "(scripts/experiments --quick for the check set only) and update docs/EXPERIMENTS.md"
  exit 1
fi
echo "check_experiments: $checked CSV files match what the code prints"
