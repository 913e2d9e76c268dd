-- The membership's decisions (src/agent/membership.c, README "Membership"),
-- driven through a fake host (tests/c/qcmembership.c -> build/qcmembership.so):
-- the fake plays the core, the transport and the agent, keeps a clock of its
-- own and records every call membership makes on it. No agent, no socket.
package.cpath = "./build/?.so;" .. package.cpath
local qm = require("qcmembership")

local function rec(identifier, port, extra)
  local r = { identifier = identifier, host = "127.0.0.1", port = port, voting = true }
  for k, v in pairs(extra or {}) do r[k] = v end
  return r
end

local A, B, C = rec("a", 7001), rec("b", 7002), rec("c", 7003)

-- Node "a" of a, b and c (peers in its config), the list in the log and
-- applied, both links up, at t = 1000 ms. o: config overrides, and
-- o.list: the list in the log, o.leads (default true): a leads.
local function node(o)
  o = o or {}
  local cfg = { identifier = "a", port = 7001,
                peers = { { identifier = "b", port = 7002 }, { identifier = "c", port = 7003 } } }
  for k, v in pairs(o) do
    if k ~= "list" and k ~= "leads" then cfg[k] = v end
  end
  local m = assert(qm.new(cfg))
  local index = m:conf(o.list or { A, B, C })
  local leads = o.leads ~= false
  m:core({ now = 1000, commit = index, leads = leads, leader = leads and "a" or "b" })
  m:begin(index)
  m:sync()
  m:link("b", true)
  m:link("c", true)
  m:calls()
  return m
end

