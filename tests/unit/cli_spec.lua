-- The command-line client (src/cli.c through build/qcli) against
-- build/api_fake: output, --json, --api/$QCLUSTER_API, the bearer token
-- from $QCLUSTER_API_TOKEN and the exit codes 0/1/2/3 of the contract.
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
    assert.are.equal(2, (run("kv get x" .. api)))
    assert.are.equal(2, (run("join 127.0.0.1:7001" .. api)))
    assert.are.equal(2, (run("leave" .. api)))
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
