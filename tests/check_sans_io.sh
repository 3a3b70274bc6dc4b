#!/bin/sh
# check_sans_io.sh: enforces libdht's sans-IO contract (ARCHITECTURE.md).
#
# Usage: sh tests/check_sans_io.sh <path-to-libdht>
#
# The core must never touch a socket, read a clock, draw randomness or print
# by itself: that is what lets the simulator replay any run from its seed.
# This script fails (exit 1), printing file:line for each offence, when a .c
# or .h file under the given directory includes a networking or clock header
# or calls a clock, random or stdio output function. Files named client*.c/.h
# and net*.c/.h are the I/O adapters and are exempt.
#
# Comments and string literals are blanked before matching, so that prose
# ("never calls time()") and log text do not trip the check; identifiers are
# matched on word boundaries and not after `.` or `->`, so that dht_time(),
# rpc_timeout_ms(), snprintf() and a host callback such as host->random()
# stay allowed. Exit 2 means the check itself could not run.

set -u

if [ "$#" -ne 1 ] || [ ! -d "$1" ]; then
  echo "usage: sh check_sans_io.sh <path-to-libdht>" >&2
  exit 2
fi
root=$1

files=$(find "$root" -type f \( -name '*.c' -o -name '*.h' \) \
          ! -name 'client*.c' ! -name 'client*.h' \
          ! -name 'net*.c' ! -name 'net*.h' | LC_ALL=C sort)
if [ -z "$files" ]; then
  echo "sans-IO check: no .c or .h files under $root" >&2
  exit 2
fi
nfiles=$(printf '%s\n' "$files" | wc -l | tr -d ' ')

# POSIX awk (mawk, gawk, busybox): no \b, so word boundaries are spelled out.
# shellcheck disable=SC2016 # the awk program is meant to be single-quoted
prog='
FNR == 1 { inblock = 0 }
{
  # code: the line without comments; bare: also without literal contents.
  line = $0; code = ""; bare = ""; n = length(line); i = 1
  while (i <= n) {
    c = substr(line, i, 1); c2 = substr(line, i, 2)
    if (inblock) {
      if (c2 == "*/") { inblock = 0; i += 2 } else { i++ }
      continue
    }
    if (c2 == "/*") { inblock = 1; i += 2; code = code " "; bare = bare " "; continue }
    if (c2 == "//") { break }
    if (c == "\"" || c == "\047") {
      j = i + 1
      while (j <= n) {
        d = substr(line, j, 1)
        if (d == "\\") { j += 2; continue }
        if (d == c) { break }
        j++
      }
      code = code substr(line, i, j - i + 1); bare = bare c c
      i = j + 1
      continue
    }
    code = code c; bare = bare c; i++
  }

  why = ""
  if (code ~ /^[ \t]*#[ \t]*include[ \t]*[<"][ \t]*(uv\.h|sys\/socket\.h|netinet\/[^>"]*|arpa\/inet\.h|netdb\.h|sys\/time\.h)[ \t]*[>"]/) {
    why = "forbidden header"
  } else if (bare ~ /(^|[^A-Za-z0-9_.>])(time|clock_gettime|gettimeofday)[ \t]*\)?[ \t]*\(/) {
    why = "reads the clock"
  } else if (bare ~ /(^|[^A-Za-z0-9_.>])(rand|random|srand|srandom|getrandom)[ \t]*\)?[ \t]*\(/ ||
             bare ~ /(^|[^A-Za-z0-9_.>])(arc4random|randombytes)([^A-Za-z0-9]|$)/) {
    why = "draws randomness"
  } else if (bare ~ /(^|[^A-Za-z0-9_.>])(printf|fprintf|vprintf|vfprintf|dprintf|puts|fputs|putchar|perror)[ \t]*\)?[ \t]*\(/ ||
             bare ~ /(^|[^A-Za-z0-9_.>])(stdout|stderr)([^A-Za-z0-9_]|$)/) {
    why = "writes to stdio"
  }
  if (why != "") {
    text = $0; sub(/^[ \t]+/, "", text)
    printf "%s:%d: %s: %s\n", FILENAME, FNR, why, text
  }
}
'

# Names are passed one per line: the tree has no file names with newlines.
# shellcheck disable=SC2086 # word splitting on newlines is intended
out=$(IFS='
'; awk "$prog" $files) || {
  echo "sans-IO check: awk failed" >&2
  exit 2
}

if [ -n "$out" ]; then
  printf '%s\n' "$out"
  echo "sans-IO check: $(printf '%s\n' "$out" | wc -l | tr -d ' ') violation(s); libdht must not do I/O, read clocks or draw randomness" >&2
  exit 1
fi
echo "sans-IO check: $nfiles files clean"
