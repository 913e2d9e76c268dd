-- A follower whose disk fills up stops itself (exit 1, a clear log line)
-- and the cluster goes on without it, losing no acknowledged write. Needs
-- root to mount a small tmpfs for that follower's data_dir.
local A = require("agents")

describe("a full disk", function()
  local c, mnt, mounted

  setup(function()
    c = A.cluster(3)
    mnt = c.dir .. "/small"
    os.execute("mkdir -p " .. mnt)
    local _, code = A.sh("mount -t tmpfs -o size=256k tmpfs " .. mnt)
    mounted = code == 0
    -- node3 keeps its data on the small disk
    local path = c.nodes[3].config
    local text = A.read(path)
    A.write(path, (text:gsub("}%s*$", string.format(", data_dir = %q}\n", mnt .. "/data"))))
    A.start_all(c)
  end)

  teardown(function()
    A.signal(c, 3, "KILL") -- nothing may hold the small disk when it goes
    if mounted then os.execute("umount " .. mnt .. " 2>/dev/null") end
    A.stop(c)
  end)

  it("stops the node that cannot write, and the others carry on", function()
    if not mounted then
      pending("mounting a tmpfs needs root")
      return
    end
    local leader = A.must_leader(c)
    if leader == "node3" then
      A.cli("transfer node1", c.nodes[3].api)
      leader = A.must_leader(c)
    end
    local api = c.nodes[A.index_of(c, leader)].api
    local value = string.rep("x", 16 * 1024)
    local acked = {}
    for k = 1, 40 do
      local status = A.http(api, "PUT", "/v1/kv/big" .. k, value .. k)
      if status == 200 then acked[#acked + 1] = k end
    end
    assert.is_truthy(A.wait_for(function() return not A.alive(c.nodes[3].pid) end, 10),
      "node3 stopped")
    c.nodes[3].pid = nil
    local log = A.read(c.nodes[3].log) or ""
    assert.is_truthy(log:find("stopping this node", 1, true), log:sub(-800))
    assert.is_true(#acked >= 30, "the cluster kept taking writes: " .. #acked)
    for _, k in ipairs(acked) do
      local status, body = A.http(api, "GET", "/v1/kv/big" .. k)
      assert.are.equal(200, status)
      assert.are.equal(value .. k, body)
    end
  end)
end)
