-- Every example runs as a user would start it (a copy in a temp dir, so its
-- data_dir stays out of the tree) and does what its README promises.
local A = require("agents")

describe("examples/bare_minimum", function()
  local c

  setup(function()
    local dir = A.sh("mktemp -d /tmp/qc-example-XXXXXX"):gsub("%s+$", "")
    os.execute("cp examples/bare_minimum/*.json examples/bare_minimum/*.lua " .. dir)
    c = { n = 3, dir = dir, nodes = {} }
    for i, name in ipairs { "server_a", "server_b", "server_c" } do
      c.nodes[i] = { id = name, config = dir .. "/" .. name .. ".json", api = "127.0.0.1:" .. (8000 + i),
        log = dir .. "/" .. name .. ".log", events = dir .. "/" .. name .. ".events" }
    end
    A.start_all(c)
  end)

  teardown(function() A.stop(c) end)

  it("elects one leader that works while the followers report it", function()
    local leader = A.must_leader(c)
    local li = A.index_of(c, leader)
    assert.is_truthy(A.wait_for(function()
      for i = 1, 3 do
        local log = A.read(c.nodes[i].log) or ""
        if i == li and not log:find(leader .. " is doing some work...", 1, true) then return false end
        if i ~= li and not log:find("This is the leader: " .. leader, 1, true) then return false end
      end
      return true
    end, 5))
    local port = 9000 + li
    assert.is_truthy((A.read(c.nodes[li % 3 + 1].log) or ""):find("its server_port is " .. port, 1, true))
  end)

  it("fails over when the leader dies", function()
    local leader = A.must_leader(c)
    A.signal(c, A.index_of(c, leader), "KILL")
    local new = A.must_leader(c)
    assert.are_not.equal(leader, new)
  end)
end)

describe("examples/replicated_config", function()
  local c

  local function mode_of(i)
    return ((A.read(c.dir .. "/" .. c.nodes[i].id .. ".mode") or ""):gsub("%s+$", ""))
  end

  local function generation(v)
    return tonumber(v:match("^primary%-on%-[%w_]+ %(generation (%d+)%)$"))
  end

  -- Waits until every live node's file holds the same setting, published by
  -- the agreed leader; returns it.
  local function settled(leader)
    return A.wait_for(function()
      local v
      for i = 1, 3 do
        if c.nodes[i].pid then
          local m = mode_of(i)
          if not m:find("^primary%-on%-" .. leader .. " ") then return nil end
          if v and v ~= m then return nil end
          v = m
        end
      end
      return v
    end, 10)
  end

  setup(function()
    local dir = A.sh("mktemp -d /tmp/qc-example-XXXXXX"):gsub("%s+$", "")
    os.execute("cp examples/replicated_config/*.lua " .. dir)
    c = { n = 3, dir = dir, nodes = {} }
    for i, name in ipairs { "server_a", "server_b", "server_c" } do
      c.nodes[i] = { id = name, config = dir .. "/" .. name .. ".lua", api = "127.0.0.1:" .. (8100 + i),
        log = dir .. "/" .. name .. ".log", events = dir .. "/" .. name .. ".events" }
    end
    A.start_all(c)
  end)

  teardown(function() A.stop(c) end)

  it("the leader publishes config/mode and every node sees it", function()
    local leader = A.must_leader(c)
    local v = settled(leader)
    assert.is_truthy(v, "files: " .. mode_of(1) .. " | " .. mode_of(2) .. " | " .. mode_of(3))
    assert.is_number(generation(v))
    for i = 1, 3 do
      assert.is_truthy((A.read(c.nodes[i].log) or ""):find("config/mode is now " .. v, 1, true))
    end
    local status, value = A.kv_get(c.nodes[A.index_of(c, leader)].api, "config/mode")
    assert.are.equal(200, status)
    assert.are.equal(v, value)
  end)

  it("survives a fail-over: the new leader reads the setting and bumps it", function()
    local leader = A.must_leader(c)
    local before = assert(settled(leader))
    A.signal(c, A.index_of(c, leader), "KILL")
    local new = A.must_leader(c)
    assert.are_not.equal(leader, new)
    local after = settled(new)
    assert.is_truthy(after, "files: " .. mode_of(1) .. " | " .. mode_of(2) .. " | " .. mode_of(3))
    assert.is_true(generation(after) > generation(before), before .. " -> " .. after)
    local status, value = A.kv_get(c.nodes[A.index_of(c, new)].api, "config/mode")
    assert.are.equal(200, status)
    assert.are.equal(after, value)
  end)
end)

describe("examples/pair_with_witness", function()
  local c

  local function service(i)
    return ((A.read(c.dir .. "/" .. c.nodes[i].id .. ".service") or ""):gsub("%s+$", ""))
  end

  setup(function()
    local dir = A.sh("mktemp -d /tmp/qc-example-XXXXXX"):gsub("%s+$", "")
    os.execute("cp examples/pair_with_witness/*.lua " .. dir)
    c = { n = 3, dir = dir, nodes = {} }
    for i, name in ipairs { "server_a", "server_b", "witness" } do
      c.nodes[i] = { id = name, config = dir .. "/" .. name .. ".lua", api = "127.0.0.1:" .. (8200 + i),
        log = dir .. "/" .. name .. ".log", events = dir .. "/" .. name .. ".events" }
    end
    A.start_all(c)
  end)

  teardown(function() A.stop(c) end)

  it("moves the service between the two servers and never to the witness", function()
    for round = 1, 2 do
      local leader = A.must_leader(c)
      assert.are_not.equal("witness", leader)
      local li = A.index_of(c, leader)
      local other = li == 1 and 2 or 1
      assert.is_truthy(A.wait_for(function()
        return service(li):find("^active") and service(other):find("^standby")
      end, 5), "round " .. round .. ": " .. service(1) .. " | " .. service(2))
      local term = tonumber(service(li):match("term=(%d+)"))
      A.signal(c, li, "KILL")
      c.nodes[li].pid = nil
      assert.are.equal(c.nodes[other].id, A.agreed_leader(c, 10))
      assert.is_truthy(A.wait_for(function() return service(other):find("^active") end, 5))
      assert.is_true(tonumber(service(other):match("term=(%d+)")) > term, "a higher term fences")
      A.start(c, li)
      assert.is_truthy(A.wait_for(function() return service(li):find("^standby") end, 5))
    end
    assert.are.equal("", service(3), "the witness never ran the service")
    assert.are.equal("witness", A.json(c.nodes[3].api, "/v1/status").role)
  end)
end)
