-- The Lua client SDK (lua/qcluster/client.lua) against real agents: the
-- leader as every node names it, no leader, an agent that cannot be reached,
-- and the long-poll that sees the leader change; a fake agent whose answer
-- drips in for a minute, cut off at the client's timeout, and one whose
-- JSON is not an object.
local A = require("agents")
local bad_agent = require("bad_agent")
local client = require("qcluster.client")

-- A loopback port nobody listens on: a fresh cluster's unused API slot.
local function dead_api(c) return "127.0.0.1:" .. (c.base + 39) end

describe("the Lua client", function()
  local c, fake

  after_each(function()
    if fake then os.execute("kill -KILL " .. fake .. " 2>/dev/null") end
    A.stop(c)
    c, fake = nil, nil
  end)

  it("names the leader every node agrees on, with its address and metadata", function()
    c = A.cluster(3)
    A.start_all(c)
    local leader = A.must_leader(c, 15)
    local li = A.index_of(c, leader)
    for i = 1, 3 do
      local cl = assert(client.new { api = c.nodes[i].api, timeout = 5 })
      local p, err = cl:get_leader_info()
      assert.is_nil(err)
      assert.are.equal(leader, p.identifier)
      assert.are.equal("127.0.0.1", p.host)
      assert.are.equal(c.base + li, p.port)
      assert.are.equal(c.base + 40 + li, p.metadata.server_port)
      assert.are.equal("leader", p.role)
      assert.is_true(p.up)
      assert.are.equal(1, p.priority) -- the default
      assert.are.equal(i == li, cl:is_leader())
      local st = assert(cl:status())
      assert.are.equal(c.nodes[i].id, st.identifier)
      assert.are.equal(leader, st.leader.identifier)
      local members = assert(cl:members())
      assert.are.equal(3, #members)
    end
  end)

  it("reports ttl checks, lists checks, and discovers only healthy members", function()
    c = A.cluster(2, { extra = { api_token = "tok", heartbeat_ms = 50, election_timeout_ms = 300,
      checks = { { name = "beat", ttl_ms = 60000, interval_ms = 50, rise = 1, fall = 1 } } } })
    A.start_all(c)
    A.must_leader(c, 15)
    local c1 = assert(client.new { api = c.nodes[1].api, token = "tok" })
    local c2 = assert(client.new { api = c.nodes[2].api, token = "tok" })
    assert.is_true(c1:check_pass("beat", "one ok"))
    assert.is_true(c2:check_pass("beat"))
    local function healthy_names(cl)
      local list = assert(cl:members { healthy = true })
      local names = {}
      for _, m in ipairs(list) do names[#names + 1] = m.identifier end
      table.sort(names)
      return table.concat(names, " ")
    end
    assert.is_truthy(A.wait_for(function() return healthy_names(c1) == "node1 node2" end, 10),
      "both should be healthy")
    local k = assert(c1:checks())
    assert.are.same({ "beat", "ttl", "passing", "one ok" }, { k[1].name, k[1].kind, k[1].status, k[1].output })
    assert.is_number(k[1].since)
    assert.is_true(c2:check_fail("beat", "gone"))
    assert.is_truthy(A.wait_for(function() return healthy_names(c1) == "node1" end, 10),
      "node2 should no longer be discovered")
    local all = assert(c1:members())
    local by = {}
    for _, m in ipairs(all) do by[m.identifier] = m end
    assert.is_false(by.node2.healthy)
    assert.are.same({ { name = "beat", status = "failing" } }, by.node2.checks)
    local unhealthy = assert(c1:members { healthy = false })
    assert.are.same({ "node2" }, { unhealthy[1].identifier, unhealthy[2] })
    local p = assert(c1:get_leader_info())
    assert.is_boolean(p.healthy)
    -- errors come back as nil and a message
    local ok, err = c1:check_pass("nope")
    assert.is_nil(ok)
    assert.matches("HTTP 404", err)
    ok, err = c1:check_pass("a/b")
    assert.is_nil(ok)
    assert.matches("bad check name", err)
    ok, err = assert(client.new { api = c.nodes[1].api }):check_pass("beat")
    assert.is_nil(ok)
    assert.matches("HTTP 401", err)
    ok, err = c1:members { healthy = "yes" }
    assert.is_nil(ok)
    assert.matches("healthy must be a boolean", err)
  end)

  it("returns nil without an error when no leader is known", function()
    c = A.cluster(3)
    A.start(c, 1) -- alone of three: no quorum, no leader
    local cl = assert(client.new { api = c.nodes[1].api })
    assert.is_truthy(A.wait_for(function() return cl:status() end, 10))
    local p, err = cl:get_leader_info()
    assert.is_nil(p)
    assert.is_nil(err)
    assert.is_false(cl:is_leader())
    p, err = cl:wait_for_leader_change(0.2)
    assert.is_nil(p)
    assert.is_nil(err)
  end)

  it("returns nil and a message when the agent cannot be reached", function()
    c = A.cluster(1)
    local cl = assert(client.new { api = dead_api(c), timeout = 2 })
    local p, err = cl:get_leader_info()
    assert.is_nil(p)
    assert.matches("cannot reach agent at " .. dead_api(c), err, 1, true)
    local lead
    lead, err = cl:is_leader()
    assert.is_nil(lead)
    assert.is_string(err)
    assert.is_nil((cl:wait_for_leader_change(1)))
    assert.is_nil((cl:members()))
  end)

  it("gives up on an answer that drips in past its timeout", function()
    local api
    fake, api = bad_agent.start("drip")
    local cl = assert(client.new { api = api, timeout = 2 })
    local t0 = A.now()
    local p, err = cl:get_leader_info()
    assert.is_nil(p)
    assert.matches("timeout", err)
    -- the answer takes 60 s, a header line a second
    assert.is_true(A.now() - t0 < 20, "returned after " .. (A.now() - t0) .. " s")
  end)

  it("returns nil and a message when the agent answers JSON that is not an object", function()
    for _, body in ipairs { "42", "null", '"x"', "true" } do
      local api
      fake, api = bad_agent.start("body", body)
      local cl = assert(client.new { api = api, timeout = 2 })
      local bad = "bad answer from agent at " .. api
      local v, err = cl:status()
      assert.is_nil(v, body)
      assert.are.equal(bad, err, body)
      v, err = cl:get_leader_info()
      assert.is_nil(v, body)
      assert.are.equal(bad, err, body)
      v, err = cl:is_leader()
      assert.is_nil(v, body)
      assert.are.equal(bad, err, body)
      v, err = cl:wait_for_leader_change(1)
      assert.is_nil(v, body)
      assert.are.equal(bad, err, body)
      v, err = cl:members()
      assert.is_nil(v, body)
      assert.are.equal(bad, err, body)
      os.execute("kill -KILL " .. fake)
      fake = nil
    end
  end)

  it("takes its address from $QCLUSTER_API and refuses a bad one", function()
    local cl = assert(client.new())
    assert.are.equal(os.getenv("QCLUSTER_API") or "127.0.0.1:8001", cl.api)
    local bad, err = client.new { api = "no-port" }
    assert.is_nil(bad)
    assert.matches("expected HOST:PORT", err)
  end)

  it("waits on the long-poll until the leader changes, and answers at the timeout", function()
    c = A.cluster(3)
    A.start_all(c)
    local leader = A.must_leader(c, 15)
    local li = A.index_of(c, leader)
    local fi = li % 3 + 1
    local cl = assert(client.new { api = c.nodes[fi].api, timeout = 5 })
    -- nothing changes: the same leader comes back when the wait ends
    local p, err = cl:wait_for_leader_change(0.3)
    assert.is_nil(err)
    assert.are.equal(leader, p.identifier)
    -- the term read before the kill is the baseline, so the follower
    -- noticing before the wait begins is no race
    local term = assert(cl:status()).term
    A.signal(c, li, "KILL")
    p, err = cl:wait_for_leader_change(120, term)
    assert.is_nil(err)
    assert.is_not.equal(leader, p and p.identifier)
    assert.is_true(assert(cl:status()).term > term)
    local next_leader = A.wait_for(function()
      local q = cl:get_leader_info()
      return q and q.identifier ~= leader and q.identifier
    end, 15)
    assert.is_truthy(next_leader)
  end)

  it("a loop of waits across a leader kill gets the new leader, never the wait's timeout", function()
    c = A.cluster(3)
    A.start_all(c)
    local leader = A.must_leader(c, 15)
    local li = A.index_of(c, leader)
    local cl = assert(client.new { api = c.nodes[li % 3 + 1].api, timeout = 5 })
    assert.are.equal(leader, assert(cl:get_leader_info()).identifier)
    A.signal(c, li, "KILL")
    -- each call returns as soon as what the last one said is out of date:
    -- nil while the survivors elect, then the new leader. The caller
    -- handles each answer for a while first (the sleep): a leader elected
    -- meanwhile must not make the next call wait out its 60 s.
    local got
    for _ = 1, 20 do
      local t0 = A.now()
      local p, err = cl:wait_for_leader_change(60)
      assert.is_nil(err)
      assert.is_true(A.now() - t0 < 30, "the call waited out its wait")
      if p then
        got = p
        break
      end
      A.sleep(0.3)
    end
    assert.is_truthy(got)
    assert.is_not.equal(leader, got.identifier)
  end)
end)
