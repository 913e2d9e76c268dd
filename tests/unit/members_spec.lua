-- The replicated member list (src/core/members.c) through the test-only module
-- qcmembers: CONFIG entry data and the core's reading of it, list edits,
-- limits, the MEMBER and JOIN payloads, and malformed or random input.
package.cpath = "./build/?.so;" .. package.cpath
local qm = require("qcmembers")
local json = require("dkjson")

local VOTER, NO_LEAD = qm.VOTER, qm.NO_LEAD

local function rec(id, over)
  local r = { identifier = id, host = "10.0.0.1", port = 7001, role = "voter", priority = 1,
    metadata = "{}", voting = true }
  for k, v in pairs(over or {}) do r[k] = v end
  return r
end

-- The record a decoder gives back for r (flags included).
local function decoded(r)
  local d = rec(r.identifier, r)
  d.flags = qm.flags(r)
  return d
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

local function rejected(v, err)
  assert.is_nil(v)
  assert.are.equal("invalid argument", err)
end

-- An entry with the core list of `core` ({id, flags} or identifiers taken
-- as voters) and `text` after it.
local function entry(core, text)
  local list = {}
  for i, c in ipairs(core) do
    list[i] = type(c) == "string" and { id = qm.hash_id(c), flags = VOTER } or c
  end
  return qm.conf_write(list) .. text
end

local THREE = {
  rec("a", { metadata = '{"zone": "x", "n": 1.50, "deep": {"l": [1, true, null]}}' }),
  rec("b", { host = "::1", port = 65535, role = "witness", priority = 0 }),
  rec("c", { host = "c.example", port = 1, role = "learner", priority = 7, voting = false }),
}

