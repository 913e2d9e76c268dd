-- Real agents for integration specs: writes configs for a cluster on unique
-- loopback ports into a temp dir, starts bin/qcluster agent processes, talks
-- to their APIs, and ends every process it started by its PID.
local socket = require("socket")
local http = require("socket.http")
local ltn12 = require("ltn12")
local cjson = require("cjson.safe")

local M = {}


function M.sleep(s) socket.sleep(s) end
function M.now() return socket.gettime() end

function M.sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function M.write(path, text)
  local f = assert(io.open(path, "wb"))
  assert(f:write(text))
  f:close()
end

-- Polls fn every 10 ms until it returns a truthy value or timeout seconds pass.
function M.wait_for(fn, timeout)
  local deadline = socket.gettime() + (timeout or 5)
  repeat
    local v = fn()
    if v then return v end
    socket.sleep(0.01)
  until socket.gettime() > deadline
  return nil
end

-- This process's pid: spec files run side by side (scripts/test.sh), and
-- two that start in the same second must not draw the same ports.
local function own_pid()
  local f = io.open("/proc/self/stat")
  local pid = f and tonumber(f:read("l"):match("^(%d+)"))
  if f then f:close() end
  return pid or 0
end

-- True when nothing listens on, nor holds, the TCP ports base+1..base+59 of
-- 127.0.0.1 (cluster ports base+i, APIs base+20+i, services base+40+i).
local function ports_free(base)
  for port = base + 1, base + 59 do
    local s = socket.tcp()
    s:setoption("reuseaddr", true)
    local ok = s:bind("127.0.0.1", port)
    s:close()
    if not ok then return false end
  end
  return true
end

-- A base port no other spec of this run uses now: drawn at random (ports
-- only, never a seed of the behaviour under test), and probed free.
local port_seq = 0
function M.base_port()
  port_seq = port_seq + 1
  math.randomseed(os.time() * 1000 + own_pid() * 7 + port_seq)
  local base
  for _ = 1, 50 do
    -- below the ephemeral range (32768+), where outbound sockets would collide
    base = 20000 + math.random(0, 230) * 50
    if ports_free(base) then return base end
  end
  return base
end

