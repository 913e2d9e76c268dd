-- A small in-process cluster of the real consensus core (build/qcraft.so)
-- with a virtual clock and a 1 ms network, for unit specs. Links can be cut
-- silently (messages dropped) or closed (both ends told, as TCP would).
local qcraft = require("qcraft")

local Cluster = {}
Cluster.__index = Cluster

local function range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

function Cluster.new(n, opts)
  opts = opts or {}
  local self = setmetatable({
    n = n, now = 0, nodes = {}, hs = {}, events = {}, queue = {}, cut = {},
    logs = {}, applied = {}, snaps = {}, writes = {}, held = {},
    heartbeat = opts.heartbeat or 50, election = opts.election or 300,
    seed = opts.seed or 1, latency = opts.latency or 1, sent = {},
    max_batch = opts.max_batch, max_inflight = opts.max_inflight, fast_retry = opts.fast_retry,
  }, Cluster)
  for i = 1, n do
    self.events[i] = {}
    self.cut[i] = {}
    self.logs[i] = {}    -- the durable log: index -> entry
    self.writes[i] = {}  -- handed out, not yet durable: {entries, hs, msgs}
    self.applied[i] = {} -- what the state machine applied, in order
    self:start(i)
  end
  for i = 1, n do
    for j = 1, n do
      if i ~= j then self.nodes[i]:link(j, true, 0) end
    end
  end
  return self
end

