#!/usr/bin/env bash
# test_ring_netns.sh SOURCE_DIR BUILD_DIR: scripts/ring --netns end to end,
# a ring of 4 nodes, each in a network namespace of its own with its own
# address at one port, as four hosts would run it. From the host, through
# the bridge: a put through one node's address and a get through another's,
# dht check, a node killed, the ring ready again (dht wait, bounded), check
# again, the node restarted, then down, after which nothing the ring made
# (namespaces, veths, bridge) and none of its processes may be left.
#
# The ring lives in a run directory of the test's own, with BUILD_DIR's
# binaries. Whatever happens, the ring is taken down before the test exits.
# Exit 77 (skipped, with the reason) without root, without ip, or where
# network namespaces or bridges cannot be made.
set -euo pipefail

src=$1
build=$2
ring="$src/scripts/ring"
dht="$build/cli/dht"
wait_ms=20000 # every wait for the ring, at most

test_name=test_ring_netns
# shellcheck source=tests/script_util.sh
. "$(dirname "$0")/../script_util.sh"

[ "$(id -u)" = 0 ] || skip "network namespaces need root"
command -v ip >/dev/null || skip "ip is missing (iproute2; scripts/install-deps installs it)"
probe=dhtprobe$$
ip netns add "$probe" 2>/dev/null || skip "network namespaces cannot be made here"
ip netns del "$probe"
ip link add "$probe" type bridge 2>/dev/null || skip "bridges cannot be made here"
ip link del "$probe"

tmp=$(mktemp -d /tmp/test_ring_netns.XXXXXX)
export DHT_RUN_DIR=$tmp/run DHT_BUILD_DIR=$build DHT_CONVERGE_S=$((wait_ms / 1000))
unset DHT_NODE DHT_CLUSTER_KEY_FILE DHTD_FLAGS DHT_BASE_PORT
up=0
cleanup() {
  local rc=$?
  if [ "$up" = 1 ]; then
    undo "scripts/ring down; see ip netns list, ip link" "$ring" down || rc=1
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT

up=1
quiet "scripts/ring up 4 --netns" "$ring" up 4 --netns
cp "$DHT_RUN_DIR/netns-made" "$tmp/made"
tag=$(sed -n "s/^tag=//p" "$DHT_RUN_DIR/netns")
addrs=()
for i in 0 1 2 3; do
  addrs[i]=$(cat "$DHT_RUN_DIR/node$i/addr")
  ip -n "dht${tag}n$i" -4 -o addr show dev eth0 | grep -q " inet ${addrs[i]%:*}/" ||
    fail "node $i's namespace dht${tag}n$i does not have ${addrs[i]%:*}"
done
[[ "${addrs[0]}" == 10.77.* ]] || fail "node 0 is at ${addrs[0]}, not in 10.77.0.0/16"
[ "${addrs[0]#*:}" = "${addrs[3]#*:}" ] || fail "nodes 0 and 3 listen at different ports"

# The ring its nodes see is made of the four namespace addresses.
"$dht" --node "${addrs[0]}" ring >"$tmp/ring"
for a in "${addrs[@]}"; do
  grep -q "  $a " "$tmp/ring" || { cat "$tmp/ring" >&2; fail "$a is not in the ring"; }
done
grep -q "127.0.0.1" "$tmp/ring" && { cat "$tmp/ring" >&2; fail "a node advertises loopback"; }

quiet "put through ${addrs[1]}" "$dht" --node "${addrs[1]}" put netns-key 'across namespaces'
[ "$("$dht" --node "${addrs[3]}" get netns-key)" = 'across namespaces' ] ||
  fail "get through ${addrs[3]}"
quiet "dht check of 4 nodes" "$dht" --node "${addrs[0]}" check

quiet "scripts/ring kill 2" "$ring" kill 2
quiet "the 3 left ready within ${wait_ms} ms" \
  "$dht" --node "${addrs[0]}" --timeout-ms "$wait_ms" wait --ring --nodes 3
quiet "dht check of 3 nodes" "$dht" --node "${addrs[0]}" check
[ "$("$dht" --node "${addrs[3]}" get netns-key)" = 'across namespaces' ] ||
  fail "get after node 2 was killed"

quiet "scripts/ring restart 2" "$ring" restart 2
quiet "4 nodes ready again within ${wait_ms} ms" \
  "$dht" --node "${addrs[2]}" --timeout-ms "$wait_ms" wait --ring --nodes 4

pids=$(cat "$DHT_RUN_DIR"/node*/pid)
up=0
quiet "scripts/ring down" "$ring" down
while read -r kind name; do
  case "$kind" in
  netns) [ ! -e "/run/netns/$name" ] || fail "namespace $name is left after down" ;;
  link) [ ! -e "/sys/class/net/$name" ] || fail "link $name is left after down" ;;
  *) fail "netns-made has a line '$kind $name'" ;;
  esac
done <"$tmp/made"
[ "$(wc -l <"$tmp/made")" -eq 9 ] || fail "expected 9 things made (a bridge, 4 namespaces, 4 veths)"
for pid in $pids; do
  if kill -0 "$pid" 2>/dev/null && [ "$(awk '{ print $3 }' "/proc/$pid/stat")" != Z ]; then
    fail "dhtd pid $pid still runs after down"
  fi
done
echo "test_ring_netns: ok in ${SECONDS}s"
