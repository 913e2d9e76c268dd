#!/bin/sh
# Runs the chaos suite (make chaos): tests/chaos/run.lua [DURATION]. Needs
# root; one run at a time (a lock); whatever way it ends (also Ctrl-C), the
# qcchaos-* namespaces and every process inside them are removed by name
# and PID. Prints "N passed, N failed" last.
cd "$(dirname "$0")/.." || exit 2
if [ "$(id -u)" -ne 0 ]; then
  echo "chaos: CANNOT RUN: the chaos suite must run as root (it creates network namespaces, a bridge and nftables rules)"
  echo "0 passed, 1 failed"
  exit 1
fi
exec 9>/run/qcchaos.lock
if ! flock -n 9; then
  echo "chaos: CANNOT RUN: another chaos run holds /run/qcchaos.lock"
  echo "0 passed, 1 failed"
  exit 1
fi
cleanup() {
  lua5.4 -e 'package.path = "./tests/chaos/?.lua;" .. package.path; require("env").cleanup()'
}
trap 'cleanup; exit 130' INT TERM
lua5.4 tests/chaos/run.lua "${1:-3m}"
rc=$?
cleanup
exit $rc
