-- build/api_fake for the API and CLI specs: a fake agent view on a port,
-- driven by signals (SIGUSR1 toggles "leader known" and bumps the term,
-- SIGUSR2 bumps the term only), with a small in-memory KV store; plus a
-- raw HTTP/1.1 client so specs can test the API byte by byte.
local socket = require("socket")
local cjson = require("cjson.safe")

local M = {}

-- QC_API_FAKE / QC_FAKE_LOG let a sanitizer build run the same specs.
local FAKE = os.getenv("QC_API_FAKE") or "./build/api_fake"
local LOG = os.getenv("QC_FAKE_LOG") or "/dev/null"

-- Starts api_fake on port (with a bearer token if given, env: extra
-- VAR=value words before the command), waits until it accepts connections
-- and returns its pid.
function M.start(port, token, env)
  local cmd = (env and (env .. " ") or "") .. FAKE .. " " .. port .. (token and (" " .. token) or "") ..
    " >/dev/null 2>>" .. LOG .. " & echo $!"
  local p = assert(io.popen(cmd))
  local pid = assert(tonumber(p:read("*l")), "no pid")
  p:close()
  for _ = 1, 250 do
    local s = socket.connect("127.0.0.1", port)
    if s then
      s:close()
      return pid
    end
    socket.sleep(0.02)
  end
  os.execute("kill " .. pid)
  error("api_fake did not start on port " .. port)
end

function M.connect(port, timeout)
  local s = assert(socket.connect("127.0.0.1", port))
  s:settimeout(timeout or 5)
  return s
end

-- Reads one response from s: status, headers (lower-case), body. An answer
-- to HEAD (head set) has a Content-Length but no body.
function M.read_response(s, head)
  local line, err = s:receive("*l")
  if not line then return nil, err end
  local status = tonumber(line:match("^HTTP/1%.1 (%d%d%d)"))
  local headers = {}
  while true do
    local h = assert(s:receive("*l"))
    if h == "" then break end
    local k, v = h:match("^([^:]+):%s*(.*)$")
    headers[k:lower()] = v
  end
  local len = tonumber(headers["content-length"] or "0")
  local body = len > 0 and not head and assert(s:receive(len)) or ""
  return status, headers, body
end

-- The text of one request; opts.body (raw bytes) and opts.headers.
function M.format_request(method, path, opts)
  opts = opts or {}
  local body = opts.body or ""
  local lines = { method .. " " .. path .. " HTTP/1.1", "Host: test" }
  for k, v in pairs(opts.headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  if #body > 0 or method ~= "GET" then lines[#lines + 1] = "Content-Length: " .. #body end
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. body
end

-- One request on a fresh connection; returns status, headers, body and the
-- body decoded as JSON (nil when it is not JSON).
function M.request(port, method, path, opts)
  opts = opts or {}
  local s = M.connect(port, opts.timeout)
  assert(s:send(M.format_request(method, path, opts)))
  local status, headers, body = M.read_response(s)
  s:close()
  return status, headers, body, body and cjson.decode(body)
end

-- Percent-encodes every byte but the unreserved ones.
function M.pct(s)
  return (s:gsub("[^%w%-%._~]", function(ch) return string.format("%%%02X", ch:byte()) end))
end

return M
