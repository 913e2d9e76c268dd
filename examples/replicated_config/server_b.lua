-- Node 2 of the replicated_config example: cluster port 7102, API 8102.
return {
  identifier = "server_b",
  listen_host = "127.0.0.1",
  listen_port = 7102,
  api_port = 8102,
  peers = {
    { identifier = "server_a", host = "127.0.0.1", port = 7101 },
    { identifier = "server_c", host = "127.0.0.1", port = 7103 },
  },
  hooks = "hooks.lua",
}
