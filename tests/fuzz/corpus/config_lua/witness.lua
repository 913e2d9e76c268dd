-- The witness: a tiny third voter that breaks ties and never leads.
return {
  identifier = "witness",
  role = "witness",
  listen_port = 7203,
  api_port = 8203,
  peers = {
    { identifier = "server_a", host = "127.0.0.1", port = 7201 },
    { identifier = "server_b", host = "127.0.0.1", port = 7202 },
  },
  hooks = "hooks.lua",
}
