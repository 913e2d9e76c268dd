-- Server a of the pair: runs the service when it leads.
return {
  identifier = "server_a",
  listen_port = 7201,
  api_port = 8201,
  peers = {
    { identifier = "server_b", host = "127.0.0.1", port = 7202 },
    { identifier = "witness", host = "127.0.0.1", port = 7203, role = "witness" },
  },
  metadata = { service_port = 9201 },
  hooks = "hooks.lua",
}
