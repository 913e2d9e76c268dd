-- A fake agent that answers badly, for the client SDK specs: "drip" sends a
-- 200 whose headers come one line a second for a minute (each silence, and
-- each read of a line, short; the whole answer a minute long), then an
-- empty body; "body" answers every request at once with 200 and the given
-- text. Serves one connection at a time, forever.
-- As a script: lua5.4 tests/helpers/bad_agent.lua MODE PORTFILE [TEXT]
-- (it writes its port to PORTFILE once listening). As a module: start().
local socket = require("socket")

local function serve(mode, portfile, text)
  local srv = assert(socket.bind("127.0.0.1", 0))
  local _, port = srv:getsockname()
  local f = assert(io.open(portfile .. ".tmp", "w"))
  f:write(port, "\n")
  f:close()
  assert(os.rename(portfile .. ".tmp", portfile))
  while true do
    local c = srv:accept()
    if c then
      c:settimeout(5)
      repeat
        local line = c:receive("*l")
      until not line or line == ""
      if mode == "drip" then
        local ok = c:send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        for i = 1, 60 do
          if not ok then break end
          socket.sleep(1)
          ok = c:send("X-Drip: " .. i .. "\r\n")
        end
        if ok then c:send("Content-Length: 0\r\n\r\n") end
      else
        c:send(string.format("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" ..
          "Content-Length: %d\r\nConnection: close\r\n\r\n%s", #text, text))
      end
      c:close()
    end
  end
end

if arg and arg[0] and arg[0]:match("bad_agent%.lua$") then
  serve(arg[1], arg[2], arg[3] or "")
  return
end

local M = {}

-- Starts the fake with mode (and text for "body"): its pid and
-- "127.0.0.1:PORT". The caller kills the pid.
function M.start(mode, text)
  local portfile = os.tmpname()
  os.remove(portfile)
  local p = assert(io.popen(string.format("exec lua5.4 tests/helpers/bad_agent.lua %s %s '%s' " ..
    ">/dev/null 2>&1 & echo $!", mode, portfile, text or "")))
  local pid = tonumber(p:read("l"))
  p:close()
  local deadline = socket.gettime() + 10
  while socket.gettime() < deadline do
    local f = io.open(portfile)
    local port = f and f:read("n")
    if f then f:close() end
    if port then
      os.remove(portfile)
      return pid, "127.0.0.1:" .. port
    end
    socket.sleep(0.02)
  end
  os.execute("kill -KILL " .. pid)
  error("bad_agent did not start")
end

return M
