#!/usr/bin/env bash
# test_deb.sh BUILD_DIR SANITIZED: the Debian package from end to end.
# Builds it from BUILD_DIR with cpack, checks its dependencies, installs it
# with dpkg, checks the files and the dhtd user it brings, verifies the unit
# with systemd-analyze, runs the unit's command line as the unit's user on
# a loopback port of its own (systemd is not PID 1 here, so the service
# itself is not started), talks to that node with the installed dht, stops
# it with SIGTERM as systemctl stop would (timed against TimeoutStopSec),
# then removes and purges the package.
#
# It changes the machine only while it runs: whatever happens, the package
# is purged (with the dhtd user and /var/lib/dhtd) before it exits. Exit
# 77 (skipped, with the reason) without root, dpkg or cpack, for a
# sanitizer build (SANITIZED=1; not what ships), or when a chord-dht
# package or a dhtd user is there already: they would not be ours to undo.
set -euo pipefail

build=$1
sanitized=${2:-0}
unit=/usr/lib/systemd/system/dhtd.service
start_s=$SECONDS

test_name=test_deb
# shellcheck source=tests/script_util.sh
. "$(dirname "$0")/../script_util.sh"

[ "$sanitized" = 0 ] || skip "a sanitizer build is not a package to ship"
[ "$(id -u)" = 0 ] || skip "installing a package needs root"
for tool in cpack dpkg dpkg-deb dpkg-shlibdeps setpriv; do
  command -v "$tool" >/dev/null || skip "$tool is missing (scripts/install-deps installs it)"
done
[ -f "$build/CPackConfig.cmake" ] || fail "no $build/CPackConfig.cmake"
installed() {
  local s
  s=$(dpkg-query -W -f='${db:Status-Status}' chord-dht 2>/dev/null) || return 1
  [ "$s" != not-installed ]
}
installed && skip "a chord-dht package is installed on this machine already"
getent passwd dhtd >/dev/null && skip "a dhtd user exists on this machine already"

