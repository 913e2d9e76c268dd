-- Snapshots on real agents: a follower that was down while the log moved
-- past a snapshot is caught up by InstallSnapshot, and keeps it on restart.
local A = require("agents")
local cjson = require("cjson")

-- The index of the newest snapshot node i took itself and compacted its
-- log to (0: none yet). The snapshot child runs in the background at the
-- lowest CPU priority, so on a busy machine it ends well after the writes.
local function compacted(c, i)
  local newest = 0
  for n in (A.read(c.nodes[i].log) or ""):gmatch("snapshot at (%d+) %([^\n]-log compacted") do
    newest = math.max(newest, tonumber(n))
  end
  return newest
end

-- Waits until node i's log is compacted to at least index, so that a
-- follower behind it can only catch up by the snapshot.
local function wait_compacted(c, i, index)
  return A.wait_for(function() return compacted(c, i) >= index end, 60)
end

-- PUT key = value to the node w.i leads, sent again to whichever node
-- leads then after a 503 or 504: with one follower down, a stall of the
-- other one on a loaded machine lapses the leader's lease. The status and
-- body of the last answer.
local function put(c, w, key, value)
  local status, body
  for _ = 1, 10 do
    status, body = A.http(c.nodes[w.i].api, "PUT", "/v1/kv/" .. key, value)
    if status ~= 503 and status ~= 504 then break end
    w.i = A.index_of(c, A.must_leader(c, 15))
  end
  return status, body
end

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
    local w = { i = li }
    local last
    for k = 1, 300 do
      local status, body = put(c, w, "key" .. k, "value" .. k)
      assert.are.equal(200, status, "put " .. k)
      if k == 100 then last = cjson.decode(body).revision end
    end
    assert.is_truthy(wait_compacted(c, w.i, last), "the leader compacted past key100")
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
    local w = { i = li }
    local function big(k) return string.rep(string.char(64 + k), 1000000) end
    local last
    for k = 1, 12 do
      local status, body = put(c, w, "big" .. k, big(k))
      assert.are.equal(200, status, "put " .. k)
      last = cjson.decode(body).revision
    end
    -- small writes until the leader took a snapshot holding every big
    -- value and dropped the log before it (the follower's entries with
    -- it): then only that snapshot catches the follower up
    local n = 0
    local past = A.wait_for(function()
      n = n + 1
      assert.are.equal(200, (put(c, w, "after" .. n, "v")), "put after " .. n)
      return compacted(c, w.i) >= last
    end, 60)
    assert.is_truthy(past, "the leader compacted past big12")
    local mark = #(A.read(c.nodes[fi].log) or "")
    A.start(c, fi)
    local follower = c.nodes[fi].api
    assert.is_truthy(A.wait_for(function()
      local status, body = A.http(follower, "GET", "/v1/kv/after" .. n .. "?stale")
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
