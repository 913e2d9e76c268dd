-- The hard state (src/store.c) through the test-only module qcwal: saves go
-- in place into the older of two slots (one fdatasync, no rename), a torn
-- save leaves the state before it, older one-line files still load, and a
-- file with no valid slot is refused. Every test works in its own temp dir.
package.cpath = "./build/?.so;" .. package.cpath
local qcwal = require("qcwal")

local BLOCK = 4096 -- slot k starts at k * BLOCK

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  p:close()
  return (out:gsub("%s+$", ""))
end

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write_at(path, offset, bytes)
  local f = assert(io.open(path, "r+b"))
  f:seek("set", offset)
  f:write(bytes)
  f:close()
end

local function inode(path) return sh("stat -c %i " .. path) end

describe("the hard state", function()
  local dir, st

  before_each(function() dir = sh("mktemp -d /tmp/qcstore.XXXXXX") end)

  after_each(function()
    if st then st:close() end
    st = nil
    os.execute("rm -rf " .. dir)
  end)

  local function reopen()
    st:close()
    st = assert(qcwal.store(dir))
    return st:load()
  end

  it("is saved in place after the first save: same file, no temp file, no rename", function()
    st = assert(qcwal.store(dir))
    assert.are.equal("ENOTFOUND", select(3, st:load()))
    assert.is_true(st:save(1, 0, 0))
    local ino = inode(dir .. "/state")
    for term = 2, 5 do
      os.remove(dir .. "/state.tmp")
      assert.is_true(st:save(term, 7, term - 1))
      assert.are.equal(ino, inode(dir .. "/state"), "save of term " .. term .. " replaced the file")
      assert.is_nil(io.open(dir .. "/state.tmp"), "save of term " .. term .. " wrote a temp file")
    end
    assert.are.same({ term = 5, vote = 7, commit = 4 }, reopen())
    -- and after a restart too: the next save still goes in place
    assert.is_true(st:save(6, 0, 4))
    assert.are.equal(ino, inode(dir .. "/state"))
    assert.are.same({ term = 6, vote = 0, commit = 4 }, reopen())
  end)

  it("keeps the state before a save that a crash tore", function()
    st = assert(qcwal.store(dir))
    st:load()
    assert.is_true(st:save(3, 2, 1))
    assert.is_true(st:save(4, 9, 1))
    local before = read_file(dir .. "/state")
    -- the slot the second save wrote is the one whose line names term 4
    local at = before:find("qcluster%-state v2 %d+ 4 9 1 ")
    assert.is_truthy(at, "a slot holds term 4")
    write_at(dir .. "/state", at - 1 + 20, "\0\0\0garbage")
    assert.are.same({ term = 3, vote = 2, commit = 1 }, reopen())
    -- the next save overwrites the torn slot, never the good one
    assert.is_true(st:save(5, 0, 1))
    assert.are.same({ term = 5, vote = 0, commit = 1 }, reopen())
    assert.is_true(st:save(5, 3, 2))
    assert.are.same({ term = 5, vote = 3, commit = 2 }, reopen())
  end)

  it("never saves over the newest slot, whichever of the two holds it", function()
    st = assert(qcwal.store(dir))
    st:load()
    assert.is_true(st:save(1, 1, 0))
    assert.is_true(st:save(2, 2, 0))
    -- the two slots swapped (as a copied or restored file may have them)
    local s = read_file(dir .. "/state")
    local a, b = s:sub(1, 128), s:sub(BLOCK + 1, BLOCK + 128)
    write_at(dir .. "/state", 0, b)
    write_at(dir .. "/state", BLOCK, a)
    assert.are.same({ term = 2, vote = 2, commit = 0 }, reopen())
    assert.is_true(st:save(3, 3, 0))
    local at = read_file(dir .. "/state"):find("qcluster%-state v2 %d+ 3 3 0 ")
    write_at(dir .. "/state", at - 1 + 20, "torn")
    assert.are.same({ term = 2, vote = 2, commit = 0 }, reopen())
  end)

  it("loads the one-line file of older agents and moves it to two slots on the next save", function()
    -- written by the v1 store: "qcluster-state v1 TERM VOTE COMMIT CRC32C"
    local f = assert(io.open(dir .. "/state", "wb"))
    f:write("qcluster-state v1 7 3 12 022d36f5\n")
    f:close()
    st = assert(qcwal.store(dir))
    assert.are.same({ term = 7, vote = 3, commit = 12 }, assert(st:load()))
    assert.is_true(st:save(8, 0, 12))
    assert.are.same({ term = 8, vote = 0, commit = 12 }, reopen())
    assert.are.equal(BLOCK + 128, #read_file(dir .. "/state"))
  end)

  -- A save killed (kill -9) between its write and its fdatasync leaves
  -- the new slot in the page cache only: the next start reads it back and
  -- acts on it (a vote), so the load must make it durable before a power
  -- loss can take it (and let the node vote again in that term).
  it("makes the state it loads durable, after a crash before the save's fdatasync", function()
    st = assert(qcwal.store(dir))
    st:load()
    assert.is_true(st:save(4, 2, 1))
    local bytes = read_file(dir .. "/state")
    st:close()
    st = nil
    local f = assert(io.open(dir .. "/state", "wb")) -- written, never synced
    f:write(bytes)
    f:close()
    local left = qcwal.unwritten(dir .. "/state")
    if left < 0 then
      pending("cachestat(2) is not available: Linux 6.5 or later tells dirty pages")
      return
    end
    assert.is_true(left > 0, "the file was written back before the load")
    st = assert(qcwal.store(dir))
    assert.are.same({ term = 4, vote = 2, commit = 1 }, assert(st:load()))
    assert.are.equal(0, qcwal.unwritten(dir .. "/state"))
  end)

  it("refuses a file with no valid slot, and an empty one", function()
    st = assert(qcwal.store(dir))
    st:load()
    assert.is_true(st:save(2, 1, 0))
    assert.is_true(st:save(3, 1, 0))
    local s = read_file(dir .. "/state")
    write_at(dir .. "/state", 0, ("x"):rep(40))
    write_at(dir .. "/state", BLOCK, ("x"):rep(40))
    assert.are.equal(#s, #read_file(dir .. "/state"))
    local hs, _, code = reopen()
    assert.is_nil(hs)
    assert.are.equal("ECORRUPT", code)
    local f = assert(io.open(dir .. "/state", "wb"))
    f:close()
    hs, _, code = reopen()
    assert.is_nil(hs)
    assert.are.equal("ECORRUPT", code)
  end)
  -- A holder of the data dir's lock, by PID: flock(1) on dir/lock, which
  -- writes a file once it holds it, then sleeps for its seconds.
  local function hold_lock(seconds)
    local pid = sh(string.format("flock -x %s/lock sh -c 'touch %s/held; exec sleep %s' " ..
                                 ">/dev/null 2>&1 & echo $!", dir, dir, seconds))
    for _ = 1, 500 do
      if io.open(dir .. "/held") then return pid end
      os.execute("sleep 0.01")
    end
    error("the lock holder never took the lock")
  end

  it("waits out a lock holder that goes away, as a killed agent's snapshot child", function()
    local pid = hold_lock(0.3)
    st = assert(qcwal.store(dir))
    os.execute("kill " .. pid .. " 2>/dev/null")
  end)

  it("refuses a data dir whose lock another agent keeps", function()
    local pid = hold_lock(30)
    local s, _, code = qcwal.store(dir)
    os.execute("pkill -P " .. pid .. " 2>/dev/null; kill " .. pid .. " 2>/dev/null")
    assert.is_nil(s)
    assert.are.equal("EBUSY", code)
  end)
end)
