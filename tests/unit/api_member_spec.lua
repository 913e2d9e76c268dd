-- The membership routes of the HTTP API (src/api/routes_members.c): POST /v1/join,
-- POST /v1/leave and PUT /v1/self/metadata against build/api_fake. Its
-- fake view answers by name: a join through "refuse:..." is refused,
-- "noleader:..." finds no leader, "timeout:..." times out, "missing:..."
-- is not found, "broken:..." fails otherwise, "slow:..." answers 0.3 s
-- later; leave takes the same names ("ghost" is not found, "server_c" and
-- none are done); metadata with a "refuse" key is refused, with a "slow"
-- key applied 0.3 s later.
local socket = require("socket")
local cjson = require("cjson.safe")

local fake = require("fake")
local request, connect, read_response, format_request =
  fake.request, fake.connect, fake.read_response, fake.format_request
local TOKEN = "member-token"
local AUTH = { Authorization = "Bearer " .. TOKEN }

local function post(port, path, body)
  return request(port, "POST", path, { body = body, headers = AUTH })
end

local function join(port, addresses) return post(port, "/v1/join", cjson.encode({ join = addresses })) end

local function put_meta(port, body)
  return request(port, "PUT", "/v1/self/metadata", { body = body, headers = AUTH })
end

local function self_of(port)
  local status, _, _, j = request(port, "GET", "/v1/members")
  assert.are.equal(200, status)
  return j[1]
end

