-- The HTTP API (src/api/api.c) against build/api_fake, a fake agent view driven
-- by signals: SIGUSR1 toggles "leader known" and bumps the term, SIGUSR2
-- bumps the term only. Raw sockets so keep-alive, pipelining and garbage
-- can be tested byte by byte.
local socket = require("socket")
local cjson = require("cjson.safe")

local fake = require("fake")
local start_fake, connect, read_response, request = fake.start, fake.connect, fake.read_response, fake.request
local TOKEN = "s3cret-token"

local function signal(pid, sig)
  os.execute("kill -" .. sig .. " " .. pid)
  socket.sleep(0.1)
end

local function auth(token) return { Authorization = "Bearer " .. token } end

describe("qc_api", function()
  local port, pid

  before_each(function()
    port = 18000 + math.random(0, 9999)
    pid = start_fake(port, TOKEN)
  end)

  after_each(function()
    if pid then os.execute("kill " .. pid) end
    pid = nil
  end)

  it("GET /v1/status answers identifier, role, term, leader, peers, commit_index", function()
    local status, headers, _, j = request(port, "GET", "/v1/status")
    assert.are.equal(200, status)
    assert.are.equal("application/json", headers["content-type"])
    assert.are.equal("server_a", j.identifier)
    assert.are.equal("follower", j.role)
    assert.are.equal(1, j.term)
    assert.are.equal(cjson.null, j.leader)
    assert.are.equal(42, j.commit_index)
    assert.are.equal(2, #j.peers)
    assert.are.equal("server_b", j.peers[1].identifier)
    assert.is_true(j.peers[1].up)
    assert.is_false(j.peers[2].up)
    assert.is_true(j.peers[2].voter)
    assert.are.equal(8002, j.peers[1].metadata.server_port)
    assert.are.equal(2, j.peers[1].priority)
    assert.are.equal(0, j.peers[2].priority)
  end)

  it("status shows the leader as a Peer once one is known", function()
    signal(pid, "USR1")
    local _, _, _, j = request(port, "GET", "/v1/status")
    assert.are.equal("server_b", j.leader.identifier)
    assert.are.equal("localhost", j.leader.host)
    assert.are.equal(7002, j.leader.port)
    assert.are.equal(2, j.term)
  end)

  it("GET /v1/leader is 503 {leader: null} without a leader, 200 Peer with one", function()
    local status, _, _, j = request(port, "GET", "/v1/leader")
    assert.are.equal(503, status)
    assert.are.equal(cjson.null, j.leader)
    assert.are.equal("number", type(j.term)) -- every answer carries the term
    signal(pid, "USR1")
    status, _, _, j = request(port, "GET", "/v1/leader")
    assert.are.equal(200, status)
    assert.are.equal("server_b", j.identifier)
    assert.are.equal(7002, j.port)
    assert.are.equal(2, j.priority)
    assert.is_true(j.healthy) -- the leader's health as this node knows it
    -- metadata is embedded as an object, not a string
    assert.are.equal("table", type(j.metadata))
    assert.are.same({ "a", "b" }, j.metadata.tags)
  end)

  it("GET /v1/members lists every member, self first, with role, up, voter, priority", function()
    local status, _, _, j = request(port, "GET", "/v1/members")
    assert.are.equal(200, status)
    assert.are.equal(3, #j)
    assert.are.equal("server_a", j[1].identifier)
    assert.is_true(j[1].up)
    assert.are.equal("server_c", j[3].identifier)
    assert.is_false(j[3].up)
    -- metadata that is not a JSON object comes out as {}
    assert.are.same({}, j[3].metadata)
    for _, m in ipairs(j) do
      assert.is_string(m.role)
      assert.is_boolean(m.voter)
      assert.is_number(m.priority)
    end
    assert.are.same({ 1, 2, 0 }, { j[1].priority, j[2].priority, j[3].priority })
  end)

  it("GET /v1/members carries each member's health and checks; ?healthy= filters", function()
    local status, _, _, j = request(port, "GET", "/v1/members")
    assert.are.equal(200, status)
    assert.are.same({ true, true, false }, { j[1].healthy, j[2].healthy, j[3].healthy })
    assert.are.same({ { name = "web", status = "passing" }, { name = "disk.free", status = "passing" } },
      j[1].checks)
    assert.are.same({ { name = "web", status = "failing" } }, j[3].checks)
    -- an empty list is a JSON list, not an object
    local _, _, body = request(port, "GET", "/v1/members")
    assert.matches('"identifier":"server_b".-"checks":%[%]', body)
    local _, _, _, h = request(port, "GET", "/v1/members?healthy=true")
    assert.are.same({ "server_a", "server_b" }, { h[1].identifier, h[2].identifier, h[3] })
    local _, _, _, u = request(port, "GET", "/v1/members?healthy=false")
    assert.are.same({ "server_c" }, { u[1].identifier, u[2] })
    for _, q in ipairs({ "healthy=yes", "healthy", "healthy=", "healthy=truex" }) do
      local st, _, _, e = request(port, "GET", "/v1/members?" .. q)
      assert.are.equal(400, st, q)
      assert.matches("healthy must be true or false", e.error)
    end
    local st, _, _, l = request(port, "GET", "/v1/status")
    assert.are.equal(200, st)
    assert.are.same({ true, false }, { l.peers[1].healthy, l.peers[2].healthy })
  end)

  it("a long-poll returns as soon as the leader changes", function()
    local s = connect(port)
    local t0 = socket.gettime()
    assert(s:send("GET /v1/leader?wait=10 HTTP/1.1\r\nHost: t\r\n\r\n"))
    socket.sleep(0.3)
    signal(pid, "USR1")
    local status, _, body = read_response(s)
    s:close()
    assert.are.equal(200, status)
    assert.are.equal("server_b", cjson.decode(body).identifier)
    assert.is_true(socket.gettime() - t0 < 3)
  end)

  it("a long-poll with term returns when the term differs, even with the same leader", function()
    signal(pid, "USR1") -- leader known, term 2
    local s = connect(port)
    assert(s:send("GET /v1/leader?wait=10&term=2 HTTP/1.1\r\nHost: t\r\n\r\n"))
    socket.sleep(0.3)
    signal(pid, "USR2") -- term 3, same leader
    local status, _, body = read_response(s)
    s:close()
    assert.are.equal(200, status)
    assert.are.equal(3, cjson.decode(body).term)
  end)

  -- Held or answered: a poll's answer within a short read timeout, or nil.
  local function poll(query, timeout)
    local s = connect(port)
    assert(s:send("GET /v1/leader?" .. query .. " HTTP/1.1\r\nHost: t\r\n\r\n"))
    s:settimeout(timeout or 0.4)
    local status, _, body = read_response(s)
    return s, status, body and cjson.decode(body)
  end

  it("a long-poll is answered at once when the client knows another leader or term", function()
    signal(pid, "USR1") -- server_b leads in term 2
    for _, q in ipairs({ "term=2&leader=none", "term=2&leader=server_c", "term=1&leader=server_b",
                         "leader=none", "leader=server_c" }) do
      local s, status, j = poll("wait=10&" .. q, 5)
      s:close()
      assert.are.equal(200, status, q)
      assert.are.same({ "server_b", 2 }, { j.identifier, j.term }, q)
    end
    signal(pid, "HUP") -- no leader, still term 2
    local s, status, j = poll("wait=10&term=2&leader=server_b", 5)
    s:close()
    assert.are.equal(503, status)
    assert.are.same({ cjson.null, 2 }, { j.leader, j.term })
  end)

  it("a long-poll with term and leader is held until either differs", function()
    signal(pid, "USR1") -- server_b leads in term 2
    local s, status = poll("wait=10&term=2&leader=server_b")
    assert.is_nil(status)
    signal(pid, "HUP") -- the leader is lost, the term stays
    s:settimeout(5)
    local st, _, body = read_response(s)
    s:close()
    assert.are.equal(503, st)
    assert.are.same({ cjson.null, 2 }, { cjson.decode(body).leader, cjson.decode(body).term })
    -- what the 503 said (none in term 2) is held until a leader is known
    s, status = poll("wait=10&term=2&leader=none")
    assert.is_nil(status)
    signal(pid, "HUP") -- server_b is known in term 2: same term, a leader now
    s:settimeout(5)
    st, _, body = read_response(s)
    s:close()
    assert.are.equal(200, st)
    assert.are.same({ "server_b", 2 }, { cjson.decode(body).identifier, cjson.decode(body).term })
    -- and a new term with the same leader ends the wait too
    s, status = poll("wait=10&term=2&leader=server_b")
    assert.is_nil(status)
    signal(pid, "USR2")
    s:settimeout(5)
    st, _, body = read_response(s)
    s:close()
    assert.are.equal(200, st)
    assert.are.equal(3, cjson.decode(body).term)
  end)

  it("a long-poll with leader and no term ignores a new term with the same leader", function()
    signal(pid, "USR1") -- server_b leads in term 2
    local s, status = poll("wait=10&leader=server_b")
    assert.is_nil(status)
    signal(pid, "USR2") -- term 3, same leader: still held
    s:settimeout(0.4)
    assert.is_nil((read_response(s)))
    signal(pid, "HUP")
    s:settimeout(5)
    local st, _, body = read_response(s)
    s:close()
    assert.are.equal(503, st)
    assert.are.equal(3, cjson.decode(body).term)
  end)

  it("a long-poll with term and no leader waits for the term alone", function()
    signal(pid, "USR2") -- term 2, no leader
    local s, status = poll("wait=10&term=2")
    assert.is_nil(status)
    signal(pid, "HUP") -- a leader in the same term: the term alone decides
    s:settimeout(0.4)
    assert.is_nil((read_response(s)))
    signal(pid, "USR2")
    s:settimeout(5)
    local st, _, body = read_response(s)
    s:close()
    assert.are.equal(200, st)
    assert.are.equal(3, cjson.decode(body).term)
  end)

  it("a long-poll with an old term answers at once", function()
    local t0 = socket.gettime()
    local status = request(port, "GET", "/v1/leader?wait=10&term=0")
    assert.are.equal(503, status)
    assert.is_true(socket.gettime() - t0 < 1)
  end)

  it("a long-poll answers as now when the wait ends", function()
    local t0 = socket.gettime()
    local status, _, _, j = request(port, "GET", "/v1/leader?wait=0.5&term=1")
    local dt = socket.gettime() - t0
    assert.are.equal(503, status)
    assert.are.equal(cjson.null, j.leader)
    assert.is_true(dt >= 0.45 and dt < 3, "waited " .. dt)
  end)

  it("a long-poll ignores a term-only change without term, and the keep-alive goes on", function()
    local s = connect(port)
    assert(s:send("GET /v1/leader?wait=0.6 HTTP/1.1\r\nHost: t\r\n\r\n"))
    socket.sleep(0.2)
    signal(pid, "USR2")
    local t0 = socket.gettime()
    local status = read_response(s)
    assert.are.equal(503, status)
    assert.is_true(socket.gettime() - t0 > 0.1)
    assert(s:send("GET /v1/status HTTP/1.1\r\nHost: t\r\n\r\n"))
    assert.are.equal(200, (read_response(s)))
    s:close()
  end)

  it("polls woken together get the very answer a plain GET gets, keep-alive or close", function()
    local polls = {}
    for i = 1, 6 do
      polls[i] = connect(port)
      assert(polls[i]:send("GET /v1/leader?wait=30 HTTP/1.1\r\nHost: t\r\n" ..
        (i % 2 == 0 and "Connection: close\r\n" or "") .. "\r\n"))
    end
    socket.sleep(0.2)
    signal(pid, "USR1")
    local ka = connect(port)
    assert(ka:send("GET /v1/leader HTTP/1.1\r\nHost: t\r\n\r\n"))
    local want = { keep = { read_response(ka) } }
    ka:close()
    want.close = { request(port, "GET", "/v1/leader", { headers = { Connection = "close" } }) }
    assert.are.equal(200, want.keep[1])
    assert.are.equal("close", want.close[2].connection)
    for i, s in ipairs(polls) do
      local w = i % 2 == 0 and want.close or want.keep
      assert.are.same({ w[1], w[2], w[3] }, { read_response(s) })
      s:close()
    end
  end)

  it("clients that hang up while parked are cleaned up and others are served", function()
    for _ = 1, 20 do
      local s = connect(port)
      assert(s:send("GET /v1/leader?wait=30 HTTP/1.1\r\nHost: t\r\n\r\n"))
      s:close()
    end
    socket.sleep(0.1)
    signal(pid, "USR1")
    assert.are.equal(200, (request(port, "GET", "/v1/leader")))
  end)

  it("rejects a bad wait, term or leader with 400", function()
    assert.are.equal(400, (request(port, "GET", "/v1/leader?wait=abc")))
    assert.are.equal(400, (request(port, "GET", "/v1/leader?wait=1&term=-3")))
    for _, l in ipairs({ "", "%zz", "a%00b", string.rep("x", 300) }) do
      local status, _, _, j = request(port, "GET", "/v1/leader?wait=1&term=1&leader=" .. l)
      assert.are.equal(400, status, l)
      assert.are.equal("leader must be an identifier or none", j.error)
    end
    assert.are.equal(503, (request(port, "GET", "/v1/leader?wait=0&leader=server%5Fb")))
  end)

  it("serves several requests on one connection, pipelined too", function()
    local s = connect(port)
    local one = "GET /v1/status HTTP/1.1\r\nHost: t\r\n\r\n"
    assert(s:send(one .. "GET /v1/leader HTTP/1.1\r\nHost: t\r\n\r\n" .. "GET /nope HTTP/1.1\r\n\r\n"))
    assert.are.equal(200, (read_response(s)))
    assert.are.equal(503, (read_response(s)))
    assert.are.equal(404, (read_response(s)))
    assert(s:send(one))
    local status, headers = read_response(s)
    assert.are.equal(200, status)
    assert.are.equal("keep-alive", headers["connection"])
    s:close()
  end)

  it("a pipelined request waits behind a parked one and is answered in order", function()
    local s = connect(port)
    assert(s:send("GET /v1/leader?wait=0.3 HTTP/1.1\r\n\r\nGET /v1/members HTTP/1.1\r\n\r\n"))
    local st1, _, b1 = read_response(s)
    local st2, _, b2 = read_response(s)
    s:close()
    assert.are.equal(503, st1)
    assert.are.equal(cjson.null, cjson.decode(b1).leader)
    assert.are.equal(200, st2)
    assert.are.equal(3, #cjson.decode(b2))
  end)

  it("answers 400 to garbage and closes that connection only", function()
    local other = connect(port)
    local s = connect(port)
    assert(s:send("this is not http\r\n\r\n"))
    local status, headers, body = read_response(s)
    assert.are.equal(400, status)
    assert.are.equal("close", headers["connection"])
    assert.is_string(cjson.decode(body).error)
    assert.is_nil(s:receive("*l"))
    s:close()
    assert(other:send("GET /v1/status HTTP/1.1\r\n\r\n"))
    assert.are.equal(200, (read_response(other)))
    other:close()
  end)

  it("answers 413 to a body over the limit", function()
    local big = string.rep("x", 64 * 1024 + 1)
    local status, _, _, j = request(port, "POST", "/v1/transfer-leadership",
      { body = big, headers = auth(TOKEN) })
    assert.are.equal(413, status)
    assert.is_string(j.error)
  end)

  it("answers 431 to oversized headers", function()
    local status = request(port, "GET", "/v1/status", { headers = { ["X-Big"] = string.rep("y", 20000) } })
    assert.are.equal(431, status)
  end)

  it("answers 404 to an unknown path and 405 to a wrong method", function()
    local status, _, _, j = request(port, "GET", "/v2/nothing")
    assert.are.equal(404, status)
    assert.is_string(j.error)
    local st2, headers = request(port, "DELETE", "/v1/status", { headers = auth(TOKEN) })
    assert.are.equal(405, st2)
    assert.are.equal("GET", headers["allow"])
    assert.are.equal(405, (request(port, "GET", "/v1/transfer-leadership")))
  end)

  it("writes need the bearer token", function()
    local path = "/v1/transfer-leadership"
    local body = '{"to":"server_b"}'
    assert.are.equal(401, (request(port, "POST", path, { body = body })))
    assert.are.equal(401, (request(port, "POST", path, { body = body, headers = auth("wrong") })))
    assert.are.equal(401, (request(port, "POST", path, { body = body, headers = auth(TOKEN .. "x") })))
    assert.are.equal(401, (request(port, "POST", path, { body = body, headers = { Authorization = TOKEN } })))
    assert.are.equal(200, (request(port, "POST", path, { body = body, headers = auth(TOKEN) })))
    -- reads never need it
    assert.are.equal(200, (request(port, "GET", "/v1/status")))
  end)

  it("POST /v1/transfer-leadership: 200 done, 404 no such peer, 409 failed, 400 bad body", function()
    local path = "/v1/transfer-leadership"
    local h = auth(TOKEN)
    local status, _, _, j = request(port, "POST", path, { body = '{"to":"server_b"}', headers = h })
    assert.are.equal(200, status)
    assert.is_not_nil(j.leader)
    status, _, _, j = request(port, "POST", path, { body = '{"to":"nobody"}', headers = h })
    assert.are.equal(404, status)
    assert.are.equal("no such peer: nobody", j.error)
    status, _, _, j = request(port, "POST", path, { body = '{"to":"server_c"}', headers = h })
    assert.are.equal(409, status)
    assert.is_string(j.error)
    assert.are.equal(400, (request(port, "POST", path, { body = "{nope", headers = h })))
    assert.are.equal(400, (request(port, "POST", path, { body = '{"to":5}', headers = h })))
  end)

  it("a transfer that completes later is answered then, keep-alive intact", function()
    local s = connect(port)
    local req = "POST /v1/transfer-leadership HTTP/1.1\r\nAuthorization: Bearer " .. TOKEN ..
      "\r\nContent-Length: 0\r\n\r\n"
    local t0 = socket.gettime()
    assert(s:send(req .. "GET /v1/status HTTP/1.1\r\n\r\n"))
    assert.are.equal(200, (read_response(s)))
    assert.is_true(socket.gettime() - t0 >= 0.15)
    assert.are.equal(200, (read_response(s)))
    s:close()
  end)

  it("a client that hangs up during a slow transfer does not hurt the server", function()
    local s = connect(port)
    local body = '{"to":"slow"}'
    assert(s:send("POST /v1/transfer-leadership HTTP/1.1\r\nAuthorization: Bearer " .. TOKEN ..
      "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body))
    socket.sleep(0.1)
    s:close()
    socket.sleep(1.2) -- the fake's done() fires after 1 s, on a closed connection
    assert.are.equal(200, (request(port, "GET", "/v1/status")))
  end)

  it("GET /metrics renders Prometheus text 0.0.4", function()
    local status, headers, body = request(port, "GET", "/metrics")
    assert.are.equal(200, status)
    assert.matches("^text/plain; version=0.0.4", headers["content-type"])
    assert.matches("# HELP qcluster_term Current term%.\n# TYPE qcluster_term gauge\nqcluster_term 1\n", body)
    assert.matches('qcluster_peer_up{peer="server_b"} 1\n', body, 1, true)
    assert.matches('qcluster_peer_up{peer="we\\"ird\\\\name\\n"} 0\n', body, 1, true)
    assert.matches("# TYPE qcluster_hook_duration_seconds histogram\n", body, 1, true)
    assert.matches('qcluster_hook_duration_seconds_bucket{le="0.0005"} 1\n', body, 1, true)
    assert.matches('qcluster_hook_duration_seconds_bucket{le="0.025"} 2\n', body, 1, true)
    assert.matches('qcluster_hook_duration_seconds_bucket{le="10"} 2\n', body, 1, true)
    assert.matches('qcluster_hook_duration_seconds_bucket{le="+Inf"} 3\n', body, 1, true)
    assert.matches("qcluster_hook_duration_seconds_sum 20.0203\n", body, 1, true)
    assert.matches("qcluster_hook_duration_seconds_count 3\n", body, 1, true)
    assert.matches("# TYPE qcluster_elections_total counter\nqcluster_elections_total 3\n", body, 1, true)
    -- buckets are cumulative and never decrease
    local last = -1
    for n in body:gmatch('qcluster_hook_duration_seconds_bucket{le="[^"]+"} (%d+)') do
      assert.is_true(tonumber(n) >= last)
      last = tonumber(n)
    end
  end)

  it("GET /ui is an HTML page that polls /v1/status", function()
    local status, headers, body = request(port, "GET", "/ui")
    assert.are.equal(200, status)
    assert.matches("^text/html", headers["content-type"])
    assert.matches("/v1/status", body, 1, true)
  end)

  it("HTTP/1.0 and Connection: close end the connection after the answer", function()
    local s = connect(port)
    assert(s:send("GET /v1/status HTTP/1.0\r\n\r\n"))
    local status, headers = read_response(s)
    assert.are.equal(200, status)
    assert.are.equal("close", headers["connection"])
    assert.is_nil(s:receive("*l"))
    s:close()
  end)

  it("one client sending half a request does not block others", function()
    local slow = connect(port)
    assert(slow:send("GET /v1/sta"))
    assert.are.equal(200, (request(port, "GET", "/v1/members")))
    assert(slow:send("tus HTTP/1.1\r\n\r\n"))
    assert.are.equal(200, (read_response(slow)))
    slow:close()
  end)

  it("works with curl, including Expect: 100-continue", function()
    local body = string.rep(" ", 2000) .. '{"to":"server_b"}'
    local p = assert(io.popen("curl -s -o /dev/null -w '%{http_code}' -H 'Expect: 100-continue' " ..
      "-H 'Authorization: Bearer " .. TOKEN .. "' --data-binary '" .. body .. "' " ..
      "http://127.0.0.1:" .. port .. "/v1/transfer-leadership"))
    local code = p:read("*a")
    p:close()
    assert.are.equal("200", code)
  end)
end)

describe("qc_api without a token", function()
  it("lets writes through", function()
    local port = 18000 + math.random(0, 9999)
    local pid = start_fake(port, nil)
    finally(function() os.execute("kill " .. pid) end)
    local status = request(port, "POST", "/v1/transfer-leadership", { body = '{"to":"server_b"}' })
    assert.are.equal(200, status)
  end)
end)

-- Limits (src/api/api.h): the real values are long, so api_fake takes small
-- ones from QC_FAKE_API_* for these specs.
describe("qc_api limits", function()
  local port, pid

  local function start(env)
    port = 18000 + math.random(0, 9999)
    pid = start_fake(port, TOKEN, env)
  end

  after_each(function()
    if pid then os.execute("kill " .. pid) end
    pid = nil
  end)

  local function closed(s)
    local line, err = s:receive("*l")
    return line == nil and (err == "closed" or err == "connection reset by peer"), err or line
  end

  -- Asks with Connection: close, as settle does: the agent frees the slot
  -- as it answers. A keep-alive one the client closes holds its slot until
  -- the agent reads that close, and a busy agent may admit the next
  -- connection first, taking that slot back as an eviction.
  local function limit_count(name)
    local _, _, body = request(port, "GET", "/metrics", { headers = { Connection = "close" } })
    return tonumber(body:match('qcluster_api_limit_total{limit="' .. name .. '"} (%d+)')) or 0
  end

  -- Until the fake holds no connection but the one asking (start's probe
  -- may still be open), so that the slots a spec fills are all its own.
  local function settle()
    for _ = 1, 100 do
      local _, _, body = request(port, "GET", "/metrics", { headers = { Connection = "close" } })
      if body:find("qcluster_api_connections 1\n", 1, true) then return end
      socket.sleep(0.02)
    end
    error("connections left open")
  end

  local function start_plain(env) -- no api_token: nobody to make room for
    port = 18000 + math.random(0, 9999)
    pid = start_fake(port, nil, env)
    settle()
  end

  -- A connection from a loopback address of our choice (127.0.0.0/8), so
  -- that per-address budgets can be told apart.
  local function connect_from(ip)
    local s = socket.tcp()
    assert(s:bind(ip, 0))
    s:settimeout(5)
    assert(s:connect("127.0.0.1", port))
    return s
  end

  local function request_from(ip, method, path, headers)
    local s = connect_from(ip)
    assert(s:send(fake.format_request(method, path, { headers = headers, body = method == "PUT" and "v" or nil })))
    local status, h, body = read_response(s)
    s:close()
    return status, h, body and cjson.decode(body)
  end

  it("with every slot held by a request under way, one more gets 503 at once and is closed", function()
    start_plain("QC_FAKE_API_MAX_CONNS=3")
    local held = {}
    for i = 1, 3 do
      held[i] = connect(port)
      assert(held[i]:send("GET /v1/status HTTP/1.1\r\n"))
    end
    socket.sleep(0.1)
    -- the fourth is answered at once, before it sends anything
    local extra = connect(port)
    local status, headers, body = read_response(extra)
    assert.are.equal(503, status)
    assert.are.equal("close", headers["connection"])
    assert.are.equal("1", headers["retry-after"])
    assert.are.equal("too many connections (limit 3)", cjson.decode(body).error)
    assert.is_true((closed(extra)))
    extra:close()
    -- the held ones still work, and a freed slot takes a new client
    for i = 1, 3 do
      assert(held[i]:send("\r\n"))
      assert.are.equal(200, (read_response(held[i])))
    end
    held[3]:close()
    socket.sleep(0.1)
    assert(held[1]:send("GET /v1/status HTTP/1.1\r\n")) -- under way again
    local s = connect(port)
    assert(s:send("GET /metrics HTTP/1.1\r\n\r\n"))
    local st, _, text = read_response(s)
    assert.are.equal(200, st)
    assert.matches('qcluster_api_limit_total{limit="connections"} 1', text, 1, true)
    assert.matches("qcluster_api_connections 3", text, 1, true)
    s:close()
    held[1]:close()
    held[2]:close()
  end)

  it("with every slot taken, the oldest idle keep-alive connection makes room", function()
    start_plain("QC_FAKE_API_MAX_CONNS=3")
    local held = {}
    for i = 1, 3 do
      held[i] = connect(port)
      assert(held[i]:send("GET /v1/status HTTP/1.1\r\n\r\n"))
      assert.are.equal(200, (read_response(held[i])))
      socket.sleep(0.05)
    end
    assert.are.equal(200, (request(port, "GET", "/v1/members")))
    assert.is_true((closed(held[1]))) -- the oldest idle one
    assert(held[2]:send("GET /v1/status HTTP/1.1\r\n\r\n"))
    assert.are.equal(200, (read_response(held[2])))
    for i = 1, 3 do held[i]:close() end
    assert.are.equal(1, limit_count("evicted"))
  end)

  it("one address holding many slowloris connections cannot take every slot", function()
    start_plain("QC_FAKE_API_MAX_CONNS=20 QC_FAKE_API_MAX_PER_CLIENT=5")
    local slow, refused = {}, 0
    for i = 1, 30 do
      slow[i] = connect_from("127.0.0.2")
      slow[i]:send("GET /v1/sta")
    end
    for i = 6, 30 do -- over its address's budget: 503 at once
      slow[i]:settimeout(2)
      local status, _, body = read_response(slow[i])
      if status == 503 then
        refused = refused + 1
        assert.are.equal("too many connections from this address (limit 5)", cjson.decode(body).error)
      end
    end
    assert.are.equal(25, refused)
    -- a polite client elsewhere is always served
    for _ = 1, 20 do
      assert.are.equal(200, (request_from("127.0.0.3", "GET", "/v1/status")))
    end
    for _, s in ipairs(slow) do s:close() end
    assert.are.equal(25, limit_count("client_connections"))
  end)

  it("parked long-polls cannot take every slot: one over their budget is answered at once", function()
    start_plain("QC_FAKE_API_MAX_CONNS=20 QC_FAKE_API_MAX_LONGPOLLS=5")
    local polls = {}
    for i = 1, 30 do
      polls[i] = connect(port)
      assert(polls[i]:send("GET /v1/leader?wait=30 HTTP/1.1\r\n\r\n"))
      socket.sleep(0.01)
    end
    for _ = 1, 20 do
      assert.are.equal(200, (request(port, "GET", "/v1/status")))
    end
    local answered, parked = 0, {}
    for _, s in ipairs(polls) do
      s:settimeout(0.3)
      local status, _, body = read_response(s)
      if status then
        assert.are.equal(503, status) -- as without ?wait: no leader now
        assert.are.equal(cjson.null, cjson.decode(body).leader)
        answered = answered + 1
      else
        parked[#parked + 1] = s
      end
    end
    assert.are.same({ 25, 5 }, { answered, #parked })
    assert.are.equal(25, limit_count("longpolls"))
    -- a parked one still gets its change
    signal(pid, "USR1")
    local got = 0
    for _, s in ipairs(parked) do
      s:settimeout(2)
      if read_response(s) == 200 then got = got + 1 end
    end
    -- and one answered already gets nothing more: by now the change went
    -- out, so what is not there yet never comes (no wait on each of them)
    for _, s in ipairs(polls) do
      s:settimeout(0)
      if read_response(s) == 200 then got = got + 1 end
      s:close()
    end
    assert.are.equal(5, got)
  end)

  it("parked long-polls hold no slot: many from one address are held, answered, and others served", function()
    start_plain("QC_FAKE_API_MAX_CONNS=4 QC_FAKE_API_MAX_PER_CLIENT=2")
    local polls = {}
    for i = 1, 20 do
      polls[i] = connect_from("127.0.0.2")
      assert(polls[i]:send("GET /v1/leader?wait=30&term=1&leader=none HTTP/1.1\r\n\r\n"))
    end
    for _ = 1, 5 do -- the slots are all free, for this address too (close: see limit_count)
      assert.are.equal(200, (request_from("127.0.0.2", "GET", "/v1/status", { Connection = "close" })))
      assert.are.equal(200, (request(port, "GET", "/v1/status", { headers = { Connection = "close" } })))
    end
    assert.are.same({ 0, 0, 0 },
      { limit_count("connections"), limit_count("client_connections"), limit_count("longpolls") })
    signal(pid, "USR1")
    local kept, term = 0, nil
    for _, s in ipairs(polls) do
      local status, headers, body = read_response(s)
      assert.are.equal(200, status)
      assert.are.equal("server_b", cjson.decode(body).identifier)
      term = math.tointeger(cjson.decode(body).term)
      -- kept alive, outside the slots (4, 2 for this address)
      if headers["connection"] == "keep-alive" then kept = kept + 1 end
    end
    assert.are.equal(20, kept)
    -- each client's next poll parks on the same connection ...
    for _, s in ipairs(polls) do
      assert(s:send(string.format("GET /v1/leader?wait=30&term=%d&leader=server_b HTTP/1.1\r\n\r\n", term)))
    end
    socket.sleep(0.2)
    signal(pid, "USR1") -- no leader, next term
    for _, s in ipairs(polls) do
      local status, headers, body = read_response(s)
      assert.are.equal(503, status)
      assert.are.equal(term + 1, math.tointeger(cjson.decode(body).term))
      assert.are.equal("keep-alive", headers["connection"])
    end
    -- ... and another request on one takes a slot as a new connection would
    assert(polls[1]:send("GET /v1/status HTTP/1.1\r\n\r\n"))
    assert.are.equal(200, (read_response(polls[1])))
    for _, s in ipairs(polls) do s:close() end
    assert.are.equal(0, limit_count("evicted"))
  end)

  it("polls that said Connection: close close when answered, before their clients close", function()
    start_plain()
    local polls = {}
    for i = 1, 10 do
      polls[i] = connect(port)
      assert(polls[i]:send("GET /v1/leader?wait=30 HTTP/1.1\r\nConnection: close\r\n\r\n"))
    end
    socket.sleep(0.2)
    signal(pid, "USR1")
    for _, s in ipairs(polls) do
      local status, headers, body = read_response(s)
      assert.are.equal(200, status)
      assert.are.equal("server_b", cjson.decode(body).identifier)
      assert.are.equal("close", headers["connection"])
      assert.is_true((closed(s)))
    end
    -- every client still holds its end open: the agent holds none of them,
    -- only the connection asking
    local _, _, body = request(port, "GET", "/metrics", { headers = { Connection = "close" } })
    assert.truthy(body:find("qcluster_api_connections 1\n", 1, true))
    for _, s in ipairs(polls) do s:close() end
  end)

  it("a request with the token is served while connections without it fill every slot", function()
    start("QC_FAKE_API_MAX_CONNS=10 QC_FAKE_API_MAX_PER_CLIENT=4 QC_FAKE_API_TOKEN_SPARE=3")
    settle()
    local slow = {}
    for a = 2, 6 do -- 5 addresses x 4: every slot, spare places too
      for _ = 1, 4 do
        local s = connect_from("127.0.0." .. a)
        s:send("GET /v1/sta")
        slow[#slow + 1] = s
      end
    end
    socket.sleep(0.1)
    local status, _, j = request_from("127.0.0.7", "GET", "/v1/status")
    assert.are.equal(503, status)
    assert.are.equal("too many connections (limit 10)", j.error)
    -- asked before any token request evicts one of its connections, so
    -- that 127.0.0.2 surely holds its whole budget
    status, _, j = request_from("127.0.0.2", "GET", "/v1/status")
    assert.are.equal(503, status)
    assert.are.equal("too many connections from this address (limit 4)", j.error)
    assert.are.equal(200, (request_from("127.0.0.7", "PUT", "/v1/kv/k", auth(TOKEN))))
    assert.are.equal(200, (request_from("127.0.0.7", "GET", "/v1/status", auth(TOKEN))))
    -- an address at its own budget: the token makes room there too
    assert.are.equal(200, (request_from("127.0.0.2", "GET", "/v1/status", auth(TOKEN))))
    -- the connections that made room got a 503 in place of their answer
    local evicted = 0
    for _, s in ipairs(slow) do
      s:settimeout(0.2)
      local st = read_response(s)
      if st == 503 then evicted = evicted + 1 end
      s:close()
    end
    assert.is_true(evicted >= 3, evicted .. " evicted")
  end)

  it("a new connection must send its request headers in time", function()
    start("QC_FAKE_API_HEADER_S=0.5")
    local silent, partial = connect(port), connect(port)
    assert(partial:send("GET /v1/status HTTP/1.1\r\nX-A: b\r\n"))
    local t0 = socket.gettime()
    local status, _, body = read_response(partial)
    assert.are.equal(408, status)
    assert.matches("request headers not received within 0.5 s", cjson.decode(body).error, 1, true)
    assert.is_true((closed(silent)))
    assert.is_true(socket.gettime() - t0 < 3)
    silent:close()
    partial:close()
    assert.are.equal(2, limit_count("header_timeout"))
  end)

  it("a request whose headers do not arrive in time gets 408, trickling or not", function()
    -- every byte leaves well before the deadline: one sent after the agent
    -- has answered and closed would draw a reset that can discard the 408
    start("QC_FAKE_API_REQUEST_S=1")
    local s = connect(port)
    local t0 = socket.gettime()
    assert(s:send("GET /v1/sta"))
    for _ = 1, 3 do -- a byte now and then does not buy more time
      socket.sleep(0.2)
      s:send("t")
    end
    local status, headers, body = read_response(s)
    local dt = socket.gettime() - t0
    assert.are.equal(408, status)
    assert.are.equal("close", headers["connection"])
    assert.matches("request not received within 1 s", cjson.decode(body).error, 1, true)
    -- a deadline that each byte pushed back would answer at 1.6 s or later
    assert.is_true(dt >= 0.95 and dt < 1.55, "answered after " .. dt)
    assert.is_true((closed(s)))
    s:close()
    assert.are.equal(1, limit_count("request_timeout"))
  end)

  it("a body that does not arrive in time gets 408 too", function()
    start("QC_FAKE_API_REQUEST_S=0.5")
    local s = connect(port)
    assert(s:send("PUT /v1/kv/k HTTP/1.1\r\nAuthorization: Bearer " .. TOKEN ..
      "\r\nContent-Length: 10\r\n\r\nabc"))
    assert.are.equal(408, (read_response(s)))
    assert.is_true((closed(s)))
    s:close()
    -- nothing was written
    assert.are.equal(404, (request(port, "GET", "/v1/kv/k")))
  end)

  it("an idle keep-alive connection is closed, and blank lines do not keep it open", function()
    start("QC_FAKE_API_IDLE_S=0.5")
    local s = connect(port)
    assert(s:send("GET /v1/status HTTP/1.1\r\n\r\n"))
    assert.are.equal(200, (read_response(s)))
    local t0 = socket.gettime()
    assert.is_true((closed(s)))
    local dt = socket.gettime() - t0
    assert.is_true(dt >= 0.4 and dt < 2, "closed after " .. dt)
    s:close()
    local b = connect(port)
    t0 = socket.gettime()
    for _ = 1, 4 do
      socket.sleep(0.2)
      b:send("\r\n")
    end
    assert.is_true((closed(b)))
    assert.is_true(socket.gettime() - t0 < 2)
    b:close()
    assert.is_true(limit_count("idle") >= 2)
  end)

  it("a connection in use is not cut, nor is a long-poll that outlasts both timeouts", function()
    start("QC_FAKE_API_IDLE_S=0.5 QC_FAKE_API_REQUEST_S=0.5")
    local s = connect(port)
    for _ = 1, 5 do
      assert(s:send("GET /v1/status HTTP/1.1\r\n\r\n"))
      assert.are.equal(200, (read_response(s)))
      socket.sleep(0.3)
    end
    local t0 = socket.gettime()
    assert(s:send("GET /v1/leader?wait=1.2 HTTP/1.1\r\n\r\n"))
    local status, headers = read_response(s)
    assert.are.equal(503, status) -- no leader: the wait ran out
    assert.are.equal("keep-alive", headers["connection"])
    assert.is_true(socket.gettime() - t0 >= 1.1)
    s:close()
  end)

  it("headers over 8 KiB get 431, counted with their separators", function()
    start()
    local h = {}
    for i = 1, 1500 do h["x" .. i] = "y" end -- ~ 1500 * 7 bytes, most of it separators
    local status, headers = request(port, "GET", "/v1/status", { headers = h })
    assert.are.equal(431, status)
    assert.are.equal("close", headers["connection"])
    assert.are.equal(414, (request(port, "GET", "/v1/kv/" .. string.rep("k", 5000))))
    assert.are.equal(1, limit_count("header"))
    assert.are.equal(1, limit_count("url"))
  end)

  it("HEAD is answered with GET's Content-Length and no body, so the next response is read right", function()
    start()
    local _, _, page = request(port, "GET", "/ui")
    local s = connect(port)
    assert(s:send("HEAD /ui HTTP/1.1\r\n\r\nHEAD /v1/status HTTP/1.1\r\n\r\nGET /v1/status HTTP/1.1\r\n\r\n"))
    local status, headers = read_response(s, "head")
    assert.are.equal(200, status)
    assert.is_true(#page > 0)
    assert.are.equal(tostring(#page), headers["content-length"])
    assert.are.equal(405, (read_response(s, "head")))
    assert.are.equal(200, (read_response(s)))
    s:close()
    -- garbage after a HEAD is no HEAD: its 400 has the body it announces
    s = connect(port)
    assert(s:send("HEAD /ui HTTP/1.1\r\n\r\n*\n\r\n"))
    assert.are.equal(200, (read_response(s, "head")))
    local bad, _, body = read_response(s)
    assert.are.equal(400, bad)
    assert.matches("malformed request", body)
    s:close()
  end)

  it("an answer before the headers are whole (431, 400) frames by the request line: HEAD's has no body", function()
    start()
    for _, case in ipairs { { 431, "X-Big: " .. string.rep("y", 9000) .. "\r\n\r\n" }, { 400, "X-a\1b: c\r\n\r\n" } } do
      local s = connect(port)
      assert(s:send("HEAD /v1/status HTTP/1.1\r\n" .. case[2]))
      local status, headers = read_response(s, "head")
      assert.are.equal(case[1], status)
      assert.are.equal("close", headers["connection"])
      assert.is_true(tonumber(headers["content-length"]) > 0)
      -- nothing follows the headers: a body would read as the next response
      local rest, _, partial = s:receive("*a")
      assert.are.equal("", rest or partial)
      s:close()
    end
  end)
end)

describe("qc_api write guard", function()
  local port, pid

  before_each(function()
    port = 18000 + math.random(0, 9999)
    pid = start_fake(port, TOKEN)
  end)

  after_each(function()
    if pid then os.execute("kill " .. pid) end
    pid = nil
  end)

  local writes = {
    { "POST", "/v1/transfer-leadership", '{"to":"server_b"}' },
    { "POST", "/v1/join", '{"address":"10.0.0.9:7001"}' },
    { "POST", "/v1/leave", '{"identifier":"server_c"}' },
    { "PUT", "/v1/self/metadata", '{"zone":"x"}' },
    { "PUT", "/v1/kv/guarded", "v" },
    { "DELETE", "/v1/kv/guarded", "" },
  }

  it("every write route answers 401 without the right token and does nothing", function()
    local wrong = {
      {}, auth("wrong"), auth(TOKEN .. "x"), auth(TOKEN:sub(1, -2)), auth(""),
      { Authorization = TOKEN }, { Authorization = "Basic " .. TOKEN },
      auth(TOKEN .. string.rep("x", 2000)),
    }
    for _, w in ipairs(writes) do
      for _, h in ipairs(wrong) do
        local status, headers = request(port, w[1], w[2], { body = w[3], headers = h })
        assert.are.equal(401, status, w[1] .. " " .. w[2])
        assert.are.equal("Bearer", headers["www-authenticate"])
      end
    end
    -- nothing changed: the key was never written, the metadata is as it was
    assert.are.equal(404, (request(port, "GET", "/v1/kv/guarded")))
    local _, _, _, m = request(port, "GET", "/v1/members")
    assert.are.same({}, m[1].metadata)
  end)

  it("every write route takes the right token, in any case of Bearer", function()
    for _, w in ipairs(writes) do
      local status = request(port, w[1], w[2], { body = w[3], headers = { Authorization = "bearer " .. TOKEN } })
      assert.are_not.equal(401, status, w[1] .. " " .. w[2])
      assert.is_true(status < 300, w[1] .. " " .. w[2] .. " gave " .. status)
    end
  end)

  it("takes the token with spaces or tabs around it, and after several spaces (RFC 9110 5.5, 11.4)", function()
    local ok = { "Bearer " .. TOKEN .. " ", "Bearer " .. TOKEN .. "\t \t", "Bearer   " .. TOKEN,
      "Bearer\t" .. TOKEN, " \tBearer " .. TOKEN .. "  " }
    for _, v in ipairs(ok) do
      local status = request(port, "PUT", "/v1/kv/trimmed", { body = "v", headers = { Authorization = v } })
      assert.are.equal(200, status, string.format("%q", v))
    end
    -- whitespace is trimmed, nothing else: these stay wrong
    local bad = { "Bearer " .. TOKEN .. " x", "Bearer " .. TOKEN:sub(1, -2) .. " " .. TOKEN:sub(-1),
      "Bearer" .. TOKEN, "Bearer ", "Bearer  \t " }
    for _, v in ipairs(bad) do
      local status = request(port, "PUT", "/v1/kv/trimmed", { body = "v", headers = { Authorization = v } })
      assert.are.equal(401, status, string.format("%q", v))
    end
  end)

  it("refuses an unauthenticated write before reading its body, even with 100-continue", function()
    local s = connect(port)
    assert(s:send("PUT /v1/kv/big HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1000000\r\n\r\n"))
    local status, headers, body = read_response(s)
    assert.are.equal(401, status) -- not "100 Continue": no body was asked for
    assert.are.equal("close", headers["connection"])
    assert.is_string(cjson.decode(body).error)
    s:close()
  end)

  it("reads need no token", function()
    assert.are.equal(200, (request(port, "GET", "/v1/status")))
    assert.are.equal(200, (request(port, "GET", "/v1/kv")))
    assert.are.equal(404, (request(port, "GET", "/v1/kv/nothing")))
  end)
end)

-- Out of descriptors (EMFILE), the listener stays readable; the API must
-- pause its accept watcher rather than spin on the failing accept.
describe("qc_api out of descriptors", function()
  local FAKE = os.getenv("QC_API_FAKE") or "./build/api_fake"
  local port, pid, log

  after_each(function()
    if pid then os.execute("kill " .. pid) end
    pid = nil
    if log then os.remove(log) end
  end)

  -- utime + stime of pid, in clock ticks (/proc/PID/stat fields 14, 15)
  local function cpu_ticks()
    local f = assert(io.open("/proc/" .. pid .. "/stat"))
    local stat = f:read("*a")
    f:close()
    local fields = {}
    for w in stat:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = w end
    return tonumber(fields[12]) + tonumber(fields[13]) -- after "pid (comm)"
  end

  local function ticks_per_second()
    local p = assert(io.popen("getconf CLK_TCK"))
    local n = tonumber(p:read("*l"))
    p:close()
    return n
  end

  local function log_lines(pattern)
    local n = 0
    for line in io.lines(log) do
      if line:find(pattern, 1, true) then n = n + 1 end
    end
    return n
  end

  it("pauses accepting instead of spinning, logs once, counts it, and serves again", function()
    port = 18000 + math.random(0, 9999)
    log = os.tmpname()
    -- 24 descriptors: a handful for the fake itself, the rest for clients
    local p = assert(io.popen("sh -c 'ulimit -n 24 && exec " .. FAKE .. " " .. port ..
      "' >/dev/null 2>" .. log .. " & echo $!"))
    pid = assert(tonumber(p:read("*l")))
    p:close()
    local held
    for _ = 1, 250 do
      held = socket.connect("127.0.0.1", port)
      if held then break end
      socket.sleep(0.02)
    end
    assert.is_truthy(held, "api_fake did not start")
    local clients = { held }
    for i = 2, 40 do -- more than it has descriptors; the rest wait in the backlog
      clients[i] = assert(socket.connect("127.0.0.1", port))
    end
    socket.sleep(0.3) -- it has hit the limit by now
    local tck, c0, t0 = ticks_per_second(), cpu_ticks(), socket.gettime()
    socket.sleep(1.5)
    local busy = (cpu_ticks() - c0) / tck / (socket.gettime() - t0)
    assert.is_true(busy < 0.2, "the fake used " .. busy .. " of a core while out of descriptors")
    assert.are.equal(1, log_lines("Too many open files"))
    local total = 0
    for _ in io.lines(log) do total = total + 1 end
    assert.is_true(total <= 3, total .. " log lines")
    for _, s in ipairs(clients) do s:close() end
    -- the queued connections are taken and closed, then it answers again
    local status
    for _ = 1, 50 do
      local s = socket.connect("127.0.0.1", port)
      if s then
        s:settimeout(2)
        s:send("GET /metrics HTTP/1.1\r\n\r\n")
        local body
        status, _, body = read_response(s)
        s:close()
        if status == 200 then
          local n = tonumber(body:match('qcluster_accept_backoffs_total{listener="api"} (%d+)'))
          assert.is_true(n and n >= 1, "backoffs: " .. tostring(n))
          break
        end
      end
      socket.sleep(0.1)
    end
    assert.are.equal(200, status)
    -- the episode ends when accept finds the queue empty, which may come
    -- after our answer was sent: wait for the line, then check it is one
    for _ = 1, 100 do
      if log_lines("accepting connections again") > 0 then break end
      socket.sleep(0.02)
    end
    assert.are.equal(1, log_lines("accepting connections again"))
  end)
end)
