-- Node 1 of the redirect example: cluster port 7301, API 8301; its app
-- answers on 9301 (server_port) and its nginx on 9311 (proxy_port).
-- Its `app` check asks that application for a page every 500 ms: two failed
-- answers in a row make the node unhealthy, and a leader that turns
-- unhealthy hands leadership to a healthy node; two good answers in a row
-- make it healthy again.
local app_port = 9301

return {
  identifier = "server_a",
  listen_host = "127.0.0.1",
  listen_port = 7301,
  api_port = 8301,
  metadata = { server_port = app_port, proxy_port = 9311 },
  peers = {
    { identifier = "server_b", host = "127.0.0.1", port = 7302, metadata = { server_port = 9302 } },
    { identifier = "server_c", host = "127.0.0.1", port = 7303, metadata = { server_port = 9303 } },
  },
  checks = {
    { name = "app", http = "http://127.0.0.1:" .. app_port .. "/", interval_ms = 500, rise = 2, fall = 2 },
  },
  hooks = "hooks.lua",
}
