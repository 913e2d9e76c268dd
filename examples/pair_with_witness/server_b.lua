-- Server b of the pair: runs the service when it leads.
return {
  identifier = "server_b",
  listen_port = 7202,
  api_port = 8202,
  peers = {
    { identifier = "server_a", host = "127.0.0.1", port = 7201 },
    { identifier = "witness", host = "127.0.0.1", port = 7203, role = "witness" },
  },
  metadata = { service_port = 9202 },
  hooks = "hooks.lua",
}