-- The calls of one kind, in order.
local function only(calls, fn)
  local out = {}
  for _, c in ipairs(calls) do
    if c.fn == fn then out[#out + 1] = c end
  end
  return out
end

local function find(list, identifier)
  for _, r in ipairs(list) do
    if r.identifier == identifier then return r end
  end
end

local function names(list)
  local out = {}
  for _, r in ipairs(list) do out[#out + 1] = r.identifier end
  table.sort(out)
  return table.concat(out, ",")
end

describe("membership through a fake host", function()
  describe("join", function()
    it("a join request from a new id with a valid address proposes it as a learner", function()
      local m = node()
      local answer = m:ask_join(rec("d", 7004))
      assert.is_true(answer.ok)
      local proposals = only(m:calls(), "propose")
      assert.equals(1, #proposals)
      local d = find(proposals[1].list, "d")
      assert.is_truthy(d)
      assert.is_false(d.voting) -- asked to vote: it starts as a learner all the same
      assert.equals(7004, d.port)
      assert.equals("a,b,c,d", names(proposals[1].list))
      assert.equals("a,b,c,d", names(answer.members)) -- whom it will hear the log from
    end)

    it("a node that listens everywhere is reached where its request came from", function()
      local m = node()
      assert.is_true(m:ask_join(rec("d", 7004, { host = "0.0.0.0" }), "127.0.0.9").ok)
      local proposals = only(m:calls(), "propose")
      assert.equals("127.0.0.9", find(proposals[1].list, "d").host)
    end)

    it("a member that does not lead names the leader and proposes nothing", function()
      local m = node({ leads = false })
      local answer = m:ask_join(rec("d", 7004))
      assert.is_false(answer.ok)
      assert.is_true(answer.retry)
      assert.equals("127.0.0.1:7002", answer.leader)
      assert.same({}, only(m:calls(), "propose"))
    end)

    it("a join under the identifier of a live member is refused", function()
      local m = node()
      local answer = m:ask_join(rec("b", 7999))
      assert.is_false(answer.ok)
      assert.equals("identifier in use by a live member", answer.error)
      assert.same({}, only(m:calls(), "propose"))
    end)

    it("a member of that name that is down is removed first; the joiner asks again", function()
      local m = node()
      m:link("b", false)
      local answer = m:ask_join(rec("b", 7999))
      assert.is_false(answer.ok)
      assert.is_true(answer.retry)
      local proposals = only(m:calls(), "propose")
      assert.equals(1, #proposals)
      assert.equals("a,c", names(proposals[1].list))
    end)

    it("a joining node asks the join addresses, then the leader a member names", function()
      local m = assert(qm.new({ identifier = "d", port = 7004, join = { "127.0.0.1:7002" } }))
      m:core({ now = 0 })
      m:begin(0)
      m:tick(0)
      local joins = only(m:calls(), "join")
      assert.equals(1, #joins)
      assert.equals(7002, joins[1].port)
      assert.equals("d", joins[1].rec.identifier)
      assert.is_false(joins[1].rec.voting)
      m:answer_join({ ok = false, retry = true, error = "not the leader", leader = "127.0.0.1:7001" })
      joins = only(m:calls(), "join")
      assert.equals(1, #joins)
      assert.equals(7001, joins[1].port)
      m:answer_join({ ok = true, members = { A, B, rec("d", 7004, { voting = false }) } })
      local added = only(m:calls(), "add_peer")
      assert.equals(2, #added) -- the members it will hear the log from, not itself
      assert.equals("a,b", names(added))
    end)

    it("a newcomer in the applied list fires on_member_join", function()
      local m = node()
      m:ask_join(rec("d", 7004))
      m:calls()
      m:apply()
      local fired = only(m:calls(), "fire")
      assert.equals(1, #fired)
      assert.equals("on_member_join", fired[1].hook)
      assert.equals("d", fired[1].peer)
      assert.equals("learner", fired[1].role)
    end)
  end)

  describe("leave", function()
    it("a member's leave makes the leader propose the list without it", function()
      local m = node()
      m:frame("b", "leave", { identifier = "b" })
      local proposals = only(m:calls(), "propose")
      assert.equals(1, #proposals)
      assert.equals("a,c", names(proposals[1].list))
    end)

    it("a member may not change another's record", function()
      local m = node()
      m:frame("b", "update", rec("c", 7003, { priority = 9 }))
      assert.same({}, only(m:calls(), "propose"))
    end)

    it("once applied, the leader tells the removed member, then drops it", function()
      local m = node()
      m:frame("b", "leave", { identifier = "b" })
      m:apply()
      local calls = m:calls()
      local fired = only(calls, "fire")
      assert.equals("on_member_leave", fired[1].hook)
      assert.equals("b", fired[1].peer)
      m:tick(1100)
      local sent = only(m:calls(), "send")
      assert.equals(1, #sent)
      assert.equals("b", sent[1].to)
      assert.equals("leave", sent[1].op)
      assert.equals("b", sent[1].rec.identifier)
      m:tick(1200)
      local removed = only(m:calls(), "remove_peer")
      assert.equals(1, #removed)
      assert.equals("b", removed[1].to)
      assert.equals("c", names(m:peers()))
    end)

    it("a leader leaving hands leadership over first, then asks the new leader", function()
      local m = node()
      m:leave()
      local calls = m:calls()
      local transfers = only(calls, "transfer")
      assert.equals(1, #transfers)
      assert.is_nil(transfers[1].to) -- the best peer
      assert.equals("shutdown", transfers[1].reason)
      assert.same({}, only(calls, "propose"))
      m:core({ leads = false, leader = "b" })
      m:transfer_done(0)
      local sent = only(m:calls(), "send")
      assert.equals(1, #sent)
      assert.equals("b", sent[1].to)
      assert.equals("leave", sent[1].op)
      assert.equals("a", sent[1].rec.identifier)
    end)

    it("told by the leader that it was removed, a node answers its leave and stops", function()
      local m = node({ leads = false })
      m:leave()
      local sent = only(m:calls(), "send")
      assert.equals("b", sent[1].to)
      m:frame("b", "leave", { identifier = "a" })
      local calls = m:calls()
      local done = only(calls, "done")
      assert.equals(1, #done)
      assert.equals(0, done[1].rc)
      local stops = only(calls, "want_stop")
      assert.equals(1, #stops)
      assert.equals("left the cluster", stops[1].reason)
    end)

    it("a node the applied list no longer names stops", function()
      local m = node({ leads = false })
      m:conf({ B, C })
      m:apply()
      local stops = only(m:calls(), "want_stop")
      assert.equals(1, #stops)
      assert.equals("left the cluster", stops[1].reason)
    end)

    -- A joined "a" restarted with its data and no snapshot: its log holds the
    -- list from before it joined (b, c) at 1 and the one naming it at 2;
    -- nothing is applied yet, b leads.
    local function restarted()
      local m = assert(qm.new({ identifier = "a", port = 7001, join = { "127.0.0.1:7002" } }))
      local before = m:conf({ B, C })
      m:conf({ A, B, C })
      m:core({ now = 1000, leader = "b", leads = false })
      m:begin(0, 0)
      m:sync()
      m:link("b", true)
      m:link("c", true)
      m:calls()
      return m, before
    end

    it("a stop during the replay of a list from before the node joined is not taken as left", function()
      local m, before = restarted()
      m:apply({ B, C }, before) -- replayed: it does not name a, and is not the newest
      m:leave()
      local calls = m:calls()
      assert.same({}, only(calls, "done"))
      assert.same({}, only(calls, "want_stop"))
      local sent = only(calls, "send")
      assert.equals(1, #sent)
      assert.equals("leave", sent[1].op)
      assert.equals("a", sent[1].rec.identifier)
      m:apply() -- the newest list, naming a, replayed: still a member
      assert.same({}, only(m:calls(), "done"))
      m:conf({ B, C }) -- the leader removed a
      m:apply()
      calls = m:calls()
      local done = only(calls, "done")
      assert.equals(1, #done)
      assert.equals(0, done[1].rc)
      assert.equals("left the cluster", only(calls, "want_stop")[1].reason)
    end)

    it("a leave asked before the replay is not answered by an older list either", function()
      local m, before = restarted()
      m:leave()
      m:apply({ B, C }, before)
      m:apply()
      local calls = m:calls()
      assert.same({}, only(calls, "done"))
      assert.same({}, only(calls, "want_stop"))
      m:tick(1100) -- asked again until it is in
      assert.equals(1, #only(m:calls(), "send"))
    end)

    it("leaving a member nobody knows is answered at once, not found", function()
      local m = node({ leads = false }) -- not even asked of the leader
      m:leave("zz")
      local done = only(m:calls(), "done")
      assert.equals(1, #done)
      assert.equals("not found", done[1].error)
    end)
  end)

  describe("promotion", function()
    local D = rec("d", 7004, { voting = false })

    it("a caught-up learner that asked to vote is promoted", function()
      local m = node({ list = { A, B, C, D } })
      m:core({ match = { d = 1 } })
      m:tick(1100)
      local proposals = only(m:calls(), "propose")
      assert.equals(1, #proposals)
      assert.is_true(find(proposals[1].list, "d").voting)
    end)

    it("a learner that has not caught up waits", function()
      local m = node({ list = { A, B, C, D } })
      m:core({ commit = 5, last_index = 5, match = { d = 4 } })
      m:tick(1100)
      assert.same({}, only(m:calls(), "propose"))
      m:core({ match = { d = 5 } })
      m:tick(1200)
      assert.equals(1, #only(m:calls(), "propose"))
    end)

    it("no promotion past max_voters", function()
      local m = node({ list = { A, B, C, D }, max_voters = 3 })
      m:core({ match = { d = 1 } })
      m:tick(1100)
      assert.same({}, only(m:calls(), "propose"))
    end)

    it("only a leader whose lease holds promotes", function()
      local m = node({ list = { A, B, C, D } })
      m:core({ match = { d = 1 }, lease = false })
      m:tick(1100)
      assert.same({}, only(m:calls(), "propose"))
    end)
  end)

  describe("reaping", function()
    it("a member down longer than reap_after is proposed for removal", function()
      local m = node({ reap_after_ms = 10000 })
      m:link("b", false)
      m:tick(1000) -- seen down from here
      m:tick(10999)
      assert.same({}, only(m:calls(), "propose"))
      m:tick(11000)
      local proposals = only(m:calls(), "propose")
      assert.equals(1, #proposals)
      assert.equals("a,c", names(proposals[1].list))
    end)

    it("a member that comes back starts its time over", function()
      local m = node({ reap_after_ms = 10000 })
      m:link("b", false)
      m:tick(1000)
      m:link("b", true)
      m:tick(6000)
      m:link("b", false)
      m:tick(7000)
      m:tick(16999)
      assert.same({}, only(m:calls(), "propose"))
      m:tick(17000)
      assert.equals(1, #only(m:calls(), "propose"))
    end)

    it("without reap_after nobody is removed", function()
      local m = node()
      m:link("b", false)
      m:tick(1000)
      m:tick(1000000)
      assert.same({}, only(m:calls(), "propose"))
    end)
  end)

  describe("preempt", function()
    local list = { A, rec("b", 7002, { priority = 5 }), C }
    local function preempting(o)
      local m = node(o)
      m:core({ last_index = 1, match = { b = 1 }, healthy = { b = true } })
      return m
    end

    it("hands over to a caught-up, healthy member of higher priority after the delay", function()
      local m = preempting({ list = list, preempt = true, preempt_delay_ms = 5000 })
      m:tick(1000)
      m:tick(5999)
      assert.same({}, only(m:calls(), "transfer"))
      m:tick(6000)
      local calls = m:calls()
      local transfers = only(calls, "transfer")
      assert.equals(1, #transfers)
      assert.equals("b", transfers[1].to)
      assert.equals("transfer", transfers[1].reason)
      assert.equals(1, #only(calls, "preempting")) -- the history says "preempt"
    end)

    it("never to an unhealthy member", function()
      local m = preempting({ list = list, preempt = true })
      m:core({ healthy = { b = false } })
      m:tick(1000)
      m:tick(100000)
      assert.same({}, only(m:calls(), "transfer"))
    end)

    it("never to a member that has not caught up", function()
      local m = preempting({ list = list, preempt = true })
      m:core({ last_index = 2 })
      m:tick(1000)
      m:tick(100000)
      assert.same({}, only(m:calls(), "transfer"))
    end)

    it("never while a transfer is in progress", function()
      local m = preempting({ list = list, preempt = true })
      m:core({ transferring = true })
      m:tick(1000)
      m:tick(100000)
      assert.same({}, only(m:calls(), "transfer"))
      m:core({ transferring = false })
      m:tick(100100)
      assert.equals(1, #only(m:calls(), "transfer"))
    end)

    it("not without preempt", function()
      local m = preempting({ list = list })
      m:tick(1000)
      m:tick(100000)
      assert.same({}, only(m:calls(), "transfer"))
    end)

    it("the delay starts over when the better member stops qualifying", function()
      local m = preempting({ list = list, preempt = true, preempt_delay_ms = 5000 })
      m:tick(1000)
      m:link("b", false)
      m:tick(4000)
      m:link("b", true)
      m:tick(5000)
      m:tick(9999)
      assert.same({}, only(m:calls(), "transfer"))
      m:tick(10000)
      assert.equals(1, #only(m:calls(), "transfer"))
    end)
  end)
end)