function Cluster:start(i)
  self.nodes[i] = qcraft.new {
    id = i, peers = range(self.n), heartbeat = self.heartbeat, election = self.election,
    seed = self.seed, hs = self.hs[i], now = self.now,
    max_batch = self.max_batch, max_inflight = self.max_inflight, fast_retry = self.fast_retry,
  }
  -- recover: the durable snapshot point and the log after it
  local snap = self.snaps[i] or { index = 0, term = 0 }
  local entries = {}
  for k = snap.index + 1, math.huge do
    if not self.logs[i][k] then break end
    entries[#entries + 1] = self.logs[i][k]
  end
  self.applied[i] = {}
  for k = 1, snap.index do self.applied[i][k] = snap.applied[k] end
  assert(self.nodes[i]:restore(snap.index, snap.term, entries) == 0)
end

local function send(self, m)
  self.sent[#self.sent + 1] = m
  if not self.cut[m.from][m.to] then
    m.at = self.now + self.latency
    self.queue[#self.queue + 1] = m
  end
end

-- Makes node i's writes durable in order, as the agent's writer thread
-- does: the entries, then the hard state, then qc_raft_persisted, then the
-- messages that waited for them.
local function write_out(self, i)
  local node = self.nodes[i]
  local log = self.logs[i]
  for _, w in ipairs(self.writes[i]) do
    for _, e in ipairs(w.entries) do
      -- an entry the log holds already replaces it and all after it
      for k = e.index, math.huge do
        if not log[k] then break end
        log[k] = nil
      end
      log[e.index] = e
    end
    if w.hs then self.hs[i] = w.hs end
    local last = w.entries[#w.entries]
    if last then node:persisted(last.index, last.term) end
    for _, m in ipairs(w.msgs) do send(self, m) end
  end
  self.writes[i] = {}
end

-- Holds node i's writes (true) until Cluster:release(i): they are not
-- durable meanwhile, and the messages that wait for them stay unsent.
function Cluster:hold(i, value)
  self.held[i] = value ~= false or nil
end

function Cluster:release(i)
  self.held[i] = nil
  if self.nodes[i] then
    write_out(self, i)
    self:process(i)
  end
end

-- Carries out one ready of node i: the entries and hard state go to be
-- written, messages leave at once when the core lets them (msgs_early)
-- and nothing waits before them, else after the write; then the events.
local function process_one(self, i)
  local node = self.nodes[i]
  local rd = node:ready()
  if rd.snapshot then
    local snap = self.snapshot_source[rd.snapshot.data]
    self.snaps[i] = { index = rd.snapshot.index, term = rd.snapshot.term, applied = snap }
    self.logs[i] = {}
    self.applied[i] = {}
    for k = 1, rd.snapshot.index do self.applied[i][k] = snap[k] end
  end
  for _, e in ipairs(rd.committed) do
    local a = self.applied[i]
    assert(e.index == #a + 1, "applied out of order")
    a[e.index] = e.term .. ":" .. e.data
  end
  local writes = self.writes[i]
  local waiting = false
  for _, w in ipairs(writes) do waiting = waiting or #w.msgs > 0 end
  local early = rd.msgs_early and not waiting
  local w = { entries = rd.entries, hs = rd.hs, msgs = {} }
  for _, m in ipairs(rd.msgs) do
    if m.type == "snapshot" then
      -- entries[1] carries the data (we fill it in), [2] the membership
      m.entries[1].data = self.snaps[i].key
    end
    if early then send(self, m) else w.msgs[#w.msgs + 1] = m end
  end
  writes[#writes + 1] = w
  for _, e in ipairs(rd.events) do
    e.at = self.now
    table.insert(self.events[i], e)
  end
end

-- Carries out node i's outputs until it has none (writes complete at once
-- unless held).
function Cluster:process(i)
  local node = self.nodes[i]
  if not node then return end
  self.snapshot_source = self.snapshot_source or {}
  for _ = 1, 100 do
    if not node:has_ready() then break end
    process_one(self, i)
    if not self.held[i] then write_out(self, i) end
  end
end

function Cluster:process_all()
  for i = 1, self.n do self:process(i) end
end

local function deliver_due(self)
  local again = true
  while again do
    again = false
    local rest = {}
    local due = {}
    for _, m in ipairs(self.queue) do
      if m.at <= self.now then due[#due + 1] = m else rest[#rest + 1] = m end
    end
    self.queue = rest
    for _, m in ipairs(due) do
      local node = self.nodes[m.to]
      if node and not self.cut[m.from][m.to] then
        node:step(m, self.now)
        self:process(m.to)
        again = true
      end
    end
  end
end

-- Advances the virtual clock ms milliseconds, 1 ms at a time. check(self)
-- runs after every millisecond when given.
function Cluster:advance(ms, check)
  for _ = 1, ms do
    self.now = self.now + 1
    deliver_due(self)
    for i = 1, self.n do
      local node = self.nodes[i]
      if node then
        node:tick(self.now)
        self:process(i)
      end
    end
    if check then check(self) end
  end
end

-- Nodes that act as leader right now (role and lease).
function Cluster:leaders()
  local t = {}
  for i = 1, self.n do
    local node = self.nodes[i]
    if node and node:is_leader(self.now) then t[#t + 1] = i end
  end
  return t
end

function Cluster:leader()
  local l = self:leaders()
  return #l == 1 and l[1] or nil
end

-- Runs until exactly one leader acts, at most ms; returns it.
function Cluster:await_leader(ms)
  for _ = 1, ms or 5000 do
    if self:leader() then return self:leader() end
    self:advance(1)
  end
  return nil
end

-- Silent cut (frames dropped, no close seen) between a and b, both ways.
function Cluster:cut_link(a, b, value)
  if value == nil then value = true end
  self.cut[a][b] = value or nil
  self.cut[b][a] = value or nil
end

function Cluster:isolate(i)
  for j = 1, self.n do
    if j ~= i then self:cut_link(i, j) end
  end
end

function Cluster:heal()
  for i = 1, self.n do self.cut[i] = {} end
end

-- The transport of `at` reports its link to `peer` open (true), closed
-- (false), or closed by the peer itself ("gone").
function Cluster:link(at, peer, up)
  if self.nodes[at] then
    self.nodes[at]:link(peer, up, self.now)
    self:process(at)
  end
end

-- kill -9 before any peer sees its links close (the caller tells them
-- with link(j, i, "gone"), in the order it wants): what it had sent
-- already arrives first (TCP delivers data before the close).
function Cluster:kill(i)
  local rest = {}
  for _, m in ipairs(self.queue) do
    if m.from == i then
      if self.nodes[m.to] and not self.cut[m.from][m.to] then
        self.nodes[m.to]:step(m, self.now)
        self:process(m.to)
      end
    elseif m.to ~= i then
      rest[#rest + 1] = m
    end
  end
  self.queue = rest
  self.nodes[i]:close()
  self.nodes[i] = nil
  self.applied[i] = {}
  self.writes[i] = {} -- what was not durable yet is lost, unsent
  self.held[i] = nil
end

-- kill -9: the process is gone; peers see their links close at once.
function Cluster:crash(i)
  self:kill(i)
  for j = 1, self.n do
    if j ~= i then self:link(j, i, "gone") end
  end
end

function Cluster:restart(i)
  self:start(i)
  for j = 1, self.n do
    if j ~= i and self.nodes[j] then
      self.nodes[i]:link(j, true, self.now)
      self:link(j, i, true)
    end
  end
end

-- Proposes data at the acting leader; returns its index or nil.
function Cluster:propose(data)
  local l = self:leader()
  if not l then return nil end
  local rc, index = self.nodes[l]:propose(data, self.now)
  self:process(l)
  return rc == 0 and index or nil
end

-- Node i saves a snapshot of what it applied and compacts its log.
function Cluster:snapshot(i)
  local node = self.nodes[i]
  local index = node:applied()
  local copy = {}
  for k = 1, index do copy[k] = self.applied[i][k] end
  local key = "snap-" .. i .. "-" .. index
  self.snapshot_source[key] = copy
  local e = self.logs[i][index]
  local term = e and e.term or (self.snaps[i] and self.snaps[i].term) or 0
  self.snaps[i] = { index = index, term = term, applied = copy, key = key }
  for k = 1, index do self.logs[i][k] = nil end
  assert(node:compact(index) == 0)
end

function Cluster:events_of(i, type)
  local t = {}
  for _, e in ipairs(self.events[i]) do
    if not type or e.type == type then t[#t + 1] = e end
  end
  return t
end

function Cluster:clear_events()
  for i = 1, self.n do self.events[i] = {} end
end

return Cluster
