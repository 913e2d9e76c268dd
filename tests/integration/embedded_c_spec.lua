-- examples/embedded_c as a cluster: three programs that each run a node
-- inside themselves (two on their own libev loop, one on a thread of its
-- own), configs from tests/helpers/agents.lua. One leader; SIGTERM of the
-- leader hands over to another; every program exits cleanly.
local agents = require("tests.helpers.agents")

local function start(c, i, thread)
  local node = c.nodes[i]
  local p = io.popen(string.format("cd %s && exec %s/build/embedded_c %s%s >>%s 2>&1 & echo $!",
    c.dir, agents.root, node.config, thread and " --thread" or "", node.log))
  node.pid = tonumber(p:read("l"))
  p:close()
end

local function log_has(c, i, text)
  return (agents.read(c.nodes[i].log) or ""):find(text, 1, true) ~= nil
end

local function wait_log(c, i, text)
  assert(agents.wait_for(function() return log_has(c, i, text) end, 15),
    string.format("%s never printed %q; its output ends:\n%s", c.nodes[i].id, text,
      (agents.read(c.nodes[i].log) or ""):sub(-1500)))
end

local function leaders(c)
  local n = 0
  for i = 1, c.n do
    if c.nodes[i].pid then
      local st = agents.json(c.nodes[i].api, "/v1/status")
      if st and st.role == "leader" then n = n + 1 end
    end
  end
  return n
end

describe("examples/embedded_c", function()
  local c
  after_each(function() agents.stop(c) end)

  it("three programs elect one leader, hand over on SIGTERM of the leader, and exit cleanly", function()
    c = agents.cluster(3)
    start(c, 1, false)
    start(c, 2, true)
    start(c, 3, false)
    local first = agents.must_leader(c, 15)
    assert.are.equal(1, leaders(c))
    local li = agents.index_of(c, first)
    wait_log(c, li, "on_elected: leader for term")
    wait_log(c, li, "I am the leader!")
    for i = 1, c.n do
      if i ~= li then wait_log(c, i, "the leader is " .. first .. " at 127.0.0.1:" .. c.nodes[li].port) end
    end

    assert.is_true(agents.signal(c, li, "TERM"), "the leader did not exit on SIGTERM")
    assert.is_true(log_has(c, li, "on_demoted: term"))
    assert.is_true(log_has(c, li, "on_stop: stopped by the program"))
    assert.is_true(log_has(c, li, "exited cleanly"))
    local second = agents.must_leader(c, 15)
    assert.are_not.equal(first, second)
    assert.are.equal(1, leaders(c))
    local si = agents.index_of(c, second)
    wait_log(c, si, "on_elected: leader for term")
    wait_log(c, si, "I am the leader!")

    for i = 1, c.n do
      if c.nodes[i].pid then
        assert.is_true(agents.signal(c, i, "TERM"), c.nodes[i].id .. " did not exit on SIGTERM")
        assert.is_true(log_has(c, i, "exited cleanly"), c.nodes[i].id .. " did not exit cleanly")
      end
    end
  end)
end)
