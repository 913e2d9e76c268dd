-- A Redis client that finds the primary the way each fail-over manager
-- documents, and a writer that counts only the writes acknowledged with
-- WAIT 1 (SET, then WAIT 1 answered with 1 or more). Both the example's test
-- and scripts/bench/redis_failover use it; as a program:
--
--   lua5.4 client.lua writer --qcluster 127.0.0.1:7511,127.0.0.1:7512,127.0.0.1:7513 [--acked FILE] [--stop FILE]
--   lua5.4 client.lua writer --sentinel 127.0.0.1:7531,... [--name mymaster] [--acked FILE] [--stop FILE]
--
-- The writer writes w:1, w:2, ... and appends every acknowledged N to
-- --acked (a line each), until --stop exists (or Ctrl-C).
local socket = require("socket")
local http = require("socket.http")
local ltn12 = require("ltn12")
local cjson = require("cjson.safe")

local M = {}

M.POLL_S = 0.005 -- pause between two tries while the primary is not there yet

---------------------------------------------------------------- RESP

local function encode(args)
  local t = { "*" .. #args .. "\r\n" }
  for _, a in ipairs(args) do
    a = tostring(a)
    t[#t + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
  end
  return table.concat(t)
end

local function read_reply(c)
  local line, err = c:receive("*l")
  if not line then return nil, err end
  local kind, rest = line:sub(1, 1), line:sub(2)
  if kind == "+" then return rest end
  if kind == "-" then return nil, rest end
  if kind == ":" then return tonumber(rest) end
  if kind == "$" then
    local n = tonumber(rest)
    if n < 0 then return false end
    local data, e = c:receive(n + 2)
    if not data then return nil, e end
    return data:sub(1, n)
  end
  if kind == "*" then
    local n, t = tonumber(rest), {}
    if n < 0 then return false end
    for i = 1, n do
      local v, e = read_reply(c)
      if v == nil then return nil, e end
      t[i] = v
    end
    return t
  end
  return nil, "bad reply: " .. line
end

-- A connection to host:port, or nil and why.
function M.connect(host, port, timeout)
  local c = socket.tcp()
  c:settimeout(timeout or 1)
  local ok, err = c:connect(host, port)
  if not ok then
    c:close()
    return nil, err
  end
  c:setoption("tcp-nodelay", true)
  return c
end

-- One command; the reply, or nil and the error (a Redis error or a socket's).
function M.call(c, ...)
  local ok, err = c:send(encode { ... })
  if not ok then return nil, err end
  return read_reply(c)
end

---------------------------------------------------------------- discovery

local function split(list)
  local t = {}
  for a in tostring(list):gmatch("[^,%s]+") do t[#t + 1] = a end
  return t
end

local function hostport(a)
  local h, p = a:match("^(.*):(%d+)$")
  return h, tonumber(p)
end

local function http_json(url, timeout)
  local out = {}
  http.TIMEOUT = timeout
  local _, status = http.request { url = url, sink = ltn12.sink.table(out) }
  if type(status) ~= "number" then return nil, status end
  return cjson.decode(table.concat(out)), status
end

-- QCluster: the leader's metadata over any agent's API (GET /v1/leader).
-- The leader's Redis is the primary once metadata.redis_primary_term is the
-- answer's term. When the primary it used fails, the client long-polls
-- (?wait) until the agents name another leader or term.
local Q = {}
Q.__index = Q

function M.qcluster(apis)
  return setmetatable({ apis = split(apis), at = 1 }, Q)
end

-- host, port of the primary, or nil. failed: the last answer's primary
-- failed (connection closed): wait for a change instead of asking again.
function Q:primary(failed)
  for _ = 1, #self.apis do
    local api = self.apis[self.at]
    local path = "/v1/leader"
    if failed and self.term then
      path = string.format("/v1/leader?wait=2&term=%d&leader=%s", self.term, self.leader or "none")
    end
    local v, status = http_json("http://" .. api .. path, failed and 3 or 1)
    if v and (status == 200 or status == 503) then
      self.term = math.tointeger(v.term) or self.term
      self.leader = status == 200 and v.identifier or nil
      local m = status == 200 and v.metadata or {}
      if status == 200 and tonumber(m.redis_primary_term) == v.term and m.redis_port then
        return m.redis_host or v.host, math.tointeger(tonumber(m.redis_port))
      end
      return nil -- no leader, or its Redis is not promoted yet
    end
    self.at = self.at % #self.apis + 1 -- that agent is down: the next one
  end
end

-- Sentinel: SENTINEL get-master-addr-by-name, asking the sentinels in turn,
-- then ROLE on that address (Redis's documented client protocol).
local S = {}
S.__index = S

function M.sentinel(sentinels, name)
  return setmetatable({ sentinels = split(sentinels), name = name or "mymaster", at = 1 }, S)
end

function S:primary()
  for _ = 1, #self.sentinels do
    local h, p = hostport(self.sentinels[self.at])
    local c = M.connect(h, p, 0.5)
    if c then
      local r = M.call(c, "SENTINEL", "get-master-addr-by-name", self.name)
      c:close()
      if type(r) == "table" and r[1] then return r[1], tonumber(r[2]) end
    end
    self.at = self.at % #self.sentinels + 1
  end
end

---------------------------------------------------------------- writing

-- Tries once to write key=value through finder's primary, with WAIT 1.
-- Returns "acked", "unacked" (written, WAIT 1 said 0) or nil and why.
-- w is the writer state {finder, conn, failed}.
function M.write_once(w, key, value, wait_ms)
  if not w.conn then
    local host, port = w.finder:primary(w.failed)
    w.failed = false
    if not host then return nil, "no primary known" end
    local c, err = M.connect(host, port, 1)
    if not c then
      w.failed = true
      return nil, "connect " .. host .. ":" .. port .. ": " .. tostring(err)
    end
    if w.check_role then
      local role = M.call(c, "ROLE")
      if type(role) ~= "table" or role[1] ~= "master" then
        c:close()
        return nil, host .. ":" .. port .. " is not a master"
      end
    end
    w.conn = c
  end
  local ok, err = M.call(w.conn, "SET", key, value)
  if ok == "OK" then
    local n
    n, err = M.call(w.conn, "WAIT", 1, wait_ms or 500)
    if type(n) == "number" then return n >= 1 and "acked" or "unacked" end
  end
  -- A Redis error (READONLY, NOREPLICAS) keeps the primary's agent or
  -- sentinel in charge of telling where to go; a socket error means it died.
  w.failed = err == "closed" or err == "timeout" or (err or ""):match("^connection") ~= nil
  w.conn:close()
  w.conn = nil
  return nil, err
end

function M.writer(finder, opts)
  return { finder = finder, check_role = opts and opts.check_role }
end

-- Writes until it gets one acknowledged write of key (or deadline, in
-- seconds of socket.gettime()); returns the time it was acknowledged.
function M.write_until_acked(w, key, deadline)
  while socket.gettime() < deadline do
    local r = M.write_once(w, key, key)
    if r == "acked" then return socket.gettime() end
    socket.sleep(M.POLL_S)
  end
end

-- The acknowledged numbers (of w:N) that host:port lacks, or nil and why.
function M.missing(host, port, numbers)
  local c, err = M.connect(host, port, 5)
  if not c then return nil, err end
  local missing = {}
  for first = 1, #numbers, 500 do
    local args = { "MGET" }
    for k = first, math.min(first + 499, #numbers) do args[#args + 1] = "w:" .. numbers[k] end
    local vals, e = M.call(c, table.unpack(args))
    if type(vals) ~= "table" then
      c:close()
      return nil, e
    end
    for k, v in ipairs(vals) do
      local n = numbers[first + k - 1]
      if v ~= tostring(n) then missing[#missing + 1] = n end
    end
  end
  c:close()
  return missing
end

---------------------------------------------------------------- program

local function exists(path)
  local f = path and io.open(path)
  if f then f:close() end
  return f ~= nil
end

local function main(args)
  local opts, i = {}, 2
  while args[i] do
    opts[args[i]:gsub("^%-%-", "")] = args[i + 1]
    i = i + 2
  end
  if args[1] ~= "writer" or not (opts.qcluster or opts.sentinel) then
    io.stderr:write("usage: client.lua writer --qcluster API,... | --sentinel HOST:PORT,... [--name NAME]"
      .. " [--acked FILE] [--stop FILE]\n")
    os.exit(2)
  end
  local finder = opts.qcluster and M.qcluster(opts.qcluster) or M.sentinel(opts.sentinel, opts.name)
  local w = M.writer(finder, { check_role = opts.sentinel ~= nil })
  local acked = opts.acked and assert(io.open(opts.acked, "a")) or io.stdout
  local n, count = 1, 0
  while not exists(opts.stop) do
    local r = M.write_once(w, "w:" .. n, n)
    if r == "acked" then
      acked:write(n, "\n")
      acked:flush()
      count = count + 1
    end
    if r then n = n + 1 else socket.sleep(M.POLL_S) end
  end
  io.stderr:write(string.format("writer: %d writes acknowledged of %d\n", count, n - 1))
end

if arg and arg[0] and arg[0]:match("client%.lua$") then main(arg) end

return M
