-- The command-line client (src/cli/cli.c through build/qcli) against
-- build/api_fake: output, --json, --api/$QCLUSTER_API, the bearer token
-- from $QCLUSTER_API_TOKEN, the kv commands, join and leave, and the exit
-- codes 0/1/2/3 of the contract.
local socket = require("socket")
local cjson = require("cjson.safe")

local start_fake = require("fake").start

-- QC_QCLI lets a sanitizer build run the same specs (QC_API_FAKE and
-- QC_FAKE_LOG: see tests/helpers/fake.lua).
local QCLI = os.getenv("QC_QCLI") or "./build/qcli"
local TOKEN = "cli-token"

-- Runs qcli with args (a string); returns exit code, stdout, stderr.
local function run(args, env)
  local errfile = os.tmpname()
  local p = assert(io.popen((env or "") .. " " .. QCLI .. " " .. args .. " 2>" .. errfile))
  local out = p:read("*a")
  local _, _, code = p:close()
  local f = assert(io.open(errfile))
  local err = f:read("*a")
  f:close()
  os.remove(errfile)
  return code, out, err
end

describe("qcluster CLI", function()
  local port, pid, api

  before_each(function()
    port = 18000 + math.random(0, 9999)
    pid = start_fake(port, TOKEN)
    api = " --api 127.0.0.1:" .. port
  end)

  after_each(function()
    if pid then os.execute("kill " .. pid) end
    pid = nil
  end)

  it("status prints an aligned summary and exits 0", function()
    local code, out = run("status" .. api)
    assert.are.equal(0, code)
    assert.matches("identifier  server_a\n", out, 1, true)
    assert.matches("role        follower\n", out, 1, true)
    assert.matches("term        1\n", out, 1, true)
    assert.matches("leader      none\n", out, 1, true)
    assert.matches("peers       server_b up, server_c down\n", out, 1, true)
    os.execute("kill -USR1 " .. pid)
    socket.sleep(0.1)
    code, out = run("status" .. api)
    assert.are.equal(0, code)
    assert.matches("leader      server_b (localhost:7002)\n", out, 1, true)
  end)

  it("status --json prints the API's object", function()
    local code, out = run("--json status" .. api)
    assert.are.equal(0, code)
    local j = cjson.decode(out)
    assert.are.equal("server_a", j.identifier)
    assert.are.equal(42, j.commit_index)
  end)

  it("leader exits 3 with 'no leader' when none, 0 with one line when known", function()
    local code, out = run("leader" .. api)
    assert.are.equal(3, code)
    assert.are.equal("no leader\n", out)
    code, out = run("leader --json" .. api)
    assert.are.equal(3, code)
    assert.are.equal(cjson.null, cjson.decode(out).leader)
    os.execute("kill -USR1 " .. pid)
    socket.sleep(0.1)
    code, out = run("leader" .. api)
    assert.are.equal(0, code)
    assert.are.equal('server_b localhost:7002 {"server_port":8002,"tags":["a","b"]}\n', out)
    code, out = run("leader --json" .. api)
    assert.are.equal(0, code)
    assert.are.equal(7002, cjson.decode(out).port)
  end)

  it("members prints a table with a header, priority included", function()
    local code, out = run("members" .. api)
    assert.are.equal(0, code)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal(4, #lines)
    assert.matches("^IDENTIFIER%s+ROLE%s+UP%s+HEALTH%s+VOTER%s+PRIORITY%s+ADDRESS%s+METADATA$", lines[1])
    assert.matches("^server_a%s+follower%s+yes%s+yes%s+yes%s+1%s+localhost:7001%s+{}$", lines[2])
    assert.matches("^server_b%s+follower%s+yes%s+yes%s+yes%s+2%s+localhost:7002%s+{", lines[3])
    -- not healthy: its failing checks follow
    assert.matches("^server_c%s+follower%s+no%s+no:web%s+yes%s+0%s+localhost:7003", lines[4])
    -- columns line up
    assert.are.equal(lines[1]:find("PRIORITY"), lines[4]:find("0 "))
    assert.are.equal(lines[1]:find("ADDRESS"), lines[2]:find("localhost"))
    code, out = run("members --json" .. api)
    assert.are.equal(0, code)
    local j = cjson.decode(out)
    assert.are.equal(3, #j)
    assert.are.equal(2, j[2].priority)
  end)

  it("transfer exits 0 when done, 3 for no such peer, 1 when it failed", function()
    local env = "QCLUSTER_API_TOKEN=" .. TOKEN
    local code, out = run("transfer server_b" .. api, env)
    assert.are.equal(0, code)
    assert.matches("server_b", out)
    local err
    code, out, err = run("transfer nobody" .. api, env)
    assert.are.equal("", out)
    assert.are.equal(3, code)
    assert.matches("no such peer: nobody", err, 1, true)
    code, out, err = run("transfer server_c" .. api, env)
    assert.are.equal("", out)
    assert.are.equal(1, code)
    assert.matches("transfer failed", err, 1, true)
    code = run("transfer" .. api, env)
    assert.are.equal(0, code)
    code, out = run("transfer server_b --json" .. api, env)
    assert.are.equal(0, code)
    assert.is_table(cjson.decode(out))
  end)

  it("transfer without the token fails with exit 1", function()
    local code, _, err = run("transfer server_b" .. api)
    assert.are.equal(1, code)
    assert.matches("token", err)
  end)

  it("takes the API address from $QCLUSTER_API", function()
    local code = run("status", "QCLUSTER_API=127.0.0.1:" .. port)
    assert.are.equal(0, code)
  end)

  it("exits 1 with a clear message when the agent cannot be reached", function()
    os.execute("kill " .. pid)
    pid = nil
    socket.sleep(0.1)
    local code, out, err = run("status" .. api)
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.matches("^qcluster: cannot reach agent at 127.0.0.1:" .. port .. ": ", err)
  end)

  it("exits 2 on bad usage", function()
    assert.are.equal(2, (run("status extra" .. api)))
    assert.are.equal(2, (run("status --frobnicate" .. api)))
    assert.are.equal(2, (run("status --api")))
    assert.are.equal(2, (run("status --api nohostport")))
    assert.are.equal(2, (run("transfer a b" .. api)))
    assert.are.equal(2, (run("kv" .. api)))
    assert.are.equal(2, (run("frobnicate" .. api)))
  end)

  describe("join and leave", function()
    local env

    before_each(function() env = "QCLUSTER_API_TOKEN=" .. TOKEN end)

    it("join sends every address to the agent and exits 0 with its message", function()
      local code, out, err = run("join 10.0.0.1:7001 db-2:7002 [::1]:7003" .. api, env)
      assert.are.equal(0, code)
      assert.are.equal("joined through 10.0.0.1:7001, db-2:7002, [::1]:7003\n", out)
      assert.are.equal("", err)
      code, out = run("join --json 10.0.0.1:7001" .. api, env)
      assert.are.equal(0, code)
      assert.are.same({ ok = true, message = "joined through 10.0.0.1:7001" }, cjson.decode(out))
    end)

    it("join waits for a change that commits later", function()
      local code, out = run("join slow:7001" .. api, env)
      assert.are.equal(0, code)
      assert.are.equal("joined the cluster\n", out)
    end)

    it("join exits 1 with the agent's error when it is refused or fails", function()
      for addr, text in pairs({
        ["refuse:7001"] = "identifier server_a is already in use",
        ["noleader:7001"] = "no leader",
        ["timeout:7001"] = "timed out waiting for the change to commit",
        ["missing:7001"] = "no such member",
      }) do
        local code, out, err = run("join " .. addr .. api, env)
        assert.are.equal(1, code, addr)
        assert.are.equal("", out)
        assert.matches("qcluster: " .. text, err, 1, true)
      end
      local code, out = run("join refuse:7001 --json" .. api, env)
      assert.are.equal(1, code)
      assert.are.equal("identifier server_a is already in use", cjson.decode(out).error)
    end)

    it("leave: this node or the member named exits 0; an unknown member exits 3", function()
      local code, out = run("leave" .. api, env)
      assert.are.equal(0, code)
      assert.are.equal("this node left the cluster\n", out)
      code, out = run("leave server_c" .. api, env)
      assert.are.equal(0, code)
      assert.are.equal("removed server_c from the cluster\n", out)
      local err
      code, out, err = run("leave ghost" .. api, env)
      assert.are.equal(3, code)
      assert.are.equal("", out)
      assert.matches("no such member: ghost", err, 1, true)
      code, out = run("leave ghost --json" .. api, env)
      assert.are.equal(3, code)
      assert.are.equal("no such member: ghost", cjson.decode(out).error)
      code, out = run("leave slow --json" .. api, env)
      assert.are.equal(0, code)
      assert.is_true(cjson.decode(out).ok)
    end)

    it("leave exits 1 when refused, without a leader, or timed out", function()
      local code, _, err = run("leave refuse" .. api, env)
      assert.are.equal(1, code)
      assert.matches("server_a is the last voter", err, 1, true)
      code, _, err = run("leave noleader" .. api, env)
      assert.are.equal(1, code)
      assert.matches("no leader", err, 1, true)
      assert.are.equal(1, (run("leave timeout" .. api, env)))
    end)

    it("exit 1 without the token, when the agent has no membership, or cannot be reached", function()
      local code, _, err = run("join a:1" .. api)
      assert.are.equal(1, code)
      assert.matches("token", err)
      code, _, err = run("leave" .. api)
      assert.are.equal(1, code)
      assert.matches("token", err)
      os.execute("kill " .. pid)
      socket.sleep(0.1)
      pid = start_fake(port, TOKEN, "QC_FAKE_NO_MEMBERS=1")
      code, _, err = run("join a:1" .. api, env)
      assert.are.equal(1, code)
      assert.matches("membership is not available", err, 1, true)
      os.execute("kill " .. pid)
      pid = nil
      socket.sleep(0.1)
      code, _, err = run("leave" .. api, env)
      assert.are.equal(1, code)
      assert.matches("cannot reach agent", err, 1, true)
    end)

    it("exit 2 on bad usage, before anything is sent", function()
      for _, args in ipairs({
        "join", "join localhost", "join :7001", "join localhost:", "join localhost:0", "join localhost:65536",
        "join localhost:7x", "join a:1 b", "join a:1 --cas 1", "leave a b", "leave ''", "leave --stale",
      }) do
        local code, out, err = run(args .. api, env)
        assert.are.equal(2, code, args)
        assert.are.equal("", out, args)
        assert.matches("qcluster --help", err, 1, true)
      end
      local many = {}
      for i = 1, 33 do many[i] = "h" .. i .. ":1" end
      assert.are.equal(2, (run("join " .. table.concat(many, " ") .. api, env)))
      many[33] = nil
      assert.are.equal(0, (run("join " .. table.concat(many, " ") .. api, env)))
    end)

    it("the usage text lists join and leave", function()
      local code, out = run("--help")
      assert.are.equal(0, code)
      assert.matches("join HOST:PORT [HOST:PORT ...]", out, 1, true)
      assert.matches("leave [IDENTIFIER]", out, 1, true)
    end)
  end)

  describe("kv", function()
    local env

    before_each(function() env = "QCLUSTER_API_TOKEN=" .. TOKEN end)

    -- Runs qcli with a file as stdin.
    local function run_stdin(args, data)
      local inf = os.tmpname()
      local f = assert(io.open(inf, "wb"))
      f:write(data)
      f:close()
      local code, out, err = run(args .. " <" .. inf, env)
      os.remove(inf)
      return code, out, err
    end

    it("put prints the revision, get the value as it is, both exit 0", function()
      local code, out = run("kv put app/primary db-1" .. api, env)
      assert.are.equal(0, code)
      assert.are.equal("1\n", out)
      code, out = run("kv get app/primary" .. api)
      assert.are.equal(0, code)
      assert.are.equal("db-1", out) -- no newline added
      code, out = run("kv get app/primary --json" .. api)
      assert.are.equal(0, code)
      assert.are.same({ key = "app/primary", value = "db-1", revision = 1 }, cjson.decode(out))
      code, out = run("kv put app/primary db-2 --json" .. api, env)
      assert.are.equal(0, code)
      assert.are.equal(2, cjson.decode(out).revision)
    end)

    it("get and del exit 3 when the key is missing", function()
      local code, out, err = run("kv get nothing" .. api)
      assert.are.equal(3, code)
      assert.are.equal("", out)
      assert.matches("key not found", err, 1, true)
      code, out = run("kv get nothing --json" .. api)
      assert.are.equal(3, code)
      assert.are.equal("key not found", cjson.decode(out).error)
      code = run("kv del nothing" .. api, env)
      assert.are.equal(3, code)
    end)

    it("del prints the revision and exits 0", function()
      run("kv put gone v" .. api, env)
      local code, out = run("kv del gone" .. api, env)
      assert.are.equal(0, code)
      assert.are.equal("2\n", out)
      assert.are.equal(3, (run("kv get gone" .. api)))
    end)

    it("--cas: create-only, match and mismatch; a mismatch exits 1 with the current revision", function()
      assert.are.equal(0, (run("kv put c one --cas 0" .. api, env)))
      local code, out, err = run("kv put c two --cas 0" .. api, env)
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert.matches("revision mismatch: the key's current revision is 1", err, 1, true)
      code, out = run("kv put c two --cas=1" .. api, env)
      assert.are.equal(0, code)
      assert.are.equal("2\n", out)
      code, out = run("kv del c --cas 1 --json" .. api, env)
      assert.are.equal(1, code)
      assert.are.equal(2, cjson.decode(out).revision)
      code, out, err = run("kv del c --cas 1" .. api, env)
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert.matches("current revision is 2", err, 1, true)
      assert.are.equal(0, (run("kv del c --cas 2" .. api, env)))
    end)

    it("put - reads a binary value from stdin; get writes it back byte for byte", function()
      local value = "a\0b\255\254\n" .. string.rep("\0", 300)
      local code, out = run_stdin("kv put bin -" .. api, value)
      assert.are.equal(0, code)
      assert.are.equal("1\n", out)
      code, out = run("kv get bin" .. api)
      assert.are.equal(0, code)
      assert.is_true(out == value)
      code, out = run("kv get bin --json" .. api)
      assert.are.equal(0, code)
      local j = cjson.decode(out)
      assert.are.equal("base64", j.encoding)
      assert.are.equal(1, j.revision)
    end)

    it("a 1 MiB value from stdin round trips; one byte more exits 1", function()
      local big = string.rep("0123456789abcdef", 65536)
      assert.are.equal(0, (run_stdin("kv put big -" .. api, big)))
      local code, out = run("kv get big" .. api)
      assert.are.equal(0, code)
      assert.is_true(out == big)
      local err
      code, out, err = run_stdin("kv put big -" .. api, big .. "x")
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert.matches("too large", err, 1, true)
      code, out, err = run_stdin("kv put big -" .. api, big .. big)
      assert.are.equal("", out)
      assert.are.equal(1, code)
      assert.matches("too large", err, 1, true)
    end)

    it("list prints KEY, REVISION and VALUE per line, base64: for what is not printable", function()
      run("kv put app/b two" .. api, env)
      run("kv put app/a 'one two'" .. api, env)
      run("kv put other x" .. api, env)
      run_stdin("kv put app/c -" .. api, "\255\0")
      run("kv put app/d 'tab\there'" .. api, env)
      run("kv put app/e base64:lookalike" .. api, env)
      run("kv put 'app/f g&h=i+j%' é" .. api, env)
      local code, out = run("kv list app/" .. api)
      assert.are.equal(0, code)
      assert.are.equal(table.concat({
        "app/a\t2\tone two",
        "app/b\t1\ttwo",
        "app/c\t4\tbase64:/wA=",
        "app/d\t5\tbase64:dGFiCWhlcmU=",
        "app/e\t6\tbase64:YmFzZTY0Omxvb2thbGlrZQ==",
        "app/f g&h=i+j%\t7\té",
      }, "\n") .. "\n", out)
      code, out = run("kv list" .. api)
      assert.are.equal(0, code)
      assert.matches("\nother\t3\tx\n$", out)
      code, out = run("kv list app/f --json" .. api)
      assert.are.equal(0, code)
      assert.are.same({ { key = "app/f g&h=i+j%", value = "é", revision = 7 } }, cjson.decode(out))
      code, out = run("kv list nothing" .. api)
      assert.are.equal(0, code)
      assert.are.equal("", out)
    end)

    it("--stale reads this node's copy: a read without a leader fails without it", function()
      local code, _, err = run("kv get down/x" .. api)
      assert.are.equal(1, code)
      assert.matches("no leader", err, 1, true)
      assert.are.equal(3, (run("kv get down/x --stale" .. api)))
      assert.are.equal(1, (run("kv list down" .. api)))
      assert.are.equal(0, (run("kv list down --stale" .. api)))
    end)

    it("exits 1 on 503 and 504, without the token, and when the agent is unreachable", function()
      local code, _, err = run("kv put down v" .. api, env)
      assert.are.equal(1, code)
      assert.matches("no leader", err, 1, true)
      code, _, err = run("kv put readonly v" .. api, env)
      assert.are.equal(1, code)
      assert.matches("this node cannot write", err, 1, true)
      assert.are.equal(1, (run("kv del timeout" .. api, env)))
      code, _, err = run("kv put k v" .. api)
      assert.are.equal(1, code)
      assert.matches("token", err)
      os.execute("kill " .. pid)
      pid = nil
      socket.sleep(0.1)
      code, _, err = run("kv get k" .. api)
      assert.are.equal(1, code)
      assert.matches("cannot reach agent", err, 1, true)
    end)

    it("waits for a slow write", function()
      local code, out = run("kv put slow1 v" .. api, env)
      assert.are.equal(0, code)
      assert.are.equal("1\n", out)
    end)

    it("exits 2 on bad usage", function()
      for _, args in ipairs({
        "kv", "kv frob", "kv get", "kv get a b", "kv put a", "kv put a b c", "kv del", "kv list a b",
        "kv get a --cas 1", "kv list --cas 1", "kv put a b --stale", "kv del a --stale",
        "kv put a b --cas", "kv put a b --cas -1", "kv put a b --cas x", "kv put a b --cas 9223372036854775808",
        "status --stale", "status --cas 1",
      }) do
        assert.are.equal(2, (run(args .. api, env)), args)
      end
    end)
  end)

  it("version prints the version and --help the usage, both exit 0", function()
    local code, out = run("version")
    assert.are.equal(0, code)
    assert.matches("^qcluster %d+%.%d+%.%d+\n$", out)
    code, out = run("status --help")
    assert.are.equal(0, code)
    assert.matches("usage: qcluster", out, 1, true)
  end)
end)
