-- Leadership follows health (README "Health checks"), on real agents with
-- real exec checks: each node's check passes while its flag file exists.
-- An unhealthy leader hands over with on_demoted "unhealthy", an unhealthy
-- node is not elected while a healthy one can be, a node that recovers
-- does not take leadership back, and with nobody healthy the leader stays
-- until a node turns healthy.
local A = require("agents")

local function flag(c, i) return string.format("%s/flag%d", c.dir, i) end
local function set_flag(c, i, on)
  if on then A.write(flag(c, i), "") else os.remove(flag(c, i)) end
end

-- A 3-node cluster whose node i is healthy while flag i exists; extra:
-- more keys for every node, first: keys for node1 only. The check's
-- timeout (its interval) is generous: on a loaded machine a shell may take
-- longer than 50 ms to start, and a check killed at its timeout fails
-- while the flag is there, so health (and leadership) flapped. retry_ms
-- still confirms a change within about 20 ms of the run that saw it.
local function health_cluster(extra, first)
  local keys = { heartbeat_ms = 50, election_timeout_ms = 300 }
  for k, v in pairs(extra or {}) do keys[k] = v end
  local c = A.cluster(3, { hooks = A.recording_hooks, extra = keys })
  for i = 1, 3 do
    local path = c.nodes[i].config
    local own = i == 1 and first or ""
    local text = A.read(path):gsub("^return {", string.format(
      "return {%schecks = {{name = \"svc\", exec = \"test -e %s\", interval_ms = 1000, retry_ms = 20, "
        .. "rise = 1, fall = 2}}, ",
      own, flag(c, i)), 1)
    A.write(path, text)
    set_flag(c, i, true)
  end
  A.start_all(c)
  return c
end

local function healthy(c, i)
  local st = A.json(c.nodes[i].api, "/v1/status")
  return st and st.healthy
end

local function wait_healthy(c, i, want)
  return A.wait_for(function() return healthy(c, i) == want end, 10)
end

-- The agreed leader once it is not `old`.
local function leader_other_than(c, old, timeout)
  return A.wait_for(function()
    local l = A.agreed_leader(c, 0.5)
    return l and l ~= old and l
  end, timeout or 10)
end

local function has(lines, pattern)
  for _, l in ipairs(lines) do
    if l:match(pattern) then return l end
  end
end

describe("leadership follows health", function()
  local c
  before_each(function()
    c = health_cluster()
    for i = 1, 3 do assert.is_true(wait_healthy(c, i, true), "node" .. i .. " healthy") end
  end)
  after_each(function() A.stop(c) end)

  it("an unhealthy leader hands over to a healthy node, on_demoted says unhealthy", function()
    local old = A.must_leader(c)
    local i = A.index_of(c, old)
    set_flag(c, i, false)
    local new = leader_other_than(c, old)
    assert.is_truthy(new, "leadership left the unhealthy leader")
    assert.is_true(healthy(c, A.index_of(c, new)))
    assert.is_truthy(A.wait_for(function() return has(A.events(c, i), "^demoted %d+ unhealthy$") end, 5),
      "on_demoted with reason unhealthy on " .. old)
    -- It recovers, and does not take leadership back (no preempt).
    set_flag(c, i, true)
    assert.is_true(wait_healthy(c, i, true))
    A.sleep(1.0)
    assert.are.equal(new, A.must_leader(c))
  end)

  it("an unhealthy node is not elected while a healthy one can be", function()
    for _ = 1, 3 do
      local old = A.must_leader(c)
      local i = A.index_of(c, old)
      local sick = i % 3 + 1
      local well = (i + 1) % 3 + 1
      set_flag(c, sick, false)
      assert.is_true(wait_healthy(c, sick, false))
      assert.is_true(A.signal(c, i, "KILL"))
      local new = leader_other_than(c, old)
      assert.are.equal(c.nodes[well].id, new)
      set_flag(c, sick, true)
      A.start(c, i)
      assert.is_true(wait_healthy(c, sick, true))
      assert.is_true(wait_healthy(c, i, true))
    end
  end)

  it("with no healthy node the leader stays, unhealthy, and hands over once one is healthy", function()
    local old = A.must_leader(c)
    local i = A.index_of(c, old)
    -- The followers first: a leader failing while one of them still passes
    -- would rightly hand over to it.
    for j = 1, 3 do
      if j ~= i then set_flag(c, j, false) end
    end
    for j = 1, 3 do
      if j ~= i then assert.is_true(wait_healthy(c, j, false)) end
    end
    set_flag(c, i, false)
    assert.is_true(wait_healthy(c, i, false))
    A.sleep(1.0)
    assert.are.equal(old, A.must_leader(c))
    local st = A.json(c.nodes[i].api, "/v1/status")
    assert.are.equal("leader", st.role)
    assert.is_false(st.healthy)
    local well = i % 3 + 1
    set_flag(c, well, true)
    assert.are.equal(c.nodes[well].id, leader_other_than(c, old))
  end)
end)

describe("preempt and health", function()
  local c
  after_each(function() A.stop(c) end)

  it("a preferred node takes leadership back only once it is healthy", function()
    c = health_cluster({ preempt = true, preempt_delay_ms = 100 }, "priority = 2, ")
    for i = 1, 3 do assert.is_true(wait_healthy(c, i, true), "node" .. i .. " healthy") end
    assert.are.equal("node1", A.wait_for(function()
      local l = A.agreed_leader(c, 0.5)
      return l == "node1" and l
    end, 10))
    set_flag(c, 1, false)
    local new = leader_other_than(c, "node1")
    assert.is_truthy(new, "leadership left the unhealthy preferred node")
    -- While it stays unhealthy, preempt must not hand it back (a hand-back
    -- would bounce: it hands over again at once, being unhealthy).
    A.sleep(1.5)
    assert.are.equal(new, A.must_leader(c))
    local back = 0
    for _, l in ipairs(A.events(c, 1)) do
      if l:match("^elected ") then back = back + 1 end
    end
    assert.are.equal(1, back, "node1 was elected once, at the start")
    set_flag(c, 1, true)
    assert.are.equal("node1", A.wait_for(function()
      local l = A.agreed_leader(c, 0.5)
      return l == "node1" and l
    end, 10))
  end)
end)
