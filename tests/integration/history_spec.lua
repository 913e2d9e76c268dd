-- GET /v1/history, `qcluster history` and log_format = "json" on real
-- agents: a leader killed, then a hand-over; each node keeps the leader
-- changes it saw, oldest first, with reasons, and logs JSON records that
-- carry term, leader and peer.
local A = require("agents")
local cjson = require("cjson.safe")

local WAIT = 20

-- The leaders named by the transitions, none skipped: {"node1", "node3"}.
local function leaders(hist)
  local t = {}
  for _, e in ipairs(hist) do
    if e.leader ~= cjson.null and e.leader ~= t[#t] then t[#t + 1] = e.leader end
  end
  return t
end

-- first, second and third in that order, first and third at the ends (a
-- loaded machine may add an election in between: it is in the history too).
local function in_order(got, want)
  if got[1] ~= want[1] or got[#got] ~= want[3] then return false end
  for i = 2, #got - 1 do
    if got[i] == want[2] then return true end
  end
  return false
end

local function find(hist, pred)
  for _, e in ipairs(hist) do
    if pred(e) then return e end
  end
end

describe("the history of leader changes", function()
  local c, first, second, third, t0

  setup(function()
    c = A.cluster(3, { extra = { log_format = "json" } })
    t0 = A.now()
    A.start_all(c)
    first = A.must_leader(c, WAIT)
    -- killed: the others see its connection close
    assert.is_true(A.signal(c, A.index_of(c, first), "KILL"))
    second = A.must_leader(c, WAIT)
    -- handed over to the last node standing
    for i = 1, 3 do
      if c.nodes[i].id ~= first and c.nodes[i].id ~= second then third = c.nodes[i].id end
    end
    local status, body = A.http(c.nodes[A.index_of(c, second)].api, "POST",
      "/v1/transfer-leadership", cjson.encode({ to = third }))
    assert.are.equal(200, status, body)
    assert.are.equal(third, A.must_leader(c, WAIT))
  end)

  teardown(function() A.stop(c) end)

  it("lists each node's transitions oldest first, with time, term, leader and reason", function()
    for _, id in ipairs({ second, third }) do
      local api = c.nodes[A.index_of(c, id)].api
      local hist, status = A.json(api, "/v1/history")
      assert.are.equal(200, status)
      assert.is_true(in_order(leaders(hist), { first, second, third }), cjson.encode(hist))
      local last_time, last_term = 0, 0
      for _, e in ipairs(hist) do
        assert.is_true(e.time >= last_time and e.time >= t0 - 1 and e.time <= A.now() + 1)
        assert.is_true(e.term >= last_term)
        assert.is_string(e.reason)
        assert.is_nil(e.event) -- transitions only without ?events=true
        last_time, last_term = e.time, e.term
      end
      -- the first leader's end: its connection closed
      local gone = find(hist, function(e) return e.previous_leader == first end)
      assert.are.equal("leader_down", gone.reason, cjson.encode(hist))
      -- the hand-over, on the leader that handed over and on its target
      local handed = find(hist, function(e) return e.previous_leader == second end)
      assert.are.equal("transfer", handed.reason, cjson.encode(hist))
    end
    local hist = A.json(c.nodes[A.index_of(c, third)].api, "/v1/history")
    assert.are.equal("elected", hist[#hist].reason)
    assert.are.equal(third, hist[#hist].leader)
  end)

  it("adds peer and health events with ?events=true, and refuses other values", function()
    local api = c.nodes[A.index_of(c, third)].api
    local hist = A.json(api, "/v1/history?events=true")
    local down = find(hist, function(e) return e.event == "peer_down" and e.peer == first end)
    assert.is_truthy(down, cjson.encode(hist))
    assert.is_truthy(down.time and down.term and down.reason)
    assert.is_true(in_order(leaders(hist), { first, second, third }), cjson.encode(hist))
    local status, body = A.http(api, "GET", "/v1/history?events=maybe")
    assert.are.equal(400, status)
    assert.are.equal("events must be true or false", cjson.decode(body).error)
  end)

  it("prints the same with qcluster history, one a line, and --json as the API", function()
    local api = c.nodes[A.index_of(c, third)].api
    local hist = A.json(api, "/v1/history")
    local out, code = A.cli("history", api)
    assert.are.equal(0, code, out)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal(#hist, #lines, out)
    for i, e in ipairs(hist) do
      local prev = e.previous_leader == cjson.null and "none" or e.previous_leader
      local now = e.leader == cjson.null and "none" or e.leader
      assert.matches(("^%%d%%d%%d%%d%%-%%d%%d%%-%%d%%d %%d%%d:%%d%%d:%%d%%d%%.%%d%%d%%d term %d: %s %%-> %s %%(%s%%)$")
        :format(e.term, prev, now, e.reason), lines[i])
    end
    out, code = A.cli("history --json", api)
    assert.are.equal(0, code, out)
    assert.are.same(hist, cjson.decode(out))
    out, code = A.cli("history extra", api)
    assert.are.equal(2, code, out)
  end)

  it("logs JSON records with the node, and term, leader and peer where they apply", function()
    local node = c.nodes[A.index_of(c, third)]
    local n, elected, peer_down = 0, nil, nil
    for line in (A.read(node.log) or ""):gmatch("[^\n]+") do
      local r = cjson.decode(line)
      assert.is_table(r, "not a JSON object: " .. line)
      assert.are.equal(node.id, r.node)
      assert.is_string(r.ts)
      assert.is_string(r.level)
      assert.is_string(r.component)
      assert.is_string(r.msg)
      n = n + 1
      if r.msg:match("^elected leader") then elected = r end
      if r.msg:match("^peer " .. first .. " is unreachable") then peer_down = r end
    end
    assert.is_true(n > 3)
    assert.is_truthy(elected, "no elected record")
    assert.are.same({ "raft", "info", node.id }, { elected.component, elected.level, elected.leader })
    assert.is_true(elected.term >= 1 and elected.term <= A.json(node.api, "/v1/status").term)
    assert.is_truthy(peer_down, "no peer down record")
    assert.are.same({ "net", "warn", first }, { peer_down.component, peer_down.level, peer_down.peer })
  end)
end)
