-- A recording TCP relay for specs: takes connections on 127.0.0.1:LISTEN,
-- relays each to 127.0.0.1:TARGET both ways, and appends every byte it
-- relays, either way, to FILE. It stops by itself after SECONDS (so a spec
-- that dies never leaves it behind); a spec ends it by its PID before that.
-- Test-only.
--
--   lua5.4 tests/helpers/record_proxy.lua LISTEN TARGET FILE SECONDS
local socket = require("socket")

local listen_port, target_port = tonumber(arg[1]), tonumber(arg[2])
local out = assert(io.open(arg[3], "ab"))
local deadline = socket.gettime() + tonumber(arg[4] or "120")
local server = assert(socket.bind("127.0.0.1", listen_port))
server:settimeout(0)
local other = {} -- socket -> the socket its bytes go to

local function drop(s)
  local o = other[s]
  other[s] = nil
  s:close()
  if o then
    other[o] = nil
    o:close()
  end
end

while socket.gettime() < deadline do
  local reads = { server }
  for s in pairs(other) do reads[#reads + 1] = s end
  local ready = socket.select(reads, nil, 0.2)
  for _, s in ipairs(ready) do
    if s == server then
      local c = server:accept()
      if c then
        local t = socket.connect("127.0.0.1", target_port)
        if t then
          c:settimeout(0)
          t:settimeout(0)
          other[c], other[t] = t, c
        else
          c:close()
        end
      end
    elseif other[s] then
      local data, err, partial = s:receive(65536)
      data = data or partial
      if data and #data > 0 then
        out:write(data)
        out:flush()
        other[s]:settimeout(1)
        other[s]:send(data)
        other[s]:settimeout(0)
      end
      if err == "closed" then drop(s) end
    end
  end
end
out:close()
