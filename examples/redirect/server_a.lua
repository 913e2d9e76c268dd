-- Node 1 of the redirect example: cluster port 7301, API 8301; its app
-- answers on 9301 (server_port) and its nginx on 9311 (proxy_port).
return {
  identifier = "server_a",
  listen_host = "127.0.0.1",
  listen_port = 7301,
  api_port = 8301,
  metadata = { server_port = 9301, proxy_port = 9311 },
  peers = {
    { identifier = "server_b", host = "127.0.0.1", port = 7302, metadata = { server_port = 9302 } },
    { identifier = "server_c", host = "127.0.0.1", port = 7303, metadata = { server_port = 9303 } },
  },
  hooks = "hooks.lua",
}
