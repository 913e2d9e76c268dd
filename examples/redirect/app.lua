-- The redirect example's application: a tiny HTTP server that answers every
-- request with its node's name, so a client sees which node it reached.
-- Usage: lua5.4 app.lua NAME PORT [HOST] (HOST defaults to 127.0.0.1). One
-- request at a time is plenty for a demo; it is not a web server.
local socket = require("socket")

local name, port, host = arg[1], tonumber(arg[2]), arg[3] or "127.0.0.1"
if not name or not port then
  io.stderr:write("usage: lua5.4 app.lua NAME PORT [HOST]\n")
  os.exit(2)
end

local server = assert(socket.bind(host, port))

-- Reads the request head (up to the empty line) and answers; a client that
-- stalls is dropped after 2 s so it cannot hold the server.
local function serve(client)
  client:settimeout(2)
  repeat
    local line = client:receive("*l")
  until not line or line == ""
  local body = name .. "\n"
  client:send("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " .. #body ..
    "\r\nConnection: close\r\n\r\n" .. body)
  client:close()
end

io.stderr:write(string.format("app %s listening on %s:%d\n", name, host, port))
while true do
  local client = server:accept()
  if client then serve(client) end
end
