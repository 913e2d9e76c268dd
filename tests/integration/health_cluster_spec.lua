-- Every member's health, cluster-wide, on real agents (README "Health
-- checks"): a node that turns unhealthy shows so on every node's
-- /v1/members (with the failing check), in ?healthy=true discovery, in
-- `qcluster members` and in Lua's qcluster.peers(), and back when it
-- recovers; its flaps write nothing to the log; a malformed HEALTH frame
-- is refused and counted while the cluster carries on.
local A = require("agents")
local socket = require("socket")

-- Each node's check fails while the file "<its events file>.down" exists
-- ($QC_EVENTS is each agent's own); a Lua timer writes what peers() says
-- into "<events>.peers" every 50 ms.
local HOOKS = [[
local qcluster = require("qcluster")
local path = os.getenv("QC_EVENTS") .. ".peers"
local function dump()
  local out = {}
  for _, p in ipairs(qcluster.peers()) do
    out[#out + 1] = p.identifier .. "=" .. tostring(p.healthy)
  end
  table.sort(out)
  local f = io.open(path .. ".tmp", "w")
  f:write(table.concat(out, " "), "\n")
  f:close()
  os.rename(path .. ".tmp", path)
  qcluster.after(50, dump)
end
return { on_start = function() qcluster.after(50, dump) end }
]]

local function members(c, i, query)
  local list, status = A.json(c.nodes[i].api, "/v1/members" .. (query or ""))
  if status ~= 200 or type(list) ~= "table" then return nil end
  local by = {}
  for _, m in ipairs(list) do by[m.identifier] = m end
  return by, list
end

-- The failing checks' names of who, as node i knows them.
local function failing(m)
  local out = {}
  for _, k in ipairs(m.checks or {}) do
    if k.status == "failing" then out[#out + 1] = k.name end
  end
  return table.concat(out, ",")
end

-- Whether every node says who is healthy (want true) or not (false, with
-- the check "alive" failing), in every surface.
local function everyone_sees(c, who, want)
  for i = 1, c.n do
    local by = members(c, i)
    local m = by and by[who]
    if not m or m.healthy ~= want then return false end
    if not want and failing(m) ~= "alive" then return false end
    if want and failing(m) ~= "" then return false end
    local only = members(c, i, "?healthy=true")
    if not only or (only[who] ~= nil) ~= want then return false end
    local _, status = A.json(c.nodes[i].api, "/v1/status")
    if type(status) ~= "number" then return false end
  end
  return true
end

local function commit_indexes(c)
  local t = {}
  for i = 1, c.n do t[i] = A.json(c.nodes[i].api, "/v1/status").commit_index end
  return t
end

describe("health across the cluster", function()
  local c

  setup(function()
    c = A.cluster(3, { hooks = HOOKS, extra = {
      heartbeat_ms = 50, election_timeout_ms = 300,
      -- a 1 s timeout (the interval): a shell on a loaded host may take
      -- more than 50 ms to start, and a check killed at its timeout made
      -- a node unhealthy with no .down file (a leader then handed over)
      checks = { { name = "alive", exec = 'test ! -e "$QC_EVENTS.down"', interval_ms = 1000,
        rise = 1, fall = 1 } },
    } })
    A.start_all(c)
    A.must_leader(c)
  end)

  teardown(function() A.stop(c) end)

  it("every node learns every member's health, with its checks", function()
    assert.is_truthy(A.wait_for(function()
      for i = 1, c.n do
        local by, list = members(c, i, "?healthy=true")
        if not by or #list ~= 3 then return false end
      end
      return true
    end, 10), "every node should list three healthy members")
    local by = members(c, 2)
    assert.are.same({ { name = "alive", status = "passing" } }, by.node1.checks)
    assert.are.same({ { name = "alive", status = "passing" } }, by.node2.checks)
    local leader = A.json(c.nodes[2].api, "/v1/leader")
    assert.is_true(leader.healthy)
    for _, p in ipairs(A.json(c.nodes[1].api, "/v1/status").peers) do
      assert.is_true(p.healthy, p.identifier)
    end
  end)

  it("a follower turning unhealthy and back shows on every node and writes no log entry",
    function()
    local leader = A.must_leader(c)
    local f = leader == "node3" and 2 or 3 -- a follower: leadership stays put
    local who = c.nodes[f].id
    -- an idle cluster: wait until nothing more is committed
    local before
    assert.is_truthy(A.wait_for(function()
      local a = commit_indexes(c)
      A.sleep(0.5)
      local b = commit_indexes(c)
      before = b
      return a[1] == b[1] and a[2] == b[2] and a[3] == b[3] and b[1] == b[2] and b[2] == b[3]
    end, 15), "the cluster should settle")

    for _ = 1, 3 do
      A.write(c.nodes[f].events .. ".down", "")
      assert.is_truthy(A.wait_for(function() return everyone_sees(c, who, false) end, 5),
        who .. " should show unhealthy on every node")
      -- the CLI of another node shows it with the failing check
      local other = f == 1 and 2 or 1
      local out, code = A.cli("members", c.nodes[other].api)
      assert.are.equal(0, code)
      assert.matches("\n" .. who .. "%s+%S+%s+yes%s+no:alive%s", out)
      -- Lua's peers() on the other nodes
      assert.is_truthy(A.wait_for(function()
        return (A.read(c.nodes[other].events .. ".peers") or ""):find(who .. "=false", 1, true)
      end, 5), "qcluster.peers() should say " .. who .. " is not healthy")
      os.remove(c.nodes[f].events .. ".down")
      assert.is_truthy(A.wait_for(function() return everyone_sees(c, who, true) end, 5),
        who .. " should show healthy again on every node")
      assert.is_truthy(A.wait_for(function()
        return (A.read(c.nodes[other].events .. ".peers") or ""):find(who .. "=true", 1, true)
      end, 5))
    end
    assert.are.same(before, commit_indexes(c))
    assert.are.equal(leader, A.must_leader(c))
  end)

  it("a stopped member is not healthy to the others; back, it is again", function()
    local leader = A.must_leader(c)
    local f = leader == "node3" and 2 or 3
    local who = c.nodes[f].id
    A.signal(c, f, "STOP")
    local ok = A.wait_for(function()
      for i = 1, c.n do
        if i ~= f then
          local by = members(c, i, "?healthy=true")
          if not by or by[who] then return false end
        end
      end
      return true
    end, 10)
    A.signal(c, f, "CONT")
    assert.is_truthy(ok, "a member that cannot answer must not be discovered as healthy")
    assert.is_truthy(A.wait_for(function() return everyone_sees(c, who, true) end, 10))
  end)
end)

describe("a malformed HEALTH frame", function()
  local c

  setup(function()
    c = A.cluster(2, { extra = { heartbeat_ms = 50, election_timeout_ms = 300 } })
    A.start_all(c)
    A.must_leader(c)
  end)

  teardown(function() A.stop(c) end)

  it("is refused and counted; the node goes on and trusts nothing of it", function()
    package.cpath = "./build/?.so;" .. package.cpath
    local wire = require("qcwire")
    local function bad_frames()
      local _, body = A.http(c.nodes[1].api, "GET", "/metrics")
      return tonumber((body or ""):match("\nqcluster_bad_frames_total (%S+)")) or 0
    end
    local before = bad_frames()
    -- node2 says hello on a connection of its own, then a HEALTH frame
    -- whose healthy flag is 7, and one whose check name has a space
    local s = assert(socket.connect("127.0.0.1", c.nodes[1].port))
    local hello = assert(wire.encode({ kind = "hello", identifier = "node2", metadata = "{}" }))
    local good = assert(wire.health_encode({ seq = 1, healthy = 1 }))
    local bad1 = good:sub(1, 8) .. "\7" .. good:sub(10)
    local bad2 = good:sub(1, 9) .. "\1\3a b\1"
    assert(s:send(hello .. wire.frame(10, bad1) .. wire.frame(10, bad2)))
    assert.is_truthy(A.wait_for(function() return bad_frames() >= before + 2 end, 5),
      "both frames should be counted")
    s:close()
    assert.is_truthy(A.read(c.nodes[1].log):find("dropped a malformed health frame from node2",
      1, true))
    -- node1 took neither as node2's word: node2 stays (or, once its link
    -- is back from the connection we closed, is again) healthy to node1
    assert.is_truthy(A.wait_for(function()
      local by = members(c, 1)
      return by and by.node2.healthy
    end, 5))
    assert.is_true(A.alive(c.nodes[1].pid))
  end)
end)
