-- Node 1 of the failover_vip example, on its own machine (or network
-- namespace) with address 10.77.0.1 on eth0: cluster port 7400, API
-- 127.0.0.1:8400 of that machine. The leader adds the VIP to vip_dev.
return {
  identifier = "server_a",
  listen_host = "10.77.0.1",
  listen_port = 7400,
  metadata = { vip = "10.77.0.100/24", vip_dev = "eth0" },
  peers = {
    { identifier = "server_b", host = "10.77.0.2", port = 7400 },
    { identifier = "server_c", host = "10.77.0.3", port = 7400 },
  },
  hooks = "hooks.lua",
}
