#!/bin/sh
# check_determinism.sh: runs one dht-sim command twice and fails unless both
# runs print exactly the same thing (the report ends with a digest of every
# event processed, so any divergence in the event order shows).
#   usage: check_determinism.sh DHT_SIM ARGS...
set -u
out1=$("$@" 2>&1); rc1=$?
out2=$("$@" 2>&1); rc2=$?
if [ "$out1" != "$out2" ] || [ "$rc1" != "$rc2" ]; then
  echo "check_determinism: two runs of: $*"
  echo "differ (exit $rc1 vs $rc2). First run:"
  echo "$out1"
  echo "Second run:"
  echo "$out2"
  exit 1
fi
echo "$out1"
echo "check_determinism: identical output twice (exit $rc1)"
exit "$rc1"
