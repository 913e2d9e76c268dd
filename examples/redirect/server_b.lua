-- Node 2 of the redirect example: cluster port 7302, API 8302; its app
-- answers on 9302 (server_port) and its nginx on 9312 (proxy_port).
-- Its `app` check asks that application for a page every 500 ms: two failed
-- answers in a row make the node unhealthy, and a leader that turns
-- unhealthy hands leadership to a healthy node; two good answers in a row
-- make it healthy again.
local app_port = 9302

return {
  identifier = "server_b",
  listen_host = "127.0.0.1",
  listen_port = 7302,
  api_port = 8302,
  metadata = { server_port = app_port, proxy_port = 9312 },
  peers = {
    { identifier = "server_a", host = "127.0.0.1", port = 7301, metadata = { server_port = 9301 } },
    { identifier = "server_c", host = "127.0.0.1", port = 7303, metadata = { server_port = 9303 } },
  },
  checks = {
    { name = "app", http = "http://127.0.0.1:" .. app_port .. "/", interval_ms = 500, rise = 2, fall = 2 },
  },
  hooks = "hooks.lua",
}
