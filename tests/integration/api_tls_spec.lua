-- TLS on the API (api_tls_cert, api_tls_key, api_tls_client_ca) with a real
-- agent: curl and each client over HTTPS with the test CA, refusals of
-- plain HTTP, of clients without a certificate, and of bad files.
local A = require("agents")
local certs = require("tlscerts")

local function sh(cmd) return A.sh(cmd) end

-- curl to node's API over HTTPS; extra: more curl options. Returns the
-- body (and the HTTP code on the last line) and curl's exit code.
local function curl(api, path, extra)
  return sh(string.format("curl -sS -m 10 -w '\\n%%{http_code}' %s 'https://%s%s'", extra or "",
    api, path))
end

local function tls_failures(api, reason, pem)
  local body = curl(api, "/metrics", "--cacert " .. pem.ca .. " --cert " .. pem.client
    .. " --key " .. pem.client_key)
  return tonumber(body:match('qcluster_api_tls_failures_total{reason="' .. reason .. '"} (%d+)'))
    or 0
end

local function one_node(extra)
  local c = A.cluster(1)
  local pem = certs.make(c.dir)
  local conf = A.read(c.nodes[1].config):gsub("\n$", "")
  -- the files exist only now: point the config at them
  local keys = { api_tls_cert = pem.server, api_tls_key = pem.server_key }
  for k, v in pairs(extra or {}) do keys[k] = pem[v] or v end -- extra names pem's files
  A.write(c.nodes[1].config, conf:gsub("^return {", "return {" .. A.lua_value(keys):sub(2, -2)
    .. ", ") .. "\n")
  return c, pem
end

-- Waits for the agent's API to answer over TLS (it elects itself).
local function up(c, pem, extra)
  return A.wait_for(function()
    local body = curl(c.nodes[1].api, "/v1/leader", "--cacert " .. pem.ca .. " " .. (extra or ""))
    return body:match("\n200$")
  end, 15)
end

-- The leader's identifier as each client reads it from https://api with
-- the TLS files of t (cacert, cert, key; nil: none), or false and its error
-- (KEY_err). dir: where the Python script goes.
local ASK_PY = [[
import sys, qcluster
try:
    client = qcluster.Client(api=sys.argv[1], cacert=sys.argv[2] or None,
                             cert=sys.argv[3] or None, key=sys.argv[4] or None)
    print("leader=" + client.get_leader_info().identifier)
except qcluster.QClusterError as e:
    print("error", e)
]]

local function ask_each_client(dir, api, t)
  local url = "https://" .. api
  local res = {}
  -- the CLI
  local args = ""
  for k, v in pairs(t) do args = args .. " --" .. k .. " " .. v end
  local out, code = A.cli("leader" .. args, url)
  res.cli = code == 0 and out:match("^(%S+)") or false
  res.cli_err = out
  -- the C SDK: qc_client_set_tls
  local env = string.format("QC_TLS_CACERT=%s QC_TLS_CERT=%s QC_TLS_KEY=%s", t.cacert or "",
    t.cert or "", t.key or "")
  out = sh(string.format("%s %s/build/client_test %s leader", env, A.root, url))
  res.c = out:match("rc=0 .- identifier=(%S+)") or false
  res.c_err = out
  -- the Lua client
  local client = require("qcluster.client")
  local cl, err = client.new({ api = url, cacert = t.cacert, cert = t.cert, key = t.key })
  local peer
  if cl then peer, err = cl:get_leader_info() end
  res.lua = peer and peer.identifier or false
  res.lua_err = err
  -- the Python client
  A.write(dir .. "/ask.py", ASK_PY)
  out = sh(string.format("PYTHONPATH=%s/python /usr/bin/python3 %s/ask.py %s '%s' '%s' '%s'", A.root,
    dir, url, t.cacert or "", t.cert or "", t.key or ""))
  res.python = out:match("leader=(%S+)") or false
  res.python_err = out
  return res
end

local CLIENTS = { "cli", "c", "lua", "python" }

