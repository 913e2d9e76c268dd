-- The chaos cluster, seen from the hub namespace: five agents (one per
-- namespace, each behind its delaying proxy), their configs and hooks that
-- record leadership, and what the nemesis needs: who leads, start, kill,
-- pause, and the links' delays. Every process is ended by its PID.
local socket = require("socket")
local cjson = require("cjson.safe")
local env = require("env")
local httpc = require("httpc")

local M = {}
M.__index = M

-- Hooks that append each leadership change with qcluster.now() and the term.
local HOOKS = [[
local qcluster = require("qcluster")
local path = %q
local function record(line)
  local f = io.open(path, "a")
  f:write(line, "\n")
  f:close()
end
local function now() return string.format("%%.6f", qcluster.now()) end
return {
  on_start = function() record("start " .. now()) end,
  on_elected = function(ev) record("elected " .. ev.term .. " " .. now()) end,
  on_demoted = function(ev) record("demoted " .. ev.term .. " " .. ev.reason .. " " .. now()) end,
  on_stop = function(ev) record("stop " .. tostring(ev.reason):gsub("%%s", "_") .. " " .. now()) end,
}
]]

-- new(root, dir, n): configs for n nodes under dir (dir/nI/...).
function M.new(root, dir, n)
  local c = setmetatable({ root = root, dir = dir, n = n, nodes = {}, delay = {} }, M)
  for i = 1, n do
    local nd = dir .. "/n" .. i
    env.must("mkdir -p " .. env.q(nd))
    local node = { i = i, name = "n" .. i, ns = env.ns(i), addr = env.addr(i), dir = nd,
      config = nd .. "/config.lua", log = nd .. "/agent.log", records = nd .. "/leader.records",
      proxy_ctl = nd .. "/proxy.ctl", proxy_log = nd .. "/proxy.log", state = "down" }
    node.api = { host = node.addr, port = env.API_PORT, name = node.name }
    local peers = {}
    for j = 1, n do
      if j ~= i then
        peers[#peers + 1] = string.format("{identifier = %q, host = %q, port = %d}", "n" .. j, env.addr(j),
          env.CLUSTER_PORT)
      end
    end
    env.write(nd .. "/hooks.lua", string.format(HOOKS, node.records))
    env.write(node.config, string.format([[
return {
  identifier = %q, listen_host = %q, listen_port = %d, api_host = %q, api_port = %d,
  peers = {%s},
  hooks = "hooks.lua", data_dir = "data",
  snapshot_entries = 300, -- snapshots (in a forked child) every few seconds of the run
}
]], node.name, node.addr, env.CLUSTER_PORT, node.addr, env.API_PORT, table.concat(peers, ", ")))
    env.write(node.proxy_ctl, "")
    c.nodes[i] = node
    c.delay[i] = {}
  end
  return c
end

function M:start_proxy(i)
  local node = self.nodes[i]
  local links = {}
  for j = 1, self.n do
    if j ~= i then
      links[#links + 1] = string.format("n%d=%s:%d=%s:%d", j, node.addr, env.PROXY_BASE + j, node.addr,
        env.CLUSTER_PORT)
    end
  end
  node.proxy_pid = env.spawn(string.format("exec ip netns exec %s %s/build/chaos-proxy %s %s", node.ns,
    self.root, env.q(node.proxy_ctl), table.concat(links, " ")), node.proxy_log)
end

function M:start(i)
  local node = self.nodes[i]
  node.pid = env.spawn(string.format("cd %s && exec ip netns exec %s %s/bin/qcluster agent config.lua",
    env.q(node.dir), node.ns, self.root), node.log)
  node.state = "up"
  return node.pid
end

-- kill -9; returns the time right after the signal was sent.
function M:kill(i)
  local node = self.nodes[i]
  env.kill(node.pid, "KILL")
  local t = socket.gettime()
  for _ = 1, 100 do
    if not env.running(node.pid) then break end
    socket.sleep(0.01)
  end
  node.state, node.pid = "down", nil
  return t
