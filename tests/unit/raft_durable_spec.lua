-- The consensus core with writes that complete later (the agent's writer
-- thread): what may leave, count and apply before a write is durable.
local Cluster = require("simcluster")
local qcraft = require("qcraft")

local function others(c, leader)
  local t = {}
  for i = 1, c.n do
    if i ~= leader then t[#t + 1] = i end
  end
  return t[1], t[2]
end

-- Messages node `from` sent of type `type` satisfying ok(m).
local function sent(c, from, type, ok)
  local n = 0
  for _, m in ipairs(c.sent) do
    if m.from == from and m.type == type and (not ok or ok(m)) then n = n + 1 end
  end
  return n
end

local function append(term, index, log_term, commit, entries)
  return { type = "append", from = 1, to = 2, term = term, index = index, log_term = log_term,
           commit = commit, ctx = 1000, entries = entries or {} }
end

describe("raft durability", function()
  it("a leader with entries not yet durable does not count itself toward the commit", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:advance(100)
    local f, g = others(c, l)
    c:cut_link(l, g) -- the leader and f alone make the majority
    c:hold(l)
    local index = c:propose("x")
    c:advance(50)
    assert.is_not_nil(c.logs[f][index], "the follower holds it on disk")
    assert.are.equal(index, c.nodes[l]:last_index())
    assert.is_true(c.nodes[l]:commit() < index, "committed with only one durable copy")
    assert.is_nil(c.applied[l][index])
    assert.is_true(c.nodes[l]:is_leader(c.now), "heartbeats went on meanwhile")
    c:release(l)
    c:advance(5)
    assert.are.equal(index, c.nodes[l]:commit())
    assert.are.equal(c.nodes[l]:term() .. ":x", c.applied[l][index])
  end)

  it("a follower answers at once with what is durable, and again once its write is", function()
    local node = qcraft.new { id = 2, peers = { 1, 2, 3 }, now = 0 }
    node:step(append(1, 0, 0, 0, { { term = 1, index = 1, type = 1, data = "x" } }), 1000)
    local rd = node:ready()
    assert.are.equal(1, #rd.entries)
    local resp = rd.msgs[#rd.msgs]
    assert.are.equal("append_resp", resp.type)
    assert.is_false(resp.reject)
    assert.are.equal(0, resp.index, "it claims only what is on its disk")
    assert.is_false(rd.msgs_early, "its new term must be durable first")
    -- the next entry comes while the first is written
    local second = append(1, 1, 1, 0, { { term = 1, index = 2, type = 1, data = "y" } })
    second.ctx = 1001
    node:step(second, 1001)
    rd = node:ready()
    assert.are.equal(0, rd.msgs[#rd.msgs].index)
    assert.is_true(rd.msgs_early, "an answer that claims nothing unwritten need not wait")
    -- the first write is durable: the leader hears of it at once
    node:persisted(1, 1)
    rd = node:ready()
    assert.are.equal(1, #rd.msgs)
    assert.are.same({ type = "append_resp", from = 2, to = 1, term = 1, index = 1, ctx = 1001 },
                    { type = rd.msgs[1].type, from = rd.msgs[1].from, to = rd.msgs[1].to,
                      term = rd.msgs[1].term, index = rd.msgs[1].index, ctx = rd.msgs[1].ctx })
    assert.is_false(rd.msgs[1].reject)
    assert.is_true(rd.msgs_early)
    node:persisted(1, 1)
    assert.is_false(node:has_ready(), "nothing new is durable: nothing to say")
    node:persisted(2, 1)
    rd = node:ready()
    assert.are.equal(2, rd.msgs[1].index)
    -- committed by the others meanwhile: applied only once on our disk
    node:step(append(1, 2, 1, 2), 1002)
    rd = node:ready()
    assert.are.equal(2, #rd.committed)
    node:step(append(1, 2, 1, 3, { { term = 1, index = 3, type = 1, data = "z" } }), 1003)
    rd = node:ready()
    assert.are.equal(0, #rd.committed)
    assert.are.equal(2, rd.msgs[#rd.msgs].index)
    node:persisted(3, 1)
    rd = node:ready()
    assert.are.equal(1, #rd.committed)
    assert.are.equal(3, rd.msgs[1].index)

    -- end to end: the answer is not on the wire while the write is held
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:advance(100)
    local f = others(c, l)
    c:hold(f)
    local index = c:propose("y")
    local acked = function(m) return not m.reject and m.index >= index end
    c:advance(30)
    assert.are.equal(index, c.nodes[f]:last_index(), "it took the entry")
    assert.is_nil(c.logs[f][index])
    assert.are.equal(0, sent(c, f, "append_resp", acked))
    c:release(f)
    assert.is_true(sent(c, f, "append_resp", acked) > 0)
  end)

  it("a vote leaves only after the term and vote are durable", function()
    local node = qcraft.new { id = 3, peers = { 1, 2, 3 }, now = 0 }
    node:step({ type = "vote", from = 1, to = 3, term = 2, ctx = 1000 }, 1000)
    local rd = node:ready()
    assert.are.same({ term = 2, vote = 1, commit = 0 }, rd.hs)
    assert.are.equal("vote_resp", rd.msgs[#rd.msgs].type)
    assert.is_false(rd.msgs[#rd.msgs].reject)
    assert.is_false(rd.msgs_early)

    local c = Cluster.new(3)
    c:isolate(1)
    c:isolate(2)
    c:isolate(3)
    c:advance(400) -- past the boot-time stickiness
    c.now = c.now + 1000
    c:hold(3)
    local granted = function(m) return not m.reject and m.term == 7 end
    c.nodes[3]:step({ type = "vote", from = 1, to = 3, term = 7, ctx = c.now }, c.now)
    c:process(3)
    -- asked again before the write completed: the grant needs no new
    -- write, yet it depends on the one in flight
    c.nodes[3]:step({ type = "vote", from = 1, to = 3, term = 7, ctx = c.now }, c.now)
    c:process(3)
    assert.are.equal(1, c.nodes[3]:vote())
    assert.is_true(c.hs[3] == nil or c.hs[3].term < 7)
    assert.are.equal(0, sent(c, 3, "vote_resp", granted))
    c:release(3)
    assert.are.same({ term = 7, vote = 1, commit = 0 }, c.hs[3])
    assert.are.equal(2, sent(c, 3, "vote_resp", granted))
  end)

  it("a write the log replaced before it completed proves nothing", function()
    local node = qcraft.new { id = 2, peers = { 1, 2, 3 }, now = 0 }
    node:step(append(1, 0, 0, 0, { { term = 1, index = 1, type = 1, data = "a" },
                                   { term = 1, index = 2, type = 1, data = "b" } }), 1000)
    node:ready()
    -- a leader of term 2 replaces entry 2 before the first write is durable
    node:step(append(2, 1, 1, 0, { { term = 2, index = 2, type = 1, data = "c" } }), 1001)
    node:ready()
    node:persisted(2, 1)
    assert.are.equal(0, node:stable())
    node:persisted(2, 2)
    assert.are.equal(2, node:stable())
  end)
end)
