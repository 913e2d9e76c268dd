-- A write sent to a follower is forwarded to the leader and answered after
-- commit, like one sent to the leader.
local A = require("agents")
local cjson = require("cjson.safe")

describe("writes through a follower", function()
  local c

  setup(function()
    c = A.cluster(3)
    A.start_all(c)
  end)

  teardown(function() A.stop(c) end)

  it("are forwarded to the leader, committed, and answered with the revision", function()
    local leader = A.must_leader(c)
    local li = A.index_of(c, leader)
    local follower = c.nodes[li % 3 + 1].api
    local status, body = A.http(follower, "PUT", "/v1/kv/via-follower", "hello")
    assert.are.equal(200, status, body)
    local rev = cjson.decode(body).revision
    assert.is_true(rev > 0)
    local s2, b2, h2 = A.http(c.nodes[li].api, "GET", "/v1/kv/via-follower")
    assert.are.equal(200, s2)
    assert.are.equal("hello", b2)
    assert.are.equal(string.format("%d", rev), h2["x-qcluster-revision"])
    status, body = A.http(follower, "PUT", "/v1/kv/via-follower?cas=0", "again")
    assert.are.equal(409, status, body)
    status = A.http(follower, "DELETE", "/v1/kv/via-follower")
    assert.are.equal(200, status)
    -- a linearizable read on a follower sees the write just acknowledged
    status = A.http(c.nodes[li].api, "PUT", "/v1/kv/fresh", "v1")
    assert.are.equal(200, status)
    local s3, b3 = A.http(follower, "GET", "/v1/kv/fresh")
    assert.are.equal(200, s3)
    assert.are.equal("v1", b3)
    local out, code = A.cli("kv put cli-key cli-value", follower)
    assert.are.equal(0, code, out)
    out, code = A.cli("kv get cli-key", c.nodes[li].api)
    assert.are.equal(0, code)
    assert.are.equal("cli-value", out)
  end)
end)

describe("configured key-value limits", function()
  local c

  setup(function()
    c = A.cluster(3, { extra = { kv_max_key_bytes = 8, kv_max_value_bytes = 10 } })
    A.start_all(c)
  end)

  teardown(function() A.stop(c) end)

  it("refuse a key or a value over them with 413, on the leader and through a follower", function()
    local leader = A.must_leader(c)
    local li = A.index_of(c, leader)
    for _, api in ipairs { c.nodes[li].api, c.nodes[li % 3 + 1].api } do
      assert.are.equal(200, (A.http(api, "PUT", "/v1/kv/k", string.rep("x", 10))))
      assert.are.equal(413, (A.http(api, "PUT", "/v1/kv/k", string.rep("x", 11))))
      assert.are.equal(413, (A.http(api, "PUT", "/v1/kv/longkey12", "v")))
    end
  end)
end)
