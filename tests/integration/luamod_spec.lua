-- The Lua module qcluster (build/lua/qcluster.so): nodes inside this very
-- lua5.4 process, driven by step()/run(), with Lua hooks; and
-- examples/embedded_lua run as three processes, as a user would.
local A = require("agents")
local socket = require("socket")
package.cpath = "./build/lua/?.so;" .. package.cpath
local qcluster = require("qcluster")

-- Config tables for n in-process nodes on fresh loopback ports (the
-- helpers' cluster configs, read back), each with its own data_dir; no HTTP
-- API, quiet logs. Returns the tables and the helpers' cluster.
local function configs(n)
  local c = A.cluster(n, { extra = { api_port = 0, log_level = "error" } })
  local t = {}
  for i = 1, n do
    t[i] = dofile(c.nodes[i].config)
    t[i].data_dir = A.data_dir(c, i)
  end
  return t, c
end

-- Steps the shared loop until fn() is truthy (then returns its value) or
-- timeout seconds pass (then nil).
local function pump(cluster, fn, timeout)
  local deadline = A.now() + (timeout or 10)
  repeat
    local v = fn()
    if v then return v end
    cluster:step(0.02)
  until A.now() > deadline
  return nil
end

local function leaders(clusters)
  local t = {}
  for i, c in pairs(clusters) do
    if c:is_leader() then t[#t + 1] = i end
  end
  return t
end

-- The leader every live node names, once they all agree.
local function agreed(clusters)
  local name
  for _, c in pairs(clusters) do
    local p = c:get_leader_info()
    if not p or (name and p.identifier ~= name) then return nil end
    name = p.identifier
  end
  return name
end

describe("lua module qcluster: in-process nodes", function()
  local spec, clusters, events, any

  -- Hooks that record every call of node i as {name, argument}.
  local function recording(i)
    local t = {}
    for _, name in ipairs { "on_start", "on_elected", "on_demoted", "on_leader_change",
      "on_peer_up", "on_peer_down", "on_stop" } do
      t[name] = function(ev) table.insert(events[i], { name, ev }) end
    end
    return t
  end

  -- The argument of node i's first call of hook name for which pred (if
  -- given) holds.
  local function find(i, name, pred)
    for _, e in ipairs(events[i]) do
      if e[1] == name and (not pred or pred(e[2])) then return e[2] end
    end
  end

  -- The index of the one node that leads, once exactly one does.
  local function sole_leader()
    return pump(any, function()
      local t = leaders(clusters)
      return #t == 1 and t[1]
    end)
  end

  setup(function()
    clusters, events = {}, {}
    local confs
    confs, spec = configs(3)
    for i, conf in ipairs(confs) do
      events[i] = {}
      clusters[i] = assert(qcluster.new(conf, recording(i)))
    end
    any = clusters[1]
  end)

  teardown(function()
    for _, c in pairs(clusters or {}) do c:stop() end
    A.stop(spec)
  end)

  it("three nodes in one Lua state elect exactly one leader, and all name it", function()
    local name = pump(any, function()
      return #leaders(clusters) == 1 and agreed(clusters)
    end)
    assert.is_truthy(name, "no agreed leader")
    local li = leaders(clusters)[1]
    assert.are.equal("node" .. li, name)
    for _ = 1, 20 do
      any:step(0.01)
      assert.is_true(#leaders(clusters) <= 1)
    end
    local p = clusters[li % 3 + 1]:get_leader_info()
    assert.are.equal("127.0.0.1", p.host)
    assert.are.equal(math.tointeger(p.port), p.port)
    assert.is_table(p.metadata)
    assert.are.equal(clusters[li]:get_leader_info().identifier, name)
  end)

  it("start no thread: their hooks run on this thread, inside step", function()
    assert(sole_leader(), "no leader")
    assert.is_truthy(find(1, "on_start"))
    local tasks = A.sh("ls /proc/" .. A.sh("echo $PPID"):gsub("%s+$", "") .. "/task | wc -l")
    assert.are.equal(1, tonumber(tasks))
  end)

  it("hooks run with the agent's argument shapes", function()
    local li = assert(sole_leader(), "no leader")
    local function names_li(ev) return ev.leader and ev.leader.identifier == "node" .. li end
    for i = 1, 3 do
      local start = events[i][1]
      assert.are.equal("on_start", start[1])
      assert.are.equal("node" .. i, start[2].self.identifier)
      assert.is_table(start[2].self.metadata)
      local lc = pump(any, function() return find(i, "on_leader_change", names_li) end)
      assert.is_truthy(lc, "node" .. i .. " never heard node" .. li .. " lead")
      assert.are.equal(spec.base + li, lc.leader.port)
      assert.are.equal(spec.base + 40 + li, lc.leader.metadata.server_port)
      assert.is_true(math.type(lc.term) == "integer" and lc.term > 0)
      local up = pump(any, function() return find(i, "on_peer_up") end)
      assert.is_string(up.identifier)
      assert.is_true(up.up)
      assert.is_string(up.role)
      assert.is_boolean(up.voter)
    end
    local el = pump(any, function() return find(li, "on_elected") end)
    assert.are.equal("node" .. li, el.self.identifier)
    assert.are.equal(spec.base + 40 + li, el.self.metadata.server_port)
    assert.is_true(math.type(el.term) == "integer" and el.term > 0)
  end)

  it("stopping the leader's object makes another take over", function()
    local li = assert(sole_leader(), "no leader")
    local old = clusters[li]
    assert.is_true(old:stop())
    clusters[li] = nil
    local demoted = find(li, "on_demoted")
    assert.are.equal("shutdown", demoted.reason)
    assert.are.equal("on_stop", events[li][#events[li]][1])
    assert.is_false(old:is_leader())
    local name = pump(any == old and clusters[li % 3 + 1] or any, function()
      return #leaders(clusters) == 1 and agreed(clusters)
    end)
    assert.is_truthy(name, "no new leader")
    assert.are_not.equal("node" .. li, name)
    assert.is_true(old:stop()) -- a second stop is harmless
  end)
end)

describe("lua module qcluster: the log written on the host's thread", function()
  local c, pid

  teardown(function()
    if pid then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
    A.stop(c)
  end)

  -- Node 3 runs in a child (to read its log and count its threads) while
  -- nodes 1 and 2 are agents: joining after the leader compacted, it needs
  -- the leader's snapshot, installed as a job of its WAL writer.
  it("a node catches up by the leader's snapshot and goes on writing, inside run, with no thread",
    function()
      c = A.cluster(3, { extra = { snapshot_entries = 50 } })
      A.start(c, 1)
      A.start(c, 2)
      local li = A.index_of(c, A.must_leader(c, 15))
      local api = c.nodes[li].api
      for i = 1, 300 do assert.are.equal(200, (A.kv_put(api, "k" .. i, "v" .. i))) end
      assert.is_truthy(A.wait_for(function()
        return (A.read(c.nodes[li].log) or ""):find("log compacted", 1, true)
      end, 10), "the leader compacted its log")
      local conf = dofile(c.nodes[3].config)
      conf.data_dir = A.data_dir(c, 3)
      conf.log_level = "info"
      local done, out, script = c.dir .. "/done", c.dir .. "/node3.out", c.dir .. "/node3.lua"
      A.write(script, ([[
package.cpath = "./build/lua/?.so;" .. package.cpath
local qcluster = require("qcluster")
local conf, done = %s, %q
local self = io.open("/proc/self/stat"):read("l"):match("^(%%d+)")
local function tasks()
  local p = io.popen("ls /proc/" .. self .. "/task | wc -l")
  local n = tonumber(p:read("l"))
  p:close()
  return n
end
local c = assert(qcluster.new(conf))
local most, deadline = tasks(), os.time() + 60
repeat
  c:run(0.05)
  most = math.max(most, tasks())
  local f = io.open(done)
  if f then f:close() end
until f or os.time() > deadline
print("most tasks", most)
print("stop", c:stop())
]]):format(A.lua_value(conf), done))
      local p = io.popen(string.format("cd %s && exec lua5.4 %s >%s 2>&1 & echo $!", A.root, script, out))
      pid = tonumber(p:read("l"))
      p:close()
      local got = A.wait_for(function()
        local status, value = A.kv_get(c.nodes[3].api, "k300", "?stale")
        return status == 200 and value
      end, 30)
      assert.are.equal("v300", got, A.read(out))
      for i = 1, 20 do assert.are.equal(200, (A.kv_put(api, "w" .. i, "x" .. i))) end
      got = A.wait_for(function()
        local status, value = A.kv_get(c.nodes[3].api, "w20", "?stale")
        return status == 200 and value
      end, 15)
      assert.are.equal("x20", got, A.read(out))
      assert.are.equal(200, (A.kv_get(c.nodes[3].api, "k1", "?stale")))
      A.write(done, "")
      assert.is_truthy(A.wait_for(function() return not A.alive(pid) end, 15), "node 3 ended")
      pid = nil
      local text = A.read(out)
      assert.matches("installed the leader's snapshot at", text)
      assert.matches("most tasks\t1\n", text)
      assert.matches("stop\ttrue\n", text)
    end)
end)

describe("lua module qcluster: configs and errors", function()
  local specs = {}

  -- One node's config table; its files go when the describe ends.
  local function config1()
    local t, c = configs(1)
    specs[#specs + 1] = c
    t[1].peers = nil
    return t[1]
  end

  teardown(function()
    for _, c in ipairs(specs) do A.stop(c) end
  end)

  it("a bad config gives nil and a message naming the key", function()
    local c, err = qcluster.new({ identifier = "x", listen_port = "seven" })
    assert.is_nil(c)
    assert.matches("listen_port", err)
    c, err = qcluster.new({ identifier = "x", listen_port = 7001, lisen_host = "h" })
    assert.is_nil(c)
    assert.matches("lisen_host", err)
    c, err = qcluster.new("/nonexistent/missing.lua")
    assert.is_nil(c)
    assert.matches("missing.lua", err)
  end)

  it("a start that fails says why", function()
    local conf = config1()
    local s = assert(socket.bind("127.0.0.1", conf.listen_port)) -- its cluster port
    local c, err = qcluster.new(conf)
    s:close()
    assert.is_nil(c)
    assert.matches("qcluster.new: cannot start the node: net: cannot listen on 127.0.0.1:"
      .. conf.listen_port .. ": Address already in use", err, 1, true)
  end)

  it("hooks must be known names and functions", function()
    local conf = config1()
    local c, err = qcluster.new(conf, { on_elcted = function() end })
    assert.is_nil(c)
    assert.matches("on_elcted", err)
    conf = config1()
    conf.on_elected = "yes"
    c, err = qcluster.new(conf)
    assert.is_nil(c)
    assert.matches("on_elected: expected a function", err)
    assert.has_error(function() qcluster.new(42) end)
  end)

  it("a single node leads; a failing hook is logged and the node carries on", function()
    -- in a child process, to read its log
    local conf = config1()
    local script = specs[#specs].dir .. "/solo.lua"
    A.write(script, ([[
package.cpath = "./build/lua/?.so;" .. package.cpath
local qcluster = require("qcluster")
local conf = %s
conf.log_level = "info"
local seen, c = {}, nil
conf.on_start = function() error("boom in on_start") end
conf.hooks = { on_elected = function(ev) seen.elected = ev.term end }
c = assert(qcluster.new(conf, {
  on_leader_change = function(ev)
    seen.leader = ev.leader and ev.leader.identifier
    c:step(0) -- not allowed inside a hook: raises, is logged, changes nothing
  end,
}))
for _ = 1, 500 do
  if seen.leader then break end
  c:step(0.02)
end
print("leader", seen.elected, seen.leader, c:get_leader_info().identifier, c:is_leader())
print("run", c:run(0.05))
print("stop", c:stop(), c:is_leader())
]]):format(A.lua_value(conf)))
    local out, code = A.sh("lua5.4 " .. script)
    assert.are.equal(0, code, out)
    assert.matches("hook: on_start failed: [^\n]*boom in on_start", out)
    assert.matches("hook: on_leader_change failed: [^\n]*step called from a hook", out)
    assert.matches("leader\t1\tnode1\tnode1\ttrue\n", out)
    assert.matches("run\ttrue\n", out)
    assert.matches("stop\ttrue\tfalse\n", out)
  end)

  it("an object stopped from its own hook and dropped stays alive until it has really stopped",
    function()
      -- in a child process: before, a GC in on_stop freed the node mid-stop
      local conf, drv = config1(), config1()
      local script = specs[#specs].dir .. "/gc_stop.lua"
      A.write(script, ([[
package.cpath = "./build/lua/?.so;" .. package.cpath
local qcluster = require("qcluster")
local conf, drv = %s, %s
local weak = setmetatable({}, { __mode = "v" })
local seen, holder = {}, {}
conf.on_elected = function()
  seen.asked = holder.c:stop() -- from a hook: only asks
  seen.state = tostring(holder.c)
  holder.c = nil -- the program drops its only reference
end
conf.on_stop = function()
  collectgarbage("collect")
  collectgarbage("collect")
  seen.alive = weak.c ~= nil
  seen.stopped = true
end
holder.c = assert(qcluster.new(conf))
weak.c = holder.c
local driver = assert(qcluster.new(drv)) -- steps the shared loop
for _ = 1, 500 do
  if seen.stopped then break end
  driver:step(0.02)
end
collectgarbage("collect")
collectgarbage("collect")
print("asked", seen.asked, seen.state)
print("on_stop", seen.stopped, seen.alive)
print("collected", weak.c == nil)
print("driver", driver:stop())
]]):format(A.lua_value(conf), A.lua_value(drv)))
      local out, code = A.sh("lua5.4 " .. script)
      assert.are.equal(0, code, out)
      assert.matches("asked\ttrue\tqcluster.cluster %(running%)\n", out)
      assert.matches("on_stop\ttrue\ttrue\n", out)
      assert.matches("collected\ttrue\n", out)
      assert.matches("driver\ttrue\n", out)
    end)

  it("a host's poll loop drives a node through fd() and timeout()", function()
    local conf = config1()
    local c <close> = assert(qcluster.new(conf))
    local fd = c:fd()
    assert.is_true(math.type(fd) == "integer" and fd >= 0)
    local t = c:timeout()
    assert.is_true(t >= 0 and t <= 1)
    -- luasocket's select polls anything with a getfd method
    local poll = { getfd = function() return fd end, dirty = function() return false end }
    local deadline = A.now() + 10
    while not c:is_leader() and A.now() < deadline do
      socket.select({ poll }, nil, c:timeout())
      c:step(0)
    end
    assert.is_true(c:is_leader())
    -- with everything handled the fd is quiet; a connection to the node's
    -- cluster port makes it readable
    c:step(0)
    assert.are.same({}, (socket.select({ poll }, nil, 0)))
    local conn = assert(socket.connect("127.0.0.1", conf.listen_port))
    assert.are.equal(poll, (socket.select({ poll }, nil, 5))[1])
    c:step(0)
    conn:close()
  end)
end)

describe("examples/embedded_lua", function()
  local c

  local function start(i, seconds)
    local node = c.nodes[i]
    local cmd = ("cd %s && exec lua5.4 %s/examples/embedded_lua/embedded_lua.lua %s %s >>%s 2>&1 & echo $!")
      :format(c.dir, A.root, node.config, seconds or "", node.log)
    local p = io.popen(cmd)
    node.pid = tonumber(p:read("l"))
    p:close()
  end

  setup(function()
    c = A.cluster(3)
    for i = 1, 3 do start(i) end
  end)

  teardown(function() A.stop(c) end)

  it("three processes elect one leader that works while the followers report it", function()
    local leader = A.must_leader(c, 15)
    local li = A.index_of(c, leader)
    for i = 1, 3 do
      local want = i == li and leader .. " is doing some work..." or "This is the leader: " .. leader
      assert.is_truthy(A.wait_for(function()
        return (A.read(c.nodes[i].log) or ""):find(want, 1, true)
      end, 10), c.nodes[i].id .. " never said: " .. want)
    end
    assert.matches("elected leader for term %d+", A.read(c.nodes[li].log))
    local follower = A.read(c.nodes[li % 3 + 1].log)
    assert.is_truthy(follower:find("its server_port is " .. (c.base + 40 + li), 1, true))
  end)

  it("SIGTERM stops the leader cleanly (hand-over first) and another takes over", function()
    local leader = A.must_leader(c, 15)
    local li = A.index_of(c, leader)
    assert.is_true(A.signal(c, li, "TERM"))
    local log = A.read(c.nodes[li].log)
    assert.matches("demoted in term %d+ %(shutdown%)", log)
    assert.matches(leader .. " stopped\n$", log)
    local new = A.must_leader(c, 15)
    assert.are_not.equal(leader, new)
  end)
end)
