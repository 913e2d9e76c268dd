-- The /v1/kv routes of the HTTP API (src/api/routes_kv.c) against build/api_fake and
-- its in-memory store. Its special keys: "slow..." writes answer 0.5 s
-- later, "down..." answers no leader (reads only when not stale),
-- "readonly..." cannot write, "timeout..." times out, "broken..." fails.
local socket = require("socket")
local cjson = require("cjson.safe")

local fake = require("fake")
local request, connect, read_response, pct = fake.request, fake.connect, fake.read_response, fake.pct
local TOKEN = "kv-token"
local AUTH = { Authorization = "Bearer " .. TOKEN }
local MiB = 1024 * 1024

-- A revision from decoded JSON (a float) as query text.
local function rev(n) return string.format("%d", n) end

local function put(port, key, value, query)
  return request(port, "PUT", "/v1/kv/" .. pct(key) .. (query or ""), { body = value, headers = AUTH })
end

local function del(port, key, query)
  return request(port, "DELETE", "/v1/kv/" .. pct(key) .. (query or ""), { headers = AUTH })
end

local function get(port, key, query)
  return request(port, "GET", "/v1/kv/" .. pct(key) .. (query or ""))
end

local function b64decode(s)
  local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  local bits = s:gsub("=", ""):gsub(".", function(ch)
    local v = chars:find(ch, 1, true) - 1
    local t = {}
    for i = 5, 0, -1 do t[#t + 1] = (v >> i) & 1 end
    return table.concat(t)
  end)
  bits = bits:sub(1, #bits - #bits % 8)
  return (bits:gsub("%d%d%d%d%d%d%d%d", function(byte) return string.char(tonumber(byte, 2)) end))
end

describe("qc_api /v1/kv", function()
  local port, pid

  before_each(function()
    port = 18000 + math.random(0, 9999)
    pid = fake.start(port, TOKEN)
  end)

  after_each(function()
    if pid then os.execute("kill " .. pid) end
    pid = nil
  end)

  it("PUT answers the revision; GET the raw value with X-QCluster-Revision", function()
    local status, headers, _, j = put(port, "config/primary", "db-1")
    assert.are.equal(200, status)
    assert.are.equal("application/json", headers["content-type"])
    assert.are.equal(1, j.revision)
    local body
    status, headers, body = get(port, "config/primary")
    assert.are.equal(200, status)
    assert.are.equal("application/octet-stream", headers["content-type"])
    assert.are.equal("1", headers["x-qcluster-revision"])
    assert.are.equal("db-1", body)
    -- an overwrite gets a new revision; an empty value is a value
    assert.are.equal(2, select(4, put(port, "config/primary", "")).revision)
    status, headers, body = get(port, "config/primary")
    assert.are.equal(200, status)
    assert.are.equal("", body)
    assert.are.equal("2", headers["x-qcluster-revision"])
  end)

  it("GET of a missing key is 404 key not found", function()
    local status, _, _, j = get(port, "nothing")
    assert.are.equal(404, status)
    assert.are.equal("key not found", j.error)
  end)

  it("keys and values are binary safe: NUL and 0xFF bytes round trip", function()
    local key, value = "\0k\255/\n ", "a\0b\255\254" .. string.rep("\0", 100)
    assert.are.equal(200, (put(port, key, value)))
    local status, _, body = get(port, key)
    assert.are.equal(200, status)
    assert.are.equal(value, body)
    -- a different byte is a different key
    assert.are.equal(404, (get(port, "\0k\254/\n ")))
    -- lower-case escapes decode alike
    assert.are.equal(200, (request(port, "GET", "/v1/kv/%00k%ff%2F%0a%20")))
  end)

  it("a 1 MiB value round trips, 1 MiB + 1 is 413 and the connection goes on", function()
    local big = {}
    for i = 1, MiB / 256 do big[i] = string.char((i * 7) % 256):rep(255) .. "\0" end
    big = table.concat(big)
    assert.are.equal(MiB, #big)
    assert.are.equal(200, (put(port, "big", big)))
    local status, _, body = get(port, "big")
    assert.are.equal(200, status)
    assert.are.equal(#big, #body)
    assert.is_true(big == body)
    -- just over the store's limit: read whole, refused by the store
    local s = connect(port)
    assert(s:send(fake.format_request("PUT", "/v1/kv/big", { body = big .. "x", headers = AUTH })))
    local st, headers, b = read_response(s)
    assert.are.equal(413, st)
    assert.is_string(cjson.decode(b).error)
    assert.are.equal("keep-alive", headers["connection"])
    assert(s:send("GET /v1/kv/big HTTP/1.1\r\n\r\n"))
    st, headers = read_response(s)
    assert.are.equal(200, st)
    assert.are.equal("1", headers["x-qcluster-revision"])
    s:close()
  end)

  it("a body over the API's KV limit is 413 before it is read; other routes keep 64 KiB", function()
    local status, headers, _, j = put(port, "big", string.rep("x", 2 * MiB))
    assert.are.equal(413, status)
    assert.are.equal("close", headers["connection"])
    assert.are.equal("request body too large", j.error)
    status = request(port, "POST", "/v1/transfer-leadership",
      { body = string.rep(" ", 64 * 1024 + 1), headers = AUTH })
    assert.are.equal(413, status)
    assert.are.equal(404, (get(port, "big")))
  end)

  it("cas=0 creates only; cas=N writes only over revision N, else 409 with the current one", function()
    local status, _, _, j = put(port, "k", "one", "?cas=0")
    assert.are.equal(200, status)
    local r1 = j.revision
    status, _, _, j = put(port, "k", "two", "?cas=0")
    assert.are.equal(409, status)
    assert.are.equal("revision mismatch", j.error)
    assert.are.equal(r1, j.revision)
    status, _, _, j = put(port, "k", "two", "?cas=" .. rev(r1 + 10))
    assert.are.equal(409, status)
    assert.are.equal(r1, j.revision)
    status, _, _, j = put(port, "k", "two", "?cas=" .. rev(r1))
    assert.are.equal(200, status)
    assert.is_true(j.revision > r1)
    assert.are.equal("two", select(3, get(port, "k")))
    -- cas on an absent key: its revision is 0
    status, _, _, j = put(port, "absent", "x", "?cas=7")
    assert.are.equal(409, status)
    assert.are.equal(0, j.revision)
  end)

  it("DELETE answers the revision, 404 when missing, 409 on a cas mismatch", function()
    local _, _, _, j = put(port, "d", "v")
    local r1 = j.revision
    local status
    status, _, _, j = del(port, "d", "?cas=" .. rev(r1 + 1))
    assert.are.equal(409, status)
    assert.are.equal(r1, j.revision)
    status, _, _, j = del(port, "d", "?cas=0")
    assert.are.equal(409, status)
    assert.are.equal(r1, j.revision)
    status, _, _, j = del(port, "d", "?cas=" .. rev(r1))
    assert.are.equal(200, status)
    assert.is_true(j.revision > r1)
    assert.are.equal(404, (get(port, "d")))
    status, _, _, j = del(port, "d")
    assert.are.equal(404, status)
    assert.are.equal("key not found", j.error)
    put(port, "d2", "v")
    assert.are.equal(200, (del(port, "d2")))
  end)

  it("a malformed cas is 400", function()
    for _, q in ipairs({ "?cas=", "?cas=-1", "?cas=abc", "?cas=1x", "?cas=9223372036854775808", "?cas" }) do
      assert.are.equal(400, (put(port, "k", "v", q)), q)
      assert.are.equal(400, (del(port, "k", q)), q)
    end
    assert.are.equal(200, (put(port, "k", "v", "?cas=0")))
  end)

  it("lists by prefix in key order with key, value and revision", function()
    put(port, "app/b", "2")
    put(port, "app/a", "1")
    put(port, "apq", "x")
    put(port, "other", "y")
    local status, headers, _, j = request(port, "GET", "/v1/kv/?prefix=app/")
    assert.are.equal(200, status)
    assert.are.equal("application/json", headers["content-type"])
    assert.are.equal(2, #j)
    assert.are.same({ key = "app/a", value = "1", revision = 2 }, j[1])
    assert.are.same({ key = "app/b", value = "2", revision = 1 }, j[2])
    for _, path in ipairs({ "/v1/kv", "/v1/kv/", "/v1/kv?prefix=", "/v1/kv/?prefix=" }) do
      status, _, _, j = request(port, "GET", path)
      assert.are.equal(200, status, path)
      assert.are.equal(4, #j, path)
    end
    -- percent-encoded prefix; nothing matches: an empty array
    status, _, _, j = request(port, "GET", "/v1/kv/?prefix=%61pq")
    assert.are.equal(200, status)
    assert.are.equal(1, #j)
    assert.are.equal("apq", j[1].key)
    local body
    status, _, body = request(port, "GET", "/v1/kv/?prefix=zzz")
    assert.are.equal(200, status)
    assert.are.equal("[]", body)
  end)

  it("sends key and value base64 with encoding when either is not UTF-8 text", function()
    put(port, "t/text", "héllo ✓")
    put(port, "t/binval", "\255\254")
    put(port, "t/\255key", "plain")
    put(port, "t/nul", "a\0b")
    put(port, "t/overlong", "\192\175")
    put(port, "t/surrogate", "\237\160\128")
    local _, _, _, j = request(port, "GET", "/v1/kv/?prefix=t/")
    local by = {}
    for _, e in ipairs(j) do
      if e.encoding then
        assert.are.equal("base64", e.encoding)
        by[b64decode(e.key)] = b64decode(e.value)
      else
        assert.is_nil(by[e.key])
        by[e.key] = { text = e.value }
      end
    end
    assert.are.same({ text = "héllo ✓" }, by["t/text"])
    assert.are.equal("\255\254", by["t/binval"])
    assert.are.equal("plain", by["t/\255key"])
    assert.are.equal("a\0b", by["t/nul"])
    assert.are.equal("\192\175", by["t/overlong"])
    assert.are.equal("\237\160\128", by["t/surrogate"])
  end)

  it("passes ?stale through to reads: without a leader only a stale read answers", function()
    put(port, "slowdown", "v") -- not down: a slow write
    local status, _, _, j = get(port, "down/x")
    assert.are.equal(503, status)
    assert.are.equal("no leader", j.error)
    assert.are.equal(404, (get(port, "down/x", "?stale")))
    assert.are.equal(404, (get(port, "down/x", "?stale=1")))
    status, _, _, j = request(port, "GET", "/v1/kv/?prefix=down")
    assert.are.equal(503, status)
    assert.are.equal("no leader", j.error)
    status, _, _, j = request(port, "GET", "/v1/kv/?prefix=down&stale")
    assert.are.equal(200, status)
    assert.are.same({}, j)
  end)

  it("maps the store's errors: no leader 503, cannot write 503, timed out 504, others 500", function()
    local cases = {
      { "down", 503, "no leader" },
      { "readonly", 503, "this node cannot write" },
      { "timeout", 504, "timed out" },
    }
    for _, c in ipairs(cases) do
      local status, _, _, j = put(port, c[1], "v")
      assert.are.equal(c[2], status, c[1])
      assert.are.equal(c[3], j.error, c[1])
      status, _, _, j = del(port, c[1])
      assert.are.equal(c[2], status, c[1])
      assert.are.equal(c[3], j.error, c[1])
    end
    local status, _, _, j = put(port, "broken", "v")
    assert.are.equal(500, status)
    assert.is_string(j.error)
  end)

  it("a slow write is answered when it commits, and a pipelined read waits behind it", function()
    local s = connect(port)
    local t0 = socket.gettime()
    assert(s:send(fake.format_request("PUT", "/v1/kv/slow1", { body = "late", headers = AUTH }) ..
      "GET /v1/kv/slow1 HTTP/1.1\r\n\r\n"))
    local status, _, body = read_response(s)
    assert.are.equal(200, status)
    assert.is_true(socket.gettime() - t0 >= 0.4)
    assert.are.equal(1, cjson.decode(body).revision)
    status, _, body = read_response(s)
    assert.are.equal(200, status)
    assert.are.equal("late", body)
    -- a slow cas conflict and a slow delete answer later too
    assert(s:send(fake.format_request("PUT", "/v1/kv/slow1?cas=0", { body = "x", headers = AUTH })))
    status, _, body = read_response(s)
    assert.are.equal(409, status)
    assert.are.equal(1, cjson.decode(body).revision)
    assert(s:send(fake.format_request("DELETE", "/v1/kv/slow1", { headers = AUTH })))
    assert.are.equal(200, (read_response(s)))
    s:close()
  end)

  it("a client gone before its slow write answers does not hurt the server", function()
    for i = 1, 10 do
      local s = connect(port)
      assert(s:send(fake.format_request("PUT", "/v1/kv/slow" .. i, { body = "v" .. i, headers = AUTH })))
      s:close()
    end
    socket.sleep(0.8) -- the writes complete on closed connections
    local status, _, body = get(port, "slow7")
    assert.are.equal(200, status)
    assert.are.equal("v7", body)
    assert.are.equal(200, (request(port, "GET", "/v1/status")))
  end)

  it("the server stops cleanly with a slow write in flight", function()
    local s = connect(port)
    assert(s:send(fake.format_request("PUT", "/v1/kv/slowstop", { body = "v", headers = AUTH })))
    socket.sleep(0.1)
    os.execute("kill " .. pid)
    pid = nil
    assert.is_nil((read_response(s)))
    s:close()
  end)

  it("PUT and DELETE need the bearer token; reads do not", function()
    local path = "/v1/kv/secret"
    assert.are.equal(401, (request(port, "PUT", path, { body = "v" })))
    assert.are.equal(401, (request(port, "PUT", path, { body = "v", headers = { Authorization = "Bearer no" } })))
    assert.are.equal(401, (request(port, "DELETE", path)))
    assert.are.equal(404, (request(port, "GET", path)))
    assert.are.equal(200, (put(port, "secret", "v")))
    assert.are.equal(200, (request(port, "GET", path)))
    assert.are.equal(200, (request(port, "GET", "/v1/kv")))
  end)

  it("an empty key is 400, a broken escape 400, another method 405", function()
    assert.are.equal(400, (request(port, "PUT", "/v1/kv/", { body = "v", headers = AUTH })))
    assert.are.equal(400, (request(port, "PUT", "/v1/kv", { body = "v", headers = AUTH })))
    assert.are.equal(400, (request(port, "DELETE", "/v1/kv/", { headers = AUTH })))
    assert.are.equal(400, (request(port, "GET", "/v1/kv/a%G1")))
    assert.are.equal(400, (request(port, "GET", "/v1/kv/a%4")))
    assert.are.equal(400, (request(port, "GET", "/v1/kv/?prefix=%")))
    local status, headers = request(port, "POST", "/v1/kv/x", { headers = AUTH })
    assert.are.equal(405, status)
    assert.are.equal("GET, PUT, DELETE", headers["allow"])
    -- a neighbour of the prefix is not the KV route
    assert.are.equal(404, (request(port, "GET", "/v1/kvx")))
  end)

  it("a 1 KiB binary key works, a longer one is 413, a target past the URL limit 414", function()
    local key = string.rep("\255", 1024)
    assert.are.equal(200, (put(port, key, "v")))
    local status, _, body = get(port, key)
    assert.are.equal(200, status)
    assert.are.equal("v", body)
    assert.are.equal(413, (put(port, key .. "\255", "v")))
    assert.are.equal(414, (get(port, string.rep("\255", 1400))))
  end)
end)

describe("qc_api /v1/kv on a node without the store", function()
  it("answers 501 with an error", function()
    local port = 18000 + math.random(0, 9999)
    local pid = fake.start(port, nil, "QC_FAKE_NO_KV=1")
    finally(function() os.execute("kill " .. pid) end)
    for _, m in ipairs({ "GET", "PUT", "DELETE" }) do
      local status, _, _, j = request(port, m, "/v1/kv/x")
      assert.are.equal(501, status, m)
      assert.is_string(j.error)
    end
    assert.are.equal(501, (request(port, "GET", "/v1/kv/")))
  end)
end)
