#!/usr/bin/env bash
# Runs the redis_failover example on loopback: for each node (server_*.lua)
# its redis-server and its agent, every file under one directory
# ($REDIS_FAILOVER_DIR, else a new temporary one). Ctrl-C or SIGTERM stops
# them all, each by its PID. $REDIS_FAILOVER_DIR/pids lists
# "identifier kind pid" a line, for scripts and tests.
#
#   run.sh                 starts the three nodes (ports from REDIS_FAILOVER_BASE, default 7500)
#   run.sh redis server_a  runs server_a's redis-server in the foreground (to bring back a dead one)
set -u
here=$(cd "$(dirname "$0")" && pwd)
qcluster=${QCLUSTER:-$here/../../bin/qcluster}

# Prints "identifier redis_port" of a config file.
redis_port() {
  lua5.4 - "$1" <<'EOF'
local c = dofile(arg[1])
print(c.identifier, c.metadata.redis_port)
EOF
}

# Every Redis starts as a replica of port 0 ("of nowhere"): it takes no
# writes and serves no replica (NOMASTERLINK) until the hooks promote it or
# point it at the primary. So a Redis that restarts empty can neither take
# writes nor wipe the replicas that followed it. No persistence: a write
# acknowledged with WAIT 1 lives in the memory of two Redis servers.
# repl-diskless-sync-delay 0: a full sync starts at once, not after 5 s.
redis_args() { # port dir
  echo --port "$1" --bind 127.0.0.1 --dir "$2" --daemonize no --save "" --appendonly no \
    --replicaof 127.0.0.1 0 --repl-diskless-sync-delay 0 --logfile "$2/redis.log"
}

if [ "${1:-}" = redis ]; then
  : "${REDIS_FAILOVER_DIR:?set REDIS_FAILOVER_DIR to the running example\'s directory}"
  read -r id port < <(redis_port "$here/$2.lua")
  mkdir -p "$REDIS_FAILOVER_DIR/$id/redis"
  # shellcheck disable=SC2046 # the words of redis_args
  exec redis-server $(redis_args "$port" "$REDIS_FAILOVER_DIR/$id/redis")
fi

made=""
if [ -z "${REDIS_FAILOVER_DIR:-}" ]; then
  REDIS_FAILOVER_DIR=$(mktemp -d /tmp/qcluster-redis-failover-XXXXXX)
  made=1
fi
export REDIS_FAILOVER_DIR
pids=()
stop() {
  kill "${pids[@]}" 2>/dev/null
  wait "${pids[@]}" 2>/dev/null
  [ -n "$made" ] && [ -z "${REDIS_FAILOVER_KEEP:-}" ] && rm -rf "$REDIS_FAILOVER_DIR"
  exit 0
}
trap stop INT TERM

started() { # identifier kind pid
  pids+=("$3")
  echo "$1 $2 $3" >>"$REDIS_FAILOVER_DIR/pids"
}

: >"$REDIS_FAILOVER_DIR/pids"
for cfg in "$here"/server_*.lua; do
  read -r id port < <(redis_port "$cfg")
  mkdir -p "$REDIS_FAILOVER_DIR/$id/redis"
  # shellcheck disable=SC2046 # the words of redis_args
  redis-server $(redis_args "$port" "$REDIS_FAILOVER_DIR/$id/redis") &
  started "$id" redis $!
  for _ in $(seq 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
done
for cfg in "$here"/server_*.lua; do
  read -r id port < <(redis_port "$cfg")
  "$qcluster" agent "$cfg" >>"$REDIS_FAILOVER_DIR/$id/agent.log" 2>&1 &
  started "$id" agent $!
  echo "$id: redis-server on 127.0.0.1:$port, logs in $REDIS_FAILOVER_DIR/$id"
done
echo "redis_failover running in $REDIS_FAILOVER_DIR (PIDs ${pids[*]}); Ctrl-C stops it"
wait "${pids[@]}"
