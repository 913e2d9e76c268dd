#!/bin/sh
# The install test: `make install` into a temporary DESTDIR, then the
# installed binary, library (through the installed qcluster.pc), Lua modules,
# Python module, man page and systemd unit are used from there, against a
# one-node cluster of the installed binary; `make uninstall` must leave no
# file. Ends with "N passed, N failed"; the agent is ended by its PID and the
# temporary directory removed, also on failure or interrupt.
cd "$(dirname "$0")/.." || exit 2
tmp=$(mktemp -d /tmp/qc-install-XXXXXX) || exit 2
prefix=/usr/local
dest=$tmp/dest
P=$dest$prefix
pid=""
passed=0
failed=0

stop_agent() {
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null
  n=0
  while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid"
  agent_rc=$?
  pid=""
  return "$agent_rc"
}
cleanup() {
  stop_agent
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# check NAME CMD...: one test; passes when CMD exits 0. CMD's output is shown
# only when it fails.
check() {
  name=$1
  shift
  if "$@" >"$tmp/out" 2>&1; then
    passed=$((passed + 1))
    echo "ok - $name"
  else
    failed=$((failed + 1))
    echo "not ok - $name"
    tail -n 25 "$tmp/out" | sed 's/^/#   /'
  fi
}

say() { echo "$*" >&2; }

# --- the tests --------------------------------------------------------------

t_install() {
  make --no-print-directory install DESTDIR="$dest" PREFIX="$prefix"
}

# Every file the README's Install section lists, at its place.
PYVER=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
EXPECTED="bin/qcluster lib/libqcluster.a lib/libqcluster.so.0 lib/libqcluster.so
include/qcluster.h include/qcluster_errors.h lib/pkgconfig/qcluster.pc lib/lua/5.4/qcluster.so
share/lua/5.4/qcluster/client.lua lib/python$PYVER/dist-packages/qcluster/__init__.py
share/man/man1/qcluster.1 lib/systemd/system/qcluster.service
share/doc/qcluster/examples/qcluster.lua"
t_files() {
  rc=0
  for f in $EXPECTED; do
    [ -f "$P/$f" ] || { say "missing: $prefix/$f"; rc=1; }
  done
  [ "$(readlink "$P/lib/libqcluster.so")" = libqcluster.so.0 ] || { say "libqcluster.so is no link to libqcluster.so.0"; rc=1; }
  [ -x "$P/bin/qcluster" ] || { say "bin/qcluster is not executable"; rc=1; }
  # Nothing outside PREFIX (DESTDIR holds only usr/local/...).
  stray=$(find "$dest" -mindepth 1 ! -path "$P" ! -path "$P/*" ! -path "$dest/usr" | head -n 5)
  [ -z "$stray" ] || { say "outside $prefix: $stray"; rc=1; }
  return $rc
}

pc() {
  PKG_CONFIG_PATH="$P/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$dest" pkg-config "$@" qcluster
}

t_pc() {
  # (pkgconf puts the sysroot before variables too: ask without it)
  got=$(PKG_CONFIG_PATH="$P/lib/pkgconfig" pkg-config --variable=prefix qcluster) || return 1
  [ "$got" = "$prefix" ] || { say "prefix=$got, expected $prefix"; return 1; }
  cflags=$(pc --cflags) || return 1
  case " $cflags " in *" -I$P/include "*) ;; *) say "cflags: $cflags"; return 1 ;; esac
  libs=$(pc --libs) || return 1
  case " $libs " in *" -L$P/lib "*) ;; *) say "libs: $libs"; return 1 ;; esac
}

t_version() {
  want=$(sed -n 's/^#define QCLUSTER_VERSION "\(.*\)"/\1/p' "$P/include/qcluster_errors.h")
  out=$("$P/bin/qcluster" version) || return 1
  [ "$out" = "qcluster $want" ] || { say "version: '$out', header says $want"; return 1; }
}

t_check_example() {
  "$P/bin/qcluster" check "$P/share/doc/qcluster/examples/qcluster.lua"
}

# A one-node cluster (no peers) elects itself at once.
port=$((20000 + $(od -An -N2 -tu2 /dev/urandom) % 10000))
api=127.0.0.1:$((port + 1))
t_cluster() {
  cat >"$tmp/solo.lua" <<EOF
return { identifier = "solo", listen_port = $port, api_port = $((port + 1)),
  data_dir = "data", metadata = { server_port = 8080 } }
EOF
  "$P/bin/qcluster" agent "$tmp/solo.lua" >"$tmp/agent.log" 2>&1 &
  pid=$!
  n=0
  while [ "$n" -lt 300 ]; do
    if out=$("$P/bin/qcluster" leader --api "$api" 2>&1); then
      case "$out" in solo*) return 0 ;; *) say "leader: $out"; return 1 ;; esac
    fi
    kill -0 "$pid" 2>/dev/null || { say "the agent exited:"; cat "$tmp/agent.log" >&2; return 1; }
    sleep 0.1
    n=$((n + 1))
  done
  say "no leader after 30 s: $out"
  cat "$tmp/agent.log" >&2
  return 1
}

