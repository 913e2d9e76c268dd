-- Real agents and the cluster transport's limits: the descriptor limit at
-- start, and a member that restarts while strangers hold hundreds of
-- connections on every node's cluster port.
local A = require("agents")

local SECRET = "s3cret-long-enough-for-no-warning"

-- Holds `per` connections from address FROM on each HOST:PORT target for
-- at most SECONDS, opening again the ones the node closes (at most 25 a
-- round per target, every 50 ms), and writes to STATUS after every round
-- how many it holds on each target, then how many it opened on each in
-- all. Run by lua5.4 as a process of its own.
local ATTACKER = [[
local socket = require("socket")
local from, seconds, per, status = arg[1], tonumber(arg[2]), tonumber(arg[3]), arg[4]
local targets = {}
for i = 5, #arg do
  local host, port = arg[i]:match("^(.+):(%d+)$")
  targets[#targets + 1] = { host = host, port = tonumber(port), conns = {}, opened = 0 }
end
local stop = socket.gettime() + seconds
while socket.gettime() < stop do
  local held, opened = {}, {}
  for _, t in ipairs(targets) do
    local live = {}
    for _, s in ipairs(t.conns) do
      s:settimeout(0)
      local _, err = s:receive("*a") -- drains a challenge; "closed" once the node closed it
      if err == "timeout" then live[#live + 1] = s else s:close() end
    end
    t.conns = live
    for _ = 1, math.min(25, per - #t.conns) do
      local s = socket.tcp()
      s:bind(from, 0)
      s:settimeout(0.2)
      if not s:connect(t.host, t.port) then
        s:close()
        break
      end
      t.conns[#t.conns + 1] = s
      t.opened = t.opened + 1
    end
    held[#held + 1] = #t.conns
    opened[#opened + 1] = t.opened
  end
  local f = io.open(status .. ".tmp", "w")
  f:write(table.concat(held, " "), " ", table.concat(opened, " "), "\n")
  f:close()
  os.rename(status .. ".tmp", status)
  socket.sleep(0.05)
end
]]

-- A three-node cluster whose node i listens on 127.0.0.(i+1), so that each
-- has an address of its own (the API stays on 127.0.0.1).
local function cluster(extra)
  local c = A.cluster(3, { extra = extra })
  for i = 1, 3 do
    local conf = dofile(c.nodes[i].config)
    conf.listen_host = "127.0.0." .. (i + 1)
    for _, p in ipairs(conf.peers) do p.host = "127.0.0." .. (p.identifier:match("%d+") + 1) end
    A.write(c.nodes[i].config, "return " .. A.lua_value(conf) .. "\n")
  end
  return c
end

local function status(c, i)
  local v, code = A.json(c.nodes[i].api, "/v1/status")
  if code ~= 200 then return nil end
  return v
end

local function held(path)
  local t = {}
  for n in (A.read(path) or ""):gmatch("%d+") do t[#t + 1] = tonumber(n) end
  return t
end

describe("the cluster transport", function()
  local c, attacker

  after_each(function()
    if attacker then os.execute("kill -KILL " .. attacker .. " 2>/dev/null") end
    attacker = nil
    A.stop(c)
    c = nil
  end)

  it("the agent raises its descriptor limit to the hard one and logs it", function()
    c = A.cluster(1)
    local hard = tonumber((A.sh("ulimit -Hn")))
    local soft = math.min(256, hard)
    local node = c.nodes[1]
    local p = io.popen(string.format("cd %s && ulimit -Sn %d && exec %s/bin/qcluster agent %s "
      .. ">>%s 2>&1 & echo $!", c.dir, soft, A.root, node.config, node.log))
    node.pid = tonumber(p:read("l"))
    p:close()
    assert.is_truthy(A.wait_for(function() return status(c, 1) end, 10), A.read(node.log))
    local limits = A.read("/proc/" .. node.pid .. "/limits")
    local cur, max = limits:match("Max open files%s+(%d+)%s+(%d+)")
    assert.are.equal(hard, tonumber(cur))
    assert.are.equal(hard, tonumber(max))
    local log = A.read(node.log)
    if soft < hard then
      assert.is_truthy(log:find(string.format(" INFO  agent: descriptor limit %d (raised from %d, "
        .. "the hard limit)", hard, soft), 1, true), log)
    else
      assert.is_truthy(log:find(string.format("descriptor limit %d (the hard limit)", hard), 1,
        true), log)
    end
  end)

  for _, secret in ipairs({ false, true }) do
    it("a member restarted while strangers hold hundreds of connections on every node's cluster "
       .. "port rejoins and catches up" .. (secret and " (with a secret)" or ""), function()
      c = cluster(secret and { secret = SECRET } or nil)
      A.start_all(c)
      local leader = A.must_leader(c, 15)
      local li = A.index_of(c, leader)
      local fi = li % 3 + 1 -- a follower
      assert.are.equal(200, A.http(c.nodes[li].api, "PUT", "/v1/kv/before", "1"))
      assert.is_true(A.signal(c, fi, "KILL"))
      assert.are.equal(200, A.http(c.nodes[li].api, "PUT", "/v1/kv/while-down", "2"))
      local target = status(c, li).commit_index
      -- the attack: 300 connections from 127.0.0.9 on each cluster port, for 60 s at most
      local script, st = c.dir .. "/attacker.lua", c.dir .. "/attacker.status"
      A.write(script, ATTACKER)
      local args = {}
      for i = 1, 3 do args[i] = string.format("127.0.0.%d:%d", i + 1, c.nodes[i].port) end
      local p = io.popen(string.format("exec lua5.4 %s 127.0.0.9 60 300 %s %s >%s/attacker.log "
        .. "2>&1 & echo $!", script, st, table.concat(args, " "), c.dir))
      attacker = tonumber(p:read("l"))
      p:close()
      -- at full strength: 300 or more opened on each live node (held: as
      -- many as the node lets it hold)
      assert.is_truthy(A.wait_for(function()
        local h = held(st)
        return h[3 + li] and h[3 + li] >= 300 and h[9 - li - fi] >= 300
      end, 15), "the attack did not start: " .. tostring(A.read(c.dir .. "/attacker.log")))
      A.start(c, fi)
      -- it comes back during the attack: it names the leader and has what
      -- was written while it was down
      local back = A.wait_for(function()
        local s = status(c, fi)
        return s and type(s.leader) == "table" and s.leader.identifier == leader
          and s.commit_index >= target
      end, 20)
      assert.is_true(A.alive(attacker), "the attack was over before the member came back")
      local h = held(st)
      assert.is_truthy(back, string.format("node%d never came back; the attacker holds %s; its log:"
        .. "\n%s", fi, table.concat(h, " "), (A.read(c.nodes[fi].log) or ""):sub(-1500)))
      assert.are.equal(200, A.http(c.nodes[li].api, "PUT", "/v1/kv/after", "3"))
      -- the strangers filled the budget and were refused or made room
      local refused = 0
      for i = 1, 3 do
        for _, reason in ipairs({ "unidentified", "evicted" }) do
          local _, body = A.http(c.nodes[i].api, "GET", "/metrics")
          local v = (body or ""):match('qcluster_connections_dropped_total{reason="' .. reason
            .. '"} (%d+)')
          refused = refused + (tonumber(v) or 0)
        end
      end
      assert.is_true(refused > 0, "no stranger was refused")
    end)
  end
end)
