#!/bin/sh
# check_known.sh: every input in DIR must still fail REPLAY (a fuzz target
# built to count known bugs as failures): each is a bug whose fix is open.
# Once one passes, its bug is fixed: move it to regress/ and drop its entry
# from the target's known list. Usage: sh check_known.sh REPLAY DIR
set -u
replay=$1 dir=$2
status=0 n=0
for f in "$dir"/*; do
  [ -f "$f" ] || continue
  n=$((n + 1))
  if "$replay" "$f" >/dev/null 2>&1; then
    echo "check_known: $f no longer fails: move it to regress/ (its bug is fixed)" >&2
    status=1
  else
    echo "check_known: $f still fails, as expected"
  fi
done
[ "$n" -gt 0 ] || { echo "check_known: no inputs in $dir" >&2; exit 1; }
exit $status