end

-- SIGSTOP; returns the time right after it was sent (frozen from then on).
function M:pause(i)
  local node = self.nodes[i]
  env.kill(node.pid, "STOP")
  node.state = "paused"
  return socket.gettime()
end

-- SIGCONT; returns the time right before it was sent (frozen until then).
function M:resume(i)
  local node = self.nodes[i]
  local t = socket.gettime()
  env.kill(node.pid, "CONT")
  node.state = "up"
  return t
end

function M:get(i, path, timeout)
  local node = self.nodes[i]
  local res = httpc.request(node.addr, env.API_PORT, "GET", path, nil, timeout or 1)
  if not res.status then return nil, res.err end
  return cjson.decode(res.body), res.status
end

-- The leader most running nodes name (index), or nil.
function M:leader(timeout)
  local votes, best, bestn = {}, nil, 0
  for i = 1, self.n do
    if self.nodes[i].state == "up" then
      local v, status = self:get(i, "/v1/leader", timeout or 0.4)
      if status == 200 and type(v) == "table" and v.identifier then
        votes[v.identifier] = (votes[v.identifier] or 0) + 1
        if votes[v.identifier] > bestn then best, bestn = v.identifier, votes[v.identifier] end
      end
    end
  end
  return best and tonumber(best:match("^n(%d+)$")) or nil
end

-- The leader every running node names, once they all agree (or nil).
function M:agreed_leader(timeout)
  local deadline = socket.gettime() + timeout
  repeat
    local name, agree = nil, true
    for i = 1, self.n do
      local v, status = self:get(i, "/v1/leader", 0.5)
      if status ~= 200 or type(v) ~= "table" or (name and v.identifier ~= name) then
        agree = false
        break
      end
      name = v.identifier
    end
    if agree and name then return name end
    socket.sleep(0.1)
  until socket.gettime() > deadline
end

-- Each node's applied index (qcluster_applied_index), or nil for one that
-- does not answer.
function M:applied(i)
  local node = self.nodes[i]
  local res = httpc.request(node.addr, env.API_PORT, "GET", "/metrics", nil, 1)
  if res.status ~= 200 then return nil end
  return tonumber(res.body:match("\nqcluster_applied_index%s+(%d+)"))
end

-- Waits until every node has applied the same index; returns it or nil.
function M:converged(timeout)
  local deadline = socket.gettime() + timeout
  repeat
    local first, same = nil, true
    for i = 1, self.n do
      local a = self:applied(i)
      if not a or (first and a ~= first) then
        same = false
        break
      end
      first = a
    end
    if same and first then return first end
    socket.sleep(0.1)
  until socket.gettime() > deadline
end

-- Link delays: delay[from][to] = {ms, jitter}. Each proxy learns the delay
-- of the bytes that reach its node (forward) and of its answers (back).
function M:set_delay(from, to, ms, jitter)
  self.delay[from][to] = ms and { ms, jitter or 0 } or nil
end

function M:write_delays()
  for i = 1, self.n do
    local lines = {}
    for j = 1, self.n do
      if j ~= i then
        local fwd, back = self.delay[j][i], self.delay[i][j]
        if fwd or back then
          lines[#lines + 1] = string.format("n%d %d %d %d", j, fwd and fwd[1] or 0, back and back[1] or 0,
            math.max(fwd and fwd[2] or 0, back and back[2] or 0))
        end
      end
    end
    env.write_atomic(self.nodes[i].proxy_ctl, table.concat(lines, "\n") .. "\n")
  end
end

function M:clear_delays()
  for i = 1, self.n do self.delay[i] = {} end
  self:write_delays()
end

-- Ends every agent and proxy by its PID.
function M:stop_all()
  for i = 1, self.n do
    local node = self.nodes[i]
    for _, key in ipairs { "pid", "proxy_pid" } do
      if node[key] then
        env.kill(node[key], "CONT")
        env.kill(node[key], "KILL")
        node[key] = nil
      end
    end
    node.state = "down"
  end
end

return M
