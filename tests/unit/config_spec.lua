-- The config loader and checker (src/lua/config.c + lua/config.lua) through
-- build/luahost_driver: defaults, the original JSON format, every kind of
-- bad value with its exact message, syntax errors with FILE:LINE.
package.cpath = "./build/?.so;" .. package.cpath
local driver = require("driver")
local json = require("dkjson")
local qcmembers = require("qcmembers")

local dir

local function conf(name, text)
  local path = dir .. "/" .. name
  driver.write(path, text)
  return path
end

local function check(path)
  local rc, out, err = driver.run({ "check", path })
  if rc == 0 then return rc, assert(json.decode(out), out), err end
  return rc, out, err
end

-- The message `check` prints for a Lua config whose table body is `body`.
local function error_for(body)
  local path = conf("conf.lua", "return {" .. body .. "}")
  local rc, _, err = check(path)
  assert.are.equal(2, rc, "expected the config to be rejected: " .. body)
  return (err:gsub("\n$", ""):gsub("^" .. dir:gsub("%p", "%%%0") .. "/", ""))
end

local BASE = 'identifier = "a", listen_port = 7001, '

describe("config", function()
  before_each(function() dir = driver.tmpdir() end)
  after_each(function() driver.rmdir(dir) end)

  it("fills every default from a minimal Lua config", function()
    local rc, c = check(conf("conf.lua", "return {" .. BASE .. "}"))
    assert.are.equal(0, rc)
    assert.are.same({
      identifier = "a", listen_host = "127.0.0.1", listen_port = 7001, peers = {},
      metadata = {}, api_host = "127.0.0.1", api_port = 8001,
      data_dir = dir .. "/qcluster-data/a", heartbeat_ms = 50, election_timeout_ms = 300,
      hook_timeout_ms = 100, log_level = "info", log_format = "text", dir = dir, role = "voter", priority = 1,
      preempt = false, preempt_delay_ms = 5000, max_voters = 5,
      leave_on_stop = false, exec_max = 64, hook_stuck_ms = 900,
    }, c)
  end)

  it("keeps join = {} (wait for qcluster join) apart from no join at all", function()
    local rc, c = check(conf("conf.lua", "return {" .. BASE .. "join = {}}"))
    assert.are.equal(0, rc)
    assert.are.same({}, c.join)
    rc, c = check(conf("conf.lua", "return {" .. BASE .. "}"))
    assert.are.equal(0, rc)
    assert.is_nil(c.join)
  end)

  it("accepts the original QCluster JSON format unchanged", function()
    local rc, c = check("tests/fixtures/original.json")
    assert.are.equal(0, rc)
    assert.are.equal("server_a", c.identifier)
    assert.are.equal("localhost", c.listen_host)
    assert.are.equal(7001, c.listen_port)
    assert.are.equal(8001, c.api_port)
    assert.are.equal("tests/fixtures/qcluster-data/server_a", c.data_dir)
    assert.are.same({
      { host = "localhost", port = 7002, identifier = "server_b",
        metadata = { server_port = 8002 } },
      { host = "localhost", port = 7003, identifier = "server_c", metadata = {} },
    }, c.peers)
  end)

  it("takes every key, later-issue ones included", function()
    local rc, c, err = check("tests/fixtures/full.lua")
    assert.are.equal(0, rc, err)
    assert.are.equal("tests/fixtures/hooks/node.lua", c.hooks)
    assert.are.equal("/var/lib/qcluster", c.data_dir)
    assert.are.equal(0, c.api_port)
    assert.are.equal("debug", c.log_level)
    assert.are.equal("(set)", c.secret)
    assert.are.equal("(set)", c.api_token)
    assert.are.equal("witness", c.role)
    assert.are.equal(0, c.priority)
    assert.are.same({ "10.0.0.2:7102", "[::1]:7103" }, c.join)
    assert.is_true(c.preempt)
    assert.are.equal(2000, c.preempt_delay_ms)
    assert.are.equal(3, c.max_voters)
    assert.is_true(c.leave_on_stop)
    assert.are.equal(3600, c.reap_after)
    assert.are.same({ zone = "a", weight = 2.5, tags = { "x", "y" } }, c.metadata)
  end)

  it("resolves data_dir and hooks against the config's directory", function()
    local rc, _, err = check(conf("conf.lua", "return {" .. BASE
      .. 'data_dir = "state", hooks = "h.lua"}'))
    assert.are.equal(2, rc)
    assert.are.equal(dir .. "/h.lua: cannot open: No such file or directory\n", err)
    driver.write(dir .. "/h.lua", "return {}")
    local c
    rc, c = check(dir .. "/conf.lua")
    assert.are.equal(0, rc)
    assert.are.equal(dir .. "/state", c.data_dir)
    assert.are.equal(dir .. "/h.lua", c.hooks)
  end)

  it("reads secret_file beside the config", function()
    driver.write(dir .. "/key", "k3y\n")
    local rc, c = check(conf("conf.lua", "return {" .. BASE .. 'secret_file = "key"}'))
    assert.are.equal(0, rc)
    assert.are.equal("(set)", c.secret)
    assert.are.equal("conf.lua: secret_file: expected either secret or secret_file, got both",
      error_for(BASE .. 'secret = "x", secret_file = "key"'))
    assert.matches("^conf.lua: secret_file: cannot read .*nope: No such file",
      error_for(BASE .. 'secret_file = "nope"'))
    driver.write(dir .. "/big", string.rep("k", 4097))
    assert.matches("^conf.lua: secret_file: expected at most 4096 bytes, got a larger file .*big$",
      error_for(BASE .. 'secret_file = "big"'))
    assert.matches("^conf.lua: secret_file: expected at most 4096 bytes",
      error_for(BASE .. 'secret_file = "/dev/zero"'))
    driver.write(dir .. "/max", string.rep("k", 4096))
    assert.are.equal(0, (check(conf("conf.lua", "return {" .. BASE .. 'secret_file = "max"}'))))
  end)

  it("takes secret_previous (or secret_previous_file) beside secret, never alone or the same",
     function()
    driver.write(dir .. "/old", "old-k3y\n")
    local rc, c = check(conf("conf.lua", "return {" .. BASE
      .. 'secret = "new-k3y", secret_previous = "old-k3y"}'))
    assert.are.equal(0, rc)
    assert.are.equal("(set)", c.secret_previous)
    rc, c = check(conf("conf.lua", "return {" .. BASE
      .. 'secret = "new-k3y", secret_previous_file = "old"}'))
    assert.are.equal(0, rc)
    assert.are.equal("(set)", c.secret_previous)
    rc, c = check(conf("conf.lua", "return {" .. BASE .. 'secret = "new-k3y"}'))
    assert.are.equal(0, rc)
    assert.is_nil(c.secret_previous)
    assert.are.equal("conf.lua: secret_previous: expected secret or secret_file too (the key "
      .. "rotated to), got none", error_for(BASE .. 'secret_previous = "old-k3y"'))
    assert.are.equal("conf.lua: secret_previous: expected a key other than secret (the one "
      .. "rotated away from), got the same", error_for(BASE .. 'secret = "k", secret_previous = "k"'))
    assert.are.equal("conf.lua: secret_previous_file: expected a key other than secret (the one "
      .. "rotated away from), got the same",
      error_for(BASE .. 'secret = "old-k3y", secret_previous_file = "old"'))
    assert.are.equal("conf.lua: secret_previous_file: expected either secret_previous or "
      .. "secret_previous_file, got both",
      error_for(BASE .. 'secret = "x", secret_previous = "y", secret_previous_file = "old"'))
    assert.matches("^conf.lua: secret_previous: expected a non%-empty string",
      error_for(BASE .. 'secret = "x", secret_previous = ""'))
  end)

  it("takes api_tls_cert and api_tls_key together, api_tls_client_ca only with them", function()
    local together = "expected a PEM file name (api_tls_cert and api_tls_key go together), got nothing"
    assert.are.equal("conf.lua: api_tls_key: " .. together,
      error_for(BASE .. 'api_tls_cert = "c.pem"'))
    assert.are.equal("conf.lua: api_tls_cert: " .. together,
      error_for(BASE .. 'api_tls_key = "k.pem"'))
    assert.matches("^conf.lua: api_tls_client_ca: expected api_tls_cert and api_tls_key too",
      error_for(BASE .. 'api_tls_client_ca = "ca.pem"'))
    assert.are.equal("conf.lua: api_tls_cert: expected a file name, got 42",
      error_for(BASE .. 'api_tls_cert = 42, api_tls_key = "k.pem"'))
  end)

  it("round-trips metadata through JSON text", function()
    local meta = 'metadata = {s = "h\\195\\169llo \\"q\\"", i = 42, f = 0.1, neg = -3,'
      .. ' yes = true, no = false, list = {1, "two", {three = 3}}, nested = {a = {b = {}}}}'
    local rc, c = check(conf("conf.lua", "return {" .. BASE .. meta .. "}"))
    assert.are.equal(0, rc)
    assert.are.same({ s = 'héllo "q"', i = 42, f = 0.1, neg = -3, yes = true, no = false,
      list = { 1, "two", { three = 3 } }, nested = { a = { b = {} } } }, c.metadata)
    local path = conf("c.json", '{"identifier": "a", "listen_port": 7001,'
      .. ' "metadata": {"n": null, "big": 12345678901234, "e": 1.5e300}}')
    local rc2, out = driver.run({ "check", path })
    assert.are.equal(0, rc2)
    assert.matches('"metadata":{"big":12345678901234,"e":1.5e%+300,"n":null}', out)
  end)

  it("lets a Lua config compute values and use the qcluster module", function()
    local rc, c = check(conf("conf.lua", [[
      local port = 7000 + 1
      local _ = qcluster.now()
      return { identifier = "n" .. port, listen_port = port }
    ]]))
    assert.are.equal(0, rc)
    assert.are.equal("n7001", c.identifier)
  end)

  describe("rejects", function()
    local cases = {
      { "", "identifier: expected an identifier (1 to 64 letters, digits, '_', '-', '.'),"
        .. " got nothing" },
      { 'identifier = "a b", listen_port = 1', "identifier: expected an identifier"
        .. " (1 to 64 letters, digits, '_', '-', '.'), got \"a b\"" },
      { 'identifier = "a"', "listen_port: expected an integer 1..65535, got nothing" },
      { 'identifier = "a", listen_port = "x"',
        'listen_port: expected an integer 1..65535, got "x"' },
      { 'identifier = "a", listen_port = 0', "listen_port: expected an integer 1..65535, got 0" },
      { 'identifier = "a", listen_port = 70000',
        "listen_port: expected an integer 1..65535, got 70000" },
      { 'identifier = "a", listen_port = 1.5',
        "listen_port: expected an integer 1..65535, got 1.5" },
      { BASE .. 'listen_host = ""', 'listen_host: expected a host name or address, got ""' },
      { BASE .. "peers = {{host = 'h', port = 1, identifier = 'b'},"
        .. " {host = 'h', port = 'x', identifier = 'c'}}",
        'peers[2].port: expected an integer 1..65535, got "x"' },
      { BASE .. "peers = {x = 1}",
        "peers: expected a list of peers {host, port, identifier, metadata}, got a table" },
      { BASE .. "peers = {'b'}",
        'peers[1]: expected a table {host, port, identifier, metadata}, got "b"' },
      { BASE .. "peers = {{host = 'h', port = 2, identifier = 'a'}}",
        "peers[1].identifier: expected an identifier other than this node's own, got \"a\"" },
      { BASE .. "peers = {{host = 'h', port = 2, identifier = 'b'},"
        .. " {host = 'h', port = 3, identifier = 'b'}}",
        'peers[2].identifier: expected a unique identifier, got "b" (also peers[1])' },
      { BASE .. "peers = {{port = 2, identifier = 'b'}}",
        "peers[1].host: expected a host name or address, got nothing" },
      { BASE .. "peers = {{host = 'h', port = 2, identifier = 'b', prot = 3}}",
        'peers[1].prot: unknown key (did you mean "port"?)' },
      { BASE .. "peers = {{host = 'h', port = 2, identifier = 'b', metadata = 'm'}}",
        'peers[1].metadata: expected a table (a JSON object), got "m"' },
      { BASE .. "metadata = 5", "metadata: expected a table (a JSON object), got 5" },
      { BASE .. "metadata = {1, 2}",
        "metadata: expected a table of named fields (a JSON object), got a list" },
      { BASE .. "metadata = {a = {f = print}}",
        "metadata.a.f: expected a JSON value (string, number, boolean or table), got a function" },
      { BASE .. "metadata = {a = {[2] = 1, x = 1}}",
        "metadata.a: expected a table with string keys or a list, got key 2" },
      { BASE .. "metadata = {n = 1/0}", "metadata.n: expected a finite number, got inf" },
      { BASE .. "api_host = 1", "api_host: expected a host name or address, got 1" },
      { BASE .. "api_port = -1", "api_port: expected an integer 0..65535, got -1" },
      { 'identifier = "a", listen_port = 65000',
        "api_port: expected an integer 0..65535, got nothing (listen_port + 1000 = 66000;"
        .. " set api_port)" },
      { BASE .. "data_dir = ''", 'data_dir: expected a directory name, got ""' },
      { BASE .. "heartbeat_ms = 0", "heartbeat_ms: expected an integer 1..60000, got 0" },
      { BASE .. "election_timeout_ms = 100", "election_timeout_ms: expected an integer"
        .. " 150..600000 (>= 3 * heartbeat_ms), got 100" },
      { BASE .. "heartbeat_ms = 200", "election_timeout_ms: expected an integer 600..600000"
        .. " (>= 3 * heartbeat_ms), got 300 (the default)" },
      { BASE .. "hook_timeout_ms = 'fast'",
        'hook_timeout_ms: expected an integer 1..3600000, got "fast"' },
      { BASE .. "exec_max = 0", "exec_max: expected an integer 1..10000, got 0" },
      { BASE .. "hook_stuck_ms = 0", "hook_stuck_ms: expected an integer 1..3600000, got 0" },
      { BASE .. "hooks = 5", "hooks: expected a file name, got 5" },
      { BASE .. "log_level = 'verbose'",
        'log_level: expected one of "debug", "info", "warn", "error", got "verbose"' },
      { BASE .. "log_format = 'xml'", 'log_format: expected one of "text", "json", got "xml"' },
      { BASE .. "secret = ''", 'secret: expected a non-empty string, got ""' },
      { BASE .. "api_token = true", "api_token: expected a non-empty string, got true" },
      { BASE .. "role = 'boss'",
        'role: expected one of "voter", "witness", "learner", got "boss"' },
      { BASE .. "priority = -1", "priority: expected an integer 0..1000000, got -1" },
      { BASE .. "join = {'nohost'}", 'join[1]: expected "host:port", got "nohost"' },
      { BASE .. "join = 'h:1'", 'join: expected a list of "host:port" strings, got "h:1"' },
      { BASE .. "preempt = 'yes'", 'preempt: expected true or false, got "yes"' },
      { BASE .. "preempt_delay_ms = -5",
        "preempt_delay_ms: expected an integer 0..3600000, got -5" },
      { BASE .. "max_voters = 0", "max_voters: expected an integer 1..255, got 0" },
      { BASE .. "leave_on_stop = 1", "leave_on_stop: expected true or false, got 1" },
      { BASE .. "reap_after = -1",
        "reap_after: expected a number of seconds > 0 or false, got -1" },
      { BASE .. "reap_after = true",
        "reap_after: expected a number of seconds > 0 or false, got true" },
      { BASE .. "reap_after = 0", "reap_after: expected a number of seconds > 0 or false, got 0" },
      { BASE .. "reap_after = 1e12",
        "reap_after: expected at most 315360000 seconds (ten years), got 1000000000000" },
      { BASE .. "role = 'Voter'",
        'role: expected one of "voter", "witness", "learner", got "Voter"' },
      { BASE .. "priority = 0.5", "priority: expected an integer 0..1000000, got 0.5" },
      { BASE .. "priority = 1000001", "priority: expected an integer 0..1000000, got 1000001" },
      { BASE .. "join = {'h:1', 'h:0'}", 'join[2]: expected "host:port", got "h:0"' },
      { BASE .. "join = {'::1:7000'}", 'join[1]: expected "host:port", got "::1:7000"' },
      { BASE .. "join = {'[::1:7000'}", 'join[1]: expected "host:port", got "[::1:7000"' },
      { BASE .. "join = {'a b:7000'}", 'join[1]: expected "host:port", got "a b:7000"' },
      { BASE .. "join = {7000}", 'join[1]: expected "host:port", got 7000' },
      { BASE .. "max_voters = 256", "max_voters: expected an integer 1..255, got 256" },
      { BASE .. "peers = {{host = 'h', port = 2, identifier = 'b'},"
        .. " {host = 'h', port = 3, identifier = 'c', role = 'boss'}}",
        'peers[2].role: expected one of "voter", "witness", "learner", got "boss"' },
      { BASE .. "peers = {{host = 'h', port = 2, identifier = 'b', role = 1}}",
        'peers[1].role: expected one of "voter", "witness", "learner", got 1' },
      { BASE .. "peers = {{host = 'h', port = 2, identifier = 'b', priority = -1}}",
        "peers[1].priority: expected an integer 0..1000000, got -1" },
      { BASE .. "peers = {{host = 'h', port = 2, identifier = 'b', priority = '1'}}",
        'peers[1].priority: expected an integer 0..1000000, got "1"' },
      { BASE .. "peers = {{host = 'h', port = 2, identifier = 'b', rol = 'voter'}}",
        'peers[1].rol: unknown key (did you mean "role"?)' },
      { BASE .. "on_elected = 'x'", 'on_elected: expected a function, got "x"' },
      { BASE .. "on_elektd = print", "on_elektd: unknown hook (known: on_start, on_elected,"
        .. " on_demoted, on_leader_change, on_peer_up, on_peer_down, on_stop, on_kv_change,"
        .. " on_member_join, on_member_leave, on_health_change)" },
      { BASE .. "colour = 'red'", "colour: unknown key" },
      { BASE .. "checks = {{name = 'a'}}", "checks[1]: expected exactly one kind (exec, http,"
        .. " tcp, ttl_ms or lua), got none" },
      { BASE .. "checks = {{name = 'a', exec = 'true', tcp = 'h:1'}}", "checks[1].tcp: expected"
        .. " exactly one kind (exec, http, tcp, ttl_ms or lua), got both exec and tcp" },
      { BASE .. "checks = {{name = 'a', http = 'https://h:1/'}}", 'checks[1].http: https is not'
        .. ' supported by http checks, got "https://h:1/" (check a plain http port, or use an'
        .. " exec check such as curl -fsS)" },
      { BASE .. "checks = {{name = 'a', http = 'http://h:0/'}}",
        'checks[1].http: expected a URL "http://host:port/path", got "http://h:0/"' },
      { BASE .. "checks = {{name = 'a', http = 'http://h:1/a b'}}",
        'checks[1].http: expected a URL "http://host:port/path", got "http://h:1/a b"' },
      { BASE .. "checks = {{name = 'a', tcp = 'h'}}", 'checks[1].tcp: expected "host:port", got "h"' },
      { BASE .. "checks = {{name = 'a', exec = 'x'}, {name = 'a', exec = 'y'}}",
        'checks[2].name: expected a unique name, got "a" (also checks[1])' },
      { BASE .. "checks = {{name = 'a b', exec = 'x'}}", "checks[1].name: expected a name (1 to 64"
        .. " letters, digits, '_', '-', '.'), got \"a b\"" },
      { BASE .. "checks = {{exec = 'x'}}", "checks[1].name: expected a name (1 to 64"
        .. " letters, digits, '_', '-', '.'), got nothing" },
      { BASE .. "checks = {{name = 'a', exec = 'x', rise = 0}}",
        "checks[1].rise: expected an integer 1..1000000, got 0" },
      { BASE .. "checks = {{name = 'a', exec = 'x', fall = 0}}",
        "checks[1].fall: expected an integer 1..1000000, got 0" },
      { BASE .. "checks = {{name = 'a', exec = 'x', interval_ms = 9}}",
        "checks[1].interval_ms: expected an integer 10..86400000, got 9" },
      { BASE .. "checks = {{name = 'a', exec = 'x', interval_ms = 100, timeout_ms = 101}}",
        "checks[1].timeout_ms: expected an integer 1..100 (at most interval_ms), got 101" },
      { BASE .. "checks = {{name = 'a', exec = 'x', interval_ms = 100, retry_ms = 101}}",
        "checks[1].retry_ms: expected an integer 1..100 (at most interval_ms), got 101" },
      { BASE .. "checks = {{name = 'a', exec = 'x', fal = 1}}",
        'checks[1].fal: unknown key (did you mean "fall"?)' },
      { BASE .. "checks = {{name = 'a', ttl_ms = 0}}",
        "checks[1].ttl_ms: expected an integer 1..86400000, got 0" },
      { BASE .. "checks = {{name = 'a', lua = 5}}", "checks[1].lua: expected a function, or the"
        .. " name of a function in the hooks file's checks table, got 5" },
      { BASE .. "checks = {{name = 'a', lua = 'probe'}}", "checks[1].lua: expected a function"
        .. ' named "probe" in the hooks file\'s checks table, got none' },
      { BASE .. "checks = {name = 'a', exec = 'x'}",
        "checks: expected a list of checks {name, exec|http|tcp|ttl_ms|lua, ...}, got a table" },
      { BASE .. "listen_hots = 'x'", 'listen_hots: unknown key (did you mean "listen_host"?)' },
      { BASE .. "'positional'", "[1]: unknown key" },
    }
    for _, case in ipairs(cases) do
      it(case[2], function()
        assert.are.equal("conf.lua: " .. case[2], error_for(case[1]))
      end)
    end

    it("a config that does not return a table", function()
      local rc, _, err = check(conf("conf.lua", "return 42"))
      assert.are.equal(2, rc)
      assert.matches("conf.lua: expected the config to be a table %(a Lua file returning a"
        .. " table, or a JSON object%), got 42\n$", err)
    end)

    it("a Lua syntax error, as FILE:LINE: message", function()
      local path = conf("conf.lua", "return {\n  identifier = 'a',\n  listen_port = 7001 x\n}")
      local rc, _, err = check(path)
      assert.are.equal(2, rc)
      assert.are.equal(path .. ":3: '}' expected (to close '{' at line 1) near 'x'\n", err)
    end)

    it("a Lua runtime error, as FILE:LINE: message", function()
      local path = conf("conf.lua", "local x = nil\nreturn {identifier = x.y}")
      local rc, _, err = check(path)
      assert.are.equal(2, rc)
      assert.matches("^" .. path:gsub("%p", "%%%0") .. ":2: attempt to index", err)
    end)

    it("a JSON syntax error, as FILE:LINE: message", function()
      local path = conf("c.json", '{"identifier": "a",\n "listen_port": 7001,\n "peers": [1 2]}')
      local rc, _, err = check(path)
      assert.are.equal(2, rc)
      assert.are.equal(path .. ":3: after array element, I expect ',' or ']'\n", err)
    end)

    it("a truncated JSON file, at its last line", function()
      local path = conf("c.json", '{"identifier": "a",\n "listen_port": 7001,\n')
      local rc, _, err = check(path)
      assert.are.equal(2, rc)
      assert.are.equal(path .. ":2: premature EOF\n", err)
    end)

    it("a JSON value of the wrong type, naming the key", function()
      local path = conf("c.json", '{"identifier": "a", "listen_port": "7001"}')
      local rc, _, err = check(path)
      assert.are.equal(2, rc)
      assert.are.equal(path .. ': listen_port: expected an integer 1..65535, got "7001"\n', err)
    end)

    it("an inline hook in a JSON config", function()
      local path = conf("c.json", '{"identifier": "a", "listen_port": 1, "on_start": "x"}')
      local _, _, err = check(path)
      assert.are.equal(path .. ': on_start: expected a function (inline hooks need a Lua'
        .. ' config), got "x"\n', err)
    end)

    it("text that is not UTF-8 in a JSON config, as FILE: key: message", function()
      local NOT_UTF8 = ": text is not valid UTF-8\n"
      for _, text in ipairs({ "\xC0\xAF", "\xE0\x80\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80",
        "cut \xE2\x82", "\\ud800", "\\udc00" }) do
        local path = conf("c.json", '{"identifier": "a", "listen_port": 7001,\n'
          .. ' "metadata": {"zone": "' .. text .. '"}}')
        local rc, _, err = check(path)
        assert.are.equal(2, rc, text)
        assert.are.equal(path .. ": metadata.zone" .. NOT_UTF8, err)
      end
      local path = conf("c.json", '{"identifier": "a", "listen_port": 7001, "peers": [\n'
        .. ' {"identifier": "b", "host": "h", "port": 2},\n'
        .. ' {"identifier": "c", "host": "h", "port": 3, "metadata": {"tags": ["x", "\xC0\xAF"]}}]}')
      local rc, _, err = check(path)
      assert.are.equal(2, rc)
      assert.are.equal(path .. ": peers[2].metadata.tags[2]" .. NOT_UTF8, err)
      path = conf("c.json", '{"identifier": "a", "listen_port": 7001, "metadata": {"\xC0\xAF": 1}}')
      rc, _, err = check(path)
      assert.are.equal(2, rc)
      assert.are.equal(path .. ": metadata: a key is not valid UTF-8\n", err)
    end)

    it("metadata, hosts and addresses that are not UTF-8 in a Lua config (any bytes)", function()
      assert.are.equal("conf.lua: metadata.k: text is not valid UTF-8",
        error_for(BASE .. 'metadata = {k = "\\xC0\\xAF"}'))
      assert.are.equal("conf.lua: metadata.k: text is not valid UTF-8",
        error_for(BASE .. 'metadata = {k = "\xED\xA0\x80"}'))
      assert.are.equal("conf.lua: metadata.a.b[1]: text is not valid UTF-8",
        error_for(BASE .. 'metadata = {a = {b = {"\\xF4\\x90\\x80\\x80"}}}'))
      assert.are.equal("conf.lua: peers[1].metadata.k: text is not valid UTF-8",
        error_for(BASE .. 'peers = {{identifier = "b", host = "h", port = 2,'
          .. ' metadata = {k = "\\xE2\\x82"}}}'))
      assert.are.equal("conf.lua: metadata: a key is not valid UTF-8",
        error_for(BASE .. 'metadata = {["\\xC0\\xAF"] = 1}'))
      -- hosts and addresses go out in JSON too
      assert.are.equal("conf.lua: listen_host: text is not valid UTF-8",
        error_for(BASE .. 'listen_host = "h\\xC0\\xAF"'))
      assert.are.equal("conf.lua: api_host: text is not valid UTF-8",
        error_for(BASE .. 'api_host = "h\\xED\\xA0\\x80"'))
      assert.are.equal("conf.lua: peers[1].host: text is not valid UTF-8",
        error_for(BASE .. 'peers = {{identifier = "b", host = "h\\xF4\\x90\\x80\\x80", port = 2}}'))
      assert.are.equal("conf.lua: join[2]: text is not valid UTF-8",
        error_for(BASE .. 'join = {"a:1", "h\\xC0\\xAF:2"}'))
      -- valid 2-, 3- and 4-byte text passes
      local rc, c = check(conf("conf.lua", "return {" .. BASE
        .. 'metadata = {k = "\\u{E9}\\u{20AC}\\u{1F600}"}}'))
      assert.are.equal(0, rc)
      assert.are.equal("\u{E9}\u{20AC}\u{1F600}", c.metadata.k)
    end)

    it("bin/qcluster check refuses metadata that is not UTF-8 with exit code 2", function()
      for _, case in ipairs({
        { "c.json", '{"identifier": "a", "listen_port": 7001, "metadata": {"k": "\xC0\xAF"}}' },
        { "c.lua", 'return {identifier = "a", listen_port = 7001, metadata = {k = "\\xC0\\xAF"}}' },
      }) do
        local path = conf(case[1], case[2])
        local p = io.popen("bin/qcluster check " .. path .. " 2>&1; echo rc=$?")
        local out = p:read("a")
        p:close()
        assert.are.equal(path .. ": metadata.k: text is not valid UTF-8\nrc=2\n", out)
      end
    end)

    it("a missing file, as FILE: message", function()
      local rc, _, err = check(dir .. "/none.lua")
      assert.are.equal(2, rc)
      assert.are.equal(dir .. "/none.lua: cannot open: No such file or directory\n", err)
    end)
  end)
end)

