-- The nemesis: one fault at a time from a weighted menu, sometimes with
-- packet loss or delay on top, held for a few seconds, then healed.
-- Partitions and loss are nftables rules inside the node namespaces (by the
-- nodes' own addresses, so the clients in the hub still reach every node);
-- delay goes through the proxies; kills, pauses and restarts are signals to
-- PIDs. Every injection is logged (JSON lines) and counted by kind.
local socket = require("socket")
local cjson = require("cjson")
local env = require("env")

local M = {}
M.__index = M

-- new(cluster, log_path, on_wake): on_wake(i, pause) runs right after a
-- frozen node is resumed (the wake probe).
function M.new(cluster, log_path, on_wake)
  local self = setmetatable({ c = cluster, counts = {}, procs = {}, on_wake = on_wake }, M)
  self.log = assert(io.open(log_path, "a"))
  self.log:setvbuf("line")
  for i = 1, cluster.n do self.procs["n" .. i] = { kills = {}, pauses = {} } end
  return self
end

function M:note(kind, detail)
  self.counts[kind] = (self.counts[kind] or 0) + 1
  detail = detail or {}
  detail.kind, detail.time = kind, socket.gettime()
  self.log:write(cjson.encode(detail), "\n")
end

local function shuffle(t)
  for i = #t, 2, -1 do
    local j = math.random(i)
    t[i], t[j] = t[j], t[i]
  end
  return t
end

local function names(set)
  local t = {}
  for _, i in ipairs(set) do t[#t + 1] = "n" .. i end
  return table.concat(t, ",")
end

function M:all() local t = {} for i = 1, self.c.n do t[i] = i end return t end

function M:others(i)
  local t = {}
  for j = 1, self.c.n do if j ~= i then t[#t + 1] = j end end
  return t
end

-- The leader (or a random running node when none is known; any node when
-- none runs: a delay combined with crash-all still needs one).
function M:target(leader_bias)
  local l = self.c:leader()
  if l and math.random() < leader_bias then return l, true end
  local up = {}
  for i = 1, self.c.n do if self.c.nodes[i].state == "up" then up[#up + 1] = i end end
  if #up == 0 then return math.random(self.c.n), false end
  return up[math.random(#up)], false
end

-- Drops every packet from each node of `from` to each node of `to` (rules
-- in the senders' output chains).
function M.drop(_, from, to)
  for _, i in ipairs(from) do
    local addrs = {}
    for _, j in ipairs(to) do if j ~= i then addrs[#addrs + 1] = env.addr(j) end end
    if #addrs > 0 then env.add_rules(i, { "out ip daddr { " .. table.concat(addrs, ", ") .. " } drop" }) end
  end
end

function M:cut(a, b)
  self:drop(a, b)
  self:drop(b, a)
end

function M:heal_network()
  for i = 1, self.c.n do env.flush_rules(i) end
  self.c:clear_delays()
end

-- ---- the faults: each applies itself and returns its healing function ----
local faults = {}

faults["partition-halves"] = function(self)
  local order = shuffle(self:all())
  local k = math.random(1, 2)
  local a, b = { table.unpack(order, 1, k) }, { table.unpack(order, k + 1) }
  self:cut(a, b)
  self:note("partition-halves", { a = names(a), b = names(b) })
  return function() self:heal_network() end
end

faults["isolate-leader"] = function(self)
  local l = self:target(1)
  self:cut({ l }, self:others(l))
  self:note("isolate-leader", { node = "n" .. l })
  return function() self:heal_network() end
end

-- One way only: the leader cannot hear the others, or cannot speak to
-- them, or a random node cannot reach a random half.
faults["one-way"] = function(self)
  local l = self:target(1)
  local r = math.random(3)
  local desc
  if r == 1 then
    self:drop(self:others(l), { l })
    desc = "n" .. l .. " deaf"
  elseif r == 2 then
    self:drop({ l }, self:others(l))
    desc = "n" .. l .. " mute"
  else
    local order = shuffle(self:all())
    local from, to = { order[1] }, { table.unpack(order, 2, math.random(2, 4)) }
    self:drop(from, to)
    desc = names(from) .. " -/-> " .. names(to)
  end
  self:note("one-way", { how = desc })
  return function() self:heal_network() end
end

-- Two sides that cannot talk, and one node that talks to both.
faults["bridge"] = function(self)
  local order = shuffle(self:all())
  local bridge = order[1]
  local a, b = { order[2], order[3] }, { order[4], order[5] }
  self:cut(a, b)
  self:note("bridge", { bridge = "n" .. bridge, a = names(a), b = names(b) })
  return function() self:heal_network() end
end

function M:kill_nodes(list)
  for _, i in ipairs(list) do
    table.insert(self.procs["n" .. i].kills, self.c:kill(i))
  end
  return function()
    for _, i in ipairs(list) do
      self.c:start(i)
      self:note("restart", { node = "n" .. i })
    end
  end
end

-- kill -9 of the leader (mostly) or another node, a quarter of the time
-- with a second node; restarted when the fault heals.
faults["kill"] = function(self)
  local i, was_leader = self:target(0.6)
  local list = { i }
  if math.random() < 0.25 then
    local others = shuffle(self:others(i))
    for _, j in ipairs(others) do
      if self.c.nodes[j].state == "up" then
        list[2] = j
        break
      end
    end
  end
  self:note("kill", { nodes = names(list), leader = was_leader })
  if was_leader then self.counts["kill (of the leader)"] = (self.counts["kill (of the leader)"] or 0) + 1 end
  return self:kill_nodes(list)
end

-- Every node at once (what was acknowledged must be on disk).
faults["crash-all"] = function(self)
  self:note("crash-all", {})
  local crash = { from = socket.gettime() }
  local restart = self:kill_nodes(self:all())
  crash.to = socket.gettime()
  self.crashes = self.crashes or {}
  table.insert(self.crashes, crash)
  return function()
    crash.restart = socket.gettime()
    restart()
  end
end

-- The agent's snapshot child (a forked qcluster, src/store/replica.c), if any.
local function snapshot_child(pid)
  local f = io.open(string.format("/proc/%d/task/%d/children", pid, pid))
  if not f then return nil end
  local list = f:read("a")
  f:close()
  for c in list:gmatch("%d+") do
    if (env.read("/proc/" .. c .. "/comm") or ""):match("^qcluster") then return tonumber(c) end
  end
end

-- kill -9 in the middle of a background snapshot: of the agent (the child
-- dies with it; restarted when the fault heals) or, a third of the time,
-- of the child alone (the agent retries later). The victim is the first
-- running node seen with a snapshot child within 8 s (nodes snapshot at
-- staggered points); with none seen, a random node's agent all the same.
faults["snapshot-crash"] = function(self)
  local i, child
  local deadline = socket.gettime() + 8
  while not child and socket.gettime() < deadline do
    for j = 1, self.c.n do
      local node = self.c.nodes[j]
      if node.state == "up" and node.pid then
        child = snapshot_child(node.pid)
        if child then
          i = j
          break
        end
      end
    end
    if not child then socket.sleep(0.002) end
  end
  if child and math.random() < 1 / 3 then
    env.kill(child, "KILL")
    self:note("snapshot-crash", { node = "n" .. i, child = child, what = "child" })
    return function() end
  end
  i = i or self:target(0.5)
  self:note("snapshot-crash", { node = "n" .. i, child = child, what = child and "agent" or "agent (no child seen)" })
  return self:kill_nodes({ i })
end

-- Not a fault: a clean hand-over (the old leader steps down, then the
-- new one is elected), which the one-leader checker must also see.
faults["transfer"] = function(self)
  local l = self.c:leader()
  if l then
    local res = require("httpc").request(env.addr(l), env.API_PORT, "POST", "/v1/transfer-leadership", "{}", 3)
    self:note("transfer", { from = "n" .. l, status = res.status or res.err })
  else
    self:note("transfer", { status = "no leader" })
  end
  return function() end
end

faults["pause"] = function(self)
  local i, was_leader = self:target(0.75)
  local p = { stop = self.c:pause(i) }
  table.insert(self.procs["n" .. i].pauses, p)
  self:note("pause", { node = "n" .. i, leader = was_leader })
  if was_leader then self.counts["pause (of the leader)"] = (self.counts["pause (of the leader)"] or 0) + 1 end
  return function()
    p.cont = self.c:resume(i)
    if self.on_wake then self.on_wake(i, p) end
    self:note("resume", { node = "n" .. i, probe = p.probe })
  end
end

faults["loss"] = function(self)
  local pct = math.random(10, 40)
  local nodes = shuffle(self:all())
  nodes = { table.unpack(nodes, 1, math.random(1, self.c.n)) }
  for _, i in ipairs(nodes) do
    local addrs = {}
    for _, j in ipairs(self:others(i)) do addrs[#addrs + 1] = env.addr(j) end
    env.add_rules(i, { string.format("out ip daddr { %s } numgen random mod 100 < %d drop",
      table.concat(addrs, ", "), pct) })
  end
  self:note("loss", { percent = pct, nodes = names(nodes) })
  return function() self:heal_network() end
end

-- Delay through the proxies: every link of one node, or every link.
faults["delay"] = function(self)
  local ms = math.random(20, 150)
  local jitter = math.random(0, ms // 2)
  local desc
  if math.random() < 0.5 then
    local i = self:target(0.5)
    for _, j in ipairs(self:others(i)) do
      self.c:set_delay(i, j, ms, jitter)
      self.c:set_delay(j, i, ms, jitter)
    end
    desc = "n" .. i
  else
    ms = ms // 2
    for i = 1, self.c.n do
      for _, j in ipairs(self:others(i)) do self.c:set_delay(i, j, ms, jitter // 2) end
    end
    desc = "all"
  end
  self.c:write_delays()
  self:note("delay", { ms = ms, jitter = jitter, links = desc })
  return function() self.c:clear_delays() end
end

M.KINDS = { "partition-halves", "isolate-leader", "one-way", "bridge", "kill", "crash-all", "pause", "loss",
  "delay", "transfer", "snapshot-crash" }
local WEIGHTS = { ["partition-halves"] = 1, ["isolate-leader"] = 1, ["one-way"] = 1, bridge = 0.7,
  kill = 1.3, ["crash-all"] = 0.3, pause = 1.3, loss = 0.8, delay = 0.8, transfer = 0.4,
  ["snapshot-crash"] = 0.8 }

-- CHAOS_FAULTS=kill,pause narrows the menu (names as in M.KINDS).
local function menu()
  local only = os.getenv("CHAOS_FAULTS")
  if not only or only == "" then return M.KINDS end
  local t = {}
  for name in only:gmatch("[^,%s]+") do
    if not WEIGHTS[name] then
      error("CHAOS_FAULTS: unknown fault " .. name .. " (" .. table.concat(M.KINDS, ", ") .. ")")
    end
    t[#t + 1] = name
  end
  return t
end

-- The first faults of a run are every kind of the menu once, in an order
-- drawn from the seed, so that a run of that many faults has had them all
-- (the gate's short run counts on it); then kinds drawn by weight.
function M:choose()
  if not self.first_round then
    self.first_round = shuffle({ table.unpack(menu()) })
  end
  if #self.first_round > 0 then return table.remove(self.first_round) end
  local kinds, total = menu(), 0
  for _, k in ipairs(kinds) do total = total + WEIGHTS[k] end
  local r = math.random() * total
  for _, k in ipairs(kinds) do
    r = r - WEIGHTS[k]
    if r <= 0 then return k end
  end
  return kinds[#kinds]
end

local function sleep_until(t)
  local d = t - socket.gettime()
  if d > 0 then socket.sleep(d) end
end

-- Runs faults until `stop` (wall-clock seconds): each held 1.5 to 5 s, with
-- 1 to 3 s of calm between them.
function M:run(stop)
  while socket.gettime() + 2 < stop do
    local kind = self:choose()
    local heals = { faults[kind](self) }
    if kind ~= "loss" and kind ~= "delay" and kind ~= "transfer" and kind ~= "snapshot-crash"
      and math.random() < 0.25 then
      local extra = math.random() < 0.5 and "loss" or "delay"
      table.insert(heals, 1, faults[extra](self))
      self.counts["combined"] = (self.counts["combined"] or 0) + 1
    end
    sleep_until(math.min(stop, socket.gettime() + 1.5 + math.random() * 3.5))
    for i = #heals, 1, -1 do heals[i]() end
    sleep_until(math.min(stop, socket.gettime() + 1 + math.random() * 2))
  end
end

-- Undoes everything: network rules, delays, pauses, kills.
function M:heal_all()
  self:heal_network()
  for i = 1, self.c.n do
    local node = self.c.nodes[i]
    if node.state == "paused" then
      local pauses = self.procs[node.name].pauses
      local p = pauses[#pauses]
      p.cont = self.c:resume(i)
      if self.on_wake then self.on_wake(i, p) end
    elseif node.state == "down" then
      self.c:start(i)
    end
  end
end

return M
