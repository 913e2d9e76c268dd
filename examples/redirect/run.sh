#!/usr/bin/env bash
# Runs the redirect example on this machine: for each node (server_*.lua) its
# application (app.lua on metadata.server_port), its nginx (on
# metadata.proxy_port, in the foreground, all its files in run/<identifier>/)
# and its agent. Ctrl-C or SIGTERM stops them all, each by its PID.
# run/pids lists "identifier kind pid" a line, for scripts and tests.
set -u
here=$(cd "$(dirname "$0")" && pwd)
qcluster=${QCLUSTER:-$here/../../bin/qcluster}
export PATH="$PATH:/usr/sbin:/sbin" # nginx, also for the hooks' reloads
pids=()
stop() {
  kill "${pids[@]}" 2>/dev/null
  wait "${pids[@]}" 2>/dev/null
  exit 0
}
trap stop INT TERM

# Prints "identifier server_port proxy_port" of a config file.
ports() {
  lua5.4 - "$1" <<'EOF'
local c = dofile(arg[1])
print(c.identifier, c.metadata.server_port, c.metadata.proxy_port)
EOF
}

started() { # identifier kind pid
  pids+=("$3")
  echo "$1 $2 $3" >>"$here/run/pids"
}

# Starts nginx for one node and waits (at most 5 s) until it runs, so the
# agent's first reload finds it.
start_nginx() { # identifier proxy_port dir
  mkdir -p "$3/logs" "$3/tmp"
  sed "s/@PROXY_PORT@/$2/" "$here/nginx.conf.in" >"$3/nginx.conf"
  # shellcheck disable=SC2016 # nginx's $leader, not the shell's
  [ -f "$3/leader.conf" ] || echo 'set $leader "";' >"$3/leader.conf"
  rm -f "$3/nginx.pid"
  local user=()
  # As root, workers run as root too: the demo's directories are private.
  [ "$(id -u)" -eq 0 ] && user=(-g "user root;")
  nginx -p "$3/" -c "$3/nginx.conf" -e "$3/logs/error.log" "${user[@]}" >>"$3/nginx.out" 2>&1 &
  started "$1" nginx $!
  for _ in $(seq 50); do
    [ -s "$3/nginx.pid" ] && return 0
    sleep 0.1
  done
  echo "nginx of $1 did not start; see $3/logs/error.log" >&2
}

mkdir -p "$here/run"
: >"$here/run/pids"
for cfg in "$here"/server_*.lua; do
  read -r id app_port proxy_port < <(ports "$cfg")
  dir=$here/run/$id
  mkdir -p "$dir"
  lua5.4 "$here/app.lua" "$id" "$app_port" >>"$dir/app.log" 2>&1 &
  started "$id" app $!
  start_nginx "$id" "$proxy_port" "$dir"
  "$qcluster" agent "$cfg" >>"$dir/agent.log" 2>&1 &
  started "$id" agent $!
  echo "$id: app on 127.0.0.1:$app_port, nginx on 127.0.0.1:$proxy_port, logs in $dir"
done
echo "redirect example running (PIDs ${pids[*]}); try: curl -s 127.0.0.1:9311   (Ctrl-C stops it)"
wait "${pids[@]}"
