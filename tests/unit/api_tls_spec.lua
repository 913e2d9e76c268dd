-- The API's TLS connection layer (src/api/api.c over src/net/tls.c) against
-- build/api_fake serving HTTPS (QC_FAKE_API_TLS_*), with small limits: the
-- header deadline cuts a slow handshake, the connection budget answers a
-- TLS client with a 503 it can read, pipelined and large requests cross
-- TLS records whole.
local socket = require("socket")
local fake = require("fake")
local certs = require("tlscerts")

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

describe("qc_api over TLS", function()
  local dir, pem, port, pid

  setup(function()
    dir = sh("mktemp -d /tmp/qc-tls-XXXXXX"):gsub("%s+$", "")
    pem = certs.make(dir)
  end)

  teardown(function()
    if dir and not os.getenv("QC_KEEP") then os.execute("rm -rf " .. dir) end
  end)

  local function start(env, token)
    port = 18000 + math.random(0, 9999)
    pid = fake.start(port, token, string.format("QC_FAKE_API_TLS_CERT=%s QC_FAKE_API_TLS_KEY=%s %s",
      pem.server, pem.server_key, env or ""))
  end

  after_each(function()
    if pid then os.execute("kill " .. pid) end
    pid = nil
  end)

  local function curl(path, extra)
    return sh(string.format("curl -sS -m 10 --cacert %s -w '\\n%%{http_code}' %s "
      .. "'https://127.0.0.1:%d%s'", pem.ca, extra or "", port, path))
  end

  -- The fake holds no connection but the one asking.
  local function fake_settled()
    for _ = 1, 100 do
      if curl("/metrics"):find("qcluster_api_connections 1\n", 1, true) then return true end
      socket.sleep(0.02)
    end
  end

  local function limit_count(name)
    local body = curl("/metrics")
    return tonumber(body:match('qcluster_api_limit_total{limit="' .. name .. '"} (%d+)')) or 0
  end

  it("cuts a handshake trickled byte by byte at the header deadline", function()
    start("QC_FAKE_API_HEADER_S=1")
    local s = assert(socket.connect("127.0.0.1", port))
    s:settimeout(0.2)
    -- the start of a ClientHello record, one byte at a time
    local hello = "\22\3\1\1\0\1\0\0\252\3\3"
    local closed_at
    for i = 1, 40 do
      local b = i <= #hello and hello:sub(i, i) or "\0"
      local ok = s:send(b)
      local _, err = s:receive(1)
      if not ok or err == "closed" or err == "connection reset by peer" then
        closed_at = i
        break
      end
    end
    s:close()
    assert.is_truthy(closed_at, "the trickled handshake was never cut")
    assert.are.equal(1, limit_count("header_timeout"))
  end)

  it("answers a TLS client over the connection budget with a 503 over TLS", function()
    start("QC_FAKE_API_MAX_CONNS=2")
    -- until start's probe is gone: the slots the spec fills are all its own
    assert.is_truthy(fake_settled(), "connections left open")
    local held = {}
    for i = 1, 2 do held[i] = assert(socket.connect("127.0.0.1", port)) end
    socket.sleep(0.2)
    local body, code = curl("/v1/status")
    assert.are.equal(0, code, body)
    assert.is_truthy(body:match("\n503$"), body)
    assert.is_truthy(body:match("too many connections"), body)
    for _, s in ipairs(held) do s:close() end
  end)

  it("reads pipelined requests and bodies that span many TLS records", function()
    start()
    local reqs = "GET /v1/status HTTP/1.1\r\nHost: t\r\n\r\n"
      .. "GET /v1/leader HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    local out = sh(string.format("printf '%s' | openssl s_client -quiet -connect 127.0.0.1:%d "
      .. "-CAfile %s -verify_return_error 2>/dev/null", reqs:gsub("\r", "\\r"):gsub("\n", "\\n"),
      port, pem.ca))
    local statuses = {}
    for st in out:gmatch("HTTP/1%.1 (%d%d%d)") do statuses[#statuses + 1] = st end
    assert.are.same({ "200", "503" }, statuses, out)
    -- a 200 KB value: a dozen TLS records
    local f = assert(io.open(dir .. "/big", "wb"))
    f:write(string.rep("0123456789abcdef", 12800))
    f:close()
    local body, code = curl("/v1/kv/big", "-X PUT --data-binary @" .. dir .. "/big")
    assert.are.equal(0, code, body)
    assert.is_truthy(body:match("\n200$"), body)
    body = curl("/v1/kv/big")
    assert.are.equal(204800 + 4, #body)
  end)

  it("holds a long-poll over TLS until the leader changes", function()
    start()
    local out = dir .. "/longpoll.out"
    local p = io.popen(string.format("curl -sS -m 20 --cacert %s -w '\\n%%{http_code}' "
      .. "'https://127.0.0.1:%d/v1/leader?wait=15&term=1' >%s 2>&1 & echo $!", pem.ca, port, out))
    local curl_pid = tonumber(p:read("l"))
    p:close()
    -- parked: no answer yet
    socket.sleep(0.5)
    assert.are.equal("", sh("cat " .. out))
    os.execute("kill -USR1 " .. pid) -- a leader: the term moves on
    local answer
    for _ = 1, 100 do
      answer = sh("cat " .. out)
      if answer:match("\n%d%d%d$") then break end
      socket.sleep(0.05)
    end
    os.execute("kill " .. curl_pid .. " 2>/dev/null")
    assert.is_truthy(answer:match("\n200$"), answer)
    assert.is_truthy(answer:match('"identifier":"server_b"'), answer)
  end)

  it("serves a request with the token over TLS when the slots are all taken", function()
    start("QC_FAKE_API_MAX_CONNS=2", "s3cret")
    assert.is_truthy(fake_settled(), "connections left open")
    local held = {}
    for i = 1, 2 do held[i] = assert(socket.connect("127.0.0.1", port)) end
    socket.sleep(0.2)
    local body = curl("/v1/status")
    assert.is_truthy(body:match("\n503$"), body)
    body = curl("/v1/status", "-H 'Authorization: Bearer s3cret'")
    assert.is_truthy(body:match("\n200$"), body)
    for _, s in ipairs(held) do s:close() end
  end)
end)
