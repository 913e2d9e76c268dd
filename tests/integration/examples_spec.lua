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
