-- The command-line client (src/cli.c through build/qcli) against
-- build/api_fake: output, --json, --api/$QCLUSTER_API, the bearer token
-- from $QCLUSTER_API_TOKEN, the kv commands and the exit codes 0/1/2/3 of
-- the contract.
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

  it("members prints a table with a header", function()
    local code, out = run("members" .. api)
    assert.are.equal(0, code)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal(4, #lines)
    assert.matches("^IDENTIFIER%s+ROLE%s+UP%s+VOTER%s+ADDRESS%s+METADATA$", lines[1])
    assert.matches("^server_a%s+follower%s+yes%s+yes%s+localhost:7001%s+{}$", lines[2])
    assert.matches("^server_c%s+follower%s+no%s+yes%s+localhost:7003", lines[4])
    -- columns line up
    assert.are.equal(lines[1]:find("ADDRESS"), lines[2]:find("localhost"))
    code, out = run("members --json" .. api)
    assert.are.equal(0, code)
    assert.are.equal(3, #cjson.decode(out))
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
    assert.are.equal(2, (run("join 127.0.0.1:7001" .. api)))
    assert.are.equal(2, (run("leave" .. api)))
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