# A C program on the installed header and library: the version, an error
# text, and the leader through the client API.
write_prog() {
  cat >"$tmp/prog.c" <<'EOF'
#include <qcluster.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 2 || strcmp(qc_strerror(QC_ENOLEADER), qc_strerror(QC_OK)) == 0) return 2;
    qc_client *c = NULL;
    qc_peer *p = NULL;
    if (qc_client_new(argv[1], NULL, &c) != QC_OK) return 1;
    int rc = qc_client_get_leader_info(c, &p);
    if (rc == QC_OK) printf("%s %s leader=%s\n", QCLUSTER_VERSION, qc_strerror(rc), p->identifier);
    qc_peer_free(p);
    qc_client_free(c);
    return rc == QC_OK ? 0 : 1;
}
EOF
}

t_c_shared() {
  write_prog
  # shellcheck disable=SC2046 # pkg-config's words are separate flags
  cc -std=c11 -Wall -Wextra -Werror $(pc --cflags) "$tmp/prog.c" -o "$tmp/prog" $(pc --libs) || return 1
  lib=$(LD_LIBRARY_PATH="$P/lib" ldd "$tmp/prog" | sed -n 's/.*libqcluster\.so\.0 => \([^ ]*\).*/\1/p')
  [ "$lib" = "$P/lib/libqcluster.so.0" ] || { say "libqcluster.so.0 resolves to '$lib'"; return 1; }
  out=$(LD_LIBRARY_PATH="$P/lib" "$tmp/prog" "$api") || { say "$out"; return 1; }
  case "$out" in *leader=solo) ;; *) say "prog: $out"; return 1 ;; esac
}

t_c_static() {
  write_prog
  libs=$(pc --libs --static | sed 's/-lqcluster/-l:libqcluster.a/') || return 1
  # shellcheck disable=SC2046,SC2086
  cc -std=c11 -Wall -Wextra -Werror $(pc --cflags) "$tmp/prog.c" -o "$tmp/prog-static" $libs || return 1
  if ldd "$tmp/prog-static" | grep -q libqcluster; then say "linked the shared library"; return 1; fi
  out=$("$tmp/prog-static" "$api") || { say "$out"; return 1; }
  case "$out" in *leader=solo) ;; *) say "prog: $out"; return 1 ;; esac
}

# Lua finds the installed modules first; the default paths stay after them.
lua_env() {
  LUA_CPATH_5_4="$P/lib/lua/5.4/?.so;;" LUA_PATH_5_4="$P/share/lua/5.4/?.lua;;" "$@"
}

# An in-process one-node cluster from the installed module.
t_lua_module() {
  lua_env lua5.4 - "$P" "$((port + 2))" "$tmp/inproc" <<'EOF'
local P, lport, dir = ...
local where = package.searchpath("qcluster", package.cpath)
assert(where == P .. "/lib/lua/5.4/qcluster.so", "qcluster resolves to " .. tostring(where))
local qcluster = require("qcluster")
local elected
local cluster = assert(qcluster.new({ identifier = "inproc", listen_port = tonumber(lport),
  api_port = 0, data_dir = dir }, { on_elected = function(ev) elected = ev.term end }))
for _ = 1, 600 do
  if elected and cluster:is_leader() then break end
  cluster:step(0.05)
end
assert(elected and cluster:is_leader(), "no election within 30 s")
assert(cluster:get_leader_info().identifier == "inproc")
cluster:stop()
EOF
}

t_lua_client() {
  lua_env lua5.4 - "$P" "$api" <<'EOF'
local P, api = ...
local where = package.searchpath("qcluster.client", package.path)
assert(where == P .. "/share/lua/5.4/qcluster/client.lua", "resolves to " .. tostring(where))
local client = require("qcluster.client").new({ api = api })
local leader = assert(client:get_leader_info())
assert(leader.identifier == "solo", "leader " .. tostring(leader.identifier))
assert(client:is_leader() == true, "the solo node does not lead")
EOF
}

t_python() {
  pydir="$P/lib/python$PYVER/dist-packages"
  PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$pydir" /usr/bin/python3 - "$pydir" "$api" <<'EOF'
import sys
import qcluster
pydir, api = sys.argv[1], sys.argv[2]
# where Debian's python3 looks for a /usr/local install
assert pydir.endswith("/usr/local/lib/python%d.%d/dist-packages" % sys.version_info[:2]), pydir
assert qcluster.__file__ == pydir + "/qcluster/__init__.py", qcluster.__file__
leader = qcluster.Client(api=api).get_leader_info()
assert leader is not None and leader.identifier == "solo", leader
# the embedded node finds the installed libqcluster (PREFIX/lib) by itself
import socket, tempfile, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
with tempfile.TemporaryDirectory() as d, \
        qcluster.QCluster(identifier="py", listen_host="127.0.0.1", listen_port=port,
                          data_dir=d) as node:
    deadline = time.monotonic() + 10
    while not node.is_leader() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert node.is_leader(), "the embedded solo node does not lead"
EOF
}

