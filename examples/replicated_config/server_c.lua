-- Node 3 of the replicated_config example: cluster port 7103, API 8103.
return {
  identifier = "server_c",
  listen_host = "127.0.0.1",
  listen_port = 7103,
  api_port = 8103,
  peers = {
    { identifier = "server_a", host = "127.0.0.1", port = 7101 },
    { identifier = "server_b", host = "127.0.0.1", port = 7102 },
  },
  hooks = "hooks.lua",
}
