-- The consensus core, driven through build/qcraft.so on a virtual clock.
local Cluster = require("simcluster")
local qcraft = require("qcraft")

local function never_two_leaders(c)
  assert(#c:leaders() <= 1, "two nodes act as leader at " .. c.now)
end

local function other(c, leader)
  for i = 1, c.n do
    if i ~= leader and c.nodes[i] then return i end
  end
end

describe("raft elections", function()
  it("a three-node cluster elects exactly one leader and every node knows it", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    assert.is_not_nil(l)
    c:advance(200, never_two_leaders)
    assert.are.equal(l, c:leader())
    for i = 1, 3 do
      assert.are.equal(l, c.nodes[i]:leader())
      assert.are.equal(c.nodes[l]:term(), c.nodes[i]:term())
    end
    local elected = c:events_of(l, "elected")
    assert.are.equal(1, #elected)
  end)

  it("a single node elects itself", function()
    local c = Cluster.new(1)
    assert.are.equal(1, c:await_leader(1000))
  end)

  it("a node votes at most once per term, across restarts", function()
    local c = Cluster.new(3)
    c:isolate(1)
    c:isolate(2)
    c:isolate(3)
    local n = c.nodes[3]
    c:advance(400) -- past the boot-time stickiness
    c.now = c.now + 1000
    n:step({ type = "vote", from = 1, to = 3, term = 7, ctx = c.now }, c.now)
    c:process(3)
    assert.are.equal(1, n:vote())
    assert.are.same({ term = 7, vote = 1, commit = 0 }, c.hs[3])
    c:crash(3)
    c:restart(3)
    c.now = c.now + 1000
    local node = c.nodes[3]
    node:step({ type = "vote", from = 2, to = 3, term = 7, ctx = c.now }, c.now)
    local rd = node:ready()
    local resp = rd.msgs[#rd.msgs]
    assert.are.equal("vote_resp", resp.type)
    assert.is_true(resp.reject)
    assert.are.equal(1, node:vote())
  end)

  it("hard state is handed out for persisting before the vote that depends on it", function()
    local node = qcraft.new { id = 3, peers = { 1, 2, 3 }, now = 0 }
    node:step({ type = "vote", from = 1, to = 3, term = 2, ctx = 1000 }, 1000)
    local rd = node:ready()
    assert.are.same({ term = 2, vote = 1, commit = 0 }, rd.hs)
    local resp = rd.msgs[#rd.msgs]
    assert.are.equal("vote_resp", resp.type)
    assert.is_false(resp.reject)
  end)

  it("a follower that knows this term's leader refuses a vote in that term", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    local a, b = (l % 3) + 1, ((l + 1) % 3) + 1
    local term = c.nodes[a]:term()
    c.nodes[a]:step({ type = "vote", from = b, to = a, term = term, ctx = c.now }, c.now)
    local rd = c.nodes[a]:ready()
    assert.is_true(rd.msgs[#rd.msgs].reject)
    assert.are_not.equal(b, c.nodes[a]:vote())
  end)

  it("pre-vote does not disturb a stable leader", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    local term = c.nodes[l]:term()
    local f = other(c, l)
    c:isolate(f)
    c:advance(3000, never_two_leaders)
    assert.are.equal(term, c.nodes[f]:term(), "an isolated node must not inflate its term")
    c:heal()
    c:advance(1000, never_two_leaders)
    assert.are.equal(l, c:leader())
    assert.are.equal(term, c.nodes[l]:term())
  end)

  it("a restarted follower cannot unseat a healthy leader", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:advance(100)
    local term = c.nodes[l]:term()
    local f = other(c, l)
    c:crash(f)
    c:restart(f)
    c:advance(3000, never_two_leaders)
    assert.are.equal(l, c:leader())
    assert.are.equal(term, c.nodes[l]:term())
  end)

  it("check-quorum: an isolated leader steps down before anyone else leads", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:clear_events()
    c:isolate(l)
    c:advance(2000, never_two_leaders)
    local demoted = c:events_of(l, "demoted")
    assert.are.equal(1, #demoted)
    assert.are.equal("lost_quorum", demoted[1].reason)
    local nl = c:leader()
    assert.is_not_nil(nl)
    assert.are_not.equal(l, nl)
    -- The old leader stepped down before the new one was elected.
    local elected = c:events_of(nl, "elected")[1]
    assert.is_true(demoted[1].at <= elected.at)
  end)

  it("a frozen leader says it is not leader once its lease lapsed, before any tick", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    local node = c.nodes[l]
    assert.is_true(node:is_leader(c.now))
    assert.is_false(node:is_leader(c.now + 300))
  end)

  it("a stale leader steps down on a higher term", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    local term = c.nodes[l]:term()
    c:clear_events()
    local f = other(c, l)
    c.nodes[l]:step({ type = "append_resp", from = f, to = l, term = term + 5, reject = true }, c.now)
    c:process(l)
    local demoted = c:events_of(l, "demoted")
    assert.are.equal(1, #demoted)
    assert.are.equal("higher_term", demoted[1].reason)
    assert.are.equal(term + 5, c.nodes[l]:term())
    assert.are.equal("follower", c.nodes[l]:role())
  end)

  it("a leader whose links to a majority close steps down at once", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    local a, b = (l % 3) + 1, ((l + 1) % 3) + 1
    c:advance(100)
    c:clear_events()
    c:link(l, a, false)
    assert.is_true(c.nodes[l]:is_leader(c.now), "one closed link of two leaves a majority")
    c:link(l, b, false)
    assert.is_false(c.nodes[l]:is_leader(c.now))
    assert.are.equal("lost_quorum", c:events_of(l, "demoted")[1].reason)
  end)
end)

describe("raft fast fail-over", function()
  it("a crashed leader is replaced within a few milliseconds", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:advance(100)
    local t0 = c.now
    c:crash(l)
    local nl = c:await_leader(1000)
    assert.is_not_nil(nl)
    assert.is_true(c.now - t0 <= 20, "took " .. (c.now - t0) .. " ms")
    local e = c:events_of(nl, "elected")
    assert.are.equal(l, e[#e].prev_leader)
  end)

  it("a fast pre-vote on a closed link is refused while others still hear the leader", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    local term = c.nodes[l]:term()
    local f = other(c, l)
    c:link(f, l, "gone") -- only f sees its link to the leader close
    c:advance(100, never_two_leaders)
    assert.are.equal(l, c:leader())
    assert.are.equal(term, c.nodes[l]:term())
    local fast = 0
    for _, m in ipairs(c.sent) do
      if m.type == "prevote" and m.flags & qcraft.FLAG_FAST ~= 0 then fast = fast + 1 end
    end
    assert.is_true(fast >= 2, "the fast pre-vote is retried while the link stays closed")
    c:link(f, l, true)
    c:advance(100)
    assert.are.equal(l, c:leader())
  end)

  it("a link that fails only on our side never starts the fast path", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:advance(100)
    local a, b = (l % 3) + 1, ((l + 1) % 3) + 1
    -- a one-way reset: the followers' connections to the leader fail, the
    -- leader's to them stay open, so its heartbeats arrive but no answer does
    c:link(a, l, false)
    c:link(b, l, false)
    c.cut[a][l], c.cut[b][l] = true, true
    c.sent = {}
    c:advance(3000, never_two_leaders)
    for _, m in ipairs(c.sent) do
      assert.is_true(m.flags & qcraft.FLAG_FAST == 0, "no fast pre-vote on a DOWN link")
    end
    assert.are.equal("lost_quorum", c:events_of(l, "demoted")[1].reason)
  end)

  it("an answer from before a link closed does not count after it reopens", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:advance(100)
    local a, b = (l % 3) + 1, ((l + 1) % 3) + 1
    c:link(l, a, false)
    c:link(l, a, true) -- reconnected, no answer over it yet
    c:link(l, b, false)
    assert.is_false(c.nodes[l]:is_leader(c.now))
  end)

  it("five nodes fail over fast without splitting the vote", function()
    for seed = 1, 20 do
      local c = Cluster.new(5, { seed = seed })
      local l = c:await_leader(3000)
      c:advance(100)
      local t0 = c.now
      c:crash(l)
      local nl = c:await_leader(2000)
      assert.is_not_nil(nl)
      assert.is_true(c.now - t0 <= 30, "seed " .. seed .. " took " .. (c.now - t0) .. " ms")
    end
  end)

  -- The retry of a refused fast pre-vote is set far out (100 ms), so a
  -- leader elected within a few milliseconds never waited for it.
  local RETRY = 100

  -- Kills the leader of a settled cluster; its survivors see the close one
  -- after another, gap ms apart, in the order given (ids, or "up"/"down":
  -- by id). Returns the old leader, the survivors in that order, and the
  -- time the last of them saw the close.
  local function staggered_crash(n, order, gap, seed)
    local c = Cluster.new(n, { fast_retry = RETRY, seed = seed })
    local l = c:await_leader(3000)
    c:advance(100)
    local rest = {}
    for i = 1, n do
      if i ~= l then rest[#rest + 1] = i end
    end
    if order == "down" then table.sort(rest, function(x, y) return x > y end) end
    c:kill(l)
    c.sent = {}
    for k, i in ipairs(rest) do
      if k > 1 then c:advance(gap) end
      c:link(i, l, "gone")
    end
    return c, l, rest
  end

  local function refused_prevotes(c, from)
    local n = 0
    for _, m in ipairs(c.sent) do
      if m.type == "prevote_resp" and m.to == from and m.reject then n = n + 1 end
    end
    return n
  end

  it("two survivors that see the close in either order elect without a retry", function()
    for _, order in ipairs({ "up", "down" }) do
      for seed = 1, 6 do -- seeds move the first leader around
        local c, l, rest = staggered_crash(3, order, 3, seed)
        local t0 = c.now
        local nl = c:await_leader(2 * RETRY)
        local what = order .. " seed " .. seed
        assert.is_not_nil(nl, what)
        assert.are_not.equal(l, nl)
        -- the first survivor's pre-vote was refused: the other still
        -- honoured the leader's lease when it came
        assert.is_true(refused_prevotes(c, rest[1]) >= 1, what)
        assert.is_true(c.now - t0 < 10, what .. ": took " .. (c.now - t0) .. " ms after the close")
        c:advance(300, never_two_leaders)
      end
    end
  end)

  it("a survivor grants the fast pre-vote it refused once it sees the close itself", function()
    for seed = 1, 6 do
      -- the higher id (the higher rank, logs alike) sees the close first
      local c, l, rest = staggered_crash(3, "down", 3, seed)
      local hi, lo = rest[1], rest[2]
      local what = "seed " .. seed
      assert.is_true(refused_prevotes(c, hi) >= 1, what .. ": refused before its close")
      local nl = c:await_leader(2 * RETRY)
      assert.are.equal(hi, nl, what)
      local own, granted = 0, 0
      for _, m in ipairs(c.sent) do
        if m.from == lo and m.type == "prevote" then own = own + 1 end
        if m.from == lo and m.to == hi and m.type == "prevote_resp" and not m.reject then
          granted = granted + 1
        end
      end
      assert.are.equal(0, own, what .. ": the lower rank stood itself")
      assert.are.equal(1, granted, what)
      assert.are_not.equal(l, nl)
      c:advance(300, never_two_leaders)
    end
  end)

  it("the survivor with the longer log goes on fast, whatever its id", function()
    for seed = 1, 6 do
      local c = Cluster.new(3, { seed = seed })
      local l = c:await_leader(3000)
      c:advance(100)
      local lo, hi = (l == 1) and 2 or 1, (l == 3) and 2 or 3
      -- an entry reaches only the lower id before the leader dies
      c.cut[l][hi] = true
      assert.is_not_nil(c:propose("x"))
      c:advance(3)
      assert.is_true(c.nodes[lo]:last_index() > c.nodes[hi]:last_index())
      local t0 = c.now
      c:crash(l)
      local nl = c:await_leader(1000)
      assert.are.equal(lo, nl, "seed " .. seed)
      assert.is_true(c.now - t0 < 10, "seed " .. seed .. ": took " .. (c.now - t0) .. " ms")
    end
  end)

  it("five survivors seeing the close highest id first settle without a retry", function()
    for seed = 1, 6 do
      local c, l = staggered_crash(5, "down", 2, seed)
      local t0 = c.now
      local nl = c:await_leader(2 * RETRY)
      assert.is_not_nil(nl, "seed " .. seed)
      assert.are_not.equal(l, nl)
      assert.is_true(c.now - t0 < 10, "seed " .. seed .. ": took " .. (c.now - t0) .. " ms")
      c:advance(300, never_two_leaders)
    end
  end)
end)

describe("raft leadership transfer", function()
  it("hands over to the named peer without two leaders at any instant", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:advance(100) -- the target holds the whole log
    local target = other(c, l)
    c:clear_events()
    assert.are.equal(0, c.nodes[l]:transfer(target, c.now))
    c:process(l)
    assert.is_false(c.nodes[l]:is_leader(c.now), "the old leader steps down first")
    c:advance(20, never_two_leaders)
    assert.are.equal(target, c:leader())
    assert.are.equal("transfer", c:events_of(l, "demoted")[1].reason)
  end)

  it("picks the best peer when none is named and refuses on a follower", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:advance(100)
    assert.are.equal(0, c.nodes[l]:transfer(0, c.now))
    c:process(l)
    c:advance(20, never_two_leaders)
    local nl = c:leader()
    assert.is_not_nil(nl)
    assert.are_not.equal(l, nl)
    assert.is_true(c.nodes[l]:transfer(0, c.now) < 0)
  end)

  it("a stopping leader with nobody to hand over to steps down for shutdown", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:clear_events()
    assert.are.equal(0, c.nodes[l]:step_down(c.now))
    c:process(l)
    assert.are.equal("shutdown", c:events_of(l, "demoted")[1].reason)
    assert.are.equal("follower", c.nodes[l]:role())
    assert.are.equal(0, c.nodes[l]:commit())
    assert.is_true(c.nodes[l]:step_down(c.now) < 0, "only a leader steps down")
  end)

  it("tracks the links the transport reports", function()
    local c = Cluster.new(3)
    assert.is_true(c.nodes[1]:link_up(2))
    c:link(1, 2, false)
    assert.is_false(c.nodes[1]:link_up(2))
    assert.is_false(c.nodes[1]:link_up(42))
  end)

  it("refuses an unknown peer", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    assert.is_true(c.nodes[l]:transfer(99, c.now) < 0)
    assert.is_true(c.nodes[l]:is_leader(c.now))
  end)
end)

describe("raft log replication", function()
  local function applied_everywhere(c, index)
    for i = 1, c.n do
      if c.nodes[i] and #c.applied[i] < index then return false end
    end
    return true
  end

  it("commits a proposal on a majority and every node applies it in order", function()
    local c = Cluster.new(3)
    c:await_leader(2000)
    local idx = {}
    for k = 1, 10 do idx[k] = c:propose("v" .. k) end
    c:advance(100)
    assert.is_true(applied_everywhere(c, idx[10]))
    for i = 1, 3 do
      assert.are.same(c.applied[1], c.applied[i])
      assert.are.equal(c.nodes[1]:term() .. ":v10", c.applied[i][idx[10]])
    end
  end)

  it("a leader's no-op commits its term before reads are served", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    local rc = c.nodes[l]:read_index(c.now)
    c:advance(20)
    local rc2, index = c.nodes[l]:read_index(c.now)
    assert.are.equal(0, rc2)
    assert.is_true(index >= 1)
    assert.is_true(rc == 0 or rc < 0)
    local f = other(c, l)
    assert.is_true(c.nodes[f]:read_index(c.now) < 0, "followers do not serve reads")
    assert.is_true(c.nodes[f]:propose("x", c.now) < 0, "followers do not take proposals")
  end)

  it("nothing acknowledged is lost when the leader dies, and logs converge", function()
    local c = Cluster.new(5, { seed = 7 })
    c:await_leader(3000)
    for k = 1, 20 do c:propose("a" .. k) end
    c:advance(50)
    local l = c:leader()
    local committed = c.nodes[l]:commit()
    c:crash(l)
    c:await_leader(2000)
    for k = 1, 20 do c:propose("b" .. k) end
    c:advance(200)
    c:restart(l)
    c:advance(500)
    for i = 1, 5 do
      assert.is_true(#c.applied[i] >= committed + 20, "node " .. i)
      for k = 1, #c.applied[i] do assert.are.equal(c.applied[1][k], c.applied[i][k]) end
    end
  end)

  it("a follower that missed a stretch is caught up, also across terms", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    local f = other(c, l)
    c:isolate(f)
    for k = 1, 50 do c:propose("x" .. k) end
    c:advance(100)
    c:heal()
    c:advance(300)
    assert.are.same(c.applied[l], c.applied[f])
  end)

  it("a follower whose log was compacted away gets a snapshot", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    local f = other(c, l)
    c:crash(f)
    for k = 1, 30 do c:propose("s" .. k) end
    c:advance(100)
    c:snapshot(l)
    for k = 1, 5 do c:propose("t" .. k) end
    c:advance(50)
    c:restart(f)
    c:advance(1000)
    assert.is_not_nil(c.snaps[f], "the follower installed a snapshot")
    assert.are.same(c.applied[l], c.applied[f])
  end)

  it("a follower that reads nothing gets one snapshot in flight, not one per timeout", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    local f = other(c, l)
    local function copies()
      local n = 0
      for _, m in ipairs(c.sent) do
        if m.type == "snapshot" and m.from == l and m.to == f then n = n + 1 end
      end
      return n
    end
    -- stopped (SIGSTOP): its link stays open, nothing comes back
    c:cut_link(l, f)
    for k = 1, 30 do c:propose("s" .. k) end
    c:advance(100)
    c:snapshot(l)
    c:advance(60000)
    -- unanswered copies wait 1, 2, 4 ... 64 election timeouts: 7 in the
    -- first 38 s, then one per 19.2 s (one per timeout was 200)
    assert.is_true(copies() >= 1 and copies() <= 9, copies() .. " copies in 60 s")
    -- the link closes and opens again: the copy went with it, one goes at
    -- the next heartbeat, and none while it is closed
    local before = copies()
    c:link(l, f, false)
    c:advance(1000)
    assert.are.equal(before, copies())
    c:link(l, f, true)
    c:advance(60)
    assert.are.equal(before + 1, copies())
    -- it reads again: the lost copy goes again after the wait, and it
    -- installs it and catches up
    c:heal()
    c:advance(20000)
    assert.is_not_nil(c.snaps[f], "the follower installed a snapshot")
    assert.are.same(c.applied[l], c.applied[f])
  end)

  it("a transfer waits until the target holds the whole log", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:advance(100)
    local target = other(c, l)
    c:cut_link(l, target)
    for k = 1, 5 do c:propose("w" .. k) end
    c:advance(10)
    assert.are.equal(0, c.nodes[l]:transfer(target, c.now))
    c:process(l)
    assert.is_true(c.nodes[l]:is_leader(c.now), "still leading while the target is behind")
    assert.is_true(c.nodes[l]:propose("later", c.now) < 0, "proposals wait during a transfer")
    c:cut_link(l, target, false)
    c:advance(100, never_two_leaders)
    assert.are.equal(target, c:leader())
  end)
end)

describe("raft membership", function()
  local function conf(...)
    local t = {}
    for _, m in ipairs({ ... }) do t[#t + 1] = m end
    return t
  end
  local function voter(id) return { id = id, voter = true } end

  it("takes one change at a time, after this term's first entry committed", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    local node = c.nodes[l]
    c:advance(100)
    -- two members changed at once: refused
    local others = {}
    for i = 1, 3 do if i ~= l then others[#others + 1] = i end end
    local rc = node:propose_config(conf(voter(l), { id = others[1] }, { id = others[2] }), c.now)
    assert.are.equal(-2, rc, "two voters demoted at once")
    -- one change: taken; a second before it commits: busy
    rc = node:propose_config(conf(voter(l), voter(others[1]), { id = others[2] }), c.now)
    assert.are.equal(0, rc)
    rc = node:propose_config(conf(voter(l), voter(others[1])), c.now)
    assert.are.equal(-7, rc, "a second change while the first is in flight")
    c:process(l)
    c:advance(100)
    rc = node:propose_config(conf(voter(l), voter(others[1])), c.now)
    assert.are.equal(0, rc, "once the first committed")
    c:process(l)
    c:advance(100)
    assert.are.same({}, c:events_of(others[2], "elected"))
  end)

  it("a learner's answers do not count: two voters down stop commits", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:advance(100)
    local f1, f2 = other(c, l), nil
    for i = 1, 3 do if i ~= l and i ~= f1 then f2 = i end end
    assert.are.equal(0, (c.nodes[l]:propose_config(conf(voter(l), voter(f1), { id = f2 }), c.now)))
    c:process(l)
    c:advance(100)
    local before = c.nodes[l]:commit()
    c:crash(f1) -- the other voter: the learner f2 is no substitute
    c:propose("x")
    c:advance(200)
    assert.are.equal(before, c.nodes[l] and c.nodes[l]:commit() or before)
    assert.are.same({}, c:events_of(f2, "elected"))
    assert.are.same({}, c:events_of(f2, "campaign"))
  end)

  it("a voter that may not lead (a witness) never campaigns; the others elect", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:advance(100)
    local w = other(c, l)
    local members = {}
    for i = 1, 3 do members[i] = { id = i, voter = true, no_lead = i == w } end
    assert.are.equal(0, (c.nodes[l]:propose_config(members, c.now)))
    c:process(l)
    c:advance(100)
    c:clear_events()
    c:crash(l)
    local new = c:await_leader(3000)
    assert.is_truthy(new)
    assert.are_not.equal(w, new)
    for _, e in ipairs(c:events_of(w, "elected")) do assert.is_true(e.relay, "only as a relay") end
  end)

  it("a leader that removes itself hands over once the change commits", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:advance(100)
    local rest = {}
    for i = 1, 3 do if i ~= l then rest[#rest + 1] = voter(i) end end
    assert.are.equal(0, (c.nodes[l]:propose_config(rest, c.now)))
    c:process(l)
    c:advance(1000)
    local new = c:leader()
    assert.is_truthy(new)
    assert.are_not.equal(l, new)
    local demoted = c:events_of(l, "demoted")
    assert.are.equal("shutdown", demoted[#demoted].reason)
  end)

  it("a node that demoted itself stands again, after a restart, until the change commits",
    function()
      local c = Cluster.new(3)
      local a = c:await_leader(2000)
      c:advance(100)
      local x = other(c, a)
      local y = 6 - a - x
      local function settle(i, members)
        assert.are.equal(0, (c.nodes[i]:propose_config(members, c.now)))
        c:process(i)
        c:advance(100)
      end
      -- x a learner (committed), then a voter again, and at once x takes
      -- over: it votes for itself (its hard state is written) before it
      -- hears that its promotion committed
      settle(a, conf(voter(a), { id = x }, voter(y)))
      assert.are.equal(0, (c.nodes[a]:propose_config(conf(voter(a), voter(x), voter(y)), c.now)))
      assert.are.equal(0, c.nodes[a]:transfer(x, c.now))
      c:process(a)
      c:advance(100)
      assert.are.equal(x, c:leader())
      settle(x, conf({ id = a }, voter(x), voter(y))) -- x and y the voters
      -- x demotes itself, cut off: nobody that votes gets that change
      c:isolate(x)
      assert.are.equal(0, (c.nodes[x]:propose_config(conf({ id = a }, { id = x }, voter(y)), c.now)))
      c:process(x)
      c:advance(400)
      assert.are_not.equal("leader", c.nodes[x]:role())
      -- back with only its durable state: y needs x's vote, x's log is
      -- ahead of y's, so x must stand (counting y's vote only) and commit it
      c:crash(x)
      c:restart(x)
      c:heal()
      c:clear_events()
      assert.is_truthy(c:await_leader(3000), "no leader after the heal")
      c:advance(2000, never_two_leaders)
      assert.are.equal(y, c:leader())
      assert.are.equal(1, #c:events_of(x, "elected"))
      assert.are.equal("shutdown", c:events_of(x, "demoted")[1].reason)
    end)

  it("an unhealthy node that demoted itself stands after two silent rounds all the same",
    function()
      local c = Cluster.new(3)
      local a = c:await_leader(2000)
      c:advance(100)
      local x = other(c, a)
      local y = 6 - a - x
      assert.are.equal(0, c.nodes[a]:transfer(x, c.now))
      c:process(a)
      c:advance(100)
      assert.are.equal(x, c:leader())
      assert.are.equal(0, (c.nodes[x]:propose_config(conf({ id = a }, voter(x), voter(y)), c.now)))
      c:process(x)
      c:advance(100)
      -- x demotes itself, cut off: y, the only voter left, lacks that entry
      c:isolate(x)
      assert.are.equal(0, (c.nodes[x]:propose_config(conf({ id = a }, { id = x }, voter(y)), c.now)))
      c:process(x)
      c:advance(400)
      assert.are_not.equal("leader", c.nodes[x]:role())
      -- x turns unhealthy and hears y, healthy, ask for votes: x leaves the
      -- election to y but refuses it (its log is ahead); after two silent
      -- rounds x must stand (counting y's vote only) and commit its change
      c.nodes[x]:set_healthy(false, c.now)
      c:process(x)
      c:heal()
      c:clear_events()
      assert.is_truthy(c:await_leader(3000), "no leader after the heal")
      c:advance(2000, never_two_leaders)
      assert.are.equal(y, c:leader())
      assert.are.equal(1, #c:events_of(x, "elected"))
    end)

  it("a witness that alone holds the change making it a learner stands as a relay", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:advance(100)
    local x = other(c, l)
    local y = 6 - l - x
    local function step(members)
      assert.are.equal(0, (c.nodes[l]:propose_config(members, c.now)))
      c:process(l)
      c:advance(200)
    end
    step(conf(voter(l), voter(x)))
    c:crash(y)
    step(conf(voter(l), { id = x, voter = true, no_lead = true }))
    -- l makes x a learner: x writes the change, l crashes before it did.
    -- By its log l is the only voter; x, ahead, refuses l's pre-votes and
    -- may not lead by the membership before the change.
    c:hold(l)
    assert.are.equal(0, (c.nodes[l]:propose_config(conf(voter(l), { id = x, no_lead = true }),
      c.now)))
    c:process(l)
    c:advance(20)
    c:crash(l)
    c:restart(l)
    c:clear_events()
    assert.is_truthy(c:await_leader(3000), "no leader after the restart")
    c:advance(2000, never_two_leaders)
    assert.are.equal(l, c:leader())
    for _, e in ipairs(c:events_of(x, "elected")) do assert.is_true(e.relay, "only as a relay") end
  end)

  it("a leader only by the membership before its own demotion takes no proposals", function()
    -- Seed 70646853: what it takes, the voter it hands over to must catch
    -- up on first; taken faster than they reached that voter, they kept it
    -- from ever leading.
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:advance(100)
    local x = other(c, l)
    local y = 6 - l - x
    local node = c.nodes[l]
    assert.are.equal(0, (node:propose_config(conf({ id = l, voter = true, no_lead = true }, voter(x),
      voter(y)), c.now)))
    assert.is_true(node:propose("x", c.now) < 0, "refused while the change is in flight")
    c:process(l)
    c:advance(1000, never_two_leaders)
    local nl = c:leader()
    assert.is_truthy(nl)
    assert.are_not.equal(l, nl)
    assert.are.equal(0, (c.nodes[nl]:propose("y", c.now)))
  end)
end)

describe("raft relays", function()
  it("an append from a relay names no leader, in a higher term or the same", function()
    local n = qcraft.new { id = 1, peers = { 1, 2, 3 }, now = 0 }
    n:step({ type = "append", from = 2, to = 1, term = 5, ctx = 1000, index = 0, log_term = 0,
      commit = 0, flags = 4 }, 1000)
    assert.are.equal(5, n:term())
    assert.are.equal(0, n:leader())
    local m = qcraft.new { id = 1, peers = { 1, 2, 3 }, now = 0 }
    m:step({ type = "append", from = 2, to = 1, term = 5, ctx = 1000, index = 0, log_term = 0,
      commit = 0 }, 1000)
    assert.are.equal(2, m:leader(), "an ordinary append does name its sender")
  end)

  it("a relay goes on catching a server up while it gains entries, past an election timeout",
    function()
      -- one entry per round trip of 40 ms: 40 entries take longer than
      -- an election timeout (300 ms) to pass on
      local c = Cluster.new(3, { latency = 20, max_batch = 1, max_inflight = 1 })
      local l = c:await_leader(3000)
      c:advance(200)
      local w = other(c, l)
      local s = 6 - l - w
      local members = {}
      for i = 1, 3 do members[i] = { id = i, voter = true, no_lead = i == w } end
      assert.are.equal(0, (c.nodes[l]:propose_config(members, c.now)))
      c:process(l)
      c:advance(300)
      -- the server s misses 40 entries the witness w holds; the leader dies
      c:cut_link(l, s, true)
      for k = 1, 40 do
        c.nodes[l]:propose("x" .. k, c.now)
        c:process(l)
        c:advance(45)
      end
      c:advance(300)
      c:crash(l)
      c:clear_events()
      local new = c:await_leader(20000)
      assert.are.equal(s, new)
      local relayed = c:events_of(w, "elected")
      assert.are.equal(1, #relayed, "the witness stood as a relay once")
      assert.is_true(relayed[1].relay)
      assert.are.equal("transfer", c:events_of(w, "demoted")[1].reason)
    end)

  it("a leader that removes itself sends nothing as leader once it stepped down", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:advance(100)
    local rest = {}
    for i = 1, 3 do if i ~= l then rest[#rest + 1] = { id = i, voter = true } end end
    local lagging = rest[2].id
    c:cut_link(l, lagging, true)
    for k = 1, 600 do c.nodes[l]:propose("x" .. k, c.now) end
    c:process(l)
    c:advance(5)
    assert.are.equal(0, (c.nodes[l]:propose_config(rest, c.now)))
    for k = 1, 600 do c.nodes[l]:propose("y" .. k, c.now) end
    c:process(l)
    c:advance(5)
    c:cut_link(l, lagging, false)
    local stepped_down_at
    c:advance(1000, function(self)
      local node = self.nodes[l]
      if not stepped_down_at and node:role() ~= "leader" then stepped_down_at = #self.sent end
    end)
    assert.is_truthy(stepped_down_at, "it stepped down")
    for k = stepped_down_at + 1, #c.sent do
      local m = c.sent[k]
      assert.is_false(m.from == l and m.type == "append", "an append after stepping down")
    end
    assert.is_truthy(c:leader())
    assert.are_not.equal(l, c:leader())
  end)
end)

describe("raft health", function()
  local UNHEALTHY = qcraft.FLAG_UNHEALTHY

  local function set_healthy(c, i, healthy)
    c.nodes[i]:set_healthy(healthy, c.now)
    c:process(i)
  end

  local function followers(c, l)
    local t = {}
    for i = 1, c.n do if i ~= l then t[#t + 1] = i end end
    return t
  end

  it("an unhealthy follower is not elected while a healthy one can be", function()
    for seed = 1, 10 do
      local c = Cluster.new(3, { seed = seed })
      local l = c:await_leader(2000)
      local f = followers(c, l)
      -- the higher id would win a race of fast pre-votes on rank alone
      local h, u = f[1], f[2]
      set_healthy(c, u, false)
      c:advance(100)
      local t0 = c.now
      c:crash(l)
      local nl = c:await_leader(2000)
      assert.are.equal(h, nl, "seed " .. seed)
      assert.is_true(c.now - t0 <= 50, "by the fast path: took " .. (c.now - t0) .. " ms")
      c:advance(500, never_two_leaders)
      assert.are.same({}, c:events_of(u, "elected"), "seed " .. seed)
    end
  end)

  it("an unhealthy node that knows a healthy voter may lead leaves the election to it", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    local f = followers(c, l)
    local h, u = f[1], f[2]
    set_healthy(c, u, false)
    c:advance(100)
    c:crash(l)
    assert.are.equal(h, c:await_leader(2000))
    c:restart(l)
    c:advance(200) -- u heard l healthy before, h healthy since
    c.sent = {}
    c:crash(h)
    assert.are.equal(l, c:await_leader(2000))
    c:advance(1000, never_two_leaders)
    for _, m in ipairs(c.sent) do
      assert.is_false(m.from == u and (m.type == "prevote" or m.type == "vote"),
        "the unhealthy node stood for election")
    end
  end)

  it("a healthy voter refuses an unhealthy candidate unless its log is further ahead", function()
    local function answer(n, m)
      n:step(m, 1000)
      local msgs = n:ready().msgs
      return msgs[#msgs]
    end
    for _, kind in ipairs({ "prevote", "vote" }) do
      local n = qcraft.new { id = 1, peers = { 1, 2, 3 }, now = 0 }
      local even = { type = kind, from = 2, to = 1, term = 1, ctx = 1000, flags = UNHEALTHY }
      assert.is_true(answer(n, even).reject, kind .. " from an unhealthy peer, logs even")
      local ahead = { type = kind, from = 2, to = 1, term = 1, ctx = 1000, flags = UNHEALTHY,
        index = 3, log_term = 1 }
      assert.is_false(answer(n, ahead).reject, kind .. " from an unhealthy peer further ahead")
      assert.are.equal(0, n:peer_healthy(2))
    end
    local sick = qcraft.new { id = 1, peers = { 1, 2, 3 }, now = 0 }
    sick:set_healthy(false, 0)
    assert.is_false(answer(sick, { type = "vote", from = 2, to = 1, term = 1, ctx = 1000,
      flags = UNHEALTHY }).reject, "an unhealthy voter votes as before")
    local n = qcraft.new { id = 1, peers = { 1, 2, 3 }, now = 0 }
    assert.is_false(answer(n, { type = "vote", from = 2, to = 1, term = 1, ctx = 1000,
      flags = UNHEALTHY | qcraft.FLAG_TRANSFER }).reject, "a transfer the leader chose")
  end)

  it("an unhealthy leader hands over to a healthy caught-up voter within a heartbeat", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:advance(100)
    c:clear_events()
    local t0 = c.now
    set_healthy(c, l, false)
    c:advance(c.heartbeat, never_two_leaders)
    local demoted = c:events_of(l, "demoted")
    assert.are.equal(1, #demoted)
    assert.are.equal("unhealthy", demoted[1].reason)
    assert.is_true(demoted[1].at - t0 <= c.heartbeat)
    local nl = c:leader()
    assert.is_not_nil(nl)
    assert.are_not.equal(l, nl)
    assert.are.equal(0, c.nodes[nl]:peer_healthy(l), "the new leader knows why")
    c:advance(1000, never_two_leaders)
    assert.are.equal(nl, c:leader(), "it does not take leadership back")
  end)

  it("with no healthy voter it stays leader, and hands over once one turns healthy", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    local f = followers(c, l)
    set_healthy(c, f[1], false)
    set_healthy(c, f[2], false)
    c:advance(100)
    c:clear_events()
    set_healthy(c, l, false)
    c:advance(1000, never_two_leaders)
    assert.are.equal(l, c:leader(), "a leader is better than none")
    assert.are.same({}, c:events_of(l, "demoted"))
    local t0 = c.now
    set_healthy(c, f[2], true)
    c:advance(c.heartbeat + 10, never_two_leaders)
    local demoted = c:events_of(l, "demoted")
    assert.are.equal(1, #demoted)
    assert.are.equal("unhealthy", demoted[1].reason)
    assert.is_true(demoted[1].at - t0 <= c.heartbeat + 2, "at the next answer of that peer")
    assert.are.equal(f[2], c:leader())
  end)

  it("an unhealthy leader catching up one target hands over to another that holds all", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:advance(100)
    local f = followers(c, l)
    local far, near = f[1], f[2]
    set_healthy(c, near, false)
    c:advance(c.heartbeat + 5)
    c:cut_link(l, far) -- the only healthy one cannot catch up
    c:propose("x")
    c:advance(10)
    c:clear_events()
    set_healthy(c, l, false)
    c:advance(20)
    assert.are.equal(l, c:leader(), "waits for the healthy one")
    local t0 = c.now
    set_healthy(c, near, true)
    c:advance(c.heartbeat + 10, never_two_leaders)
    assert.are.equal(near, c:leader(), "did not wait out the transfer to the other")
    local demoted = c:events_of(l, "demoted")
    assert.are.equal("unhealthy", demoted[1].reason)
    assert.is_true(demoted[1].at - t0 <= c.heartbeat + 2)
  end)

  it("a hand-over for health stops when the leader recovers first", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:advance(100)
    local f = followers(c, l)
    for _, i in ipairs(f) do c:cut_link(l, i) end
    for k = 1, 5 do c.nodes[l]:propose("x" .. k, c.now) end
    c:process(l)
    set_healthy(c, l, false) -- nobody caught up: a transfer waits
    assert.is_true(c.nodes[l]:propose("y", c.now) < 0, "proposals wait during it")
    set_healthy(c, l, true)
    assert.are.equal(0, (c.nodes[l]:propose("z", c.now)), "recovered: no reason to leave")
    for _, i in ipairs(f) do c:cut_link(l, i, false) end
    c:clear_events()
    c:advance(500, never_two_leaders)
    assert.are.equal(l, c:leader())
    assert.are.same({}, c:events_of(l, "demoted"))
  end)

  it("a cluster of unhealthy nodes still elects a leader, and again after a crash", function()
    local c = Cluster.new(3)
    for i = 1, 3 do set_healthy(c, i, false) end
    local l = c:await_leader(3000)
    assert.is_not_nil(l)
    c:advance(100, never_two_leaders)
    c:crash(l)
    local nl = c:await_leader(3000)
    assert.is_not_nil(nl)
    assert.are_not.equal(l, nl)
  end)

  it("the leader learns a follower's health from answers to empty appends", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:advance(100)
    local f = followers(c, l)
    assert.are.equal(1, c.nodes[l]:peer_healthy(f[1]))
    assert.are.equal(1, c.nodes[f[1]]:peer_healthy(l))
    assert.are.equal(-1, c.nodes[l]:peer_healthy(99))
    local last = c.nodes[l]:last_index()
    set_healthy(c, f[1], false)
    assert.is_false(c.nodes[f[1]]:peer_healthy(f[1]) == 1, "a node knows its own verdict")
    c:advance(c.heartbeat + 5)
    assert.are.equal(0, c.nodes[l]:peer_healthy(f[1]))
    set_healthy(c, f[1], true)
    c:advance(c.heartbeat + 5)
    assert.are.equal(1, c.nodes[l]:peer_healthy(f[1]))
    assert.are.equal(last, c.nodes[l]:last_index(), "no log entry for a change of health")
    assert.are.equal(l, c:leader())
  end)

  it("a shutdown hand-over prefers a healthy peer over one further ahead", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    c:advance(100)
    local f = followers(c, l)
    set_healthy(c, f[1], false)
    c:advance(c.heartbeat + 5)
    c:cut_link(l, f[2]) -- the healthy one falls behind
    for k = 1, 3 do c:propose("p" .. k) end
    c:advance(10)
    c:cut_link(l, f[2], false)
    assert.is_true(c.nodes[l]:transfer(0, c.now, 4) == 0)
    c:process(l)
    c:clear_events()
    c:advance(200, never_two_leaders)
    assert.are.equal(f[2], c:leader())
    assert.are.same({}, c:events_of(f[1], "elected"), "not even for a moment")
  end)
end)

describe("raft terms", function()
  -- 2^64 - 1, the last term (a Lua integer wraps to -1 there), and 2^63,
  -- the first above QC_RAFT_MAX_TERM (math.mininteger as a Lua integer).
  local LAST_TERM, FIRST_REFUSED = -1, math.mininteger

  it("a message of a term above QC_RAFT_MAX_TERM is refused: campaigns would wrap it", function()
    local node = qcraft.new { id = 1, peers = { 1 }, now = 0 }
    node:tick(1000)
    assert.are.equal("leader", node:role())
    local term = node:term()
    for _, t in ipairs({ LAST_TERM, FIRST_REFUSED }) do
      local rc = node:step({ type = "append", from = 2, to = 1, term = t, ctx = 1001 }, 1001)
      assert.are_not.equal(0, rc)
    end
    assert.are.equal(term, node:term())
    assert.are.equal("leader", node:role())
    -- Had it been taken, the next election would have wrapped the term to 0.
    for now = 1002, 5000, 50 do node:tick(now) end
    assert.are.equal("leader", node:role())
    assert.are.equal(term, node:term())
  end)

  it("a hard state of a term above QC_RAFT_MAX_TERM is refused", function()
    for _, t in ipairs({ LAST_TERM, FIRST_REFUSED }) do
      assert.has_error(function() qcraft.new { id = 1, peers = { 1 }, now = 0, hs = { term = t } } end)
    end
    local node = qcraft.new { id = 1, peers = { 1 }, now = 0, hs = { term = math.maxinteger } }
    assert.are.equal(math.maxinteger, node:term())
  end)
end)

describe("raft snapshots from a faulty leader", function()
  it("a snapshot of term 0 past the log commits nothing the log does not hold", function()
    local node = qcraft.new { id = 3, peers = { 1, 2, 3 }, now = 0 }
    local rc = node:step({ type = "snapshot", from = 2, to = 3, term = 5, index = 100, log_term = 0,
                           ctx = 10 }, 10)
    assert.are.equal(0, rc)
    assert.are.equal(0, node:commit())
    local rd = node:ready()
    local resp = rd.msgs[#rd.msgs]
    assert.are.equal("append_resp", resp.type)
    assert.is_true(resp.reject)
  end)
end)

describe("raft appends from a faulty leader", function()
  -- Entries whose terms go down, or pass the message's own term, come from
  -- no correct leader: the follower takes none of them (the WAL would
  -- refuse such a log and stop the node).
  local cases = {
    { "terms going down", { { term = 5, data = "a" }, { term = 3, data = "b" } } },
    { "a term above the message's", { { term = 5, data = "a" }, { term = 6, data = "b" } } },
    { "a term below the previous entry's", { { term = 1, data = "a" } }, 2 },
  }
  for _, case in ipairs(cases) do
    it("an append with " .. case[1] .. " is refused, and nothing of it taken", function()
      local node = qcraft.new { id = 3, peers = { 1, 2, 3 }, now = 0 }
      local prev_term = case[3] or 0
      if prev_term > 0 then -- one good entry of that term first
        node:step({ type = "append", from = 2, to = 3, term = 5, index = 0, log_term = 0,
                    entries = { { term = prev_term, data = "p" } }, ctx = 10 }, 10)
        node:ready()
      end
      local last = node:last_index()
      node:step({ type = "append", from = 2, to = 3, term = 5, index = last, log_term = prev_term,
                  entries = case[2], ctx = 20 }, 20)
      local rd = node:ready()
      local resp = rd.msgs[#rd.msgs]
      assert.are.equal("append_resp", resp.type)
      assert.is_true(resp.reject)
      assert.are.equal(last, node:last_index())
    end)
  end
end)

describe("raft refusals", function()
  it("an append refused at index 0 of an empty log answers at once", function()
    -- In a child with a time limit: the refusal's hint once walked the
    -- whole 64-bit index space down from 2^64 - 1 (a node stuck for good).
    local script = [[
      package.cpath = "./build/?.so;" .. package.cpath
      local node = require("qcraft").new { id = 3, peers = { 1, 2, 3 }, now = 0 }
      node:step({ type = "append", from = 2, to = 3, term = 1, index = 0, log_term = 5, ctx = 1 }, 1)
      local resp = node:ready().msgs[1]
      io.write(resp.type, " ", tostring(resp.reject), " ", resp.index)
    ]]
    local p = assert(io.popen("timeout 20 lua5.4 -e '" .. script:gsub("'", "'\\''") .. "'; echo \" rc=$?\""))
    local out = p:read("a")
    p:close()
    assert.are.equal("append_resp true 0 rc=0\n", out)
  end)
end)

describe("raft snapshots of a term above the message's", function()
  it("are refused: the node would lead below its own last term", function()
    local conf = string.pack(">BB", 1, 3)
    for id = 1, 3 do conf = conf .. string.pack(">I8B", id, 1) end -- voters
    local node = qcraft.new { id = 3, peers = { 1, 2, 3 }, now = 0 }
    node:step({ type = "snapshot", from = 2, to = 3, term = 2, index = 10, log_term = 9, ctx = 1,
                entries = { { term = 9, index = 10, data = "" },
                            { term = 9, index = 10, type = 2, data = conf } } }, 1)
    local resp = node:ready().msgs[1]
    assert.are.equal("append_resp", resp.type)
    assert.is_true(resp.reject)
    assert.are.equal(0, node:commit())
    assert.are.equal(0, node:last_index())
  end)
end)