t_man() {
  page=$(MANPATH="$P/share/man" man -w qcluster) || return 1
  [ "$page" = "$P/share/man/man1/qcluster.1" ] || { say "man -w: $page"; return 1; }
  # A fixed locale and width: a missing locale or a terminal's width would
  # bring warnings that are not the page's.
  LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$page" >"$tmp/man.txt" 2>"$tmp/man.err" ||
    return 1
  [ ! -s "$tmp/man.err" ] || { say "warnings:"; cat "$tmp/man.err" >&2; return 1; }
  grep -q 'CONFIGURATION' "$tmp/man.txt" || { say "rendered page lacks CONFIGURATION"; return 1; }
}

t_unit() {
  unit=$P/lib/systemd/system/qcluster.service
  grep -qx "ExecStart=$prefix/bin/qcluster agent /etc/qcluster/qcluster.lua" "$unit" ||
    { say "no ExecStart=$prefix/bin/qcluster ..."; return 1; }
  if grep -n '@[A-Z]*@' "$unit"; then say "placeholders left"; return 1; fi
  if ! command -v systemd-analyze >/dev/null; then
    echo "# systemd-analyze not found: the unit's syntax is not verified"
    return 0
  fi
  # The same unit with its commands under DESTDIR, where they exist.
  mkdir -p "$tmp/unit"
  sed "s|$prefix/bin/|$P/bin/|g" "$unit" >"$tmp/unit/qcluster.service"
  out=$(MANPATH="$P/share/man" systemd-analyze verify "$tmp/unit/qcluster.service" 2>&1) ||
    { say "$out"; return 1; }
  # Only what it says of this unit counts (not of the host's own units).
  if echo "$out" | grep qcluster >&2; then return 1; fi
}

t_stop() {
  stop_agent || { say "agent exited $agent_rc"; tail -n 5 "$tmp/agent.log" >&2; return 1; }
}

t_uninstall() {
  make --no-print-directory uninstall DESTDIR="$dest" PREFIX="$prefix" || return 1
  left=$(find "$dest" ! -type d)
  [ -z "$left" ] || { say "left behind:"; say "$left"; return 1; }
}

# Another PREFIX: the .pc and the unit say it, though build/qcluster.pc was
# made for the default.
t_other_prefix() {
  d=$tmp/opt
  make --no-print-directory install DESTDIR="$d" PREFIX=/opt/qc || return 1
  pfx=$(PKG_CONFIG_PATH="$d/opt/qc/lib/pkgconfig" pkg-config --variable=prefix qcluster)
  [ "$pfx" = /opt/qc ] || { say "pc prefix=$pfx"; return 1; }
  grep -q '^ExecStart=/opt/qc/bin/qcluster ' "$d/opt/qc/lib/systemd/system/qcluster.service" ||
    { say "unit ExecStart not under /opt/qc"; return 1; }
  "$d/opt/qc/bin/qcluster" version || return 1
  make --no-print-directory uninstall DESTDIR="$d" PREFIX=/opt/qc || return 1
  left=$(find "$d" ! -type d)
  [ -z "$left" ] || { say "left behind: $left"; return 1; }
}

check "make install DESTDIR=... PREFIX=$prefix" t_install
check "every file lands in its place under PREFIX, nothing outside" t_files
check "the installed qcluster.pc says prefix=$prefix and points into it" t_pc
check "the installed binary prints the installed header's version" t_version
check "the installed binary accepts the installed example config (check)" t_check_example
check "the installed binary runs a one-node cluster; qcluster leader names it" t_cluster
check "a C program built through the installed qcluster.pc (shared library) asks the leader" t_c_shared
check "the same program linked with the installed static library asks the leader" t_c_static
check "lua5.4 require \"qcluster\" from the install runs an in-process node that leads" t_lua_module
check "lua5.4 require \"qcluster.client\" from the install asks the agent" t_lua_client
check "python3 import qcluster from the install asks the agent" t_python
check "man qcluster finds the installed page; it renders without warnings" t_man
check "the installed unit runs the installed binary and verifies" t_unit
check "the installed agent stops cleanly on SIGTERM (exit 0)" t_stop
check "make uninstall leaves no file" t_uninstall
check "PREFIX=/opt/qc: the .pc and the unit say it; uninstall cleans up" t_other_prefix
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
