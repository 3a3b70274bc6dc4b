#!/bin/sh
# check_layers.sh: checks two rules of libdht's structure on the compiled
# library, so that neither can creep back in unnoticed.
#
# Usage: sh tests/check_layers.sh <path-to-libdht.a>
#
# 1. Calls run one way. A file of libdht/src may call into another only if
#    that one never calls back, directly or around a loop: the graph of
#    "file A uses a symbol that file B defines" has no cycle. The node's
#    files must moreover stack in the order docs/DESIGN.md gives (LAYERS
#    below, lowest first): each may use only those before it. Calls through
#    the hooks an upper layer registers are function pointers and leave no
#    symbol behind; that is the one way events travel up.
# 2. No mutable globals: no object of the library has data in a writable
#    section (.data, .bss and their thread-local twins), so two nodes on two
#    threads share nothing. Read-only tables (.rodata, .data.rel.ro) are fine.
#
# It prints the file graph and exits 1 on a violation, 2 when it cannot run.
set -u

LAYERS="node_check node_metrics node_base node_table node_lost node_repl node_route node_handoff node_ring node"

if [ "$#" -ne 1 ] || [ ! -f "$1" ]; then
  echo "usage: sh check_layers.sh <path-to-libdht.a>" >&2
  exit 2
fi
if ! command -v nm >/dev/null 2>&1 || ! command -v objdump >/dev/null 2>&1; then
  echo "check_layers: needs nm and objdump (binutils)" >&2
  exit 2
fi
archive=$1

# "defines FILE SYMBOL" and "uses FILE SYMBOL" lines, one per symbol.
symbols=$(nm -A -g "$archive" 2>/dev/null | awk '
  {
    # archive:member.o:value type name, or archive:member.o: U name
    split($1, part, ":")
    file = part[2]; sub(/\.c\.o$/, "", file); sub(/\.o$/, "", file)
    type = $(NF - 1); name = $NF
    if (type == "U") print "uses", file, name
    else if (type ~ /^[TDBRVWC]$/) print "defines", file, name
  }')
if [ -z "$symbols" ]; then
  echo "check_layers: no symbols in $archive" >&2
  exit 2
fi

printf '%s\n' "$symbols" | awk -v layers="$LAYERS" '
  $1 == "defines" { owner[$3] = $2; files[$2] = 1 }
  $1 == "uses"    { n_uses++; use_file[n_uses] = $2; use_sym[n_uses] = $3 }
  END {
    for (i = 1; i <= n_uses; i++) {
      to = owner[use_sym[i]]
      from = use_file[i]
      if (to == "" || to == from) continue
      if (!((from, to) in edge)) {
        edge[from, to] = use_sym[i]
        adj[from] = adj[from] " " to
      }
    }
    bad = 0
    # The node layers: an edge may only point to an earlier layer.
    n_layers = split(layers, order, " ")
    for (i = 1; i <= n_layers; i++) rank[order[i]] = i
    for (k in edge) {
      split(k, ft, SUBSEP)
      if ((ft[1] in rank) && (ft[2] in rank) && rank[ft[2]] >= rank[ft[1]]) {
        printf "check_layers: %s calls up into %s (%s)\n", ft[1], ft[2], edge[k]
        bad = 1
      }
    }
    # Any cycle at all, node files or not: depth-first search, colours
    # 0 unvisited, 1 on the stack, 2 done.
    for (f in files) colour[f] = 0
    for (f in files) if (colour[f] == 0 && dfs(f)) bad = 1
    for (f in files) {
      line = adj[f] == "" ? " (nothing)" : adj[f]
      printf "  %s ->%s\n", f, line
    }
    exit bad
  }
  function dfs(f,    n, next_files, i, g) {
    colour[f] = 1
    n = split(adj[f], next_files, " ")
    for (i = 1; i <= n; i++) {
      g = next_files[i]
      if (colour[g] == 1) {
        printf "check_layers: %s and %s call each other (around a loop)\n", f, g
        colour[f] = 2
        return 1
      }
      if (colour[g] == 0 && dfs(g)) { colour[f] = 2; return 1 }
    }
    colour[f] = 2
    return 0
  }'
graph_rv=$?

tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
archive_abs=$(cd "$(dirname "$archive")" && pwd)/$(basename "$archive")
(cd "$tmp" && ar x "$archive_abs") || exit 2
globals=$(for o in "$tmp"/*.o; do
  objdump -t "$o" | awk -v f="$(basename "$o" .o)" '
    $0 ~ / O \.(data|bss|tdata|tbss)(\.[^ \t]*)?[ \t]/ && $0 !~ /\.data\.rel\.ro/ {
      printf "check_layers: mutable global %s in %s\n", $NF, f
    }'
done)
if [ -n "$globals" ]; then
  printf '%s\n' "$globals"
  exit 1
fi
if [ "$graph_rv" -ne 0 ]; then
  exit 1
fi
echo "check_layers: calls run one way; node layers:" $LAYERS "; no mutable globals"
