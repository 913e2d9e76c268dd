-- A minimal HTTP/1.1 client for the chaos suite: one request per
-- connection, an overall deadline, and an answer that says whether the
-- request can have reached the server (a history needs to know: a write that
-- was never sent did not happen; one whose answer was lost may have).
local socket = require("socket")

local M = {}

-- request(host, port, method, path, body, timeout) returns a table:
--   {status=N, body=S, headers={lowercase=value}} on an answer;
--   {err=MSG, sent=false} when nothing reached the server (connect failed);
--   {err=MSG, sent=true} when the request went out but no full answer came.
function M.request(host, port, method, path, body, timeout)
  local deadline = socket.gettime() + (timeout or 3)
  local c = socket.tcp()
  c:settimeout(math.max(0.05, deadline - socket.gettime()))
  local ok, err = c:connect(host, port)
  if not ok then
    c:close()
    return { err = "connect: " .. tostring(err), sent = false }
  end
  c:setoption("tcp-nodelay", true)
  local req = string.format("%s %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n" ..
    "Content-Length: %d\r\n\r\n%s", method, path, host, port, body and #body or 0, body or "")
  local sent, serr = c:send(req)
  if not sent then
    c:close()
    -- a partial request is not a request the server can act on, but a
    -- full one that went out before the error could have been
    return { err = "send: " .. tostring(serr), sent = true }
  end
  local function left() return deadline - socket.gettime() end
  -- The whole answer: the headers, then content-length bytes (or up to the
  -- close when there is none).
  local function complete(raw)
    local head, rest = raw:match("^(.-)\r\n\r\n(.*)$")
    if not head then return nil end
    local len = tonumber(head:lower():match("\r\ncontent%-length:%s*(%d+)"))
    if len and #rest >= len then return head, rest:sub(1, len) end
    return nil
  end
  local raw, closed = "", false
  while not complete(raw) and not closed do
    local t = left()
    if t <= 0 then
      c:close()
      return { err = "timeout", sent = true }
    end
    -- receive(n) waits for all n bytes: wait for readability, then take
    -- what is there without blocking
    socket.select({ c }, nil, t)
    c:settimeout(0)
    local data, rerr, partial = c:receive(8192)
    if data then
      raw = raw .. data
    else
      if partial and #partial > 0 then raw = raw .. partial end
      if rerr ~= "closed" and rerr ~= "timeout" then
        c:close()
        return { err = tostring(rerr), sent = true }
      end
      closed = rerr == "closed"
    end
  end
  c:close()
  local head, rest = complete(raw)
  if not head then
    head, rest = raw:match("^(.-)\r\n\r\n(.*)$")
    if not head or head:lower():match("\r\ncontent%-length:") then
      return { err = "short answer", sent = true }
    end
  end
  local status = tonumber(head:match("^HTTP/1%.%d (%d%d%d)"))
  if not status then return { err = "bad status line", sent = true } end
  local headers = {}
  for k, v in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do headers[k:lower()] = v end
  return { status = status, body = rest, headers = headers }
end

return M
