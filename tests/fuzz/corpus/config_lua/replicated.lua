-- Node 1 of the replicated_config example: cluster port 7101, API 8101.
return {
  identifier = "server_a",
  listen_host = "127.0.0.1",
  listen_port = 7101,
  api_port = 8101,
  peers = {
    { identifier = "server_b", host = "127.0.0.1", port = 7102 },
    { identifier = "server_c", host = "127.0.0.1", port = 7103 },
  },
  hooks = "hooks.lua",
}
