-- The replicated key-value store on real agents (loopback, fsync on): the
-- /v1/kv API, on_kv_change on every node, and durability: no acknowledged
-- write is lost when the leader or the whole cluster is killed with -9, a
-- torn WAL tail is cut and the node catches up, a corrupted record is refused.
local A = require("agents")
local cjson = require("cjson.safe")

-- Records every applied change as "kv HEXKEY HEXVALUE|nil REVISION".
local kv_hooks = [[
local path = os.getenv("QC_EVENTS")
local function hex(s)
  return (s:gsub(".", function(ch) return string.format("%02x", ch:byte()) end))
end
return {
  on_kv_change = function(ev)
    local f = io.open(path, "a")
    f:write("kv ", hex(ev.key), " ", ev.value and hex(ev.value) or "nil", " ",
      tostring(ev.revision), "\n")
    f:close()
  end,
}
]]

local function hex(s)
  return (s:gsub(".", function(ch) return string.format("%02x", ch:byte()) end))
end

local function has(lines, wanted)
  for _, l in ipairs(lines) do
    if l == wanted then return true end
  end
  return false
end

-- A write to the leader, retried while the cluster answers 503 (no leader
-- yet, e.g. right after an election); returns status and body.
local function put_leader(c, key, value, query)
  local status, body
  A.wait_for(function()
    local leader = A.agreed_leader(c, 10)
    if not leader then return false end
    status, body = A.kv_put(c.nodes[A.index_of(c, leader)].api, key, value, query)
    return status ~= 503
  end, 10)
  return status, body
end

-- A linearizable read on node i, retried while it answers 503.
local function get_retry(api, key)
  local status, value, rev
  A.wait_for(function()
    status, value, rev = A.kv_get(api, key)
    return status ~= 503 and type(status) == "number"
  end, 10)
  return status, value, rev
end

-- The stale (local) read of node i once it returns value (or nil after 10 s).
local function stale_sees(api, key, value, timeout)
  return A.wait_for(function()
    local status, got = A.kv_get(api, key, "?stale")
    return status == 200 and got == value
  end, timeout or 10)
end

-- The leader's index, and a follower's.
local function roles(c)
  local li = A.index_of(c, A.must_leader(c))
  local fi
  for i = 1, c.n do
    if i ~= li and c.nodes[i].pid then fi = i end
  end
  return li, fi
end

