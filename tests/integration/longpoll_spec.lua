-- Long-polls on a real follower (GET /v1/leader?wait): held on what the
-- client knows, the term included, across a leader's death.
package.path = "./tests/helpers/?.lua;" .. package.path
local A = require("agents")
local cjson = require("cjson")
local socket = require("socket")

-- Sends a long-poll to api on a raw socket and returns the socket.
local function poll_send(api, query)
  local host, port = api:match("^(.+):(%d+)$")
  local s = assert(socket.tcp())
  assert(s:connect(host, tonumber(port)))
  assert(s:send("GET /v1/leader?" .. query .. " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
  return s
end

-- Reads one answer: status and decoded body.
local function poll_read(s, timeout)
  s:settimeout(timeout)
  local data = assert(s:receive("*a"))
  s:close()
  local status = tonumber(data:match("^HTTP/1%.1 (%d+)"))
  return status, cjson.decode(data:match("\r\n\r\n(.*)$"))
end

describe("long-polls on a follower", function()
  local c
  after_each(function() A.stop(c) end)

  it("a poll held on a term is answered when the term changes before any leader is known", function()
    c = A.cluster(3)
    A.start_all(c)
    local leader = A.must_leader(c, 15)
    local li = A.index_of(c, leader)
    local fi = li % 3 + 1
    local oi = fi % 3 + 1
    -- the other follower paused, the leader gone: fi knows no leader and,
    -- alone, cannot move past its term (pre-votes)
    A.signal(c, oi, "STOP")
    A.signal(c, li, "KILL")
    local st = A.wait_for(function()
      local v = A.json(c.nodes[fi].api, "/v1/status")
      return v and v.leader == cjson.null and v
    end, 10)
    assert(st, "the follower still names a leader")
    local term = math.tointeger(st.term)
    local s = poll_send(c.nodes[fi].api, string.format("wait=30&term=%d&leader=none", term))
    A.sleep(0.3) -- parked
    -- back: the two elect, and fi learns the next term (a vote) before
    -- its leader; the poll is answered on the term alone
    A.signal(c, oi, "CONT")
    local status, body = poll_read(s, 40)
    assert.are.equal(503, status)
    assert.are.equal(cjson.null, body.leader)
    assert.is_true(math.tointeger(body.term) > term)
  end)

  it("polls on a node that takes over learn it leads, asking again as the SDKs do", function()
    c = A.cluster(3)
    A.start_all(c)
    local leader = A.must_leader(c, 15)
    local li = A.index_of(c, leader)
    local xi = li % 3 + 1
    local st = A.json(c.nodes[xi].api, "/v1/status")
    local term = math.tointeger(st.term)
    local polls = {}
    for i = 1, 5 do
      polls[i] = poll_send(c.nodes[xi].api, string.format("wait=30&term=%d&leader=%s", term, leader))
    end
    A.sleep(0.3) -- parked
    -- handed to xi in the background: the polls are asked again while xi
    -- campaigns, is elected and gathers the answers that let it say it leads
    os.execute(string.format("%s/bin/qcluster transfer %s --api %s >/dev/null 2>&1 &",
      A.root, c.nodes[xi].id, c.nodes[li].api))
    local t0 = socket.gettime()
    for i = 1, 5 do
      local s, status, body = polls[i]
      repeat
        status, body = poll_read(s, 40)
        if status ~= 200 then -- no leader yet: ask again with what it said
          s = poll_send(c.nodes[xi].api, string.format("wait=30&term=%d&leader=none",
            math.tointeger(body.term)))
        end
      until status == 200
      assert.are.equal(c.nodes[xi].id, body.identifier)
    end
    -- learned as soon as xi leads, not when the waits end
    assert.is_true(socket.gettime() - t0 < 10, "the polls waited " .. (socket.gettime() - t0) .. " s")
  end)
end)
