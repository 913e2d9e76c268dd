-- The write-ahead log (src/store/wal.c) through the test-only module qcwal: round
-- trips, segments, conflict truncation, torn tails, corruption, snapshots,
-- compaction and failed fsyncs. Every test works in its own temp directory.
package.cpath = "./build/?.so;" .. package.cpath
local qcwal = require("qcwal")

local REC_OVERHEAD = 12 + 24 -- record header + entry fields

local function sh(cmd)
  assert(os.execute(cmd), cmd)
end

local function make_tmpdir()
  local p = io.popen("mktemp -d /tmp/qcwal.XXXXXX")
  local d = p:read("l")
  p:close()
  return d
end

local function ls(dir)
  local names = {}
  local p = io.popen("ls " .. dir .. " 2>/dev/null")
  for line in p:lines() do names[#names + 1] = line end
  p:close()
  return names
end

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function seg(first)
  return string.format("%016x.seg", first)
end

local function data_of(i)
  return "entry-" .. i .. "\0" .. string.rep(string.char(65 + i % 26), i % 7)
end

local function make_entries(from, to, term)
  local t = {}
  for i = from, to do
    t[#t + 1] = { term = term or 1, index = i, type = 1, data = data_of(i) }
  end
  return t
end

local function assert_entries(got, from, to, term_of)
  assert.are.equal(to - from + 1, #got)
  for i = from, to do
    local e = got[i - from + 1]
    assert.are.equal(i, e.index)
    assert.are.equal(term_of and term_of(i) or 1, e.term)
    assert.are.equal(data_of(i), e.data)
  end
end

describe("wal", function()
  local dir

  before_each(function() dir = make_tmpdir() end)
  after_each(function() sh("rm -rf " .. dir) end)

  local function open(opts)
    local w, rec, code = qcwal.open(dir, opts)
    if not w then error(tostring(rec) .. " " .. tostring(code), 2) end
    return w, rec
  end

  -- Writes entries from..to (term 1), syncs and closes.
  local function fill(from, to, opts)
    local w = open(opts)
    assert(w:append(make_entries(from, to)))
    assert(w:sync())
    w:close()
  end

  it("opens a fresh directory empty, creating wal/ and snap/", function()
    local w, rec = open()
    assert.are.same({}, rec.entries)
    assert.are.equal(0, rec.snap_index)
    local info = w:info()
    assert.are.equal(1, info.first)
    assert.are.equal(0, info.last)
    w:close()
    assert.are.same({ "snap", "wal" }, ls(dir))
  end)

  it("gives back every entry, byte for byte, across a reopen", function()
    local w = open()
    assert(w:append(make_entries(1, 3)))
    assert(w:append({ { term = 2, index = 4, type = 0, data = "" } }))
    assert(w:append({ { term = 2, index = 5, data = string.rep("\0\1\255", 1000) } }))
    assert(w:sync())
    w:close()
    local w2, rec = open()
    assert.are.equal(5, #rec.entries)
    assert_entries({ table.unpack(rec.entries, 1, 3) }, 1, 3)
    assert.are.same({ term = 2, index = 4, type = 0, data = "" }, rec.entries[4])
    assert.are.equal(string.rep("\0\1\255", 1000), rec.entries[5].data)
    assert.are.equal(5, w2:info().last)
    assert.are.equal("", rec.note)
    w2:close()
  end)

  it("refuses a gap, a non-contiguous batch and index 0", function()
    local w = open()
    assert(w:append(make_entries(1, 10)))
    local ok, _, code = w:append(make_entries(12, 12))
    assert.is_nil(ok)
    assert.are.equal("EINVAL", code)
    _, _, code = w:append({ { term = 1, index = 11 }, { term = 1, index = 13 } })
    assert.are.equal("EINVAL", code)
    _, _, code = w:append({ { term = 1, index = 0 } })
    assert.are.equal("EINVAL", code)
    _, _, code = w:append({ { term = 2, index = 11 }, { term = 1, index = 12 } })
    assert.are.equal("EINVAL", code)
    assert.are.equal(10, w:info().last)
    w:close()
  end)

  it("refuses an entry whose term is below its predecessor's, after a reopen, a snapshot and a conflict", function()
    local opts = { segment_size = 256 }
    local w = open(opts)
    assert(w:append({ { term = 1, index = 1 }, { term = 3, index = 2 }, { term = 3, index = 3 } }))
    local ok, _, code = w:append({ { term = 2, index = 4 } })
    assert.is_nil(ok)
    assert.are.equal("EINVAL", code)
    -- a conflicting append may lower the term only down to the kept entry's
    _, _, code = w:append({ { term = 2, index = 3 } })
    assert.are.equal("EINVAL", code)
    assert(w:append({ { term = 4, index = 3 } }))
    w:close()
    w = open(opts)
    _, _, code = w:append({ { term = 1, index = 4 } })
    assert.are.equal("EINVAL", code)
    assert(w:save_snapshot(3, 4, "s"))
    assert(w:compact(3))
    _, _, code = w:append({ { term = 3, index = 4 } })
    assert.are.equal("EINVAL", code)
    assert(w:append({ { term = 4, index = 4 } }))
    w:close()
    local w2, rec = open(opts)
    assert.are.equal(1, #rec.entries)
    assert.are.equal("", rec.note)
    w2:close()
  end)

  it("rolls over to a new segment named by its first index", function()
    local w = open({ segment_size = 256 })
    for i = 1, 200, 10 do assert(w:append(make_entries(i, i + 9))) end
    assert(w:sync())
    local n = w:info().segments
    assert.is_true(n > 10)
    w:close()
    local files = ls(dir .. "/wal")
    assert.are.equal(n, #files)
    assert.are.equal(seg(1), files[1])
    for i = 1, #files - 1 do -- every finished segment passed the size by less than a record
      local name = files[i]
      local size = #read_file(dir .. "/wal/" .. name)
      assert.is_true(size >= 256 and size < 256 + 80, name .. " " .. size)
    end
    local w2, rec = open({ segment_size = 256 })
    assert_entries(rec.entries, 1, 200)
    assert(w2:append(make_entries(201, 250)))
    assert(w2:sync())
    w2:close()
    local _, rec2 = open({ segment_size = 256 })
    assert_entries(rec2.entries, 1, 250)
  end)

  it("group commit: many appends, one fsync (plus the directory once)", function()
    local w = open()
    local base = w:info().syncs -- the open's own (see "makes what it read back durable")
    for i = 1, 50 do assert(w:append(make_entries(i, i))) end
    assert(w:sync())
    assert.are.equal(base + 2, w:info().syncs) -- the segment and the new directory entry
    for i = 51, 100 do assert(w:append(make_entries(i, i))) end
    assert(w:sync())
    assert.are.equal(base + 3, w:info().syncs)
    assert(w:sync()) -- nothing new: no fsync
    assert.are.equal(base + 3, w:info().syncs)
    assert.is_true(w:info().last_sync_seconds >= 0)
    w:close()
  end)

  it("a conflicting append replaces the log from its first index", function()
    local w = open()
    assert(w:append(make_entries(1, 10)))
    assert(w:append(make_entries(6, 8, 2)))
    assert.are.equal(8, w:info().last)
    assert(w:sync())
    w:close()
    local _, rec = open()
    assert_entries(rec.entries, 1, 8, function(i) return i < 6 and 1 or 2 end)
  end)

  it("a conflict across a segment boundary deletes the later segments", function()
    local opts = { segment_size = 256 }
    fill(1, 100, opts)
    local before = #ls(dir .. "/wal")
    local w = open(opts)
    assert(w:append(make_entries(20, 22, 2)))
    assert(w:sync())
    local after = ls(dir .. "/wal")
    assert.is_true(#after < before / 2)
    assert.are.equal(#after, w:info().segments)
    w:close()
    local w2, rec = open(opts)
    assert_entries(rec.entries, 1, 22, function(i) return i < 20 and 1 or 2 end)
    assert(w2:append(make_entries(23, 40, 2)))
    assert(w2:sync())
    w2:close()
    local _, rec2 = open(opts)
    assert_entries(rec2.entries, 1, 40, function(i) return i < 20 and 1 or 2 end)
  end)

  it("truncate drops entries after an index, durably", function()
    local opts = { segment_size = 300 }
    fill(1, 60, opts)
    local w = open(opts)
    assert(w:truncate(30))
    assert.are.equal(30, w:info().last)
    w:close()
    local _, rec = open(opts)
    assert_entries(rec.entries, 1, 30)
  end)

  describe("a torn tail", function()
    -- Three segments; returns the last segment's path, its bytes and the
    -- offset of its last record.
    local function prepare()
      local opts = { segment_size = 200 }
      fill(1, 20, opts)
      local files = ls(dir .. "/wal")
      local path = dir .. "/wal/" .. files[#files]
      local bytes = read_file(path)
      local last = REC_OVERHEAD + #data_of(20)
      return path, bytes, #bytes - last, opts
    end

    it("is cut at every byte offset of the last record, keeping all whole records", function()
      local path, bytes, start, opts = prepare()
      for cut = start, #bytes - 1 do
        write_file(path, bytes:sub(1, cut))
        local w, rec = open(opts)
        assert_entries(rec.entries, 1, 19)
        assert.are.equal(cut - start, rec.torn_bytes)
        if cut > start then assert.matches("torn tail", rec.note) end
        assert.are.equal(19, w:info().last)
        w:close()
        assert.are.equal(start, #read_file(path)) -- cut off for good
      end
      local w = open(opts)
      assert(w:append(make_entries(20, 21)))
      assert(w:sync())
      w:close()
      local _, rec = open(opts)
      assert_entries(rec.entries, 1, 21)
    end)

    it("that is zero-filled is cut, after whole records or over the last one", function()
      local path, bytes, start, opts = prepare()
      write_file(path, bytes .. string.rep("\0", 4096))
      local w, rec = open(opts)
      assert_entries(rec.entries, 1, 20)
      assert.are.equal(4096, rec.torn_bytes)
      w:close()
      write_file(path, bytes:sub(1, start) .. string.rep("\0", #bytes - start + 100))
      local w2, rec2 = open(opts)
      assert_entries(rec2.entries, 1, 19)
      assert.are.equal(#bytes - start + 100, rec2.torn_bytes)
      w2:close()
    end)
  end)

  describe("corruption", function()
    local function flip(path, offset)
      local s = read_file(path)
      local b = string.char(s:byte(offset + 1) ~ 0x10)
      write_file(path, s:sub(1, offset) .. b .. s:sub(offset + 2))
    end

    local function assert_refused(pattern)
      local w, msg, code = qcwal.open(dir)
      assert.is_nil(w)
      assert.are.equal("ECORRUPT", code)
      assert.matches(pattern, msg)
      return msg
    end

    it("a flipped byte in an earlier record is refused, naming file and offset", function()
      fill(1, 5)
      local path = dir .. "/wal/" .. seg(1)
      local size = #read_file(path)
      local off2 = REC_OVERHEAD + #data_of(1)
      flip(path, off2 + 40)
      local msg = assert_refused("checksum mismatch")
      assert.are.equal("wal/" .. seg(1) .. ": record at offset " .. off2 .. ": checksum mismatch", msg)
      assert.are.equal(size, #read_file(path)) -- nothing was cut
    end)

    it("a flipped byte in the last whole record is no torn write either", function()
      fill(1, 5)
      local path = dir .. "/wal/" .. seg(1)
      local size = #read_file(path)
      flip(path, size - 3)
      assert_refused("wal/" .. seg(1) .. ": record at offset %d+: checksum mismatch")
    end)

    it("a flipped byte in an earlier segment is refused, even at its end", function()
      local opts = { segment_size = 200 }
      fill(1, 30, opts)
      local files = ls(dir .. "/wal")
      local path = dir .. "/wal/" .. files[2]
      local size = #read_file(path)
      flip(path, size - 1)
      local w, msg = qcwal.open(dir, opts)
      assert.is_nil(w)
      assert.matches("^wal/" .. files[2] .. ": record at offset %d+: checksum mismatch$", msg)
    end)

    it("a corrupted length is not taken for a torn tail", function()
      fill(1, 5)
      local path = dir .. "/wal/" .. seg(1)
      flip(path, REC_OVERHEAD + #data_of(1) + 5) -- length of record 2
      assert_refused("record at offset %d+: ")
    end)

    it("a missing segment is a gap, refused", function()
      local opts = { segment_size = 200 }
      fill(1, 30, opts)
      local files = ls(dir .. "/wal")
      os.remove(dir .. "/wal/" .. files[2])
      local w, msg, code = qcwal.open(dir, opts)
      assert.is_nil(w)
      assert.are.equal("ECORRUPT", code)
      assert.matches("^wal/" .. files[3] .. ": starts at index %d+, but entries .* missing", msg)
    end)
  end)

  describe("snapshots", function()
    it("save, compact and reopen give the snapshot and the later entries", function()
      local opts = { segment_size = 256 }
      fill(1, 100, opts)
      local w = open(opts)
      local before = w:info().segments
      assert(w:save_snapshot(60, 1, "state@60\0bytes"))
      assert(w:compact(60))
      local info = w:info()
      assert.is_true(info.segments < before)
      assert.are.equal(61, info.first)
      assert.are.equal(100, info.last)
      w:close()
      -- the segment holding 61 is kept, every one wholly before it is gone
      local files = ls(dir .. "/wal")
      local firsts = {}
      for i, name in ipairs(files) do firsts[i] = tonumber(name:sub(1, 16), 16) end
      assert.is_true(firsts[1] <= 61)
      assert.is_true(firsts[2] > 61)
      assert.are.same({ string.format("%016x-%016x.snap", 60, 1) }, ls(dir .. "/snap"))
      local w2, rec = open(opts)
      assert.are.equal(60, rec.snap_index)
      assert.are.equal(1, rec.snap_term)
      assert.are.equal("state@60\0bytes", rec.snap_data)
      assert_entries(rec.entries, 61, 100)
      assert.are.equal(61, w2:info().first)
      w2:close()
    end)

    -- A snapshot file is written back 1 MiB at a time (SNAP_STEP): a file
    -- of several steps, ending mid-step, must read back byte for byte.
    it("a snapshot of several write-back steps reads back whole", function()
      local piece = {}
      for i = 0, 250 do piece[#piece + 1] = string.char(i) end
      -- 251 bytes a period, so that a step written at a wrong offset shows
      local data = string.rep(table.concat(piece), (3 * 1024 * 1024) // 251 + 3)
      local w = open()
      assert(w:save_snapshot(10, 1, "older"))
      assert(w:save_snapshot(20, 2, data))
      w:close()
      local w2, rec = open()
      assert.are.equal(20, rec.snap_index)
      assert.are.equal(#data, #rec.snap_data)
      assert.is_true(rec.snap_data == data)
      w2:close()
    end)

    -- Written whole and fsynced at the end, a 28 MB snapshot was all dirty
    -- when its fsync came, and that fsync held the disk's journal: the logs'
    -- fdatasyncs on the same disk waited 20 to 120 ms behind it. Its
    -- write-back now starts every step, waiting for the step before, so
    -- that at most two steps are left to its fsync.
    it("a big snapshot's fsync finds at most two steps of 1 MiB left to write", function()
      local w = open()
      assert(w:save_snapshot(20, 2, string.rep("y", 8 * 1024 * 1024 + 1000)))
      local left = w:info().unwritten
      w:close()
      if left < 0 then
        pending("cachestat(2) is not available: Linux 6.5 or later tells dirty pages")
        return
      end
      local pipe = assert(io.popen("getconf PAGESIZE"))
      local page = tonumber(pipe:read("l"))
      pipe:close()
      assert.is_true(left <= 2 * 1024 * 1024 // page, left .. " pages left to the fsync")
    end)

    it("a snapshot of several steps whose fsync fails leaves the older one and no temp file", function()
      local w = open()
      assert(w:save_snapshot(10, 1, "older"))
      w:fail_sync(true)
      local ok, _, code = w:save_snapshot(20, 2, string.rep("x", 3 * 1024 * 1024))
      assert.is_nil(ok)
      assert.are.equal("EIO", code)
      w:close()
      assert.are.same({ string.format("%016x-%016x.snap", 10, 1) }, ls(dir .. "/snap"))
      local w2, rec = open()
      assert.are.equal(10, rec.snap_index)
      assert.are.equal("older", rec.snap_data)
      w2:close()
    end)

    -- Waiting for a step's write-back reports a disk error and, for that
    -- descriptor, consumes it: the fsync after it would succeed.
    it("a snapshot whose write-back fails leaves the older one and no temp file", function()
      local w = open()
      assert(w:save_snapshot(10, 1, "older"))
      w:fail_writeback(true)
      local ok, _, code = w:save_snapshot(20, 2, string.rep("x", 3 * 1024 * 1024))
      w:fail_writeback(false)
      assert.is_nil(ok)
      assert.are.equal("EIO", code)
      w:close()
      assert.are.same({ string.format("%016x-%016x.snap", 10, 1) }, ls(dir .. "/snap"))
    end)

    it("keeps the newest two snapshot files", function()
      fill(1, 30)
      local w = open()
      for i = 10, 30, 10 do assert(w:save_snapshot(i, 1, "s" .. i)) end
      w:close()
      assert.are.same({ string.format("%016x-%016x.snap", 20, 1),
        string.format("%016x-%016x.snap", 30, 1) }, ls(dir .. "/snap"))
      local _, rec = open()
      assert.are.equal("s30", rec.snap_data)
      assert_entries(rec.entries, 31, 30)
    end)

    it("a bad newest snapshot falls back to the older one, and says so", function()
      fill(1, 30)
      local w = open()
      assert(w:save_snapshot(10, 1, "s10"))
      assert(w:save_snapshot(20, 1, "s20"))
      w:close()
      local path = dir .. "/snap/" .. string.format("%016x-%016x.snap", 20, 1)
      local s = read_file(path)
      write_file(path, s:sub(1, -2) .. "X")
      local _, rec = open()
      assert.are.equal(10, rec.snap_index)
      assert.are.equal("s10", rec.snap_data)
      assert_entries(rec.entries, 11, 30)
      assert.matches("checksum mismatch; recovered from snap/", rec.note)
    end)

    it("a bad snapshot that is the only one is refused", function()
      fill(1, 30)
      local w = open()
      assert(w:save_snapshot(10, 1, "s10"))
      w:close()
      local name = string.format("%016x-%016x.snap", 10, 1)
      local s = read_file(dir .. "/snap/" .. name)
      write_file(dir .. "/snap/" .. name, s:sub(1, 33) .. "?" .. s:sub(35))
      local w2, msg, code = qcwal.open(dir)
      assert.is_nil(w2)
      assert.are.equal("ECORRUPT", code)
      assert.are.equal("snap/" .. name .. ": checksum mismatch (no valid snapshot left)", msg)
    end)

    it("a leftover temp file from a crashed save is removed", function()
      fill(1, 3)
      write_file(dir .. "/snap/" .. string.format("%016x-%016x.snap.tmp", 2, 1), "half")
      local w, rec = open()
      assert.are.equal(0, rec.snap_index)
      assert.are.same({}, ls(dir .. "/snap"))
      w:close()
    end)

    -- Unlinking a 64 MiB segment took 40 to 150 ms on a loaded machine:
    -- a compaction only drops the files from the log, and the agent's
    -- other thread deletes them (qc_wal_empty_trash) while writes go on.
    it("compacted segments and pruned snapshots stay on disk until the trash is emptied", function()
      local opts = { segment_size = 256 }
      fill(1, 100, opts)
      local w = open(opts)
      local segs = #ls(dir .. "/wal")
      for i = 20, 60, 20 do assert(w:save_snapshot(i, 1, "s" .. i)) end
      assert(w:compact(60))
      assert.are.equal(segs, #ls(dir .. "/wal"))
      assert.are.equal(3, #ls(dir .. "/snap"))
      assert(w:append(make_entries(101, 101)))
      assert(w:sync())
      assert(w:empty_trash())
      assert.is_true(#ls(dir .. "/wal") < segs)
      assert.are.same({ string.format("%016x-%016x.snap", 40, 1),
        string.format("%016x-%016x.snap", 60, 1) }, ls(dir .. "/snap"))
      w:close()
      local _, rec = open(opts)
      assert.are.equal(60, rec.snap_index)
      assert_entries(rec.entries, 61, 101)
    end)

    -- Pruning runs on the writer thread while the next snapshot's forked
    -- child may be writing its temp file: it failed, its file removed.
    it("a save leaves a temp file alone: a snapshot child may be writing it", function()
      fill(1, 10)
      local tmp = string.format("%016x-%016x.snap.tmp", 9, 1)
      local w = open()
      write_file(dir .. "/snap/" .. tmp, "half")
      assert(w:save_snapshot(5, 1, "s5"))
      assert.are.same({ string.format("%016x-%016x.snap", 5, 1), tmp }, ls(dir .. "/snap"))
      w:close()
    end)

    it("a snapshot past the log's end moves the log on to its next index", function()
      fill(1, 10)
      local w = open()
      assert(w:save_snapshot(50, 3, "installed"))
      local info = w:info()
      assert.are.equal(51, info.first)
      assert.are.equal(50, info.last)
      local ok, _, code = w:append(make_entries(11, 11))
      assert.is_nil(ok)
      assert.are.equal("EINVAL", code)
      assert(w:append(make_entries(51, 55, 3)))
      assert(w:sync())
      w:close()
      local w2, rec = open()
      assert.are.equal(50, rec.snap_index)
      assert_entries(rec.entries, 51, 55, function() return 3 end)
      assert(w2:compact(50))
      assert(w2:empty_trash())
      assert.are.same({ seg(51) }, ls(dir .. "/wal"))
      w2:close()
    end)

    -- A follower installs a leader's snapshot that its log disagrees with at
    -- the snapshot's index: its entries from that index on are of another
    -- history. Left after the snapshot, a crash before the next append
    -- made the node refuse to start (a lower term) or take that history
    -- back (a higher one).
    it("a snapshot the log disagrees with cuts the log from its index", function()
      fill(1, 30) -- term 1
      local w = open()
      assert(w:save_snapshot(20, 3, "the leader's state at 20"))
      w:close()
      local w2, rec = open()
      assert.are.equal(20, rec.snap_index)
      assert.are.same({}, rec.entries)
      assert.are.equal(20, w2:info().last)
      assert(w2:append(make_entries(21, 22, 3)))
      assert(w2:sync())
      w2:close()
      local _, rec3 = open()
      assert_entries(rec3.entries, 21, 22, function() return 3 end)
    end)

    it("a later-term history after a disagreeing snapshot is cut too", function()
      local w = open()
      assert(w:append(make_entries(1, 10, 1)))
      assert(w:append(make_entries(11, 30, 5)))
      assert(w:sync())
      assert(w:save_snapshot(20, 3, "the leader's state at 20"))
      w:close()
      local _, rec = open()
      assert.are.equal(20, rec.snap_index)
      assert.are.same({}, rec.entries)
    end)

    it("entries after a snapshot the log agrees with are kept", function()
      fill(1, 30)
      local w = open()
      assert(w:save_snapshot(20, 1, "state at 20"))
      w:close()
      local _, rec = open()
      assert.are.equal(20, rec.snap_index)
      assert_entries(rec.entries, 21, 30)
      assert.are.equal("", rec.note)
    end)

    it("compaction beyond the snapshot is refused", function()
      fill(1, 10)
      local w = open()
      assert(w:save_snapshot(5, 1, "s"))
      local ok, _, code = w:compact(6)
      assert.is_nil(ok)
      assert.are.equal("EINVAL", code)
      w:close()
    end)
  end)

  it("after a failed fsync every write is refused until reopened", function()
    local w = open()
    assert(w:append(make_entries(1, 5)))
    assert(w:sync())
    assert(w:append(make_entries(6, 6)))
    w:fail_sync(true)
    local ok, _, code, err = w:sync()
    assert.is_nil(ok)
    assert.are.equal("EIO", code)
    assert.are.equal("Input/output error", err)
    w:fail_sync(false) -- the disk "recovers": the WAL still must not pretend
    _, _, code = w:append(make_entries(7, 7))
    assert.are.equal("EIO", code)
    _, _, code = w:sync()
    assert.are.equal("EIO", code)
    _, _, code = w:save_snapshot(5, 1, "s")
    assert.are.equal("EIO", code)
    _, _, code = w:compact(1)
    assert.are.equal("EIO", code)
    w:close()
    local w2, rec = open()
    assert.is_true(#rec.entries >= 5)
    assert_entries({ table.unpack(rec.entries, 1, 5) }, 1, 5)
    assert(w2:append(make_entries(#rec.entries + 1, #rec.entries + 1)))
    assert(w2:sync())
    w2:close()
  end)

  -- A process killed (kill -9) between a write and its fsync leaves the
  -- records in the page cache: the next open reads them back and reports
  -- them durable, so it must make them so before a power loss can take
  -- them. Closing without a sync leaves the same state.
  describe("an open after a crash before the fsync", function()
    local function unsynced(segment_size)
      local w = open({ segment_size = segment_size })
      assert(w:append(make_entries(1, 40)))
      w:close()
      local path = dir .. "/wal/" .. seg(1)
      local before = qcwal.unwritten(path)
      if before < 0 then return nil end
      -- Only in the page cache (unless the kernel's write-back came first).
      assert.is_true(before > 0, "the appended records were written back before the reopen")
      return path
    end

    it("makes what it read back durable", function()
      local path = unsynced()
      if not path then
        pending("cachestat(2) is not available: Linux 6.5 or later tells dirty pages")
        return
      end
      local w, rec = open()
      assert_entries(rec.entries, 1, 40)
      assert.are.equal(0, qcwal.unwritten(path))
      assert.is_true(w:info().syncs >= 2) -- the segment and wal/ at least
      w:close()
    end)

    it("makes the last segment durable, earlier ones being synced when rolled", function()
      local w = open({ segment_size = 300 })
      assert(w:append(make_entries(1, 40)))
      w:close()
      local names = ls(dir .. "/wal")
      assert.is_true(#names > 2)
      for _, name in ipairs(names) do
        local n = qcwal.unwritten(dir .. "/wal/" .. name)
        if n < 0 then
          pending("cachestat(2) is not available: Linux 6.5 or later tells dirty pages")
          return
        end
        if name ~= names[#names] then assert.are.equal(0, n, name) end
      end
      local w2, rec = open({ segment_size = 300 })
      assert_entries(rec.entries, 1, 40)
      for _, name in ipairs(names) do
        assert.are.equal(0, qcwal.unwritten(dir .. "/wal/" .. name), name)
      end
      w2:close()
    end)

    it("fails with EIO when that fsync fails, giving no entries", function()
      unsynced()
      local w, msg, code, err = qcwal.open(dir, { fail_sync = true })
      assert.is_nil(w)
      assert.are.equal("EIO", code)
      assert.matches("wal/" .. seg(1) .. ": fsync", msg)
      assert.are.equal("Input/output error", err)
    end)

    it("fails with EIO when the directory's fsync fails, even with no segment", function()
      local w, msg, code = qcwal.open(dir, { fail_sync = true })
      assert.is_nil(w)
      assert.are.equal("EIO", code)
      assert.matches("/wal: fsync", msg)
    end)

    it("makes a cut torn tail durable", function()
      fill(1, 5)
      local path = dir .. "/wal/" .. seg(1)
      local size = #read_file(path)
      local f = assert(io.open(path, "ab"))
      f:write(string.rep("\0", 700)) -- a tail the disk zero-filled
      f:close()
      local w, rec = open()
      assert.are.equal(700, rec.torn_bytes)
      assert.are.equal(size, #read_file(path))
      local n = qcwal.unwritten(path)
      if n >= 0 then assert.are.equal(0, n) end
      w:close()
    end)
  end)

  it("a failed fsync while rolling over refuses the append", function()
    local w = open({ segment_size = 100 })
    assert(w:append(make_entries(1, 3)))
    w:fail_sync(true)
    local ok, _, code = w:append(make_entries(4, 10))
    assert.is_nil(ok)
    assert.are.equal("EIO", code)
    w:close()
  end)
end)