describe("members", function()
  describe("CONFIG entry data", function()
    it("round-trips a list with every role, metadata made compact", function()
      local data = assert(qm.encode(THREE))
      local got = assert(qm.decode(data))
      local want = { decoded(THREE[1]), decoded(THREE[2]), decoded(THREE[3]) }
      want[1].metadata = '{"zone":"x","n":1.50,"deep":{"l":[1,true,null]}}'
      assert.are.same(want, got)
      assert.are.same(data, qm.encode(got))
    end)

    it("opens with the core's list, which qc_raft_conf_read agrees with", function()
      local data = assert(qm.encode(THREE))
      local core, used = assert(qm.conf_read(data))
      assert.are.same({
        { id = qm.hash_id("a"), flags = VOTER },
        { id = qm.hash_id("b"), flags = VOTER | NO_LEAD },
        { id = qm.hash_id("c"), flags = NO_LEAD },
      }, core)
      assert.are.equal(2 + 9 * 3, used)
      local arr = json.decode(data:sub(used + 1))
      assert.are.equal(3, #arr)
      local one = assert(qm.encode({ THREE[2] }))
      assert.are.equal(qm.conf_write({ { id = qm.hash_id("b"), flags = VOTER | NO_LEAD } })
        .. '[{"identifier":"b","host":"::1","port":65535,"role":"witness","priority":0,'
        .. '"metadata":{},"voting":true}]', one)
      assert.are.equal("witness", arr[2].role)
      assert.is_false(arr[3].voting)
      assert.is_nil(data:sub(used + 1):find("[ \n]"), "compact JSON")
    end)

    it("sets the core flags from voting, role and priority", function()
      assert.are.equal(VOTER, qm.flags(rec("a")))
      assert.are.equal(0, qm.flags(rec("a", { voting = false })))
      assert.are.equal(VOTER | NO_LEAD, qm.flags(rec("a", { priority = 0 })))
      assert.are.equal(VOTER | NO_LEAD, qm.flags(rec("a", { role = "witness", priority = 5 })))
      assert.are.equal(NO_LEAD, qm.flags(rec("a", { role = "witness", voting = false })))
      assert.are.equal(NO_LEAD, qm.flags(rec("a", { role = "learner", voting = false })))
    end)

    it("encodes an empty list, and nil metadata as {}", function()
      local data = assert(qm.encode({}))
      assert.are.equal(qm.conf_write({}) .. "[]", data)
      assert.are.same({}, assert(qm.decode(data)))
      local one = assert(qm.decode(assert(qm.encode({ rec("a", { metadata = nil }) }))))
      assert.are.equal("{}", one[1].metadata)
    end)

    it("takes absent optional fields as voter, priority 1, {} and not voting", function()
      local data = entry({ { id = qm.hash_id("n"), flags = 0 } },
        '[{"identifier":"n","host":"h","port":9,"future":{"x":1}}]')
      assert.are.same({ { identifier = "n", host = "h", port = 9, role = "voter", priority = 1,
        metadata = "{}", voting = false, flags = 0 } }, assert(qm.decode(data)))
    end)

    it("reads a committed list whose metadata is not UTF-8 (an older agent took it) repaired", function()
      -- Refusing it would part the list from the core's; every byte that
      -- is not UTF-8 becomes U+FFFD, so nothing sent on is invalid UTF-8.
      local data = entry({ "a" }, '[{"identifier":"a","host":"h","port":1,"voting":true,'
        .. '"metadata":{"k":"x\xC0\xAFy","\xED\xA0\x80":"\xC3\xA9"}}]')
      local got = assert(qm.decode(data))
      local fffd = "\u{FFFD}"
      assert.are.equal('{"k":"x' .. fffd:rep(2) .. 'y","' .. fffd:rep(3) .. '":"\u{E9}"}',
        got[1].metadata)
      assert.is_truthy(utf8.len(got[1].metadata))
      -- and the leader can write the list on (its records validate)
      assert.is_truthy(qm.encode(got))
    end)

    it("keeps metadata byte-safe UTF-8 and big numbers as written", function()
      local meta = '{"name":"h\\u00e9llo \\"q\\" \\\\","big":123456789012345678901234567890}'
      local got = assert(qm.decode(assert(qm.encode({ rec("a", { metadata = meta }) }))))
      local back = json.decode(got[1].metadata)
      assert.are.equal('héllo "q" \\', back.name)
      assert.matches('"big":123456789012345678901234567890', got[1].metadata)
    end)
  end)

  describe("validation", function()
    local bad = {
      { "an empty identifier", { identifier = "" } },
      { "an identifier over 255 bytes", { identifier = string.rep("i", 256) } },
      { "an identifier that is not UTF-8", { identifier = "a\255b" } },
      { "no host", { host = false } },
      { "an empty host", { host = "" } },
      { "a host with a space", { host = "a b" } },
      { "a host with a control character", { host = "a\nb" } },
      { "a host over 255 bytes", { host = string.rep("h", 256) } },
      { "port 0", { port = 0 } },
      { "port 65536", { port = 65536 } },
      { "an unknown role", { role = 3 } },
      { "a negative role", { role = -1 } },
      { "priority -1", { priority = -1 } },
      { "priority 1000001", { priority = 1000001 } },
      { "a voting learner", { role = "learner", voting = true } },
      { "metadata that is a list", { metadata = "[1]" } },
      { "metadata that is a number", { metadata = "5" } },
      { "metadata that is not JSON", { metadata = "{zone: 1}" } },
      { "metadata with trailing bytes", { metadata = "{} {}" } },
      { "metadata nested 33 deep", { metadata = string.rep('{"a":', 33) .. "1"
        .. string.rep("}", 33) } },
      { "metadata over 64 KiB", { metadata = '{"x":"' .. string.rep("y", 65536) .. '"}' } },
    }
    for _, case in ipairs(bad) do
      it("refuses " .. case[1], function()
        local r = rec("a", case[2])
        if case[2].host == false then r.host = nil end
        rejected(qm.validate(r))
        rejected(qm.encode({ r }))
        rejected(qm.rec_encode(r))
        local list = qm.new()
        rejected(list:put(r))
        assert.are.equal(0, #list)
      end)
    end

    it("takes the edges of every range", function()
      assert.is_true(qm.validate(rec(string.rep("i", 255), { port = 65535, priority = 1000000 })))
      assert.is_true(qm.validate(rec("é", { host = "h", port = 1, priority = 0 })))
      local deep = string.rep('{"a":', 32) .. "1" .. string.rep("}", 32)
      assert.is_true(qm.validate(rec("a", { metadata = deep })))
      assert.is_string(qm.decode(assert(qm.encode({ rec("a", { metadata = deep }) })))[1].metadata)
      assert.is_string(qm.request_decode(assert(qm.request_encode({ op = "join", id = 1,
        member = rec("a", { metadata = deep }) }))).member.metadata)
      assert.is_true(qm.validate(rec("a", { metadata = '{"x":"' .. string.rep("y", 65000)
        .. '"}' })))
    end)

    it("refuses a list with a repeated identifier", function()
      rejected(qm.encode({ rec("a"), rec("b"), rec("a", { port = 2 }) }))
    end)

    it("refuses more than 64 members or 32 voting", function()
      local list = {}
      for i = 1, qm.MAX_MEMBERS do
        list[i] = rec("n" .. i, { voting = i <= qm.MAX_VOTERS })
      end
      assert.is_string(qm.encode(list))
      list[#list + 1] = rec("extra", { voting = false })
      rejected(qm.encode(list))
      list[#list] = nil
      list[qm.MAX_VOTERS + 1].voting = true
      rejected(qm.encode(list))
    end)
  end)

  describe("list edits", function()
    it("adds, replaces in place, finds and removes in order", function()
      local list = assert(qm.new({ rec("a"), rec("b"), rec("c") }))
      assert.are.equal(3, #list)
      assert.is_true(list:put(rec("b", { port = 9, metadata = '{ "k" : [ 1 ] }' })))
      local rs = list:records()
      assert.are.same({ "a", "b", "c" }, { rs[1].identifier, rs[2].identifier, rs[3].identifier })
      assert.are.equal(9, rs[2].port)
      assert.are.equal('{"k":[1]}', rs[2].metadata)
      assert.are.equal(2, list:find("b"))
      assert.are.equal(3, list:find_id(qm.hash_id("c")))
      assert.is_nil(list:find("z"))
      assert.is_nil(list:find_id(12345))
      assert.is_true(list:remove("a"))
      assert.are.same({ nil, "not found" }, { list:remove("a") })
      rs = list:records()
      assert.are.same({ "b", "c" }, { rs[1].identifier, rs[2].identifier })
      assert.is_true(list:remove("b"))
      assert.is_true(list:remove("c"))
      assert.are.equal(0, #list)
      assert.are.equal(qm.conf_write({}) .. "[]", list:encode())
    end)

    it("refuses a 65th member and a 33rd voter, but lets a full list change", function()
      local list = qm.new()
      for i = 1, qm.MAX_MEMBERS do
        assert.is_true(list:put(rec("n" .. i, { voting = i <= qm.MAX_VOTERS })))
      end
      assert.are.same({ nil, "too big" }, { list:put(rec("extra", { voting = false })) })
      assert.are.same({ nil, "too big" }, { list:put(rec("n40", { voting = true })) })
      assert.is_true(list:put(rec("n1", { port = 2 })))           -- a voter stays one
      assert.is_true(list:put(rec("n1", { voting = false })))     -- demoted...
      assert.is_true(list:put(rec("n40", { voting = true })))     -- ...so another can vote
      assert.are.equal(qm.MAX_MEMBERS, #list)
      local back = assert(qm.decode(assert(list:encode())))
      assert.are.equal(qm.MAX_MEMBERS, #back)
    end)

    it("copies deeply", function()
      local list = assert(qm.new({ rec("a"), rec("b") }))
      local copy = assert(list:copy())
      assert.is_true(list:remove("a"))
      assert.is_true(list:put(rec("b", { host = "elsewhere" })))
      local rs = copy:records()
      assert.are.equal(2, #rs)
      assert.are.equal("10.0.0.1", rs[2].host)
      assert.are.equal(0, #assert(qm.new():copy()))
    end)
  end)

  describe("decoding refuses", function()
    local good = '[{"identifier":"a","host":"h","port":1,"voting":true}]'
    local cases = {
      { "no JSON after the core list", entry({ "a" }, "") },
      { "a core list cut short", qm.conf_write({ { id = qm.hash_id("a"), flags = VOTER } })
        :sub(1, 5) },
      { "a bad core list version", "\99" .. entry({ "a" }, good):sub(2) },
      { "a core list without its member", entry({}, good) },
      { "a JSON list longer than the core's", entry({ "a" }, good:sub(1, -2)
        .. ',{"identifier":"b","host":"h","port":1,"voting":true}]') },
      { "another id in the core list", entry({ "b" }, good) },
      { "other flags in the core list", entry({ { id = qm.hash_id("a"), flags = 0 } }, good) },
      { "the same members in another order", entry({ "b", "a" }, '['
        .. '{"identifier":"a","host":"h","port":1,"voting":true},'
        .. '{"identifier":"b","host":"h","port":1,"voting":true}]') },
      { "trailing bytes", entry({ "a" }, good .. " x") },
      { "a second JSON value", entry({ "a" }, good .. "[]") },
      { "a NUL byte", entry({ "a" }, good .. "\0") },
      { "an identifier with \\u0000", entry({ "a" }, good:gsub('"a"', '"a\\u0000b"')) },
      { "an object, not a list", entry({}, "{}") },
      { "a record that is not an object", entry({ "a" }, '["a"]') },
      { "no identifier", entry({ "a" }, '[{"host":"h","port":1,"voting":true}]') },
      { "no host", entry({ "a" }, '[{"identifier":"a","port":1,"voting":true}]') },
      { "no port", entry({ "a" }, '[{"identifier":"a","host":"h","voting":true}]') },
      { "a port as a string", entry({ "a" }, good:gsub('"port":1', '"port":"1"')) },
      { "a fractional port", entry({ "a" }, good:gsub('"port":1', '"port":1.5')) },
      { "a port as a float", entry({ "a" }, good:gsub('"port":1', '"port":1.0')) },
      { "a huge port", entry({ "a" }, good:gsub('"port":1', '"port":99999999999999999999')) },
      { "voting as a string", entry({ "a" }, good:gsub('true', '"yes"')) },
      { "an unknown role", entry({ "a" }, good:gsub('"port":1', '"port":1,"role":"boss"')) },
      { "a role as a number", entry({ "a" }, good:gsub('"port":1', '"port":1,"role":0')) },
      { "a null priority", entry({ "a" }, good:gsub('"port":1', '"port":1,"priority":null')) },
      { "metadata as text", entry({ "a" }, good:gsub('"port":1', '"port":1,"metadata":"{}"')) },
      { "a voting learner", entry({ "a" },
        good:gsub('"port":1', '"port":1,"role":"learner"')) },
      { "invalid UTF-8", entry({ "a" }, good:gsub('"h"', '"h\255"')) },
      { "nesting a million deep", entry({}, string.rep("[", 1000000)) },
      { "nesting deep inside a string-looking mess", entry({}, '["\\"' .. string.rep("{", 100)) },
    }
    for _, case in ipairs(cases) do
      it(case[1], function()
        rejected(qm.decode(case[2]))
      end)
    end

    it("nothing else: the good base case decodes", function()
      assert.are.equal("a", assert(qm.decode(entry({ "a" }, good)))[1].identifier)
    end)
  end)

  describe("MEMBER requests", function()
    it("round-trip join and update with the whole record", function()
      for _, op in ipairs({ "join", "update" }) do
        local m = rec("n1", { role = "witness", priority = 3, voting = false,
          metadata = '{"a":1}' })
        local data = assert(qm.request_encode({ op = op, id = 77, member = m }))
        assert.are.same({ op = op, id = 77, member = decoded(m) }, assert(qm.request_decode(data)))
        assert.are.same({ op = op, id = 77 }, (function()
          local t = json.decode(data)
          return { op = t.op, id = t.id }
        end)())
      end
    end)

    it("send only the identifier to leave", function()
      local data = assert(qm.request_encode({ op = "leave", id = 5, member = { identifier = "x" } }))
      assert.are.equal('{"op":"leave","member":{"identifier":"x"},"id":5}', data)
      local req = assert(qm.request_decode(data))
      assert.are.equal("leave", req.op)
      assert.are.equal("x", req.member.identifier)
      assert.is_nil(req.member.host)
      assert.are.equal("{}", req.member.metadata)
      -- whatever else a leave carries is ignored
      req = assert(qm.request_decode('{"op":"leave","id":1,"member":{"identifier":"x","port":"?"}}'))
      assert.are.equal("x", req.member.identifier)
    end)

    it("carry every uint64 request id", function()
      for _, id in ipairs({ 0, 1, math.maxinteger, -1, math.mininteger }) do
        local data = assert(qm.request_encode({ op = "leave", id = id, member = { identifier = "x" } }))
        assert.are.equal(id, assert(qm.request_decode(data)).id)
      end
      local top = '{"op":"leave","member":{"identifier":"x"},"id":18446744073709551615}'
      assert.are.equal(-1, assert(qm.request_decode(top)).id)
    end)

    local bad = {
      { "an unknown op", '{"op":"kick","member":{"identifier":"x"},"id":1}' },
      { "no op", '{"member":{"identifier":"x"},"id":1}' },
      { "no id", '{"op":"leave","member":{"identifier":"x"}}' },
      { "a negative id", '{"op":"leave","member":{"identifier":"x"},"id":-1}' },
      { "a fractional id", '{"op":"leave","member":{"identifier":"x"},"id":1.5}' },
      { "an id in exponent form", '{"op":"leave","member":{"identifier":"x"},"id":1e3}' },
      { "an id past 2^64", '{"op":"leave","member":{"identifier":"x"},"id":18446744073709551616}' },
      { "an id as a string", '{"op":"leave","member":{"identifier":"x"},"id":"1"}' },
      { "no member", '{"op":"leave","id":1}' },
      { "a leave without identifier", '{"op":"leave","member":{},"id":1}' },
      { "a join without host", '{"op":"join","member":{"identifier":"x","port":1},"id":1}' },
      { "a list", '[]' },
      { "nothing", "" },
    }
    for _, case in ipairs(bad) do
      it("refuse " .. case[1], function()
        rejected(qm.request_decode(case[2]))
      end)
    end

    it("refuse to encode an unknown op or a bad record", function()
      rejected(qm.request_encode({ op = 9, id = 1, member = rec("a") }))
      rejected(qm.request_encode({ op = "join", id = 1, member = rec("a", { port = 0 }) }))
      rejected(qm.request_encode({ op = "leave", id = 1, member = { identifier = "" } }))
    end)
  end)

  describe("JOIN frames", function()
    it("round-trip the joiner's record", function()
      local m = rec("new", { role = "learner", voting = false, metadata = '{"k":"v"}' })
      local data = assert(qm.rec_encode(m))
      assert.are.same(decoded(m), assert(qm.rec_decode(data)))
      rejected(qm.rec_decode('{"identifier":"new"}'))
      rejected(qm.rec_decode('[' .. data .. ']'))
    end)

    it("round-trip answers, with null for what is not known", function()
      local cases = {
        { ok = true, retry = false },
        { ok = false, retry = true, error = "no leader", leader = nil },
        { ok = false, retry = true, error = "not the leader", leader = "10.0.0.2:7002" },
        { ok = false, retry = false, error = "h\195\169", leader = "[::1]:7003" },
      }
      for _, a in ipairs(cases) do
        local data = assert(qm.answer_encode(a))
        assert.are.same(a, assert(qm.answer_decode(data)))
      end
      assert.are.equal('{"ok":true,"error":null,"leader":null,"retry":false}',
        qm.answer_encode({ ok = true }))
      assert.are.same({ ok = true, retry = false }, assert(qm.answer_decode('{"ok":true}')))
    end)

    local bad = {
      { "no ok", '{"retry":true}' },
      { "ok as a number", '{"ok":1}' },
      { "retry as a string", '{"ok":false,"retry":"yes"}' },
      { "error as a number", '{"ok":false,"error":5}' },
      { "a leader that is not host:port", '{"ok":false,"leader":"nohost"}' },
      { "a leader with port 0", '{"ok":false,"leader":"h:0"}' },
      { "an unbracketed IPv6 leader", '{"ok":false,"leader":"::1:7000"}' },
      { "a list", '[true]' },
    }
    for _, case in ipairs(bad) do
      it("refuse an answer with " .. case[1], function()
        rejected(qm.answer_decode(case[2]))
      end)
    end

    it("refuse to encode a bad leader or text that is not UTF-8", function()
      rejected(qm.answer_encode({ ok = false, leader = "h" }))
      rejected(qm.answer_encode({ ok = false, error = "\255" }))
    end)

    it("split host:port as the config checks join entries", function()
      local config = require("config")
      local good = { { "h:1", "h", 1 }, { "10.0.0.1:65535", "10.0.0.1", 65535 },
        { "[::1]:7001", "::1", 7001 }, { "[fe80::1%eth0]:7", "fe80::1%eth0", 7 } }
      for _, g in ipairs(good) do
        assert.are.same({ g[2], g[3] }, { qm.split_addr(g[1]) })
        assert.are.same({ g[2], g[3] }, { config.split_host_port(g[1]) })
      end
      for _, s in ipairs({ "h", ":1", "h:", "h:0", "h:65536", "h:123456", "h:1x", "::1:7",
        "[::1:7", "[]:7", "[a]b:7", "a b:7", "a\tb:7", "a]:7", "h:-1", "h: 1",
        string.rep("h", 256) .. ":1" }) do
        rejected(qm.split_addr(s))
        assert.is_nil(config.split_host_port(s), s)
      end
    end)
  end)

  it("names and parses roles", function()
    assert.are.same({ "voter", "witness", "learner", "?", "?" },
      { qm.role_name(0), qm.role_name(1), qm.role_name(2), qm.role_name(3), qm.role_name(-1) })
    assert.are.same({ 0, 1, 2, -1, -1 }, { qm.role_parse("voter"), qm.role_parse("witness"),
      qm.role_parse("learner"), qm.role_parse("Voter"), qm.role_parse() })
  end)

  describe("random input", function()
    -- Every decoder answers random bytes, truncations and flipped bytes with
    -- a clean refusal or a value that encodes back to the same thing.
    local r = rng(20240611)
    local list_data = assert(qm.encode(THREE))
    local samples = {
      { qm.decode, list_data, function(v) return qm.encode(v) end },
      { qm.request_decode, assert(qm.request_encode({ op = "join", id = 3, member = THREE[1] })),
        function(v) return qm.request_encode(v) end },
      { qm.rec_decode, assert(qm.rec_encode(THREE[2])), function(v) return qm.rec_encode(v) end },
      { qm.answer_decode, assert(qm.answer_encode({ ok = false, error = "e", leader = "h:1" })),
        function(v) return qm.answer_encode(v) end },
    }

    local function try(decode, reencode, bytes)
      local v, err = decode(bytes)
      if v == nil then
        assert.are.equal("invalid argument", err)
      else
        assert.is_string(reencode(v))
      end
    end

    it("never crashes a decoder nor leaks a half-built value", function()
      for _, s in ipairs(samples) do
        local decode, data, reencode = s[1], s[2], s[3]
        for n = 0, #data - 1 do rejected(decode(data:sub(1, n))) end
        for _ = 1, 3000 do
          local i = r(#data)
          local flipped = data:sub(1, i - 1) .. string.char(r(256) - 1) .. data:sub(i + 1)
          try(decode, reencode, flipped)
        end
        for _ = 1, 1000 do try(decode, reencode, random_bytes(r, r(200) - 1)) end
        -- JSON-looking noise reaches deeper into the parsers
        local alphabet = '{}[]":,0123456789-.eE truefalsnul\\aport'
        for _ = 1, 2000 do
          local t = {}
          for k = 1, r(80) do
            local c = r(#alphabet)
            t[k] = alphabet:sub(c, c)
          end
          try(decode, reencode, table.concat(t))
        end
      end
    end)

    it("gives back exactly what was encoded when a flip still decodes", function()
      for _ = 1, 2000 do
        local i = r(#list_data)
        local flipped = list_data:sub(1, i - 1) .. string.char(r(256) - 1) .. list_data:sub(i + 1)
        local v = qm.decode(flipped)
        if v then assert.are.same(v, assert(qm.decode(assert(qm.encode(v))))) end
      end
    end)
  end)
end)
