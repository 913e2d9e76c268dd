-- The C client SDK (qc_client_* of libqcluster) through build/client_test
-- against real agents: the leader every node names, no leader
-- (QC_ENOLEADER and NULL), an agent that cannot be reached (QC_EIO), and the
-- long-poll ending once the leader is killed; a fake agent whose answer
-- drips in for a minute, cut off at the client's bound.
local A = require("agents")
local bad_agent = require("bad_agent")

local PROG = os.getenv("QC_CLIENT_TEST") or (A.root .. "/build/client_test")
local ENOLEADER, EIO = -4, -3

-- Runs client_test once: its exit code and the fields of its line.
local function run(api, args, env)
  local out, code = A.sh(string.format("%s %s %s %s", env or "", PROG, api, args))
  local t = { raw = out }
  for k, v in out:gmatch("([%w_]+)=(%S+)") do t[k] = tonumber(v) or v end
  return code, t
end

-- Starts client_test in the background, its output to a file: PID, file.
local function start(api, args, dir)
  local file = dir .. "/client_test.out"
  local p = io.popen(string.format("exec %s %s %s >%s 2>&1 & echo $!", PROG, api, args, file))
  local pid = tonumber(p:read("l"))
  p:close()
  return pid, file
end

describe("the C client", function()
  local c, bg, fake

  after_each(function()
    if bg then os.execute("kill -KILL " .. bg .. " 2>/dev/null") end
    if fake then os.execute("kill -KILL " .. fake .. " 2>/dev/null") end
    bg, fake = nil, nil
    A.stop(c)
    c = nil
  end)

  it("names the leader every node agrees on, with its address and metadata", function()
    c = A.cluster(3)
    A.start_all(c)
    local leader = A.must_leader(c, 15)
    local li = A.index_of(c, leader)
    for i = 1, 3 do
      local code, t = run(c.nodes[i].api, "leader")
      assert.are.equal(0, code, t.raw)
      assert.are.equal(0, t.rc, t.raw)
      assert.are.equal(leader, t.identifier)
      assert.are.equal("127.0.0.1", t.host)
      assert.are.equal(c.base + li, t.port)
      assert.are.equal("leader", t.role)
      assert.are.equal(1, t.up)
      assert.are.equal(1, t.priority) -- the default
      assert.are.equal(1, t.healthy) -- no checks: healthy
      assert.matches('"server_port":' .. (c.base + 40 + li), t.metadata, 1, true)
      code, t = run(c.nodes[i].api, "is_leader")
      assert.are.equal(0, code, t.raw)
      assert.are.equal(i == li and 1 or 0, t.is_leader)
    end
    -- api NULL: $QCLUSTER_API
    local code, t = run("-", "leader", "QCLUSTER_API=" .. c.nodes[1].api)
    assert.are.equal(0, code, t.raw)
    assert.are.equal(leader, t.identifier)
  end)

  it("lists the agent's checks and reports a ttl check's pass and fail", function()
    c = A.cluster(1, { extra = { api_token = "tok", checks = {
      { name = "beat", ttl_ms = 60000, interval_ms = 50, rise = 1, fall = 1 },
      { name = "ok", exec = "echo fine", interval_ms = 50, rise = 1, fall = 1 },
    } } })
    A.start_all(c)
    A.must_leader(c, 15)
    local api = c.nodes[1].api
    local tok = "QC_TOKEN=tok"
    local code, t = run(api, "pass beat 'all good'", tok)
    assert.are.equal(0, code, t.raw)
    assert.are.equal(0, t.rc, t.raw)
    assert.is_truthy(A.wait_for(function()
      local _, l = run(api, "checks")
      return l.raw:find("check beat ttl passing=1 since=%d+ output=all good") and l.raw:find(
        "check ok exec passing=1") and l.rc == 0 and l.n == 2
    end, 10), "both checks should pass")
    t = select(2, run(api, "leader"))
    assert.are.equal(1, t.healthy)
    t = select(2, run(api, "fail beat down", tok))
    assert.are.equal(0, t.rc, t.raw)
    assert.is_truthy(A.wait_for(function()
      local _, l = run(api, "checks")
      return l.raw:find("check beat ttl passing=0 since=%d+ output=down")
    end, 10))
    -- the leader's health as its node knows it: it led unhealthy (nobody else)
    assert.is_truthy(A.wait_for(function()
      local _, l = run(api, "leader")
      return l.healthy == 0
    end, 10))
    t = select(2, run(api, "pass nope", tok))
    assert.are.equal(-5, t.rc, t.raw) -- QC_ENOTFOUND
    t = select(2, run(api, "pass ok", tok))
    assert.are.equal(-2, t.rc, t.raw) -- QC_EINVAL: not a ttl check
    t = select(2, run(api, "pass 'a/b'", tok))
    assert.are.equal(-2, t.rc, t.raw) -- QC_EINVAL: no check can be named so
    t = select(2, run(api, "pass beat")) -- without the token
    assert.are.equal(EIO, t.rc, t.raw)
    t = select(2, run("127.0.0.1:1", "checks"))
    assert.are.equal(EIO, t.rc, t.raw)
  end)

  it("answers QC_ENOLEADER and NULL when no leader is known", function()
    c = A.cluster(3)
    A.start(c, 1) -- alone of three: no quorum, no leader
    assert.is_truthy(A.wait_for(function() return A.json(c.nodes[1].api, "/v1/status") end, 10))
    local code, t = run(c.nodes[1].api, "leader")
    assert.are.equal(0, code, t.raw)
    assert.are.equal(ENOLEADER, t.rc, t.raw)
    assert.are.equal("NULL", t.peer)
    code, t = run(c.nodes[1].api, "is_leader")
    assert.are.equal(0, code, t.raw)
    assert.are.equal(0, t.is_leader, t.raw)
    code, t = run(c.nodes[1].api, "wait 0.2")
    assert.are.equal(0, code, t.raw)
    assert.are.equal(ENOLEADER, t.rc, t.raw)
  end)

  it("answers QC_EIO when the agent cannot be reached, QC_EINVAL for a bad address", function()
    c = A.cluster(1) -- never started: nothing listens on its API port
    for _, args in ipairs { "leader", "wait 1" } do
      local code, t = run(c.nodes[1].api, args)
      assert.are.equal(0, code, t.raw)
      assert.are.equal(EIO, t.rc, t.raw)
      assert.are.equal("NULL", t.peer)
    end
    local code, t = run(c.nodes[1].api, "is_leader")
    assert.are.equal(1, code)
    assert.are.equal(EIO, t.is_leader)
    code, t = run("no-port", "leader")
    assert.are.equal(1, code)
    assert.matches("new rc=%-2", t.raw)
  end)

  it("gives up with QC_EIO on an answer that drips in past its time limit", function()
    c = A.cluster(1) -- only for its directory
    local api
    fake, api = bad_agent.start("drip")
    local file
    bg, file = start(api, "leader", c.dir)
    -- the answer takes 60 s, a header line a second; the call's limit is 5 s
    local out = A.wait_for(function()
      local s = A.read(file) or ""
      return s:match("rc=") and s
    end, 20)
    assert.is_truthy(out, "no answer within 20 s")
    assert.matches("rc=" .. EIO .. " ", out .. " ", 1, true)
    assert.is_truthy(A.wait_for(function() return not A.alive(bg) end, 10))
    bg = nil
  end)

  it("waits on the long-poll until the leader is killed, and answers at the timeout", function()
    c = A.cluster(3)
    A.start_all(c)
    local leader = A.must_leader(c, 15)
    local li = A.index_of(c, leader)
    local api = c.nodes[li % 3 + 1].api
    -- nothing changes: the same leader when the wait ends
    local _, t = run(api, "wait 0.3")
    assert.are.equal(0, t.rc, t.raw)
    assert.are.equal(leader, t.identifier)
    local file
    bg, file = start(api, "wait 120", c.dir)
    assert.is_truthy(A.wait_for(function() return (A.read(file) or ""):match("waiting") end, 10))
    -- "waiting" comes just before the client reads the term it waits on:
    -- give that read time to happen before the leader goes
    os.execute("sleep 1")
    A.signal(c, li, "KILL")
    local out = A.wait_for(function()
      local s = A.read(file) or ""
      return s:match("rc=") and s
    end, 130)
    assert.is_truthy(out)
    assert.is_nil(out:match("identifier=" .. leader .. " "), out)
    -- it has answered, so it ends by itself
    assert.is_truthy(A.wait_for(function() return not A.alive(bg) end, 10))
    bg = nil
  end)

  it("a loop of waits across a leader kill gets the new leader, never the wait's timeout", function()
    c = A.cluster(3)
    A.start_all(c)
    local leader = A.must_leader(c, 15)
    local li = A.index_of(c, leader)
    local file
    bg, file = start(c.nodes[li % 3 + 1].api, "loop 60", c.dir)
    assert.is_truthy(A.wait_for(function() return (A.read(file) or ""):match("waiting") end, 10))
    os.execute("sleep 0.5") -- the first wait is parked
    A.signal(c, li, "KILL")
    -- each call returns as soon as what it knows is out of date: "none"
    -- while the survivors elect, then the new leader; a missed change would
    -- wait out the 60 s
    assert.is_truthy(A.wait_for(function() return not A.alive(bg) end, 30), A.read(file))
    bg = nil
    local lines = {}
    for line in (A.read(file) or ""):gmatch("rc=[^\n]*") do lines[#lines + 1] = line end
    assert.is_true(#lines >= 1, A.read(file))
    for i = 1, #lines - 1 do
      assert.matches("rc=" .. ENOLEADER .. " ", lines[i], 1, true)
    end
    local last = lines[#lines]
    assert.matches("rc=0 ", last, 1, true)
    assert.is_nil(last:match("identifier=" .. leader .. " "), last)
  end)
end)
