-- Node 3 of the failover_vip example, on its own machine (or network
-- namespace) with address 10.77.0.3 on eth0: cluster port 7400, API
-- 127.0.0.1:8400 of that machine. The leader adds the VIP to vip_dev.
-- The `service` check runs a command every 500 ms that asks the service
-- behind the VIP (here an HTTP server on port 9400 of this machine) for a
-- page: two failures in a row make the node unhealthy, and an unhealthy
-- leader hands leadership, and so the VIP, to a healthy node.
return {
  identifier = "server_c",
  listen_host = "10.77.0.3",
  listen_port = 7400,
  metadata = { vip = "10.77.0.100/24", vip_dev = "eth0" },
  peers = {
    { identifier = "server_a", host = "10.77.0.1", port = 7400 },
    { identifier = "server_b", host = "10.77.0.2", port = 7400 },
  },
  checks = {
    { name = "service", exec = "curl -fsS -o /dev/null http://127.0.0.1:9400/", interval_ms = 500, rise = 2, fall = 2 },
  },
  hooks = "hooks.lua",
}