tmp=$(mktemp -d /tmp/test_deb.XXXXXX)
pid=
cleanup() {
  local rc=$?
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null || true
  fi
  if installed; then
    undo "could not purge chord-dht: remove it by hand" dpkg --purge chord-dht || rc=1
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT

quiet "cpack" cpack -G DEB --config "$build/CPackConfig.cmake" -B "$tmp/pkg"
deb=$(echo "$tmp"/pkg/chord-dht_*.deb)
[ -f "$deb" ] || fail "cpack made no chord-dht_*.deb"
depends=$(dpkg-deb -f "$deb" Depends)
for lib in libc6 libuv1 libmsgpackc2 liblmdb0 libsodium23 libhttp-parser2.9; do
  [[ ", $depends" == *", $lib "* ]] || fail "Depends lacks $lib: $depends"
done

quiet "dpkg -i" dpkg -i "$deb"
for f in /usr/bin/dhtd /usr/bin/dht /usr/share/man/man1/dhtd.1.gz \
         /usr/share/man/man1/dht.1.gz "$unit" /usr/lib/sysusers.d/dhtd.conf \
         /etc/default/dhtd /usr/share/doc/chord-dht/README.md; do
  [ -f "$f" ] || fail "the package did not install $f"
done
getent passwd dhtd >/dev/null || fail "the package did not add the dhtd user"
for prog in dhtd dht; do
  zcat "/usr/share/man/man1/$prog.1.gz" | grep -q "^\.TH ${prog^^} " ||
    fail "$prog.1.gz is not a man page"
done
[ "$(/usr/bin/dhtd --version)" = "$("$build/dhtd/dhtd" --version)" ] ||
  fail "the installed dhtd is not the one built"
[ "$(/usr/bin/dht --version)" = "$("$build/cli/dht" --version)" ] ||
  fail "the installed dht is not the one built"

if command -v systemd-analyze >/dev/null; then
  # --man=no where man is missing: Documentation= would fail for that alone.
  man_opt=()
  command -v man >/dev/null || man_opt=(--man=no)
  systemd-analyze verify "${man_opt[@]}" "$unit" >"$tmp/verify" 2>&1 ||
    { cat "$tmp/verify" >&2; fail "systemd-analyze verify $unit"; }
  [ ! -s "$tmp/verify" ] || { cat "$tmp/verify" >&2; fail "systemd-analyze verify warned"; }
else
  echo "test_deb: systemd-analyze is missing (Debian's systemd): the unit is not verified"
fi

# The unit's command line, run as the unit runs it: its user, its
# environment file, its umask and file limit, a state directory of the
# test's own for %S, and a loopback port of the test's own for DHTD_LISTEN.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port=$((17000 + RANDOM % 900))
while ! port_free "$port"; do port=$((port + 1)); done
chmod 755 "$tmp"
install -d -o dhtd -g dhtd -m 700 "$tmp/state/dhtd"
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
exec_start=${exec_start//%S/$tmp/state}
limit=$(sed -n 's/^LimitNOFILE=//p' "$unit")
stop_timeout_s=$(sed -n 's/^TimeoutStopSec=//p' "$unit")
(
  set -a
  # shellcheck disable=SC1091
  . /etc/default/dhtd
  # shellcheck disable=SC2034 # the eval below reads it
  DHTD_LISTEN=127.0.0.1:$port
  set +a
  umask 077
  # systemd may raise the hard limit; here the machine's may be lower.
  ulimit -n "$limit" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  eval "exec setpriv --reuid=dhtd --regid=dhtd --clear-groups -- $exec_start"
) 2>"$tmp/dhtd.log" &
pid=$!

dht=(/usr/bin/dht --node "127.0.0.1:$port" --timeout-ms 1000)
for _ in $(seq 50); do
  "${dht[@]}" ping >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/dhtd.log" >&2; fail "dhtd exited at start"; }
  sleep 0.1
done
"${dht[@]}" ping >"$tmp/ping" 2>&1 || { cat "$tmp/ping" "$tmp/dhtd.log" >&2; fail "dht ping"; }
quiet "dht put" "${dht[@]}" put installed 'from the package'
[ "$("${dht[@]}" get installed)" = 'from the package' ] || fail "dht get"
[ "$(stat -c %U "$tmp/state/dhtd/data.mdb")" = dhtd ] ||
  fail "the store in the state directory is not the dhtd user's"

t0=$(date +%s%N)
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
stop_ms=$((($(date +%s%N) - t0) / 1000000))
[ "$status" = 0 ] || { cat "$tmp/dhtd.log" >&2; fail "dhtd exited $status on SIGTERM"; }
grep -q "left the ring; exiting" "$tmp/dhtd.log" || { cat "$tmp/dhtd.log" >&2; fail "no graceful leave"; }
[ "$stop_ms" -lt $((stop_timeout_s * 1000)) ] || fail "stop took $stop_ms ms, over TimeoutStopSec"
echo "test_deb: $(cat "$tmp/ping")"
echo "test_deb: SIGTERM to exit, a graceful leave: $stop_ms ms (TimeoutStopSec=$stop_timeout_s)"

quiet "dpkg -r" dpkg -r chord-dht
for f in /usr/bin/dhtd /usr/bin/dht "$unit"; do
  [ ! -e "$f" ] || fail "dpkg -r left $f"
done
[ -f /etc/default/dhtd ] || fail "dpkg -r removed the conffile /etc/default/dhtd"
quiet "dpkg -P" dpkg -P chord-dht
[ ! -e /etc/default/dhtd ] || fail "dpkg -P left /etc/default/dhtd"
! getent passwd dhtd >/dev/null || fail "dpkg -P left the dhtd user"
! getent group dhtd >/dev/null || fail "dpkg -P left the dhtd group"
echo "test_deb: passed in $((SECONDS - start_s)) s"