describe("qc_api membership", function()
  local port, pid

  before_each(function()
    port = 18000 + math.random(0, 9999)
    pid = fake.start(port, TOKEN)
  end)

  after_each(function()
    if pid then os.execute("kill " .. pid) end
    pid = nil
  end)

  describe("POST /v1/join", function()
    it("hands every address to the agent and answers 200 {ok, message}", function()
      local status, headers, _, j = join(port, { "10.0.0.1:7001", "db-2.example:7002", "[::1]:7003" })
      assert.are.equal(200, status)
      assert.are.equal("application/json", headers["content-type"])
      assert.is_true(j.ok)
      assert.are.equal("joined through 10.0.0.1:7001, db-2.example:7002, [::1]:7003", j.message)
    end)

    it("takes {\"address\": HOST:PORT} for one address", function()
      local status, _, _, j = post(port, "/v1/join", '{"address": "localhost:7001"}')
      assert.are.equal(200, status)
      assert.are.equal("joined through localhost:7001", j.message)
    end)

    it("takes up to 32 addresses", function()
      local list = {}
      for i = 1, 32 do list[i] = "h" .. i .. ":" .. (7000 + i) end
      assert.are.equal(200, (join(port, list)))
      list[33] = "h33:7033"
      local status, _, _, j = join(port, list)
      assert.are.equal(400, status)
      assert.matches("at most 32", j.error, 1, true)
    end)

    it("maps the agent's errors: 409 refused, 503 no leader, 504 timed out, 404, 500", function()
      local status, _, _, j = join(port, { "refuse:7001" })
      assert.are.equal(409, status)
      assert.are.equal("identifier server_a is already in use", j.error)
      status, _, _, j = join(port, { "noleader:7001" })
      assert.are.equal(503, status)
      assert.are.equal("no leader", j.error) -- no message from the agent: the default text
      status, _, _, j = join(port, { "timeout:7001" })
      assert.are.equal(504, status)
      assert.are.equal("timed out waiting for the change to commit", j.error)
      status, _, _, j = join(port, { "missing:7001" })
      assert.are.equal(404, status)
      assert.is_string(j.error)
      status, _, _, j = join(port, { "broken:7001" })
      assert.are.equal(500, status)
      assert.matches("the log cannot be written", j.error, 1, true)
    end)

    it("answers 400 to a body that is not {join: [HOST:PORT, ...]} or {address: HOST:PORT}", function()
      for _, body in ipairs({
        "", "nope", "{", '["a:1"]', '"a:1"', "null", '{}', '{"join": []}', '{"join": "a:1"}',
        '{"join": [5]}', '{"join": ["a:1", null]}', '{"join": {"a": "b:1"}}', '{"address": 7001}',
        '{"join": ["a:1"], "address": "b:2"}', '{"join": null, "address": null}',
        '{"join": ["a:1"]} trailing', '{"join": ["a:1"]}\0{"x": 1}',
      }) do
        local status, _, _, j = post(port, "/v1/join", body)
        assert.are.equal(400, status, body)
        assert.is_string(j.error, body)
      end
    end)

    it("answers 400 naming a bad address: no host, no port, port 0 or past 65535, spaces", function()
      for _, a in ipairs({
        "localhost", ":7001", "localhost:", "localhost:0", "localhost:65536", "localhost:123456",
        "localhost:-1", "localhost:7x", "local host:7001", "\tlocalhost:7001", "[::1:7001", "[]:7001",
        string.rep("h", 300) .. ":7001",
      }) do
        local status, _, _, j = join(port, { "good:7001", a })
        assert.are.equal(400, status, a)
        assert.matches("bad address", j.error, 1, true)
      end
      local _, _, _, j = join(port, { "localhost:0" })
      assert.are.equal('bad address "localhost:0": expected HOST:PORT, port 1 to 65535', j.error)
      assert.are.equal(200, (join(port, { "localhost:65535", "127.0.0.1:1" })))
    end)

    it("answers 413 to a body over 64 KiB", function()
      local status, _, _, j = post(port, "/v1/join", '{"join": ["' .. string.rep("h", 70000) .. ':1"]}')
      assert.are.equal(413, status)
      assert.is_string(j.error)
    end)

    it("a join that completes later is answered then, and a pipelined request after it", function()
      local s = connect(port)
      local body = '{"join": ["slow:7001"]}'
      local t0 = socket.gettime()
      assert(s:send(format_request("POST", "/v1/join", { body = body, headers = AUTH }) ..
        format_request("GET", "/v1/status")))
      local status, _, b = read_response(s)
      assert.are.equal(200, status)
      assert.is_true(cjson.decode(b).ok)
      assert.is_true(socket.gettime() - t0 >= 0.25)
      assert.are.equal(200, (read_response(s)))
      s:close()
    end)
  end)

  describe("POST /v1/leave", function()
    it("an empty body, {} or a null identifier: this node leaves", function()
      for _, body in ipairs({ "", "{}", '{"identifier": null}' }) do
        local status, _, _, j = post(port, "/v1/leave", body)
        assert.are.equal(200, status, body)
        assert.is_true(j.ok)
      end
    end)

    it("removes the member named, 404 names one that is unknown", function()
      local status, _, _, j = post(port, "/v1/leave", '{"identifier": "server_c"}')
      assert.are.equal(200, status)
      assert.is_true(j.ok)
      status, _, _, j = post(port, "/v1/leave", '{"identifier": "ghost"}')
      assert.are.equal(404, status)
      assert.are.equal("no such member: ghost", j.error)
    end)

    it("maps the agent's errors: 409 refused, 503 no leader, 504 timed out, 500", function()
      local status, _, _, j = post(port, "/v1/leave", '{"identifier": "refuse"}')
      assert.are.equal(409, status)
      assert.are.equal("server_a is the last voter", j.error)
      status, _, _, j = post(port, "/v1/leave", '{"identifier": "noleader"}')
      assert.are.equal(503, status)
      assert.are.equal("no leader", j.error)
      status = post(port, "/v1/leave", '{"identifier": "timeout"}')
      assert.are.equal(504, status)
      status, _, _, j = post(port, "/v1/leave", '{"identifier": "broken"}')
      assert.are.equal(500, status)
      assert.is_string(j.error)
    end)

    it("answers 400 to a body that is not {identifier: ID}", function()
      for _, body in ipairs({ "nope", "[]", '"server_c"', "5", '{"identifier": 5}', '{"identifier": ""}',
        '{"identifier": ["server_c"]}', '{"identifier": "server_c"', "\0" }) do
        local status, _, _, j = post(port, "/v1/leave", body)
        assert.are.equal(400, status, body)
        assert.is_string(j.error)
      end
    end)

    it("a leave that completes later is answered then", function()
      local t0 = socket.gettime()
      local status, _, _, j = post(port, "/v1/leave", '{"identifier": "slow"}')
      assert.are.equal(200, status)
      assert.is_true(j.ok)
      assert.is_true(socket.gettime() - t0 >= 0.25)
    end)

    it("a client that hangs up before a slow leave completes does not hurt the server", function()
      for _ = 1, 5 do
        local s = connect(port)
        assert(s:send(format_request("POST", "/v1/leave", { body = '{"identifier": "slow"}', headers = AUTH })))
        s:close()
      end
      socket.sleep(0.5) -- done() fires on closed connections
      assert.are.equal(200, (request(port, "GET", "/v1/status")))
      assert.are.equal(200, (post(port, "/v1/leave", "")))
    end)
  end)

  describe("PUT /v1/self/metadata", function()
    it("replaces this node's metadata; GET /v1/members shows it", function()
      local status, _, _, j = put_meta(port, '{"zone": "eu-1", "weight": 2.50, "tags": ["a", {"b": null}]}')
      assert.are.equal(200, status)
      assert.is_true(j.ok)
      local me = self_of(port)
      assert.are.equal("server_a", me.identifier)
      assert.are.same({ zone = "eu-1", weight = 2.5, tags = { "a", { b = cjson.null } } }, me.metadata)
      assert.are.equal(200, (put_meta(port, "{}")))
      assert.are.same({}, self_of(port).metadata)
    end)

    it("answers 400 to a body that is not a JSON object and keeps the metadata", function()
      assert.are.equal(200, (put_meta(port, '{"keep": true}')))
      for _, body in ipairs({ "", "nope", "[]", '["a"]', '"text"', "5", "null", "true", '{"a": 1',
        '{"a": 1} {"b": 2}', '{"a": "\255"}', '{"a": 1}\0' }) do
        local status, _, _, j = put_meta(port, body)
        assert.are.equal(400, status, body)
        assert.is_string(j.error, body)
      end
      assert.are.same({ keep = true }, self_of(port).metadata)
    end)

    it("answers 400 to metadata nested too deep, 413 to a body over 64 KiB", function()
      local deep = string.rep('{"a":', 80) .. "1" .. string.rep("}", 80)
      local status, _, _, j = put_meta(port, deep)
      assert.are.equal(400, status)
      assert.are.equal("metadata nests too deep", j.error)
      status = put_meta(port, '{"big": "' .. string.rep("x", 65 * 1024) .. '"}')
      assert.are.equal(413, status)
      assert.are.same({}, self_of(port).metadata)
    end)

    it("a refused change answers 409 and changes nothing", function()
      local status, _, _, j = put_meta(port, '{"refuse": 1}')
      assert.are.equal(409, status)
      assert.are.equal("metadata refused by the fake", j.error)
      assert.are.same({}, self_of(port).metadata)
    end)

    it("a change that commits later is answered then and shows after", function()
      local t0 = socket.gettime()
      local status = put_meta(port, '{"slow": "yes"}')
      assert.are.equal(200, status)
      assert.is_true(socket.gettime() - t0 >= 0.25)
      assert.are.same({ slow = "yes" }, self_of(port).metadata)
    end)
  end)

  describe("JSON bodies whose text is not UTF-8 (RFC 3629)", function()
    local NOT_UTF8 = ": text is not valid UTF-8"
    -- What yajl alone lets through: overlong forms, surrogates, code points
    -- past U+10FFFF, and escapes of lone surrogates (decoded to CESU or "?").
    local BAD = {
      { "overlong '/' (C0 AF)", "\xC0\xAF" },
      { "overlong '/' in 3 bytes (E0 80 AF)", "\xE0\x80\xAF" },
      { "a surrogate (ED A0 80)", "\xED\xA0\x80" },
      { "past U+10FFFF (F4 90 80 80)", "\xF4\x90\x80\x80" },
      { "a sequence cut short (E2 82)", "ok\xE2\x82" },
      { "a lone high surrogate escape", "\\ud800" },
      { "a high surrogate escape before a non-surrogate", "\\ud800\\u0041" },
      { "a lone low surrogate escape", "x\\udc00" },
    }

    it("PUT /v1/self/metadata answers 400 naming the field, keeps the metadata, takes UTF-8", function()
      assert.are.equal(200, (put_meta(port, '{"keep": true}')))
      for _, case in ipairs(BAD) do
        local status, _, _, j = put_meta(port, '{"a": {"k": [1, "' .. case[2] .. '"]}}')
        assert.are.equal(400, status, case[1])
        assert.are.equal("metadata.a.k[1]" .. NOT_UTF8, j.error, case[1])
        status, _, _, j = put_meta(port, '{"zone": "' .. case[2] .. '"}')
        assert.are.equal(400, status, case[1])
        assert.are.equal("metadata.zone" .. NOT_UTF8, j.error, case[1])
      end
      local status, _, _, j = put_meta(port, '{"ok": 1, "\xC0\xAF": 2}')
      assert.are.equal(400, status)
      assert.are.equal("metadata: a key is not valid UTF-8", j.error)
      assert.are.same({ keep = true }, self_of(port).metadata)
      -- the member list stays UTF-8 for every client
      local _, _, body = request(port, "GET", "/v1/members")
      assert.is_truthy(utf8.len(body), body)
      -- while 2-, 3- and 4-byte text and surrogate pairs go through
      status = put_meta(port, '{"k": "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF",'
        .. ' "\xED\x9F\xBF": "\\ud83d\\ude00\\u00e9"}')
      assert.are.equal(200, status)
      assert.are.same({ k = "\u{E9}\u{20AC}\u{1F600}\u{10FFFF}", ["\u{D7FF}"] = "\u{1F600}\u{E9}" },
        self_of(port).metadata)
    end)

    it("join, leave and transfer-leadership answer 400 naming the field", function()
      for _, case in ipairs(BAD) do
        local status, _, _, j = post(port, "/v1/join", '{"join": ["a:1", "h' .. case[2] .. ':7001"]}')
        assert.are.equal(400, status, case[1])
        assert.are.equal("join[1]" .. NOT_UTF8, j.error, case[1])
        status, _, _, j = post(port, "/v1/join", '{"address": "' .. case[2] .. ':7001"}')
        assert.are.equal(400, status, case[1])
        assert.are.equal("address" .. NOT_UTF8, j.error, case[1])
        status, _, _, j = post(port, "/v1/leave", '{"identifier": "' .. case[2] .. '"}')
        assert.are.equal(400, status, case[1])
        assert.are.equal("identifier" .. NOT_UTF8, j.error, case[1])
        status, _, _, j = post(port, "/v1/transfer-leadership", '{"to": "' .. case[2] .. '"}')
        assert.are.equal(400, status, case[1])
        assert.are.equal("to" .. NOT_UTF8, j.error, case[1])
      end
      -- and the agent is still there
      assert.are.equal(200, (request(port, "GET", "/v1/status")))
    end)
  end)

  it("wrong methods get 405 with Allow", function()
    for _, case in ipairs({
      { "GET", "/v1/join", "POST" }, { "PUT", "/v1/join", "POST" }, { "DELETE", "/v1/leave", "POST" },
      { "GET", "/v1/leave", "POST" }, { "GET", "/v1/self/metadata", "PUT" },
      { "POST", "/v1/self/metadata", "PUT" }, { "PATCH", "/v1/self/metadata", "PUT" },
    }) do
      local status, headers, _, j = request(port, case[1], case[2], { headers = AUTH })
      assert.are.equal(405, status, case[1] .. " " .. case[2])
      assert.are.equal(case[3], headers["allow"])
      assert.is_string(j.error)
    end
    assert.are.equal(404, (request(port, "GET", "/v1/self")))
    assert.are.equal(404, (request(port, "PUT", "/v1/self/metadata/x", { body = "{}", headers = AUTH })))
  end)

  it("every membership write needs the bearer token", function()
    local h = { Authorization = "Bearer wrong" }
    assert.are.equal(401, (request(port, "POST", "/v1/join", { body = '{"address": "a:1"}' })))
    assert.are.equal(401, (request(port, "POST", "/v1/join", { body = '{"address": "a:1"}', headers = h })))
    assert.are.equal(401, (request(port, "POST", "/v1/leave", { body = "" })))
    assert.are.equal(401, (request(port, "PUT", "/v1/self/metadata", { body = '{"a": 1}', headers = h })))
    assert.are.same({}, self_of(port).metadata)
  end)

  it("members and status show each member's priority", function()
    local _, _, _, j = request(port, "GET", "/v1/members")
    assert.are.same({ 1, 2, 0 }, { j[1].priority, j[2].priority, j[3].priority })
    local _, _, _, st = request(port, "GET", "/v1/status")
    assert.are.equal(2, st.peers[1].priority)
    assert.are.equal(0, st.peers[2].priority)
  end)

  it("stops cleanly with a change still in progress", function()
    local s = connect(port)
    assert(s:send(format_request("POST", "/v1/join", { body = '{"address": "slow:1"}', headers = AUTH })))
    socket.sleep(0.05)
    os.execute("kill " .. pid)
    local gone = false
    for _ = 1, 100 do
      if not require("agents").alive(pid) then -- a zombie is gone (tests/helpers/agents.lua)
        gone = true
        break
      end
      socket.sleep(0.02)
    end
    pid = nil
    s:close()
    assert.is_true(gone)
  end)
end)

describe("qc_api membership without the agent's support", function()
  it("answers 501 {error: membership is not available}", function()
    local port = 18000 + math.random(0, 9999)
    local pid = fake.start(port, nil, "QC_FAKE_NO_MEMBERS=1")
    finally(function() os.execute("kill " .. pid) end)
    for _, case in ipairs({
      { "POST", "/v1/join", '{"address": "a:1"}' }, { "POST", "/v1/leave", "" },
      { "PUT", "/v1/self/metadata", "{}" },
    }) do
      local status, _, _, j = request(port, case[1], case[2], { body = case[3] })
      assert.are.equal(501, status, case[2])
      assert.are.equal("membership is not available", j.error)
    end
    assert.are.equal(200, (request(port, "GET", "/v1/members")))
  end)
end)
