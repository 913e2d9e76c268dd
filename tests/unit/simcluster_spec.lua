-- The unit specs' simulated cluster (tests/helpers/simcluster.lua on
-- build/qcraft.so): node:has_ready() says false once every output was
-- taken, so Cluster:process stops there instead of asking 100 times a
-- millisecond for nothing (which made raft_spec take minutes).
local qcraft = require("qcraft")
local Cluster = require("simcluster")

describe("qcraft has_ready", function()
  it("is false once the outputs are taken, true again when there is something new", function()
    local c = Cluster.new(3)
    local l = c:await_leader(2000)
    assert.is_not_nil(l)
    c:advance(10)
    for i = 1, 3 do
      assert.is_false(c.nodes[i]:has_ready(), "node " .. i)
    end
    assert.is_not_nil(c:propose("x"))
    c:advance(100) -- a heartbeat brings the followers the commit
    for i = 1, 3 do
      assert.is_false(c.nodes[i]:has_ready(), "node " .. i)
      assert.are.equal(c.nodes[l]:last_index(), c.nodes[i]:applied(), "node " .. i)
    end
  end)

  it("is a boolean for a fresh node with nothing to do", function()
    local node = qcraft.new { id = 1, peers = { 1, 2, 3 }, heartbeat = 50, election = 300, seed = 1, now = 0 }
    assert.are.equal(0, node:restore(0, 0, {}))
    assert.is_boolean(node:has_ready())
  end)
end)
