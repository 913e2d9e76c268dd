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
end)
