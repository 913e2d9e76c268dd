#!/usr/bin/env bash
# Starts one agent per config in DIR (every *.json, and every *.lua but
# hooks.lua) in the foreground; Ctrl-C stops them all, each by its PID.
set -u
dir=${1:-examples/bare_minimum}
cd "$(dirname "$0")/.." || exit 1
pids=()
stop() {
  kill "${pids[@]}" 2>/dev/null
  wait "${pids[@]}" 2>/dev/null
  exit 0
}
trap stop INT TERM
for cfg in "$dir"/*.json "$dir"/*.lua; do
  [ -f "$cfg" ] || continue
  [ "$(basename "$cfg")" = hooks.lua ] && continue
  name=$(basename "$cfg" | sed 's/\.[a-z]*$//')
  bin/qcluster agent "$cfg" > >(sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
done
echo "cluster of $dir running (PIDs ${pids[*]}); try: bin/qcluster status   (Ctrl-C stops it)"
wait "${pids[@]}"