-- The records of a WAL segment: { {off = byte offset, size = bytes} ... }
-- (header: magic, payload length, crc, all 4 bytes, big-endian).
local function records(bytes)
  local t, off = {}, 0
  while off + 12 <= #bytes do
    local plen = string.unpack(">I4", bytes, off + 5)
    if off + 12 + plen > #bytes then break end
    t[#t + 1] = { off = off, size = 12 + plen }
    off = off + 12 + plen
  end
  return t
end

local function log_since(node, from)
  return (A.read(node.log) or ""):sub(from + 1)
end

describe("the key-value store on a three-node cluster", function()
  local c

  setup(function()
    c = A.cluster(3, { hooks = kv_hooks })
    A.start_all(c)
    A.must_leader(c)
  end)

  teardown(function() A.stop(c) end)

  it("puts and gets on the leader, with the revision", function()
    local li = roles(c)
    local api = c.nodes[li].api
    local status, body = put_leader(c, "greeting", "hello world")
    assert.are.equal(200, status, cjson.encode(body))
    assert.is_number(body.revision)
    assert.is_true(body.revision > 0)
    local gs, value, rev = A.kv_get(api, "greeting")
    assert.are.equal(200, gs)
    assert.are.equal("hello world", value)
    assert.are.equal(body.revision, rev)
    local status2, body2 = put_leader(c, "greeting", "hello again")
    assert.are.equal(200, status2)
    assert.is_true(body2.revision > body.revision, "revisions grow")
    local _, value2, rev2 = A.kv_get(api, "greeting")
    assert.are.equal("hello again", value2)
    assert.are.equal(body2.revision, rev2)
    assert.are.equal(404, (A.kv_get(api, "no/such/key")))
  end)

  it("compare-and-set: create-only once, then 409 with the current revision", function()
    local li = roles(c)
    local api = c.nodes[li].api
    local status, body = A.kv_put(api, "lock/owner", "me", "?cas=0")
    assert.are.equal(200, status, cjson.encode(body))
    local rev = body.revision
    local s2, b2 = A.kv_put(api, "lock/owner", "you", "?cas=0")
    assert.are.equal(409, s2)
    assert.are.equal(rev, b2.revision)
    assert.is_string(b2.error)
    local s3 = A.kv_put(api, "lock/owner", "you", "?cas=" .. (rev + 1000))
    assert.are.equal(409, s3)
    local s4, b4 = A.kv_put(api, "lock/owner", "you", "?cas=" .. rev)
    assert.are.equal(200, s4)
    assert.is_true(b4.revision > rev)
    local _, value = A.kv_get(api, "lock/owner")
    assert.are.equal("you", value)
  end)

  it("deletes: 200, then 404", function()
    local li = roles(c)
    local api = c.nodes[li].api
    assert.are.equal(200, (A.kv_put(api, "tmp/gone", "soon")))
    local status = A.kv_delete(api, "tmp/gone")
    assert.are.equal(200, status)
    assert.are.equal(404, (A.kv_get(api, "tmp/gone")))
    assert.are.equal(404, (A.kv_delete(api, "tmp/gone")))
  end)

  it("lists by prefix, in key order", function()
    local li = roles(c)
    local api = c.nodes[li].api
    local revs = {}
    for _, k in ipairs { "svc/b", "svc/a", "svc/c", "svcx", "other/a" } do
      local status, body = A.kv_put(api, k, "v:" .. k)
      assert.are.equal(200, status)
      revs[k] = body.revision
    end
    local list, status = A.json(api, "/v1/kv/?prefix=svc/")
    assert.are.equal(200, status)
    assert.are.equal(3, #list)
    for n, k in ipairs { "svc/a", "svc/b", "svc/c" } do
      assert.are.equal(k, list[n].key)
      assert.are.equal("v:" .. k, list[n].value)
      assert.are.equal(revs[k], list[n].revision)
      assert.is_nil(list[n].encoding)
    end
    local all = A.json(api, "/v1/kv/?prefix=svc")
    assert.are.equal(4, #all)
  end)

  it("round-trips a binary value, and lists it as base64", function()
    local li = roles(c)
    local api = c.nodes[li].api
    local bytes = {}
    for b = 0, 255 do bytes[#bytes + 1] = string.char(b) end
    local value = table.concat(bytes) .. "\0\r\n\255"
    local status = A.kv_put(api, "bin/blob", value)
    assert.are.equal(200, status)
    local gs, got = A.kv_get(api, "bin/blob")
    assert.are.equal(200, gs)
    assert.are.equal(#value, #got)
    assert.are.equal(value, got)
    local list = A.json(api, "/v1/kv/?prefix=bin/")
    assert.are.equal(1, #list)
    assert.are.equal("base64", list[1].encoding)
    local mime = require("mime")
    assert.are.equal(value, (mime.unb64(list[1].value)))
  end)

  it("a stale read on a follower sees a value once it is committed", function()
    local li, fi = roles(c)
    local status = A.kv_put(c.nodes[li].api, "stale/k", "v1")
    assert.are.equal(200, status)
    assert.is_truthy(stale_sees(c.nodes[fi].api, "stale/k", "v1", 5))
    assert.are.equal(200, (A.kv_put(c.nodes[li].api, "stale/k", "v2")))
    assert.is_truthy(stale_sees(c.nodes[fi].api, "stale/k", "v2", 5))
  end)

  it("runs on_kv_change on every node with key, value and revision", function()
    local li = roles(c)
    local status, body = A.kv_put(c.nodes[li].api, "hook/k", "hook value")
    assert.are.equal(200, status)
    local want = "kv " .. hex("hook/k") .. " " .. hex("hook value") .. " " .. body.revision
    local ds, db = A.kv_delete(c.nodes[li].api, "hook/k")
    assert.are.equal(200, ds, cjson.encode(db))
    for i = 1, 3 do
      assert.is_truthy(A.wait_for(function() return has(A.events(c, i), want) end, 5),
        "node" .. i .. " did not record: " .. want .. "\n" .. table.concat(A.events(c, i), "\n"))
      assert.is_truthy(A.wait_for(function()
        for _, l in ipairs(A.events(c, i)) do
          local r = l:match("^kv " .. hex("hook/k") .. " nil (%d+)$")
          if r and tonumber(r) > body.revision then return true end
        end
      end, 5), "node" .. i .. " did not record the delete")
    end
  end)
end)

describe("the key-value store under kill -9", function()
  local c
  local N = 50

  setup(function()
    c = A.cluster(3)
    A.start_all(c)
    A.must_leader(c)
  end)

  teardown(function() A.stop(c) end)

  it("loses no acknowledged write when the leader is killed", function()
    local li = roles(c)
    local api = c.nodes[li].api
    for k = 1, N do
      local status, body = A.kv_put(api, "ack/" .. k, "value-" .. k)
      assert.are.equal(200, status, "put ack/" .. k .. ": " .. cjson.encode(body))
    end
    assert.is_true(A.signal(c, li, "KILL"))
    local new = A.index_of(c, A.must_leader(c))
    assert.are_not.equal(li, new)
    for k = 1, N do
      local status, value = get_retry(c.nodes[new].api, "ack/" .. k)
      assert.are.equal(200, status, "ack/" .. k .. " lost after the leader was killed")
      assert.are.equal("value-" .. k, value)
    end
    A.start(c, li)
    assert.is_truthy(stale_sees(c.nodes[li].api, "ack/" .. N, "value-" .. N, 10),
      "the restarted node catches up")
  end)

  it("loses no acknowledged write when the whole cluster is killed and restarted", function()
    A.must_leader(c)
    for k = 1, N do
      local status = put_leader(c, "all/" .. k, "whole-" .. k)
      assert.are.equal(200, status, "put all/" .. k)
    end
    for i = 1, 3 do assert.is_true(A.signal(c, i, "KILL")) end
    A.start_all(c)
    local li = A.index_of(c, A.must_leader(c, 15))
    for k = 1, N do
      local status, value = get_retry(c.nodes[li].api, "all/" .. k)
      assert.are.equal(200, status, "all/" .. k .. " lost after the whole cluster was killed")
      assert.are.equal("whole-" .. k, value)
      local s2, v2 = get_retry(c.nodes[li].api, "ack/" .. k)
      assert.are.equal(200, s2, "ack/" .. k .. " lost after the whole cluster was killed")
      assert.are.equal("value-" .. k, v2)
    end
  end)
end)

describe("WAL recovery on a follower", function()
  local c

  setup(function()
    c = A.cluster(3)
    A.start_all(c)
    A.must_leader(c)
  end)

  teardown(function() A.stop(c) end)

  -- Kills follower fi after some writes, lets the cluster move on, appends
  -- tail(bytes of the last record) to its last segment, restarts it and
  -- expects it to catch up.
  local function torn_case(tag, tail)
    local li, fi = roles(c)
    local api = c.nodes[li].api
    for k = 1, 20 do
      assert.are.equal(200, (A.kv_put(api, tag .. "/" .. k, string.rep("x", k))))
    end
    assert.is_truthy(stale_sees(c.nodes[fi].api, tag .. "/20", string.rep("x", 20), 5))
    assert.is_true(A.signal(c, fi, "KILL"))
    assert.are.equal(200, (put_leader(c, tag .. "/latest", "after the crash")))
    local segs = A.wal_segments(c, fi)
    assert.is_true(#segs > 0, "no WAL segment under " .. A.data_dir(c, fi))
    local path = segs[#segs]
    local bytes = assert(A.read(path))
    local recs = records(bytes)
    assert.is_true(#recs > 0)
    local last = recs[#recs]
    assert.are.equal(#bytes, last.off + last.size, "the segment ends on a whole record")
    local f = assert(io.open(path, "ab"))
    f:write(tail(bytes:sub(last.off + 1)))
    f:close()
    local from = #(A.read(c.nodes[fi].log) or "")
    A.start(c, fi)
    local ok = stale_sees(c.nodes[fi].api, tag .. "/latest", "after the crash", 10)
    local log = log_since(c.nodes[fi], from)
    if not A.alive(c.nodes[fi].pid) then c.nodes[fi].pid = nil end
    assert.is_truthy(ok, "the follower did not catch up; its log:\n" .. log:sub(-2000))
    assert.is_true(A.alive(c.nodes[fi].pid))
    assert.is_truthy(log:find("torn", 1, true), "the cut is reported in the log:\n" .. log:sub(-2000))
  end

  it("cuts a torn tail (half of a record) and catches up", function()
    torn_case("torn1", function(rec) return rec:sub(1, #rec // 2) end)
  end)

  it("cuts a torn tail (37 zero bytes, then a partial record) and catches up", function()
    torn_case("torn2", function(rec) return string.rep("\0", 37) .. rec:sub(1, #rec // 2) end)
  end)

end)

describe("a corrupted WAL record on a follower", function()
  local c

  setup(function()
    c = A.cluster(3)
    A.start_all(c)
    A.must_leader(c)
  end)

  teardown(function() A.stop(c) end)

  it("is refused with a clear error naming the file", function()
    local li, fi = roles(c)
    local api = c.nodes[li].api
    for k = 1, 30 do
      assert.are.equal(200, (A.kv_put(api, "corrupt/" .. k, string.rep("y", 40) .. k)))
    end
    assert.is_truthy(stale_sees(c.nodes[fi].api, "corrupt/30", string.rep("y", 40) .. 30, 5))
    assert.is_true(A.signal(c, fi, "KILL"))
    local segs = A.wal_segments(c, fi)
    local path = segs[1]
    local bytes = assert(A.read(path))
    local recs = records(bytes)
    assert.is_true(#recs >= 10, "too few records in " .. path)
    -- a byte in the middle of the payload of the middle record
    local r = recs[#recs // 2]
    local at = r.off + 12 + (r.size - 12) // 2
    local flipped = string.char(bytes:byte(at + 1) ~ 0xFF)
    A.write(path, bytes:sub(1, at) .. flipped .. bytes:sub(at + 2))
    local from = #(A.read(c.nodes[fi].log) or "")
    local code = A.run_once(c, fi, 15)
    local log = log_since(c.nodes[fi], from)
    assert.are_not.equal(137, code, "the agent started on a corrupted WAL (killed after 15 s)")
    assert.are_not.equal(0, code, "the agent must exit non-zero; its log:\n" .. log)
    local name = path:match("[^/]+$")
    assert.is_truthy(log:find(name, 1, true), "the log names the file:\n" .. log)
    local lower = log:lower()
    assert.is_truthy(lower:find("checksum", 1, true) or lower:find("corrupt", 1, true),
      "the log says checksum or corrupt:\n" .. log)
    -- the cluster carries on with two nodes
    assert.are.equal(200, (put_leader(c, "corrupt/after", "still writable")))
  end)
end)
