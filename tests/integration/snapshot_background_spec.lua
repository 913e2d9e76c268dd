-- Snapshots are taken in the background by a forked child of the agent
-- (src/store/replica.c): the node keeps answering while the child writes, a write
-- made meanwhile is not in that snapshot but survives in the log, a child
-- that dies is survived and retried, and the nodes of a cluster snapshot at
-- different points. The tests find the child as the agent's child process
-- named like it, and freeze or kill it by its PID.
local A = require("agents")
local socket = require("socket")

local function children(pid)
  local f = io.open(string.format("/proc/%d/task/%d/children", pid, pid))
  if not f then return {} end
  local out = {}
  for c in f:read("a"):gmatch("%d+") do
    local comm = A.read("/proc/" .. c .. "/comm") or ""
    if comm:match("^qcluster") then out[#out + 1] = tonumber(c) end
  end
  f:close()
  return out
end

-- Big values, so that a snapshot takes the child a while to write.
local function value(k) return string.rep("v", 300000) .. k end

-- Writes key1, key2... (from k[1] on) until the node has a snapshot child
-- (forked before the answer to the write that reached the snapshot point),
-- and freezes it. Returns its PID (nil when none came within 100 writes).
local function write_until_child(api, pid, k)
  for _ = 1, 100 do
    k[1] = k[1] + 1
    assert.are.equal(200, (A.kv_put(api, "key" .. k[1], value(k[1]))))
    for _, c in ipairs(children(pid)) do
      if os.execute("kill -STOP " .. c .. " 2>/dev/null") then return c end
    end
  end
end

local function snap_files(c, i)
  local out = A.sh("ls " .. A.data_dir(c, i) .. "/snap")
  local files = {}
  for name in out:gmatch("%S+") do files[#files + 1] = name end
  return files
end

describe("background snapshots", function()
  local c

  after_each(function() A.stop(c) end)

  it("a write during a snapshot is not in it but survives, and the node restarts from it", function()
    c = A.cluster(1, { extra = { snapshot_entries = 20 } })
    A.start_all(c)
    A.must_leader(c)
    local api, pid, k = c.nodes[1].api, c.nodes[1].pid, { 0 }
    local child = write_until_child(api, pid, k)
    assert.is_truthy(child, "a snapshot child appeared")
    -- the node answers while its snapshot is frozen half-way
    local status, put = A.kv_put(api, "during", "written meanwhile")
    assert.are.equal(200, status)
    local rev = put.revision
    local s2, body = A.kv_get(api, "during")
    assert.are.equal(200, s2)
    assert.are.equal("written meanwhile", body)
    os.execute("kill -CONT " .. child)
    assert.is_truthy(A.wait_for(function() return #children(pid) == 0 end, 10), "the child finished")
    -- the snapshot it wrote stops before the write made meanwhile
    local newest = 0
    for _, name in ipairs(snap_files(c, 1)) do
      assert.is_nil(name:find("%.tmp$"), "no temp file left: " .. name)
      newest = math.max(newest, tonumber(name:sub(1, 16), 16) or 0)
    end
    assert.is_true(newest > 0, "a snapshot was written")
    assert.is_true(newest < rev, "snapshot " .. newest .. " before write " .. rev)
    A.signal(c, 1, "KILL")
    local mark = #(A.read(c.nodes[1].log) or "")
    A.start(c, 1)
    A.must_leader(c)
    local log = (A.read(c.nodes[1].log) or ""):sub(mark + 1)
    local from = tonumber(log:match("log recovered: snapshot at (%d+)"))
    assert.are.equal(newest, from, "restarted from the background snapshot")
    assert.is_truthy(A.wait_for(function()
      local s3, b3 = A.kv_get(api, "during")
      return s3 == 200 and b3 == "written meanwhile"
    end, 10), "the write made during the snapshot survived (from the log)")
    for i = 1, k[1] do
      local s4, b4 = A.kv_get(api, "key" .. i)
      assert.are.equal(200, s4, "key" .. i)
      assert.is_true(value(i) == b4, "key" .. i .. " intact")
    end
  end)

  it("a snapshot child that dies is logged, survived and retried", function()
    c = A.cluster(1, { extra = { snapshot_entries = 20 } })
    A.start_all(c)
    A.must_leader(c)
    local api, pid, k = c.nodes[1].api, c.nodes[1].pid, { 0 }
    local child = write_until_child(api, pid, k)
    assert.is_truthy(child, "a snapshot child appeared")
    os.execute("kill -KILL " .. child) -- frozen: it dies without its file
    assert.is_truthy(A.wait_for(function()
      k[1] = k[1] + 1
      assert.are.equal(200, (A.kv_put(api, "key" .. k[1], value(k[1]))))
      return (A.read(c.nodes[1].log) or ""):find("background snapshot at %d+ failed")
    end, 10), "the failure was logged")
    assert.is_true(A.alive(pid), "the agent still runs")
    -- it tries again (after a second) and that one is installed
    local mark = #(A.read(c.nodes[1].log) or "")
    assert.is_truthy(A.wait_for(function()
      k[1] = k[1] + 1
      assert.are.equal(200, (A.kv_put(api, "key" .. k[1], value(k[1]))))
      return (A.read(c.nodes[1].log) or ""):sub(mark + 1):find("log compacted", 1, true)
    end, 15), "a later snapshot was installed")
    A.signal(c, 1, "KILL")
    A.start(c, 1)
    A.must_leader(c)
    for i = 1, k[1] do
      local s, b = A.kv_get(api, "key" .. i)
      assert.are.equal(200, s, "key" .. i)
      assert.is_true(value(i) == b, "key" .. i .. " intact")
    end
  end)

  -- A forked child shares the agent's descriptors: while it held them, a
  -- connection the agent closed stayed open at the other end (a peer, an
  -- API client), and data_dir's lock outlived a killed agent.
  it("a connection the agent closes ends while its snapshot child runs", function()
    c = A.cluster(1, { extra = { snapshot_entries = 20 } })
    A.start_all(c)
    A.must_leader(c)
    local api, pid, k = c.nodes[1].api, c.nodes[1].pid, { 0 }
    -- a kept-alive API connection, open before the fork
    local conn = socket.tcp()
    conn:settimeout(10)
    assert(conn:connect("127.0.0.1", c.base + 21))
    assert(conn:send("GET /v1/status HTTP/1.1\r\nHost: a\r\n\r\n"))
    local len
    repeat
      local line = assert(conn:receive("*l"))
      len = len or tonumber(line:lower():match("^content%-length:%s*(%d+)"))
    until line == ""
    assert(conn:receive(len))
    local child = write_until_child(api, pid, k)
    assert.is_truthy(child, "a snapshot child appeared")
    -- frozen right after the fork, it had no time to close anything yet:
    -- let it on a little at a time (never past its write, 300 KB values)
    local function sockets()
      return tonumber((A.sh("ls -l /proc/" .. child .. "/fd 2>/dev/null | grep -c socket:")))
    end
    for _ = 1, 20 do
      if sockets() == 0 then break end
      os.execute("kill -CONT " .. child .. "; kill -STOP " .. child)
    end
    conn:shutdown("send") -- the agent closes its end when it reads this
    local _, err = conn:receive("*a")
    conn:close()
    os.execute("kill -CONT " .. child)
    assert.are.equal("closed", err, "the agent's close reached the client")
  end)

  -- The loop made the file the log's snapshot and dropped the log before
  -- it itself, under the log's lock, which the writer thread holds across
  -- its fsyncs: a slow fsync held the whole node (55 ms of a turn at 100k
  -- keys, with the unlinks and a directory fsync). The writer does it now.
  it("a node that finishes a snapshot while its log's fsync is slow goes on answering", function()
    c = A.cluster(1, { extra = { snapshot_entries = 20 } })
    local hold = c.dir .. "/sync-hold"
    c.nodes[1].env = "QC_TEST_SYNC_HOLD=" .. hold
    A.start_all(c)
    A.must_leader(c)
    local api, pid, k = c.nodes[1].api, c.nodes[1].pid, { 0 }
    local late, conns = {}, {}
    -- a put sent and left: its answer waits for the held fsync
    local function put_later(key)
      local conn = socket.tcp()
      conn:settimeout(60)
      assert(conn:connect("127.0.0.1", c.base + 21))
      local body = "v-" .. key
      assert(conn:send(string.format("PUT /v1/kv/%s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s",
        key, #body, body)))
      late[#late + 1], conns[#conns + 1] = key, conn
    end
    local ok, err = pcall(function()
      -- a child frozen before it wrote anything (not one that already exited)
      local child
      for _ = 1, 5 do
        child = write_until_child(api, pid, k)
        assert.is_truthy(child, "a snapshot child appeared")
        local state
        A.wait_for(function()
          state = (A.read("/proc/" .. child .. "/stat") or ""):match("%) (%a)")
          return state == "T" or state == "Z" or state == nil
        end, 5)
        if state == "T" then break end
        child = nil
      end
      assert.is_truthy(child, "a snapshot child was frozen")
      local mark = #(A.read(c.nodes[1].log) or "")
      A.write(hold, "")
      put_later("late1")
      assert.is_truthy(A.wait_for(function() return A.read(hold .. ".held") end, 10),
        "the log's fsync is held")
      os.execute("kill -CONT " .. child) -- its own fsync is never held
      assert.is_truthy(A.wait_for(function() return #children(pid) == 0 end, 30), "the child finished")
      put_later("late2") -- the turn that takes in the snapshot
      local st = A.json(api, "/v1/status")
      assert.are.equal("leader", st and st.role, "the node answers while its fsync is held")
      assert.are.equal(200, (A.kv_get(api, "key1", "?stale")))
      assert.is_truthy(A.wait_for(function()
        return (A.read(c.nodes[1].log) or ""):sub(mark + 1):find("log compacted", 1, true)
      end, 10), "the snapshot was taken in")
      os.remove(hold)
      for i, conn in ipairs(conns) do
        assert.are.equal("HTTP/1.1 200 OK", conn:receive("*l"), late[i])
      end
    end)
    os.remove(hold)
    for _, conn in ipairs(conns) do conn:close() end
    assert(ok, err)
    -- everything survives a restart from the snapshot and the log after it
    A.signal(c, 1, "KILL")
    A.start(c, 1)
    A.must_leader(c)
    for i = 1, k[1] do
      local s, b = A.kv_get(api, "key" .. i)
      assert.are.equal(200, s, "key" .. i)
      assert.is_true(value(i) == b, "key" .. i .. " intact")
    end
    for _, key in ipairs(late) do
      local s, b = A.kv_get(api, key)
      assert.are.equal(200, s, key)
      assert.are.equal("v-" .. key, b)
    end
  end)

  -- The child serialises and writes the whole store (100 to 300 ms of CPU
  -- at 100k keys) on the cores the loops need: it yields them.
  it("a snapshot child runs at the lowest CPU priority", function()
    c = A.cluster(1, { extra = { snapshot_entries = 20 } })
    A.start_all(c)
    A.must_leader(c)
    local child = write_until_child(c.nodes[1].api, c.nodes[1].pid, { 0 })
    assert.is_truthy(child, "a snapshot child appeared")
    -- field 19 of /proc/PID/stat, 17 after "pid (comm)"
    local rest = (A.read("/proc/" .. child .. "/stat") or ""):match("%) (.*)$")
    os.execute("kill -CONT " .. child)
    local f = {}
    for x in (rest or ""):gmatch("%S+") do f[#f + 1] = x end
    assert.are.equal("19", f[17], "its nice value")
  end)

  it("the nodes of a cluster snapshot at different points", function()
    c = A.cluster(3, { extra = { snapshot_entries = 100 } })
    A.start_all(c)
    local leader = A.must_leader(c)
    local api = c.nodes[A.index_of(c, leader)].api
    for k = 1, 400 do assert.are.equal(200, (A.kv_put(api, "k" .. k, "v"))) end
    local firsts = {}
    for i = 1, 3 do
      assert.is_truthy(A.wait_for(function()
        return (A.read(c.nodes[i].log) or ""):match("snapshot at (%d+) %(")
      end, 10), "node" .. i .. " took a snapshot")
      firsts[i] = tonumber((A.read(c.nodes[i].log)):match("snapshot at (%d+) %("))
    end
    assert.are_not.equal(firsts[1], firsts[2])
    assert.are_not.equal(firsts[1], firsts[3])
    assert.are_not.equal(firsts[2], firsts[3])
  end)
end)
