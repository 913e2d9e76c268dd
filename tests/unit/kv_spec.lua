-- The key-value state machine (src/core/kv.c) through the test-only module qckv:
-- commands, cas, limits, malformed input, snapshots and determinism.
package.cpath = "./build/?.so;" .. package.cpath
local qckv = require("qckv")

-- Bytewise order, independent of the locale Lua's `<` would use.
local function bytes_lt(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local function rng(seed)
  local x = seed
  return function(n)
    x = (x * 6364136223846793005 + 1442695040888963407)
    return ((x >> 33) % n) + 1
  end
end

local function random_bytes(r, n)
  local t = {}
  for i = 1, n do t[i] = string.char(r(256) - 1) end
  return table.concat(t)
end

-- CRC-32C as src/core/wire.c computes it, to forge snapshots with a valid sum.
local crc_table = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do c = (c & 1) ~= 0 and ((c >> 1) ~ 0x82F63B78) or (c >> 1) end
  crc_table[i] = c
end
local function crc32c(s)
  local c = 0xffffffff
  for i = 1, #s do c = crc_table[(c ~ s:byte(i)) & 0xff] ~ (c >> 8) end
  return c ~ 0xffffffff
end

local function forge_snapshot(applied, revision, entries, count)
  local parts = { string.pack(">c4I4I8I8I8", "QCKV", 1, applied, revision, count or #entries) }
  for _, e in ipairs(entries) do
    parts[#parts + 1] = string.pack(">I4I4I8", #e.key, #e.value, e.revision) .. e.key .. e.value
  end
  local body = table.concat(parts)
  return body .. string.pack(">I4", crc32c(body))
end

local function new_store(opts)
  local s = assert(qckv.new(opts))
  local next_index = 0
  -- s:apply with an automatically increasing index
  return s, function(cmd)
    next_index = next_index + 1
    return assert(s:apply(next_index, cmd))
  end
end

local put, del = qckv.encode_put, qckv.encode_delete

describe("kv state machine", function()
  describe("put, get, delete", function()
    it("stores binary keys and values, NUL bytes and empty values included", function()
      local s, apply = new_store()
      local keys = { "\0", "a\0b", "\255\254", "plain", "k" }
      for i, k in ipairs(keys) do
        local v = i == 5 and "" or ("v\0" .. k .. "\255")
        local r = apply(put(k, v))
        assert.equal("ok", r.status)
        assert.equal("put", r.op)
        assert.equal(k, r.key)
        assert.equal(v, r.value)
        assert.equal(i, r.revision)
        local got, rev = s:get(k)
        assert.equal(v, got)
        assert.equal(i, rev)
      end
      assert.is_nil(s:get("a"))
      assert.is_nil(s:get("a\0"))
      local st = s:stats()
      assert.equal(5, st.keys)
      local total = 0
      for _, e in ipairs(s:list()) do total = total + #e.key + #e.value end
      assert.equal(total, st.bytes)
    end)

    it("overwrites a value and keeps the byte count exact", function()
      local s, apply = new_store()
      apply(put("k", string.rep("x", 100)))
      apply(put("k", "short"))
      assert.equal("short", (s:get("k")))
      assert.same({ 1, 6 }, { s:stats().keys, s:stats().bytes })
    end)

    it("deletes a key and reports it, the value absent", function()
      local s, apply = new_store()
      apply(put("gone\0", "v"))
      local r = apply(del("gone\0", -1, 77, 3))
      assert.equal("ok", r.status)
      assert.equal("delete", r.op)
      assert.is_true(r.deleted)
      assert.equal("gone\0", r.key)
      assert.is_nil(r.value)
      assert.equal(2, r.revision)
      assert.same({ 77, 3 }, { r.request_id, r.origin })
      assert.is_nil(s:get("gone\0"))
      assert.same({ 0, 0 }, { s:stats().keys, s:stats().bytes })
    end)

    it("answers notfound to a delete of a missing key, changing nothing", function()
      local s, apply = new_store()
      apply(put("a", "1"))
      local r = apply(del("b"))
      assert.equal("notfound", r.status)
      assert.equal("b", r.key)
      assert.equal(0, r.revision)
      local st = s:stats()
      assert.same({ 2, 1, 1 }, { st.applied_index, st.revision, st.notfound })
    end)

    it("echoes request id and origin, 64-bit values included", function()
      local _, apply = new_store()
      local r = apply(put("k", "v", -1, math.maxinteger, -1))
      assert.equal(math.maxinteger, r.request_id)
      assert.equal(-1, r.origin) -- 0xffffffffffffffff as a Lua integer
      local d = qckv.decode(put("k", "v", 5, 9, 10))
      assert.same({ op = "put", key = "k", value = "v", cas = 5, request_id = 9, origin = 10 }, d)
    end)

    it("matches a reference model over a random stream of operations", function()
      local r = rng(7)
      local s, apply = new_store()
      local model = {}
      for i = 1, 3000 do
        local k = "k" .. random_bytes(r, r(3) - 1)
        if r(3) == 1 then
          local res = apply(del(k))
          assert.equal(model[k] and "ok" or "notfound", res.status)
          model[k] = nil
        else
          local v = random_bytes(r, r(20) - 1)
          apply(put(k, v))
          model[k] = { v, i }
        end
      end
      local want = {}
      for k, e in pairs(model) do want[#want + 1] = { key = k, value = e[1], revision = e[2] } end
      table.sort(want, function(a, b) return bytes_lt(a.key, b.key) end)
      assert.same(want, s:list())
      assert.equal(#want, s:stats().keys)
      assert(s:verify())
      for k, e in pairs(model) do
        local v, rev = s:get(k)
        assert.same({ e[1], e[2] }, { v, rev })
      end
    end)
  end)

  describe("listing", function()
    local s, apply
    -- in bytewise order: "\255" sorts after every letter
    local keys = { "", "\0", "a", "a\0", "ab", "abc", "ab\255\255", "a\255", "b", "\255", "\255\255" }
    before_each(function()
      s, apply = new_store()
      for i = #keys, 2, -1 do apply(put(keys[i], "v" .. i)) end -- reverse insertion order
    end)

    local function listed(prefix, limit)
      local out = {}
      for _, e in ipairs(s:list(prefix, limit)) do out[#out + 1] = e.key end
      return out
    end

    it("lists every key in bytewise order", function()
      local want = { table.unpack(keys, 2) }
      assert.same(want, listed(""))
      assert.same(want, listed(nil))
    end)

    it("lists exactly the keys under a prefix", function()
      assert.same({ "a", "a\0", "ab", "abc", "ab\255\255", "a\255" }, listed("a"))
      assert.same({ "ab", "abc", "ab\255\255" }, listed("ab"))
      assert.same({ "ab\255\255" }, listed("ab\255"))
      assert.same({ "\255", "\255\255" }, listed("\255"))
      assert.same({ "\0" }, listed("\0"))
      assert.same({}, listed("abcd"))
      assert.same({}, listed("c"))
    end)

    it("stops when the callback says so", function()
      assert.same({ "a", "a\0" }, listed("a", 2))
      assert.same({}, listed("a", 0))
    end)

    it("carries values and revisions", function()
      local l = s:list("abc")
      assert.same({ { key = "abc", value = "v6", revision = 6 } }, l)
    end)
  end)

  describe("revisions", function()
    it("gives each change the index of its entry; failures and no-ops only advance the applied index",
      function()
        local s = assert(qckv.new())
        assert.equal(10, s:apply(10, put("a", "1")).revision)
        assert.is_true(s:noop(11))
        assert.equal("conflict", s:apply(12, put("a", "2", 0)).status)
        assert.equal("invalid", s:apply(13, "junk").status)
        assert.equal(20, s:apply(20, put("b", "1")).revision) -- gaps are allowed
        local st = s:stats()
        assert.same({ 20, 20 }, { st.applied_index, st.revision })
        assert.equal(10, select(2, s:get("a")))
        assert.equal(20, select(2, s:get("b")))
        assert.is_true(s:noop(21))
        assert.same({ 21, 20 }, { s:stats().applied_index, s:stats().revision })
      end)

    it("refuses an index at or below the applied index, changing nothing", function()
      local s = assert(qckv.new())
      s:apply(5, put("a", "1"))
      local res, err = s:apply(5, put("a", "2"))
      assert.is_nil(res)
      assert.is_string(err)
      assert.is_nil(s:apply(4, put("a", "2")))
      assert.is_nil(s:noop(5))
      assert.equal("1", (s:get("a")))
      assert.equal(5, s:stats().applied_index)
    end)
  end)

  describe("compare-and-set", function()
    local s, apply
    before_each(function()
      s, apply = new_store()
      apply(put("k", "v1")) -- revision 1
    end)

    it("put with cas 0 creates an absent key", function()
      local r = apply(put("new", "x", 0))
      assert.equal("ok", r.status)
      assert.equal("x", (s:get("new")))
    end)

    it("put with cas 0 on an existing key conflicts and reports its revision", function()
      local r = apply(put("k", "v2", 0, 5, 6))
      assert.same({ "conflict", 1, 5, 6 }, { r.status, r.revision, r.request_id, r.origin })
      assert.equal("v1", (s:get("k")))
    end)

    it("put with the current revision succeeds", function()
      local r = apply(put("k", "v2", 1))
      assert.same({ "ok", 2 }, { r.status, r.revision })
      assert.same({ "v2", 2 }, { s:get("k") })
      assert.equal("ok", apply(put("k", "v3", 2)).status)
    end)

    it("put with a stale revision conflicts", function()
      apply(put("k", "v2"))
      local r = apply(put("k", "v3", 1))
      assert.same({ "conflict", 2 }, { r.status, r.revision })
      assert.equal("v2", (s:get("k")))
    end)

    it("put with a revision on an absent key conflicts with revision 0", function()
      local r = apply(put("absent", "v", 1))
      assert.same({ "conflict", 0 }, { r.status, r.revision })
      assert.is_nil(s:get("absent"))
    end)

    it("delete with the current revision deletes", function()
      local r = apply(del("k", 1))
      assert.same({ "ok", true }, { r.status, r.deleted })
      assert.is_nil(s:get("k"))
    end)

    it("delete with a stale revision conflicts", function()
      local r = apply(del("k", 7))
      assert.same({ "conflict", 1 }, { r.status, r.revision })
      assert.equal("v1", (s:get("k")))
    end)

    it("delete with cas 0 of an existing key conflicts", function()
      assert.equal("conflict", apply(del("k", 0)).status)
      assert.equal("v1", (s:get("k")))
    end)

    it("delete of a missing key is notfound, whatever the cas", function()
      assert.equal("notfound", apply(del("absent", 0)).status)
      assert.equal("notfound", apply(del("absent", 3)).status)
    end)

    it("counts conflicts and never moves the store revision on one", function()
      apply(put("k", "x", 9))
      apply(del("k", 9))
      local st = s:stats()
      assert.same({ 2, 1, 3 }, { st.conflicts, st.revision, st.applied_index })
    end)

    it("cannot encode a cas below -1", function()
      assert.is_nil(put("k", "v", -2))
      assert.is_nil(del("k", -5))
    end)
  end)

  describe("size limits", function()
    it("takes keys and values up to the configured limits, refuses larger ones", function()
      local s, apply = new_store({ max_key = 8, max_value = 16 })
      assert.equal("ok", apply(put(string.rep("k", 8), string.rep("v", 16))).status)
      local r = apply(put(string.rep("k", 9), "v"))
      assert.same({ "toobig", "put" }, { r.status, r.op })
      assert.equal("toobig", apply(put("k", string.rep("v", 17))).status)
      assert.equal("toobig", apply(del(string.rep("k", 9))).status)
      local st = s:stats()
      assert.same({ 1, 4, 1 }, { st.keys, st.applied_index, st.revision })
      assert.is_true(s:check(8, 16))
      assert.is_nil(s:check(9, 0))
      assert.is_nil(s:check(1, 17))
      assert.is_nil(s:check(0, 0))
    end)

    it("defaults to 1 KiB keys and 1 MiB values", function()
      local s, apply = new_store()
      local mib = string.rep("\0", 1024 * 1024)
      assert.equal("ok", apply(put(string.rep("k", 1024), mib)).status)
      assert.equal("toobig", apply(put(string.rep("k", 1025), "")).status)
      assert.equal("toobig", apply(put("k", mib .. "x")).status)
      assert.equal(mib, (s:get(string.rep("k", 1024))))
    end)

    it("refuses to encode an empty key", function()
      assert.is_nil(put("", "v"))
      assert.is_nil(del(""))
    end)
  end)

  describe("malformed commands", function()
    local function check_invalid(s, index, cmd)
      local before = s:list()
      local r = assert(s:apply(index, cmd))
      assert.equal("invalid", r.status)
      assert.equal("none", r.op)
      assert.equal(index, s:stats().applied_index)
      assert.same(before, s:list())
    end

    it("reports every truncation and extension of a valid command invalid and consumes it",
      function()
        local s = assert(qckv.new())
        s:apply(1, put("seed", "x"))
        local index = 1
        for _, cmd in ipairs({ put("key\0", "value\255", 3, 1, 2), put("k", ""), del("kk", 0) }) do
          assert.is_table(qckv.decode(cmd))
          for n = 0, #cmd - 1 do
            index = index + 1
            check_invalid(s, index, cmd:sub(1, n))
          end
          index = index + 1
          check_invalid(s, index, cmd .. "\0")
        end
        assert.equal(1, s:stats().revision)
        assert.equal(index - 1, s:stats().invalid)
      end)

    it("reports a bad version, op, cas or key length invalid", function()
      local s = assert(qckv.new())
      local cmd = put("key", "value")
      local function with(pos, bytes) return cmd:sub(1, pos - 1) .. bytes .. cmd:sub(pos + #bytes) end
      check_invalid(s, 1, with(1, "\2"))
      check_invalid(s, 2, with(2, "\0"))
      check_invalid(s, 3, with(2, "\3"))
      check_invalid(s, 4, with(19, string.pack(">i8", -2)))
      check_invalid(s, 5, with(27, string.pack(">I4", 0)))
      check_invalid(s, 6, with(27, string.pack(">I4", 0xffffffff)))
      check_invalid(s, 7, with(34, "\255")) -- value length now far too long
      check_invalid(s, 8, nil)
      check_invalid(s, 9, "")
      -- a put's trailing value section turned into a delete is invalid too
      check_invalid(s, 10, with(2, "\2"))
    end)

    it("never crashes on random garbage or bit flips; the decoder and apply agree", function()
      local r = rng(42)
      local s = assert(qckv.new())
      local index = 0
      local valid = put("some/key", "some value", -1, 1, 2)
      for i = 1, 3000 do
        local cmd
        if i % 2 == 0 then
          cmd = random_bytes(r, r(80) - 1)
        else
          local pos = r(#valid)
          cmd = valid:sub(1, pos - 1) .. string.char(valid:byte(pos) ~ (1 << (r(8) - 1)))
            .. valid:sub(pos + 1)
        end
        index = index + 1
        local res = assert(s:apply(index, cmd))
        assert.equal(index, s:stats().applied_index)
        if qckv.decode(cmd) then
          assert.is_not.equal("invalid", res.status)
        else
          assert.equal("invalid", res.status)
        end
      end
    end)
  end)

  describe("snapshots", function()
    local function filled(seed, n)
      local r = rng(seed)
      local s, apply = new_store()
      for _ = 1, n do
        local k = "key/" .. random_bytes(r, r(4))
        if r(4) == 1 then
          apply(del(k))
        else
          apply(put(k, random_bytes(r, r(64) - 1)))
        end
      end
      return s
    end

    it("round-trips the whole state", function()
      local s = filled(1, 2000)
      local snap = assert(s:snapshot())
      local t = assert(qckv.new())
      t:apply(1, put("stale", "will be replaced"))
      assert.is_true(t:restore(snap))
      assert.same(s:list(), t:list())
      local a, b = s:stats(), t:stats()
      assert.same({ a.keys, a.bytes, a.applied_index, a.revision },
        { b.keys, b.bytes, b.applied_index, b.revision })
      assert.equal(snap, t:snapshot())
      assert.is_nil(t:get("stale"))
      -- the restored store goes on applying from the snapshot's index
      assert.is_nil(t:apply(a.applied_index, put("x", "y")))
      assert.equal("ok", t:apply(a.applied_index + 1, put("x", "y")).status)
    end)

    it("round-trips an empty store", function()
      local s = assert(qckv.new())
      s:noop(3)
      local t = assert(qckv.new())
      assert.is_true(t:restore(s:snapshot()))
      assert.same({}, t:list())
      assert.equal(3, t:stats().applied_index)
    end)

    it("refuses any corrupted snapshot and keeps the old state", function()
      local s = filled(2, 300)
      local snap = s:snapshot()
      local t = filled(3, 100)
      local before, before_snap = t:list(), t:snapshot()
      local r = rng(5)
      for i = 1, #snap, math.max(1, #snap // 400) do
        local bad = snap:sub(1, i - 1) .. string.char(snap:byte(i) ~ (1 << (r(8) - 1)))
          .. snap:sub(i + 1)
        local ok, err = t:restore(bad)
        assert.is_nil(ok)
        assert.matches("corrupt", err)
      end
      for n = 0, #snap - 1, 7 do assert.is_nil(t:restore(snap:sub(1, n))) end
      assert.is_nil(t:restore(snap .. "\0"))
      assert.same(before, t:list())
      assert.equal(before_snap, t:snapshot())
    end)

    it("refuses well-summed snapshots that break the rules", function()
      local t = assert(qckv.new())
      local e = function(k, v, rev) return { key = k, value = v, revision = rev } end
      assert.is_true(t:restore(forge_snapshot(9, 5, { e("a", "1", 2), e("b", "", 5) })))
      assert.same({ "1", 2 }, { t:get("a") })
      local bad = {
        unsorted = forge_snapshot(9, 5, { e("b", "1", 2), e("a", "", 5) }),
        duplicate = forge_snapshot(9, 5, { e("a", "1", 2), e("a", "", 5) }),
        empty_key = forge_snapshot(9, 5, { e("", "1", 2) }),
        rev_over_store = forge_snapshot(9, 5, { e("a", "1", 6) }),
        rev_zero = forge_snapshot(9, 5, { e("a", "1", 0) }),
        revision_over_applied = forge_snapshot(4, 5, {}),
        count_too_big = forge_snapshot(9, 5, { e("a", "1", 2) }, 2),
        count_too_small = forge_snapshot(9, 5, { e("a", "1", 2), e("b", "", 5) }, 1),
        count_huge = forge_snapshot(9, 5, { e("a", "1", 2) }, 1 << 60),
      }
      for name, snap in pairs(bad) do
        local ok, err = t:restore(snap)
        assert.is_nil(ok, name)
        assert.matches("corrupt", err)
      end
      assert.same({ "1", 2 }, { t:get("a") })
    end)
  end)

  describe("determinism", function()
    -- A random command stream: puts, deletes, cas on live revisions, no-ops
    -- and garbage; returns a list of {index, cmd or false for a no-op}.
    local function stream(seed, n)
      local r = rng(seed)
      local out, index = {}, 0
      for _ = 1, n do
        index = index + r(2)
        local k = "k" .. r(50)
        local roll = r(10)
        local cmd
        if roll <= 5 then
          cmd = put(k, random_bytes(r, r(16)), r(3) == 1 and r(index + 1) - 1 or -1, index, r(3))
        elseif roll <= 7 then
          cmd = del(k, r(2) == 1 and r(index + 1) - 1 or -1, index, r(3))
        elseif roll == 8 then
          cmd = false
        else
          cmd = random_bytes(r, r(40))
        end
        out[#out + 1] = { index, cmd }
      end
      return out
    end

    local function feed(s, ops, from, to)
      local outcomes = {}
      for i = from, to do
        local op = ops[i]
        if op[2] then
          outcomes[#outcomes + 1] = assert(s:apply(op[1], op[2])).status
        else
          assert(s:noop(op[1]))
        end
      end
      return outcomes
    end

    it("two stores fed the same stream end with identical snapshots and outcomes", function()
      for seed = 1, 5 do
        local ops = stream(seed, 4000)
        local a, b = assert(qckv.new()), assert(qckv.new())
        assert.same(feed(a, ops, 1, #ops), feed(b, ops, 1, #ops))
        assert.equal(a:snapshot(), b:snapshot())
      end
    end)

    it("a store restored from a snapshot mid-stream ends identical to one that saw it all", function()
      local ops = stream(99, 4000)
      local a, b = assert(qckv.new()), assert(qckv.new())
      feed(a, ops, 1, 2000)
      assert.is_true(b:restore(a:snapshot()))
      feed(a, ops, 2001, #ops)
      feed(b, ops, 2001, #ops)
      assert.equal(a:snapshot(), b:snapshot())
    end)
  end)

  describe("scale", function()
    -- an AVL tree of n keys is at most 1.44 log2(n + 2) high
    local function max_height(n) return math.floor(1.4405 * math.log(n + 2, 2)) end

    it("stays balanced under sorted inserts and deletes", function()
      local s, apply = new_store()
      for i = 1, 20000 do apply(put(string.format("%08d", i), "")) end
      assert.is_true(assert(s:verify()) <= max_height(20000))
      -- delete from the low end, then every other key, so removals hit
      -- leaves, inner nodes and the minimum of right subtrees
      for i = 1, 10000 do apply(del(string.format("%08d", i))) end
      assert(s:verify())
      for i = 10001, 20000, 2 do apply(del(string.format("%08d", i))) end
      assert.equal(5000, s:stats().keys)
      assert.is_true(assert(s:verify()) <= max_height(5000))
      local t = assert(qckv.new())
      assert(t:restore(s:snapshot()))
      assert.is_true(assert(t:verify()) <= max_height(5000))
    end)

    it("holds 100k keys in order and deletes them all", function()
      local s = assert(qckv.new())
      assert(s:bench(150000, 100000, 8))
      local st = s:stats()
      assert.is_true(st.keys > 70000)
      assert.is_true(assert(s:verify()) <= max_height(st.keys))
      local l = s:list("key/")
      assert.equal(st.keys, #l)
      for i = 2, #l do assert.is_true(bytes_lt(l[i - 1].key, l[i].key)) end
      local index = st.applied_index
      for _, e in ipairs(l) do
        index = index + 1
        assert.equal("ok", s:apply(index, del(e.key)).status)
      end
      assert.same({ 0, 0 }, { s:stats().keys, s:stats().bytes })
      assert.equal(0, s:verify())
    end)
  end)
end)
