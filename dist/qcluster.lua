-- Example config for the systemd unit (qcluster.service): copy it to
-- /etc/qcluster/qcluster.lua on each node and change identifier,
-- listen_host and peers. `qcluster check /etc/qcluster/qcluster.lua`
-- validates it; `man qcluster` lists every key and hook.
local qcluster = require("qcluster")

return {
  -- This node: a unique name, and where it takes cluster traffic.
  identifier = "node1",
  listen_host = "10.0.0.1",
  listen_port = 7001,

  -- The other members of the first start (every node lists the others).
  -- metadata is what this node says of a peer until the peer announces its
  -- own; here, the port its service answers on.
  peers = {
    { identifier = "node2", host = "10.0.0.2", port = 7001, metadata = { server_port = 8080 } },
    { identifier = "node3", host = "10.0.0.3", port = 7001, metadata = { server_port = 8080 } },
  },
  metadata = { server_port = 8080 },

  -- The HTTP API and `qcluster status|leader|...` (which default to
  -- 127.0.0.1:8001): loopback only.
  api_host = "127.0.0.1",
  api_port = 8001,

  -- The unit's StateDirectory=qcluster: systemd creates it, owned by the
  -- unit's User=.
  data_dir = "/var/lib/qcluster",

  -- Authenticate cluster traffic (the same key on every node):
  --   head -c 32 /dev/urandom | base64 > /etc/qcluster/qcluster.key
  --   chmod 600 /etc/qcluster/qcluster.key
  -- then uncomment:
  -- secret_file = "qcluster.key",

  -- Hooks: a file beside this one (SIGHUP, i.e. `systemctl reload
  -- qcluster`, reloads it), or functions inline as below.
  -- hooks = "hooks.lua",
  on_elected = function(ev)
    qcluster.log("info", "elected leader for term " .. ev.term)
  end,
  on_demoted = function(ev)
    qcluster.log("info", "no longer leader (" .. ev.reason .. ")")
  end,
}