describe("the API over TLS", function()
  local c, pem

  after_each(function()
    if c then A.stop(c) end
    c = nil
  end)

  it("serves curl --cacert; curl without the CA fails verification; plain HTTP gets a 400", function()
    c, pem = one_node()
    A.start(c, 1)
    assert.is_truthy(up(c, pem), A.read(c.nodes[1].log))
    local api = c.nodes[1].api
    local body, code = curl(api, "/v1/status", "--cacert " .. pem.ca)
    assert.are.equal(0, code)
    assert.is_truthy(body:match('"identifier":"node1"'), body)
    -- the name in the certificate counts too: localhost is in it
    body, code = curl(api:gsub("127.0.0.1", "localhost"), "/v1/leader", "--cacert " .. pem.ca)
    assert.are.equal(0, code, body)
    -- without the CA, curl cannot verify the server
    body, code = curl(api, "/v1/status")
    assert.are.equal(60, code, body)
    -- plain HTTP on the HTTPS port: a plain answer that says what to do
    body, code = sh(string.format("curl -sS -m 10 -w '\\n%%{http_code}' 'http://%s/v1/status'", api))
    assert.are.equal(0, code, body)
    assert.is_truthy(body:match("\n400$"), body)
    assert.is_truthy(body:match("this port speaks HTTPS"), body)
    assert.are.equal(1, tls_failures(api, "plain_http", pem))
    -- TLS 1.2 or later: 1.1 is refused
    body, code = curl(api, "/v1/status", "--cacert " .. pem.ca .. " --tlsv1.1 --tls-max 1.1")
    assert.are_not.equal(0, code, body)
    -- the agent still serves
    body, code = curl(api, "/v1/status", "--cacert " .. pem.ca)
    assert.are.equal(0, code, body)
  end)

  it("keeps a connection alive across requests over TLS", function()
    c, pem = one_node()
    A.start(c, 1)
    assert.is_truthy(up(c, pem), A.read(c.nodes[1].log))
    local url = "https://" .. c.nodes[1].api
    local out, code = sh(string.format("curl -sS -m 10 --cacert %s -o /dev/null -o /dev/null "
      .. "-o /dev/null -w '%%{http_code} %%{num_connects}\\n' %s/v1/status %s/v1/leader %s/metrics",
      pem.ca, url, url, url))
    assert.are.equal(0, code, out)
    assert.are.equal("200 1\n200 0\n200 0\n", out)
  end)

  it("serves the status page over HTTPS, its requests on the page's own scheme", function()
    c, pem = one_node()
    A.start(c, 1)
    assert.is_truthy(up(c, pem), A.read(c.nodes[1].log))
    local body, code = curl(c.nodes[1].api, "/ui", "--cacert " .. pem.ca)
    assert.are.equal(0, code)
    assert.is_truthy(body:match("\n200$"))
    assert.is_truthy(body:find("/v1/status", 1, true))
    assert.is_nil(body:find("http://", 1, true), "the page names a plain-HTTP address")
    assert.is_nil(body:find("ws://", 1, true), "the page names a plain websocket")
    local head = sh(string.format("curl -sS -m 10 -D - -o /dev/null --cacert %s https://%s/ui",
      pem.ca, c.nodes[1].api))
    assert.is_truthy(head:match("connect%-src 'self'"), head)
  end)

  it("with api_tls_client_ca, refuses clients without a certificate it signed", function()
    c, pem = one_node({ api_tls_client_ca = "ca" })
    A.start(c, 1)
    local mine = "--cert " .. pem.client .. " --key " .. pem.client_key
    assert.is_truthy(up(c, pem, mine), A.read(c.nodes[1].log))
    local api = c.nodes[1].api
    local body, code = curl(api, "/v1/status", "--cacert " .. pem.ca)
    assert.are_not.equal(0, code, body)
    assert.is_falsy(body:match("node1"))
    body, code = curl(api, "/v1/status", "--cacert " .. pem.ca .. " --cert " .. pem.stranger
      .. " --key " .. pem.stranger_key)
    assert.are_not.equal(0, code, body)
    assert.is_falsy(body:match("node1"))
    body, code = curl(api, "/v1/status", "--cacert " .. pem.ca .. " " .. mine)
    assert.are.equal(0, code, body)
    assert.is_truthy(body:match('"identifier":"node1"'), body)
    assert.are.equal(1, tls_failures(api, "no_client_cert", pem))
    assert.are.equal(1, tls_failures(api, "bad_client_cert", pem))
    local log = A.read(c.nodes[1].log)
    assert.is_truthy(log:find("refused a TLS connection (no_client_cert)", 1, true), log)
    assert.is_truthy(log:find("refused a TLS connection (bad_client_cert)", 1, true), log)
  end)

  it("check and start refuse a key that does not match, naming the file", function()
    c, pem = one_node()
    local conf = A.read(c.nodes[1].config)
    A.write(c.nodes[1].config, (conf:gsub("server%.key", "client.key")))
    local out, code = A.cli("check " .. c.nodes[1].config)
    assert.are.equal(2, code, out)
    assert.is_truthy(out:find("api_tls_key: " .. pem.client_key
      .. ": does not match the certificate in " .. pem.server, 1, true), out)
    out, code = sh(A.root .. "/bin/qcluster agent " .. c.nodes[1].config)
    assert.are.equal(2, code, out)
    assert.is_truthy(out:find("does not match the certificate", 1, true), out)
    -- unreadable, and not PEM
    A.write(c.nodes[1].config, (conf:gsub("server%.key", "missing.key")))
    out, code = A.cli("check " .. c.nodes[1].config)
    assert.are.equal(2, code, out)
    assert.is_truthy(out:find("api_tls_key: " .. c.dir .. "/missing.key: cannot read", 1, true), out)
    A.write(c.nodes[1].config, (conf:gsub("server%.pem", "node1.lua")))
    out, code = A.cli("check " .. c.nodes[1].config)
    assert.are.equal(2, code, out)
    assert.is_truthy(out:find("api_tls_cert: " .. c.nodes[1].config .. ": not a PEM certificate",
      1, true), out)
    -- a certificate without its key
    A.write(c.nodes[1].config, (conf:gsub('%["api_tls_key"%] = "[^"]*",?', "")))
    out, code = A.cli("check " .. c.nodes[1].config)
    assert.are.equal(2, code, out)
    assert.is_truthy(out:find("api_tls_key: expected a PEM file name", 1, true), out)
  end)

  it("reloads its certificate on SIGHUP; a bad one leaves the old in place", function()
    c, pem = one_node()
    A.start(c, 1)
    assert.is_truthy(up(c, pem), A.read(c.nodes[1].log))
    local api = c.nodes[1].api
    local function issuer()
      local out = sh(string.format("openssl s_client -connect %s -CAfile %s </dev/null 2>/dev/null"
        .. " | openssl x509 -noout -issuer", api, pem.ca))
      return out:match("CN ?= ?([^\n]+)")
    end
    assert.are.equal("qcluster test ca", issuer())
    -- a renewed certificate from another CA, written over the files
    sh(string.format("cp %s %s && cp %s %s", pem.stranger, pem.server, pem.stranger_key,
      pem.server_key))
    A.signal(c, 1, "HUP")
    assert.is_truthy(A.wait_for(function() return issuer() == "qcluster test otherca" end, 5),
      A.read(c.nodes[1].log))
    -- a key that does not match: logged, the served certificate stays
    sh(string.format("cp %s %s", pem.client_key, pem.server_key))
    A.signal(c, 1, "HUP")
    assert.is_truthy(A.wait_for(function()
      return (A.read(c.nodes[1].log) or ""):find("API certificates not reloaded", 1, true)
    end, 5))
    assert.are.equal("qcluster test otherca", issuer())
  end)

  it("each client asks over https with the CA and its certificate; without either it fails",
    function()
      c, pem = one_node({ api_tls_client_ca = "ca" })
      A.start(c, 1)
      assert.is_truthy(up(c, pem, "--cert " .. pem.client .. " --key " .. pem.client_key),
        A.read(c.nodes[1].log))
      local api = c.nodes[1].api
      local res = ask_each_client(c.dir, api, { cacert = pem.ca, cert = pem.client, key = pem.client_key })
      for _, k in ipairs(CLIENTS) do
        assert.are.equal("node1", res[k], k .. ": " .. tostring(res[k .. "_err"]))
      end
      -- the CLI and the C SDK take the files from the environment too
      local env = string.format("QCLUSTER_CACERT=%s QCLUSTER_CERT=%s QCLUSTER_KEY=%s", pem.ca,
        pem.client, pem.client_key)
      local out, code = sh(string.format("%s %s/bin/qcluster leader --api https://%s", env, A.root,
        api))
      assert.are.equal(0, code, out)
      assert.is_truthy(out:match("^node1 "), out)
      out = sh(string.format("%s %s/build/client_test https://%s leader", env, A.root, api))
      assert.is_truthy(out:match("rc=0 .- identifier=node1"), out)
      -- by name too: the certificate names localhost
      res = ask_each_client(c.dir, api:gsub("127.0.0.1", "localhost"),
        { cacert = pem.ca, cert = pem.client, key = pem.client_key })
      for _, k in ipairs(CLIENTS) do
        assert.are.equal("node1", res[k], k .. ": " .. tostring(res[k .. "_err"]))
      end
      -- no client certificate: refused at the handshake
      res = ask_each_client(c.dir, api, { cacert = pem.ca })
      for _, k in ipairs(CLIENTS) do
        assert.is_false(res[k], k .. " was served without a certificate")
      end
      assert.is_truthy(res.cli_err:find("requires a client certificate", 1, true), res.cli_err)
      -- no CA: the agent's certificate cannot be verified
      res = ask_each_client(c.dir, api, { cert = pem.client, key = pem.client_key })
      for _, k in ipairs(CLIENTS) do
        assert.is_false(res[k], k .. " trusted an unknown CA")
      end
      assert.is_truthy(res.cli_err:find("certificate not trusted", 1, true), res.cli_err)
    end)

  it("each client refuses a certificate that does not name the address it asked", function()
    c, pem = one_node({ api_tls_cert = "elsewhere", api_tls_key = "elsewhere_key" })
    A.start(c, 1)
    assert.is_truthy(A.wait_for(function()
      local body = curl(c.nodes[1].api, "/v1/leader", "-k")
      return body:match("\n200$")
    end, 15), A.read(c.nodes[1].log))
    local res = ask_each_client(c.dir, c.nodes[1].api, { cacert = pem.ca })
    for _, k in ipairs(CLIENTS) do
      assert.is_false(res[k], k .. " took a certificate for another address")
    end
    local _, code = curl(c.nodes[1].api, "/v1/leader", "--cacert " .. pem.ca)
    assert.are.equal(60, code)
  end)
end)
