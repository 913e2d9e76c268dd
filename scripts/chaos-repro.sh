#!/bin/sh
# Runs one bug reproduction of the chaos suite, tests/chaos/repro_NAME.lua,
# inside the chaos network (the qcchaos-* namespaces, removed afterwards).
# usage: scripts/chaos-repro.sh NAME   (as root; exit 1: the bug shows)
cd "$(dirname "$0")/.." || exit 2
name=$1
[ -f "tests/chaos/repro_$name.lua" ] || { echo "usage: $0 NAME (tests/chaos/repro_NAME.lua)"; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "chaos-repro: must run as root"; exit 2; }
make -s --no-print-directory bin/qcluster build/chaos-proxy || exit 2
exec 9>/run/qcchaos.lock
flock -n 9 || { echo "chaos-repro: another chaos run holds /run/qcchaos.lock"; exit 2; }
env_lua() { lua5.4 -e "package.path = './tests/chaos/?.lua;' .. package.path; $1"; }
trap 'env_lua "require(\"env\").cleanup()"; exit 130' INT TERM
env_lua 'local e = require("env"); e.cleanup(); e.setup(5)' || exit 2
dir=$(mktemp -d /tmp/qcchaos-repro-XXXXXX)
ip netns exec qcchaos-hub lua5.4 "tests/chaos/repro_$name.lua" "$dir"
rc=$?
env_lua 'require("env").cleanup()'
if [ "$rc" -eq 0 ]; then rm -rf "$dir"; else echo "chaos-repro: logs kept in $dir"; fi
exit $rc