local function lua_value(v, indent)
  indent = indent or ""
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" then return tostring(v) end
  local parts = {}
  if #v > 0 then
    for _, x in ipairs(v) do parts[#parts + 1] = lua_value(x, indent .. "  ") end
  else
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do
      parts[#parts + 1] = string.format("[%q] = %s", k, lua_value(v[k], indent .. "  "))
    end
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end
M.lua_value = lua_value

-- Builds configs for n nodes: node1..nodeN, cluster ports base+i, API ports
-- base+20+i. opts.hooks: Lua source of a hooks file shared by all nodes;
-- opts.extra: keys added to every config. Returns the cluster table.
function M.cluster(n, opts)
  opts = opts or {}
  local base = opts.base or M.base_port()
  local dir = M.sh("mktemp -d /tmp/qc-spec-XXXXXX"):gsub("%s+$", "")
  local c = { n = n, dir = dir, base = base, nodes = {}, hooks = opts.hooks ~= nil }
  if opts.hooks then M.write(dir .. "/hooks.lua", opts.hooks) end
  for i = 1, n do
    local peers = {}
    for j = 1, n do
      if j ~= i then
        peers[#peers + 1] = { identifier = "node" .. j, host = "127.0.0.1", port = base + j,
          metadata = { slot = j } }
      end
    end
    local conf = { identifier = "node" .. i, listen_port = base + i, api_port = base + 20 + i,
      peers = peers, metadata = { server_port = base + 40 + i } }
    if opts.hooks then conf.hooks = "hooks.lua" end
    for k, v in pairs(opts.extra or {}) do conf[k] = v end
    local path = string.format("%s/node%d.lua", dir, i)
    M.write(path, "return " .. lua_value(conf) .. "\n")
    c.nodes[i] = { id = "node" .. i, config = path, api = "127.0.0.1:" .. (base + 20 + i),
      port = base + i, log = string.format("%s/node%d.log", dir, i),
      events = string.format("%s/node%d.events", dir, i) }
  end
  return c
end

-- Adds node c.n+1 to c's configs: it joins through node1's cluster port
-- (opts.join: other "host:port" addresses), with opts.extra keys. Returns i.
function M.add_node(c, opts)
  opts = opts or {}
  local i = c.n + 1
  c.n = i
  local conf = { identifier = "node" .. i, listen_port = c.base + i, api_port = c.base + 20 + i,
    join = opts.join or { "127.0.0.1:" .. (c.base + 1) }, metadata = { server_port = c.base + 40 + i } }
  if c.hooks then conf.hooks = "hooks.lua" end
  for k, v in pairs(opts.extra or {}) do conf[k] = v end
  local path = string.format("%s/node%d.lua", c.dir, i)
  M.write(path, "return " .. lua_value(conf) .. "\n")
  c.nodes[i] = { id = "node" .. i, config = path, api = "127.0.0.1:" .. (c.base + 20 + i),
    port = c.base + i, log = string.format("%s/node%d.log", c.dir, i),
    events = string.format("%s/node%d.events", c.dir, i) }
  return i
end

function M.start(c, i)
  local node = c.nodes[i]
  -- node.env: "NAME=value ..." set for this node's agent (test knobs)
  local cmd = string.format("cd %s && %sQC_EVENTS=%s exec %s/bin/qcluster agent %s >>%s 2>&1 & echo $!",
    c.dir, node.env and (node.env .. " ") or "", node.events, M.root, node.config, node.log)
  local p = io.popen(cmd)
  node.pid = tonumber(p:read("l"))
  p:close()
  return node.pid
end

function M.start_all(c)
  for i = 1, c.n do M.start(c, i) end
end

-- False once pid has exited. An exited agent is a zombie until its reaper
-- collects it: the agents are children of a shell that exited, so that is
-- PID 1, which may take seconds (kill -0 still succeeds on a zombie). A
-- zombie holds no port, file nor lock any more, so it counts as gone.
function M.alive(pid)
  local f = io.open(string.format("/proc/%d/stat", pid))
  if not f then return false end
  local stat = f:read("a") or ""
  f:close()
  local state = stat:match("^.*%) (%S)") -- after the last ")": a name may hold one
  return state ~= nil and state ~= "Z" and state ~= "X"
end

-- Sends sig to node i and waits for it to exit; returns true when it did.
function M.signal(c, i, sig)
  local node = c.nodes[i]
  if not node.pid then return true end
  os.execute(string.format("kill -%s %d 2>/dev/null", sig, node.pid))
  if sig == "STOP" or sig == "CONT" or sig == "HUP" then return true end
  local gone = M.wait_for(function() return not M.alive(node.pid) end, 10)
  if gone then
    node.pid = nil
  end
  return gone
end

-- Ends every process of the cluster (by PID) and removes its dir.
function M.stop(c)
  if not c then return end
  for i = 1, c.n do
    local node = c.nodes[i]
    if node.pid then
      os.execute("kill -CONT " .. node.pid .. " 2>/dev/null")
      os.execute("kill -KILL " .. node.pid .. " 2>/dev/null")
      M.wait_for(function() return not M.alive(node.pid) end, 5)
      node.pid = nil
    end
  end
  if not os.getenv("QC_KEEP") then os.execute("rm -rf " .. c.dir) end
end

-- HTTP to an agent API: returns status, body, headers.
function M.http(api, method, path, body, headers)
  local out = {}
  headers = headers or {}
  if body then headers["content-length"] = #body end
  http.TIMEOUT = 10
  local _, status, hdrs = http.request {
    url = "http://" .. api .. path, method = method, headers = headers,
    source = body and ltn12.source.string(body) or nil, sink = ltn12.sink.table(out),
  }
  return status, table.concat(out), hdrs
end

function M.json(api, path)
  local status, body = M.http(api, "GET", path)
  if type(status) ~= "number" then return nil, status end
  return cjson.decode(body), status
end

-- The identifier every live node names as leader, once they all agree. A
-- node of c that was stopped (pid nil) does not count as that leader: just
-- after its kill the others still name it, until they time it out.
function M.agreed_leader(c, timeout)
  return M.wait_for(function()
    local name
    for i = 1, c.n do
      if c.nodes[i].pid then
        local v, status = M.json(c.nodes[i].api, "/v1/leader")
        if status ~= 200 or not v then return nil end
        if name and v.identifier ~= name then return nil end
        name = v.identifier
      end
    end
    local li = name and M.index_of(c, name)
    if li and not c.nodes[li].pid then return nil end
    return name
  end, timeout or 10)
end

-- The agreed leader, or an error that shows what each node says and the
-- tail of its log.
function M.must_leader(c, timeout)
  local name = M.agreed_leader(c, timeout or 10)
  if name then return name end
  local lines = { "no agreed leader; the nodes say:" }
  for i = 1, c.n do
    local node = c.nodes[i]
    local status, body = M.http(node.api, "GET", "/v1/status")
    lines[#lines + 1] = string.format("%s pid=%s alive=%s status=%s %s", node.id, tostring(node.pid),
      tostring(node.pid and M.alive(node.pid)), tostring(status), tostring(body))
    local log = M.read(node.log) or ""
    lines[#lines + 1] = log:sub(-1500)
  end
  error(table.concat(lines, "\n"), 2)
end

function M.index_of(c, id)
  for i = 1, c.n do
    if c.nodes[i].id == id then return i end
  end
end

function M.cli(args, api)
  local cmd = M.root .. "/bin/qcluster " .. args
  if api then cmd = cmd .. " --api " .. api end
  return M.sh(cmd)
end

-- Lines the events hooks wrote for node i.
function M.events(c, i)
  local t = {}
  for line in (M.read(c.nodes[i].events) or ""):gmatch("[^\n]+") do t[#t + 1] = line end
  return t
end

-- A hooks file that records every hook call as one line in $QC_EVENTS.
M.recording_hooks = [[
local qcluster = require("qcluster")
local path = os.getenv("QC_EVENTS")
local function record(line)
  local f = io.open(path, "a")
  f:write(line, "\n")
  f:close()
end
local function name(p) return p and p.identifier or "nil" end
return {
  on_start = function(ev) record("start " .. ev.self.identifier) end,
  on_elected = function(ev) record("elected " .. ev.term .. " prev=" .. name(ev.previous_leader)
    .. " is_leader=" .. tostring(qcluster.is_leader())) end,
  on_demoted = function(ev) record("demoted " .. ev.term .. " " .. ev.reason) end,
  on_leader_change = function(ev) record("leader " .. ev.term .. " " .. name(ev.leader)
    .. " prev=" .. name(ev.previous_leader)) end,
  on_peer_up = function(p) record("peer_up " .. p.identifier) end,
  on_peer_down = function(p) record("peer_down " .. p.identifier) end,
  on_stop = function(ev) record("stop " .. tostring(ev.reason)) end,
  on_member_join = function(p) record("member_join " .. p.identifier) end,
  on_member_leave = function(p) record("member_leave " .. p.identifier) end,
}
]]

-- ---- key-value store helpers (additive) ----

-- Percent-encodes every byte outside [A-Za-z0-9._~/-] of a key or prefix.
function M.url_key(key)
  return (key:gsub("[^%w%._~/%-]", function(ch) return string.format("%%%02X", ch:byte()) end))
end

-- A decoded KV answer with an integer revision (cjson gives floats).
local function kv_body(body)
  local t = cjson.decode(body)
  if type(t) ~= "table" then return body end
  if type(t.revision) == "number" then t.revision = math.tointeger(t.revision) or t.revision end
  return t
end

-- PUT /v1/kv/KEY[?query]: status, decoded JSON body (or the raw body).
function M.kv_put(api, key, value, query)
  local status, body = M.http(api, "PUT", "/v1/kv/" .. M.url_key(key) .. (query or ""), value)
  return status, kv_body(body)
end

-- GET /v1/kv/KEY[?query]: status, value, revision (a number, or nil).
function M.kv_get(api, key, query)
  local status, body, hdrs = M.http(api, "GET", "/v1/kv/" .. M.url_key(key) .. (query or ""))
  local rev = hdrs and hdrs["x-qcluster-revision"]
  return status, body, tonumber(rev)
end

-- DELETE /v1/kv/KEY[?query]: status, decoded JSON body (or the raw body).
function M.kv_delete(api, key, query)
  local status, body = M.http(api, "DELETE", "/v1/kv/" .. M.url_key(key) .. (query or ""))
  return status, kv_body(body)
end

-- The data_dir of node i under the cluster dir (the default location).
function M.data_dir(c, i)
  return c.dir .. "/qcluster-data/" .. c.nodes[i].id
end

-- The WAL segment files of node i, oldest first (names are hex first indexes
-- of equal width, so name order is index order).
function M.wal_segments(c, i)
  local t = {}
  local p = io.popen("ls " .. M.data_dir(c, i) .. "/wal 2>/dev/null")
  for name in p:lines() do
    if name:match("%.seg$") then t[#t + 1] = M.data_dir(c, i) .. "/wal/" .. name end
  end
  p:close()
  table.sort(t)
  return t
end

-- Runs node i's agent in the foreground for at most `seconds` (then SIGKILL
-- by timeout(1), which ends its own child by PID) and returns its exit code
-- (137 when it had to be killed). For agents expected to refuse to start.
function M.run_once(c, i, seconds)
  local node = c.nodes[i]
  local _, _, code = os.execute(string.format(
    "cd %s && QC_EVENTS=%s timeout -s KILL %d %s/bin/qcluster agent %s >>%s 2>&1",
    c.dir, node.events, seconds or 15, M.root, node.config, node.log))
  return code
end

M.root = os.getenv("PWD")

return M
