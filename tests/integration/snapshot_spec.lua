-- Snapshots on real agents: a follower that was down while the log moved
-- past a snapshot is caught up by InstallSnapshot, and keeps it on restart.
local A = require("agents")

describe("snapshots", function()
  local c

  setup(function()
    c = A.cluster(3, { extra = { snapshot_entries = 50 } })
    A.start_all(c)
  end)

  teardown(function() A.stop(c) end)

  it("a follower down for hundreds of writes catches up by snapshot", function()
    local leader = A.must_leader(c)
    local li = A.index_of(c, leader)
    local fi = li % 3 + 1
    A.signal(c, fi, "KILL")
    local api = c.nodes[li].api
    for k = 1, 300 do
      local status = A.http(api, "PUT", "/v1/kv/key" .. k, "value" .. k)
      assert.are.equal(200, status, "put " .. k)
    end
    assert.is_truthy((A.read(c.nodes[li].log) or ""):find("log compacted", 1, true))
    A.start(c, fi)
    local follower = c.nodes[fi].api
    assert.is_truthy(A.wait_for(function()
      local status, body = A.http(follower, "GET", "/v1/kv/key300?stale")
      return status == 200 and body == "value300"
    end, 10), "the follower caught up")
    assert.is_truthy(A.read(c.nodes[fi].log):find("installed the leader's snapshot", 1, true))
    local status, body = A.http(follower, "GET", "/v1/kv/key7?stale")
    assert.are.equal(200, status)
    assert.are.equal("value7", body)
    -- restarted again, it recovers from its own snapshot and log
    A.signal(c, fi, "TERM")
    A.start(c, fi)
    assert.is_truthy(A.wait_for(function()
      local s2, b2 = A.http(follower, "GET", "/v1/kv/key150?stale")
      return s2 == 200 and b2 == "value150"
    end, 10))
  end)

  it("a snapshot bigger than a frame (12 MiB) catches a follower up in parts", function()
    local leader = A.must_leader(c)
    local li = A.index_of(c, leader)
    local fi = li % 3 + 1
    A.signal(c, fi, "KILL")
    local api = c.nodes[li].api
    local function big(k) return string.rep(string.char(64 + k), 1000000) end
    for k = 1, 12 do
      assert.are.equal(200, A.http(api, "PUT", "/v1/kv/big" .. k, big(k)), "put " .. k)
    end
    -- enough small writes after them that the log moves past a new snapshot
    for k = 1, 60 do
      assert.are.equal(200, A.http(api, "PUT", "/v1/kv/after" .. k, "v"), "put after " .. k)
    end
    local mark = #(A.read(c.nodes[fi].log) or "")
    A.start(c, fi)
    local follower = c.nodes[fi].api
    assert.is_truthy(A.wait_for(function()
      local status, body = A.http(follower, "GET", "/v1/kv/after60?stale")
      return status == 200 and body == "v"
    end, 20), "the follower caught up")
    local log = A.read(c.nodes[fi].log):sub(mark + 1)
    local size = tonumber(log:match("installed the leader's snapshot at %d+ %((%d+) bytes"))
    assert.is_truthy(size and size > 12000000, "installed a snapshot of " .. tostring(size))
    for k = 1, 12 do
      local status, body = A.http(follower, "GET", "/v1/kv/big" .. k .. "?stale")
      assert.are.equal(200, status)
      assert.is_true(body == big(k), "big" .. k .. " intact")
    end
  end)
end)
