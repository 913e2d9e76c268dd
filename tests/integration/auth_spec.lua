-- Real agents with a secret: the cluster works, a joiner needs the same
-- secret, and a node of another cluster pointed at this one never merges.
local A = require("agents")

local SECRET = "s3cret-long-enough-for-no-warning"

local function metric(api, name)
  local _, body = A.http(api, "GET", "/metrics")
  return tonumber((body or ""):match("\n" .. name .. " ([%d%.e+]+)"))
end

local function member(api, id)
  for _, m in ipairs(A.json(api, "/v1/members") or {}) do
    if m.identifier == id then return m end
  end
end

describe("agents with a secret", function()
  local c, other

  after_each(function()
    if c then A.stop(c) end
    if other then A.stop(other) end
    c, other = nil, nil
  end)

  it("elect, take writes, and let in only a joiner with the same secret", function()
    c = A.cluster(3, { extra = { secret = SECRET } })
    A.start_all(c)
    local leader = A.must_leader(c, 15)
    assert.are.equal(200, A.http(c.nodes[A.index_of(c, leader)].api, "PUT", "/v1/kv/x", "1"))
    for i = 1, 3 do
      assert.are.equal(0, metric(c.nodes[i].api, "qcluster_auth_failures_total"))
      assert.are.equal(0, metric(c.nodes[i].api, "qcluster_bad_frames_total"))
    end
    local bad = A.add_node(c, { extra = { secret = "not-the-same-secret-at-all" } })
    A.start(c, bad)
    A.sleep(2)
    assert.is_nil(member(c.nodes[1].api, "node" .. bad), "the wrong secret joined")
    A.signal(c, bad, "KILL")
    local good = A.add_node(c, { extra = { secret = SECRET } })
    A.start(c, good)
    assert.is_truthy(A.wait_for(function()
      local m = member(c.nodes[1].api, "node" .. good)
      return m and m.voter
    end, 20), "node" .. good .. " joined with the secret")
  end)

  it("a node of another secret pointed at this cluster never merges with it", function()
    c = A.cluster(3, { extra = { secret = "first-secret-long-enough-xx" } })
    A.start_all(c)
    local leader = A.must_leader(c, 15)
    other = A.cluster(2, { base = c.base + 25, extra = { secret = "second-secret-long-enough-x" } })
    -- other's node2 takes c's node1 port for its peer node1
    local conf = A.read(other.nodes[2].config):gsub('%["port"%] = ' .. (other.base + 1),
      '["port"] = ' .. (c.base + 1))
    A.write(other.nodes[2].config, conf)
    A.start(other, 2)
    A.sleep(2)
    assert.are_not.equal("leader", A.json(other.nodes[2].api, "/v1/status").role)
    assert.is_true(metric(other.nodes[2].api, "qcluster_auth_failures_total") > 0)
    assert.are.equal(leader, A.agreed_leader(c, 5), "the cluster did not notice")
  end)
end)
