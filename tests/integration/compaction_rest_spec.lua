-- A node whose newest write is its own compaction still sends what it
-- holds: after a burst of writes ends with each node's snapshot, the
-- followers go on answering the leader's heartbeats, and it keeps leading.
local A = require("agents")
local socket = require("socket")

-- PUTs name1..nameN pipelined on one connection, so that the burst ends
-- before the snapshot children do; every answer must be 200.
local function burst(api, name, n)
  local host, port = api:match("^(.*):(%d+)$")
  local s = socket.tcp()
  s:settimeout(15)
  assert(s:connect(host, tonumber(port)))
  local reqs = {}
  for i = 1, n do
    reqs[#reqs + 1] = string.format("PUT /v1/kv/%s%d HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nv", name, i)
  end
  assert(s:send(table.concat(reqs)))
  for i = 1, n do
    local line = assert(s:receive("*l"))
    assert(line:match("^HTTP/1%.1 200"), name .. i .. ": " .. line)
    local len = 0
    while true do
      local h = assert(s:receive("*l"))
      if h == "" then break end
      len = tonumber(h:lower():match("^content%-length:%s*(%d+)")) or len
    end
    if len > 0 then assert(s:receive(len)) end
  end
  s:close()
end

describe("compaction at rest", function()
  local c

  setup(function()
    c = A.cluster(3, { extra = { snapshot_entries = 50 } })
    A.start_all(c)
  end)

  teardown(function() A.stop(c) end)

  it("a leader keeps its lease when the last write of every node was a compaction", function()
    local leader = A.must_leader(c)
    local li = A.index_of(c, leader)
    local function compactions(i)
      local n = 0
      for _ in (A.read(c.nodes[i].log) or ""):gmatch("log compacted") do n = n + 1 end
      return n
    end
    -- rounds: a burst ends before the snapshot children do, so the last
    -- write a node queues is often its compaction; each round has a
    -- fresh chance of that on every node
    for round = 1, 5 do
      local before = { compactions(1), compactions(2), compactions(3) }
      burst(c.nodes[li].api, "r" .. round .. "k", 100)
      assert.is_truthy(A.wait_for(function()
        for i = 1, 3 do
          if compactions(i) <= before[i] then return false end
        end
        return true
      end, 30), "every node compacted its log in round " .. round)
      -- at rest: only heartbeats, for five election timeouts
      A.sleep(1.5)
      assert.is_nil((A.read(c.nodes[li].log) or ""):find("lost_quorum", 1, true),
        "the leader lost its quorum at rest in round " .. round)
    end
    assert.are.equal(leader, A.must_leader(c))
    assert.are.equal(200, (A.http(c.nodes[li].api, "PUT", "/v1/kv/after", "v")))
  end)
end)
