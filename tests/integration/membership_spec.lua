-- Membership on real agents: nodes join a live cluster and leave it, roles
-- (witness, learner), priorities with preemption, metadata changed at run
-- time, and the errors a user sees.
local A = require("agents")
local cjson = require("cjson")

local function members(api)
  local v = A.json(api, "/v1/members")
  local t = {}
  for _, p in ipairs(v or {}) do t[p.identifier] = p end
  return t, v
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- Waits until every running node's /v1/members satisfies ok(t, node).
local function all_see(c, ok, timeout)
  return A.wait_for(function()
    for i = 1, c.n do
      local node = c.nodes[i]
      if node.pid and A.alive(node.pid) then
        local t = members(node.api)
        if not ok(t, node) then return nil end
      end
    end
    return true
  end, timeout or 10)
end

local function exited(c, i, timeout)
  return A.wait_for(function() return not A.alive(c.nodes[i].pid) end, timeout or 10)
end

describe("membership", function()
  local c

  after_each(function()
    if c then A.stop(c) end
    c = nil
  end)

  it("a fourth and a fifth node join a live cluster under writes, and lose none", function()
    c = A.cluster(3)
    A.start_all(c)
    local leader = A.must_leader(c)
    local api = c.nodes[A.index_of(c, leader)].api
    local acked = {}
    local k = 0
    local function write_some(n)
      for _ = 1, n do
        k = k + 1
        local status = A.http(api, "PUT", "/v1/kv/w" .. k, "v" .. k)
        if status == 200 then acked[#acked + 1] = k end
      end
    end
    write_some(100)
    local four = A.add_node(c)
    A.start(c, four)
    write_some(100)
    local five = A.add_node(c)
    A.start(c, five)
    write_some(100)
    assert.is_truthy(all_see(c, function(t)
      return count(t) == 5 and t.node4 and t.node4.voter and t.node5 and t.node5.voter
    end, 15), "every node sees five voters")
    assert.is_true(#acked >= 290, "writes kept going: " .. #acked)
    for _, i in ipairs({ four, five }) do
      for _, n in ipairs(acked) do
        local status, body
        A.wait_for(function()
          status, body = A.http(c.nodes[i].api, "GET", "/v1/kv/w" .. n .. "?stale")
          return status == 200
        end, 5)
        assert.are.equal("v" .. n, body, c.nodes[i].id .. " lost w" .. n)
      end
    end
    -- the new voters count: with two of the first three gone, a leader stands
    A.signal(c, 2, "KILL")
    A.signal(c, 3, "KILL")
    assert.is_truthy(A.agreed_leader(c, 10), "a leader among node1, node4, node5")
  end)

  it("a node started with join = {} waits, then joins with `qcluster join`", function()
    c = A.cluster(3)
    A.start_all(c)
    A.must_leader(c)
    local i = A.add_node(c, { join = {} })
    A.start(c, i)
    A.sleep(0.5)
    local s = A.json(c.nodes[i].api, "/v1/status")
    assert.are.equal("learner", s.role, "not a member yet, and no cluster of its own")
    local out, code = A.cli("join 127.0.0.1:" .. c.nodes[2].port, c.nodes[i].api)
    assert.are.equal(0, code, out)
    assert.is_truthy(all_see(c, function(t) return t.node4 and t.node4.voter end), "node4 votes")
    -- a node that leads a cluster of its own is told why it cannot join
    local lone = A.cluster(1)
    finally(function() A.stop(lone) end)
    A.start_all(lone)
    A.must_leader(lone)
    out, code = A.cli("join 127.0.0.1:" .. c.nodes[1].port, lone.nodes[1].api)
    assert.are.equal(1, code, out)
    assert.is_truthy(out:find("cluster of its own", 1, true), out)
  end)

  it("a joined node restarts as itself, and with leave_on_stop leaves at SIGTERM", function()
    c = A.cluster(3, { hooks = A.recording_hooks })
    A.start_all(c)
    A.must_leader(c)
    local i = A.add_node(c, { extra = { leave_on_stop = true } })
    A.start(c, i)
    assert.is_truthy(all_see(c, function(t) return t.node4 and t.node4.voter end), "node4 votes")
    assert.is_truthy(A.wait_for(function()
      return (A.read(c.nodes[1].events) or ""):find("member_join node4", 1, true)
    end, 5), "on_member_join ran")
    -- restarted with its data it is a member already: it asks nobody
    A.signal(c, i, "KILL")
    local mark = #(A.read(c.nodes[i].log) or "")
    A.start(c, i)
    assert.is_truthy(all_see(c, function(t) return t.node4 and t.node4.up and t.node4.voter end))
    -- and node4 runs again as a member (the others may still see it up from
    -- before its kill): it names the leader, as they all do
    assert.is_truthy(A.agreed_leader(c), "node4 follows the leader again")
    local log = (A.read(c.nodes[i].log) or ""):sub(mark + 1)
    assert.is_nil(log:find("asking", 1, true), log)
    -- SIGTERM with leave_on_stop: out of the cluster, then it stops
    assert.is_true(A.signal(c, i, "TERM"), "node4 stopped")
    assert.is_truthy(all_see(c, function(t) return count(t) == 3 and not t.node4 end), "node4 left")
    local tail = (A.read(c.nodes[i].log) or ""):sub(mark + 1)
    assert.is_truthy(tail:find("removed", 1, true), tail)
  end)

  it("a member down longer than reap_after is removed by the leader", function()
    c = A.cluster(3, { extra = { reap_after = 1 } })
    A.start_all(c)
    local leader = A.must_leader(c)
    local victim = A.index_of(c, leader) % 3 + 1
    local name = c.nodes[victim].id
    A.signal(c, victim, "KILL")
    c.nodes[victim].pid = nil
    assert.is_truthy(all_see(c, function(t) return count(t) == 2 and not t[name] end, 10),
      name .. " was reaped")
    assert.are.equal(leader, A.agreed_leader(c, 5))
  end)

  it("a follower leaves with `qcluster leave` and stops; the leader leaves after handing over", function()
    c = A.cluster(3, { hooks = A.recording_hooks })
    A.start_all(c)
    local leader = A.must_leader(c)
    local li = A.index_of(c, leader)
    local fi = li % 3 + 1
    local out, code = A.cli("leave", c.nodes[fi].api)
    assert.are.equal(0, code, out)
    assert.is_truthy(exited(c, fi), "the follower stopped")
    c.nodes[fi].pid = nil
    assert.is_truthy(all_see(c, function(t) return count(t) == 2 and not t[c.nodes[fi].id] end))
    -- the others saw it go
    assert.is_truthy(A.wait_for(function()
      return (A.read(c.nodes[li].events) or ""):find("member_leave " .. c.nodes[fi].id, 1, true)
    end, 5), "on_member_leave ran on the leader")
    -- now the leader itself
    out, code = A.cli("leave", c.nodes[li].api)
    assert.are.equal(0, code, out)
    assert.is_truthy(exited(c, li), "the old leader stopped")
    c.nodes[li].pid = nil
    local last = 6 - li - fi
    assert.are.equal(c.nodes[last].id, A.agreed_leader(c, 10), "the last node leads alone")
    local t = members(c.nodes[last].api)
    assert.are.equal(1, count(t))
    assert.are.equal(200, A.http(c.nodes[last].api, "PUT", "/v1/kv/alone", "yes"))
  end)

  it("two servers and a witness survive the loss of either server; the witness never leads", function()
    c = A.cluster(3, { hooks = A.recording_hooks })
    -- node3 is the witness
    local f = c.nodes[3].config
    A.write(f, (A.read(f):gsub("^return {", 'return {["role"] = "witness", ')))
    A.start_all(c)
    A.must_leader(c)
    assert.is_truthy(all_see(c, function(t) return t.node3 and t.node3.role == "witness" end),
      "every node sees the witness")
    for _, victim in ipairs({ 1, 2 }) do
      local leader = A.must_leader(c)
      assert.are_not.equal("node3", leader)
      local other = victim == 1 and 2 or 1
      assert.are.equal(200, A.http(c.nodes[other].api, "PUT", "/v1/kv/before" .. victim, "x"))
      A.signal(c, victim, "KILL")
      c.nodes[victim].pid = nil
      assert.are.equal(c.nodes[other].id, A.agreed_leader(c, 10),
        "the other server leads without node" .. victim)
      assert.are.equal(200, A.http(c.nodes[other].api, "PUT", "/v1/kv/after" .. victim, "y"))
      A.start(c, victim)
      assert.is_truthy(A.agreed_leader(c, 10))
    end
    local events = A.read(c.nodes[3].events) or ""
    assert.is_nil(events:find("elected", 1, true), "the witness was never elected")
    local status = A.json(c.nodes[3].api, "/v1/status")
    assert.are.equal("witness", status.role)
  end)

  it("with preempt, the member of highest priority takes leadership back", function()
    c = A.cluster(3, { extra = { preempt = true, preempt_delay_ms = 200 } })
    local f = c.nodes[3].config
    A.write(f, (A.read(f):gsub("^return {", '["priority"] = 10, '):gsub("^", "return {")))
    A.start_all(c)
    assert.are.equal("node3", A.wait_for(function()
      local l = A.agreed_leader(c, 1)
      return l == "node3" and l
    end, 15), "node3 took over")
    A.signal(c, 3, "KILL")
    c.nodes[3].pid = nil
    local other = A.agreed_leader(c, 10)
    assert.are_not.equal("node3", other)
    A.start(c, 3)
    assert.are.equal("node3", A.wait_for(function()
      local l = A.agreed_leader(c, 1)
      return l == "node3" and l
    end, 15), "node3 took over again once back and caught up")
  end)

  it("a learner follows the log but never votes nor leads", function()
    c = A.cluster(3)
    A.start_all(c)
    local leader = A.must_leader(c)
    local learner = A.add_node(c, { extra = { role = "learner" } })
    A.start(c, learner)
    assert.is_truthy(all_see(c, function(t)
      return t.node4 and t.node4.role == "learner" and t.node4.voter == false
    end), "everyone sees a learner")
    local api = c.nodes[A.index_of(c, leader)].api
    assert.are.equal(200, A.http(api, "PUT", "/v1/kv/seen-by-learner", "yes"))
    assert.is_truthy(A.wait_for(function()
      local s, b = A.http(c.nodes[learner].api, "GET", "/v1/kv/seen-by-learner?stale")
      return s == 200 and b == "yes"
    end, 5))
    -- two voters down: the learner does not make a majority
    for i = 1, 3 do
      if c.nodes[i].id ~= leader then A.signal(c, i, "KILL"); c.nodes[i].pid = nil end
    end
    A.sleep(1.5)
    local s = A.json(c.nodes[learner].api, "/v1/status")
    assert.are.equal("learner", s.role)
    assert.are_not.equal(200, A.http(api, "PUT", "/v1/kv/no-majority", "x", nil))
  end)

  it("a membership write answered 200 shows at once in /v1/members on the node that answered", function()
    c = A.cluster(3)
    A.start_all(c)
    local in_cluster = { node1 = true, node2 = true, node3 = true }
    -- /v1/members on api names exactly the members of in_cluster
    local function lists_exactly(api, what)
      local t = members(api)
      for id in pairs(in_cluster) do assert.is_truthy(t[id], what .. ": " .. id .. " missing") end
      for id in pairs(t) do assert.is_truthy(in_cluster[id], what .. ": " .. id .. " still listed") end
    end
    for round = 1, 5 do
      local leader = A.must_leader(c)
      local li = A.index_of(c, leader)
      local fi = li % 3 + 1 -- one of the first three that follows
      while not in_cluster[c.nodes[fi].id] or fi == li do fi = fi % 3 + 1 end
      -- two newcomers, each told to join with POST /v1/join
      local new = {}
      for _ = 1, 2 do
        local i = A.add_node(c, { join = {} })
        A.start(c, i)
        assert.is_truthy(A.wait_for(function() return A.json(c.nodes[i].api, "/v1/status") end, 10))
        local body = cjson.encode({ join = { "127.0.0.1:" .. c.nodes[li].port } })
        local status, answer = A.http(c.nodes[i].api, "POST", "/v1/join", body)
        assert.are.equal(200, status, answer)
        in_cluster[c.nodes[i].id] = true
        lists_exactly(c.nodes[i].api, "round " .. round .. ", " .. c.nodes[i].id .. " after its join")
        new[#new + 1] = i
      end
      assert.is_truthy(all_see(c, function(t)
        for _, i in ipairs(new) do
          if not (t[c.nodes[i].id] and t[c.nodes[i].id].voter) then return false end
        end
        return true
      end, 15), "round " .. round .. ": the newcomers vote")
      -- metadata, through the log, on the leader and on a follower
      for _, i in ipairs({ li, fi }) do
        local status, answer = A.http(c.nodes[i].api, "PUT", "/v1/self/metadata",
          cjson.encode({ round = round }))
        assert.are.equal(200, status, answer)
        local t = members(c.nodes[i].api)
        assert.are.equal(round, t[c.nodes[i].id].metadata.round, c.nodes[i].id .. "'s own metadata")
      end
      -- one newcomer removed through the leader, the other through a follower
      for k, at in ipairs({ li, fi }) do
        local gone = c.nodes[new[k]].id
        local status, answer = A.http(c.nodes[at].api, "POST", "/v1/leave",
          cjson.encode({ identifier = gone }))
        assert.are.equal(200, status, answer)
        in_cluster[gone] = nil
        lists_exactly(c.nodes[at].api, "round " .. round .. ", " .. c.nodes[at].id ..
          " after the leave of " .. gone)
      end
      for _, i in ipairs(new) do
        assert.is_truthy(exited(c, i), c.nodes[i].id .. " stopped once removed")
        c.nodes[i].pid = nil
      end
    end
  end)

  it("metadata set at run time reaches every node; a join under a live name is refused", function()
    c = A.cluster(3)
    A.start_all(c)
    A.must_leader(c)
    local status = A.http(c.nodes[2].api, "PUT", "/v1/self/metadata", '{"server_port": 9999}')
    assert.are.equal(200, status)
    assert.is_truthy(all_see(c, function(t)
      return t.node2 and t.node2.metadata and t.node2.metadata.server_port == 9999
    end), "every node sees node2's new metadata")
    -- a stranger calling itself node2
    local i = A.add_node(c, { extra = { identifier = "node2", data_dir = "impostor-data" } })
    A.start(c, i)
    assert.is_truthy(A.wait_for(function()
      return (A.read(c.nodes[i].log) or ""):find("identifier in use by a live member", 1, true)
    end, 5), "the impostor is told why")
    local t = members(c.nodes[1].api)
    assert.are.equal(3, count(t))
    assert.are.equal(9999, t.node2.metadata.server_port)
    local out, code = A.cli("leave ghost", c.nodes[1].api)
    assert.are.equal(3, code, out)
    assert.is_truthy(cjson)
  end)
end)
