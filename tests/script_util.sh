# tests/script_util.sh: what the shell tests share. Source it, then set
# test_name (the prefix of every line it prints) and, before quiet or undo
# run, tmp (a scratch directory of the test's own).

# Exit 77, which ctest counts as skipped (SKIP_RETURN_CODE), saying why.
skip() { echo "$test_name: skipped: $*"; exit 77; }
fail() { echo "$test_name: FAILED: $*" >&2; exit 1; }

# Runs a command quietly; on failure, shows its output and fails.
quiet() {
  local what=$1
  shift
  "$@" >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; fail "$what"; }
}

# For a cleanup trap: runs a command that undoes what the test did to the
# machine, quietly; on failure shows its output and WHY, and returns 1.
undo() {
  local why=$1
  shift
  "$@" >"$tmp/undo.log" 2>&1 && return
  cat "$tmp/undo.log" >&2
  echo "$test_name: FAILED: $why" >&2
  return 1
}