describe("config membership keys in C (qc_config)", function()
  before_each(function() dir = driver.tmpdir() end)
  after_each(function() driver.rmdir(dir) end)

  it("defaults them", function()
    local c = assert(qcmembers.config(conf("conf.lua", "return {" .. BASE
      .. "peers = {{host = 'h', port = 2, identifier = 'b'}}}")))
    assert.are.same({ identifier = "a", role = "voter", priority = 1, preempt = false,
      preempt_delay_ms = 5000, max_voters = 5, join = {}, reap_after_ms = 0,
      leave_on_stop = false,
      peers = { { identifier = "b", host = "h", port = 2, metadata = "{}", role = "voter",
        priority = 1 } } }, c)
  end)

  it("copies every one from a Lua config", function()
    local c = assert(qcmembers.config("tests/fixtures/full.lua"))
    assert.are.equal("witness", c.role)
    assert.are.equal(0, c.priority)
    assert.is_true(c.preempt)
    assert.are.equal(2000, c.preempt_delay_ms)
    assert.are.equal(3, c.max_voters)
    assert.are.same({ "10.0.0.2:7102", "[::1]:7103" }, c.join)
    assert.are.equal(3600000, c.reap_after_ms)
    assert.is_true(c.leave_on_stop)
    assert.are.same({ { identifier = "node-2", host = "10.0.0.2", port = 7102,
      metadata = '{"zone":"b"}', role = "voter", priority = 1 } }, c.peers)
  end)

  it("copies every one from a JSON config, peers' roles and priorities too", function()
    local c = assert(qcmembers.config("tests/fixtures/members.json"))
    assert.are.same({ identifier = "db1", role = "voter", priority = 10, preempt = true,
      preempt_delay_ms = 1500, max_voters = 3, join = { "10.0.0.2:7001", "[fd00::3]:7001" },
      reap_after_ms = 90500, leave_on_stop = true,
      peers = {
        { identifier = "db2", host = "10.0.0.2", port = 7001, metadata = '{"server_port":5432}',
          role = "voter", priority = 5 },
        { identifier = "arbiter", host = "10.0.0.3", port = 7001, metadata = "{}",
          role = "witness", priority = 0 },
        { identifier = "reports", host = "10.0.0.4", port = 7001, metadata = "{}",
          role = "learner", priority = 1 },
      } }, c)
    local rc, out, err = driver.run({ "check", "tests/fixtures/members.json" })
    assert.are.equal(0, rc, err)
    assert.are.equal(90.5, json.decode(out).reap_after)
  end)

  it("keeps the original JSON format: its peers are voters of priority 1", function()
    local c = assert(qcmembers.config("tests/fixtures/original.json"))
    assert.are.equal(2, #c.peers)
    for _, p in ipairs(c.peers) do
      assert.are.equal("voter", p.role)
      assert.are.equal(1, p.priority)
    end
    assert.are.same({}, c.join)
    assert.are.equal(0, c.reap_after_ms)
  end)

  it("turns reap_after seconds into milliseconds, never 0 when set", function()
    local cases = { { "1.5", 1500 }, { "0.0001", 1 }, { "0.0016", 2 }, { "false", 0 },
      { "315360000", 315360000000 } }
    for _, case in ipairs(cases) do
      local c = assert(qcmembers.config(conf("conf.lua", "return {" .. BASE .. "reap_after = "
        .. case[1] .. "}")))
      assert.are.equal(case[2], c.reap_after_ms, case[1])
    end
  end)

  it("fails like the checker", function()
    local path = conf("conf.lua", "return {" .. BASE .. "peers = {{host = 'h', port = 2,"
      .. " identifier = 'b', role = 'boss'}}}")
    assert.are.same({ nil, path .. ': peers[1].role: expected one of "voter", "witness",'
      .. ' "learner", got "boss"' }, { qcmembers.config(path) })
  end)
end)

describe("lua/config.lua on its own", function()
  local config = require("config")

  it("checks a table without any C", function()
    local c = assert(config.check({ identifier = "x", listen_port = 9 }, { dir = "/etc/qc" }))
    assert.are.equal("/etc/qc/qcluster-data/x", c.data_dir)
    assert.are.equal(1009, c.api_port)
  end)

  it("gives every peer a role and a priority", function()
    local c = assert(config.check({ identifier = "x", listen_port = 9, peers = {
      { identifier = "y", host = "h", port = 1 },
      { identifier = "z", host = "h", port = 2, role = "learner", priority = 0 },
    } }))
    assert.are.same({ "voter", 1 }, { c.peers[1].role, c.peers[1].priority })
    assert.are.same({ "learner", 0 }, { c.peers[2].role, c.peers[2].priority })
  end)

  it("treats JSON null at the top level as absent", function()
    local null = {}
    local c = assert(config.check({ identifier = "x", listen_port = 9, hooks = null },
      { null = null }))
    assert.is_nil(c.hooks)
  end)

  it("checks a hooks table", function()
    assert.is_true(config.check_hooks({ on_start = print }))
    assert.are.same({ nil, "on_strat: unknown hook (known: " .. table.concat(config.HOOKS, ", ")
      .. ")" }, { config.check_hooks({ on_strat = print }) })
    assert.are.same({ nil, 'on_start: expected a function, got "x"' },
      { config.check_hooks({ on_start = "x" }) })
  end)
end)
