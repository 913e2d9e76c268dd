-- Real agents on loopback: election, fail-over, hand-over, hooks, the API
-- and the CLI, as a user sees them.
local A = require("agents")
local cjson = require("cjson.safe")

local function has(lines, pattern)
  for _, l in ipairs(lines) do
    if l:match(pattern) then return l end
  end
end

describe("a three-node cluster", function()
  local c

  setup(function()
    c = A.cluster(3, { hooks = A.recording_hooks })
    A.start_all(c)
  end)

  teardown(function() A.stop(c) end)

  it("elects exactly one leader that every node names", function()
    local leader = A.agreed_leader(c, 10)
    assert.is_not_nil(leader)
    local leaders = 0
    for i = 1, 3 do
      local st = A.json(c.nodes[i].api, "/v1/status")
      if st.role == "leader" then leaders = leaders + 1 end
      assert.are.equal(leader, st.leader.identifier)
      assert.are.equal(2, #st.peers)
    end
    assert.are.equal(1, leaders)
    local li = A.index_of(c, leader)
    assert.is_truthy(A.wait_for(function()
      return has(A.events(c, li), "^elected %d+ prev=nil is_leader=true$")
    end, 5))
    for i = 1, 3 do
      assert.is_truthy(A.wait_for(function()
        return has(A.events(c, i), "^leader %d+ " .. leader .. " prev=nil$")
      end, 5))
      assert.is_truthy(has(A.events(c, i), "^start node" .. i .. "$"))
    end
  end)

  it("serves the leader's metadata to followers", function()
    local leader = A.agreed_leader(c, 10)
    local li = A.index_of(c, leader)
    local follower = li % 3 + 1
    local v = A.json(c.nodes[follower].api, "/v1/leader")
    assert.are.equal(leader, v.identifier)
    assert.are.equal("127.0.0.1", v.host)
    assert.are.equal(c.base + li, v.port)
    -- announced by the leader itself, merged over the follower's peers entry
    assert.are.equal(c.base + 40 + li, v.metadata.server_port)
    assert.are.equal(li, v.metadata.slot)
    local out, code = A.cli("leader", c.nodes[follower].api)
    assert.are.equal(0, code)
    assert.is_truthy(out:find(leader, 1, true))
  end)

  it("answers every API path", function()
    local api = c.nodes[1].api
    local members = A.json(api, "/v1/members")
    assert.are.equal(3, #members)
    for _, m in ipairs(members) do
      assert.is_not_nil(m.role)
      assert.is_true(m.up)
      assert.is_true(m.voter)
    end
    local status, body = A.http(api, "GET", "/metrics")
    assert.are.equal(200, status)
    for _, name in ipairs { "qcluster_is_leader", "qcluster_term", "qcluster_leader_changes_total",
      "qcluster_elections_total", "qcluster_peer_up{peer=\"node2\"}", "qcluster_hook_runs_total",
      "qcluster_messages_sent_total", "qcluster_messages_received_total",
      "qcluster_bad_frames_total", "qcluster_hook_duration_seconds_bucket" } do
      assert.is_truthy(body:find(name, 1, true), name .. " missing")
    end
    status, body = A.http(api, "GET", "/ui")
    assert.are.equal(200, status)
    assert.is_truthy(body:find("<html", 1, true))
    status, body = A.http(api, "GET", "/v1/nope")
    assert.are.equal(404, status)
    assert.is_not_nil(cjson.decode(body).error)
    local t0 = A.now()
    local st = A.json(api, "/v1/status")
    status = A.http(api, "GET", string.format("/v1/leader?wait=1&term=%d", st.term))
    assert.are.equal(200, status)
    assert.is_true(A.now() - t0 >= 0.9, "a long-poll waits while nothing changes")
  end)

  it("transfers leadership on request, through the CLI", function()
    local leader = A.agreed_leader(c, 10)
    local li = A.index_of(c, leader)
    local target = "node" .. (li % 3 + 1)
    local out, code = A.cli("transfer " .. target, c.nodes[li].api)
    assert.are.equal(0, code, out)
    assert.are.equal(target, A.agreed_leader(c, 5))
    local _, code3 = A.cli("transfer nosuch", c.nodes[A.index_of(c, target)].api)
    assert.are.equal(3, code3)
    local follower = A.index_of(c, target) % 3 + 1
    local status, body = A.http(c.nodes[follower].api, "POST", "/v1/transfer-leadership", "{}")
    assert.are.equal(409, status, "a follower cannot hand over what it does not hold")
    assert.is_not_nil(cjson.decode(body).error)
    status, body = A.http(c.nodes[A.index_of(c, target)].api, "POST", "/v1/transfer-leadership",
      cjson.encode { to = "node" .. li })
    assert.are.equal(200, status, body)
    assert.are.equal("node" .. li, A.agreed_leader(c, 5))
    assert.is_truthy(has(A.events(c, li), "^demoted %d+ transfer$"))
  end)

  it("drops garbage on the cluster port, counts it, and keeps its leader", function()
    local socket = require("socket")
    local leader = A.agreed_leader(c, 10)
    local s = assert(socket.connect("127.0.0.1", c.base + 2))
    s:send(string.rep("GARBAGE\0\255", 100))
    s:close()
    s = assert(socket.connect("127.0.0.1", c.base + 2))
    s:send("QC\1\2\0\0\0\8\0\0\0\0abcdefgh")
    s:close()
    assert.is_truthy(A.wait_for(function()
      local _, body = A.http(c.nodes[2].api, "GET", "/metrics")
      local n = tonumber(body:match("\nqcluster_bad_frames_total (%d+)"))
      return n and n >= 2
    end, 5))
    A.sleep(0.5)
    assert.are.equal(leader, A.agreed_leader(c, 5))
  end)
  it("SIGHUP reloads the hooks without losing state, and keeps them when broken", function()
    local leader = A.must_leader(c)
    local term = A.json(c.nodes[1].api, "/v1/status").term
    A.write(c.dir .. "/hooks.lua", "return {")
    A.signal(c, 1, "HUP")
    assert.is_truthy(A.wait_for(function()
      return (A.read(c.nodes[1].log) or ""):find("hooks not reloaded", 1, true)
    end, 5))
    A.write(c.dir .. "/hooks.lua", A.recording_hooks:gsub('record%("peer_down "', 'record("v2 peer_down "'))
    A.signal(c, 1, "HUP")
    assert.is_truthy(A.wait_for(function()
      return (A.read(c.nodes[1].log) or ""):find("hooks reloaded", 1, true)
    end, 5))
    local victim = leader == "node3" and 2 or 3
    A.signal(c, victim, "KILL")
    assert.is_truthy(A.wait_for(function()
      return has(A.events(c, 1), "^v2 peer_down node" .. victim .. "$")
    end, 5))
    local st = A.json(c.nodes[1].api, "/v1/status")
    assert.are.equal(leader, st.leader.identifier)
    assert.are.equal(term, st.term)
  end)
end)

describe("fail-over", function()
  local c

  before_each(function()
    c = A.cluster(3, { hooks = A.recording_hooks })
    A.start_all(c)
  end)

  after_each(function() A.stop(c) end)

  it("a leader killed with -9 is replaced and the new leader's hooks run", function()
    local leader = A.must_leader(c)
    local li = A.index_of(c, leader)
    A.signal(c, li, "KILL")
    local new = A.agreed_leader(c, 5)
    assert.is_not_nil(new)
    assert.are_not.equal(leader, new)
    local ni = A.index_of(c, new)
    assert.is_truthy(A.wait_for(function()
      return has(A.events(c, ni), "^elected %d+ prev=" .. leader .. " is_leader=true$")
    end, 5))
    assert.is_truthy(has(A.events(c, ni), "^peer_down " .. leader .. "$"))
  end)

  it("SIGTERM of the leader hands over, runs on_demoted and on_stop, exits 0", function()
    local leader = A.must_leader(c)
    local li = A.index_of(c, leader)
    local pid = c.nodes[li].pid
    assert.is_true(A.signal(c, li, "TERM"))
    local new = A.agreed_leader(c, 5)
    assert.is_not_nil(new)
    assert.are_not.equal(leader, new)
    local ev = A.events(c, li)
    assert.is_truthy(has(ev, "^demoted %d+ shutdown$"))
    assert.are.equal("stop SIGTERM", ev[#ev])
    assert.is_truthy(A.read(c.nodes[li].log):find("stopping", 1, true), "pid " .. pid)
  end)

  it("without a majority there is no leader, and every survivor says so", function()
    local leader = A.must_leader(c)
    local li = A.index_of(c, leader)
    local f1 = li % 3 + 1
    local f2 = f1 % 3 + 1
    A.signal(c, li, "KILL")
    A.signal(c, f1, "KILL")
    assert.is_truthy(A.wait_for(function()
      local status, body = A.http(c.nodes[f2].api, "GET", "/v1/leader")
      return status == 503 and cjson.decode(body).leader == cjson.null
    end, 5))
    A.sleep(1)
    local status = A.http(c.nodes[f2].api, "GET", "/v1/leader")
    assert.are.equal(503, status)
    local _, code = A.cli("leader", c.nodes[f2].api)
    assert.are.equal(3, code)
    local st = A.json(c.nodes[f2].api, "/v1/status")
    assert.are_not.equal("leader", st.role)
    assert.are.equal(cjson.null, st.leader)
  end)

  it("a frozen leader is replaced and says it is not leader when it wakes", function()
    local leader = A.must_leader(c)
    local li = A.index_of(c, leader)
    A.signal(c, li, "STOP")
    local new = A.wait_for(function()
      for i = 1, 3 do
        if i ~= li then
          local v = A.json(c.nodes[i].api, "/v1/leader")
          if v and v.identifier and v.identifier ~= leader then return v.identifier end
        end
      end
    end, 5)
    assert.is_not_nil(new)
    A.signal(c, li, "CONT")
    assert.are.equal(new, A.agreed_leader(c, 5))
    assert.is_truthy(A.wait_for(function()
      return has(A.events(c, li), "^demoted %d+ %a+")
    end, 5))
  end)
end)

describe("misbehaving hooks", function()
  local c

  setup(function()
    c = A.cluster(3, { hooks = [[
      local qcluster = require("qcluster")
      return {
        on_elected = function() error("boom") end,
        on_leader_change = function() while true do end end,
        on_peer_up = function() while true do pcall(function() while true do end end) end end,
      }
    ]], extra = { hook_timeout_ms = 100 } })
    A.start_all(c)
  end)

  teardown(function() A.stop(c) end)

  it("are stopped, logged and counted while consensus carries on", function()
    local leader = A.must_leader(c)
    local li = A.index_of(c, leader)
    assert.is_truthy(A.wait_for(function()
      local _, body = A.http(c.nodes[li].api, "GET", "/metrics")
      return body:find('qcluster_hook_errors_total{hook="on_elected"} 1', 1, true)
        and body:find('qcluster_hook_errors_total{hook="on_leader_change"}', 1, true)
    end, 5))
    assert.is_truthy(A.read(c.nodes[li].log):find("boom", 1, true))
    A.sleep(1)
    assert.are.equal(leader, A.agreed_leader(c, 5))
    for i = 1, 3 do assert.is_true(A.alive(c.nodes[i].pid)) end
  end)
end)

describe("configs and the CLI", function()
  it("check accepts the example configs and refuses bad ones with exit 2", function()
    local out, code = A.cli("check examples/bare_minimum/server_a.json")
    assert.are.equal(0, code, out)
    local dir = A.sh("mktemp -d"):gsub("%s+$", "")
    A.write(dir .. "/bad.lua", "return { identifier = 'x', listen_port = 'no' }")
    out, code = A.cli("check " .. dir .. "/bad.lua")
    assert.are.equal(2, code)
    assert.is_truthy(out:find("listen_port", 1, true))
    A.write(dir .. "/syntax.lua", "return {\n identifier = \n")
    out, code = A.cli("check " .. dir .. "/syntax.lua")
    assert.are.equal(2, code)
    assert.is_truthy(out:find("syntax.lua:%d+:"))
    local _, code2 = A.cli("agent " .. dir .. "/bad.lua")
    assert.are.equal(2, code2)
    os.execute("rm -rf " .. dir)
  end)

  it("client commands exit 1 when the agent cannot be reached and 2 on bad usage", function()
    local _, code = A.cli("status", "127.0.0.1:1")
    assert.are.equal(1, code)
    _, code = A.cli("status --bogus")
    assert.are.equal(2, code)
    local out
    out, code = A.cli("version")
    assert.are.equal(0, code)
    assert.is_truthy(out:match("%d+%.%d+%.%d+"))
  end)
end)
