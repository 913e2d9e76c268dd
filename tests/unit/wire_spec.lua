-- The cluster wire codec (src/core/wire.c) through the test-only module qcwire.
package.cpath = "./build/?.so;" .. package.cpath
local wire = require("qcwire")

local HEADER = wire.HEADER

local function sample_msg(mtype)
  return {
    type = mtype, flags = 3, reject = 1,
    from = wire.hash_id("server_a"), to = wire.hash_id("server_b"),
    term = 42, ctx = 123456789012, index = -1, log_term = 7, commit = 0x7fffffffffffffff,
    entries = {
      { term = 41, index = 100, type = 1, data = "hello\0world" },
      { term = 42, index = 101, type = 0, data = "" },
      { term = 42, index = 102, type = 1, data = string.rep("x", 1000) },
    },
  }
end

-- A raw message payload with the given entry count and trailing bytes.
local function raw_payload(mtype, n_entries, rest)
  return string.pack(">BBBI8I8I8I8I8I8I8I4", mtype, 0, 0, 1, 2, 3, 4, 5, 6, 7, n_entries)
    .. (rest or "")
end

local function assert_rejected(v, err)
  assert.is_nil(v)
  assert.is_string(err)
end

describe("wire", function()
  it("computes CRC-32C with the Castagnoli polynomial", function()
    assert.are.equal(0xE3069283, wire.crc32c("123456789"))
    assert.are.equal(0, wire.crc32c(""))
  end)

  it("computes CRC-32C of every length and offset as the bitwise definition does", function()
    -- the reflected polynomial one bit at a time, the slowest, plainest form
    local function reference(s)
      local crc = 0xFFFFFFFF
      for i = 1, #s do
        crc = crc ~ s:byte(i)
        for _ = 1, 8 do crc = (crc >> 1) ~ ((crc & 1) * 0x82F63B78) end
      end
      return crc ~ 0xFFFFFFFF
    end
    local bytes = {}
    for i = 1, 80 do bytes[i] = string.char((i * 151 + 7) % 256) end
    local data = table.concat(bytes)
    for from = 1, 9 do
      for len = 0, #data - from + 1 do
        local s = data:sub(from, from + len - 1)
        assert.are.equal(reference(s), wire.crc32c(s), string.format("offset %d length %d", from, len))
      end
    end
  end)

  it("round-trips every message type with entries", function()
    for mtype = 1, wire.MSG_TYPE_MAX do
      local m = sample_msg(mtype)
      local frame = assert(wire.encode(m))
      local d = assert(wire.decode(frame))
      assert.are.equal("raft", d.kind)
      for _, k in ipairs({ "type", "flags", "reject", "from", "to", "term", "ctx", "index",
                            "log_term", "commit" }) do
        assert.are.equal(m[k], d[k], k)
      end
      assert.are.same(m.entries, d.entries)
    end
  end)

  it("round-trips a message without entries", function()
    local d = assert(wire.decode(assert(wire.encode({ type = 5, term = 9 }))))
    assert.are.equal(9, d.term)
    assert.are.same({}, d.entries)
  end)

  it("round-trips a hello", function()
    local f = assert(wire.encode({ kind = "hello", identifier = "server_a",
                                   metadata = '{"server_port":8002}' }))
    local h = assert(wire.decode(f))
    assert.are.same({ kind = "hello", identifier = "server_a",
                      metadata = '{"server_port":8002}' }, h)
  end)

  it("rejects every truncation of a valid frame", function()
    for _, f in ipairs({ wire.encode(sample_msg(5)),
                         wire.encode({ kind = "hello", identifier = "n1", metadata = "{}" }) }) do
      for i = 0, #f - 1 do
        assert_rejected(wire.decode(f:sub(1, i)))
      end
    end
  end)

  it("rejects every truncation of a payload even under a valid CRC", function()
    local f = wire.encode(sample_msg(5))
    local payload = f:sub(HEADER + 1)
    for i = 0, #payload - 1 do
      assert_rejected(wire.decode(wire.frame(2, payload:sub(1, i))))
    end
    local h = wire.encode({ kind = "hello", identifier = "node", metadata = "{}" }):sub(HEADER + 1)
    for i = 0, #h - 1 do
      assert_rejected(wire.decode_payload("hello", h:sub(1, i)))
    end
  end)

  it("rejects trailing bytes", function()
    local f = wire.encode(sample_msg(1))
    assert_rejected(wire.decode(f .. "x"))
    assert_rejected(wire.decode(wire.frame(2, f:sub(HEADER + 1) .. "\0")))
    local h = wire.encode({ kind = "hello", identifier = "n", metadata = "{}" })
    assert_rejected(wire.decode(wire.frame(1, h:sub(HEADER + 1) .. "\0")))
  end)

  it("rejects unknown message types", function()
    assert_rejected(wire.encode({ type = 0 }))
    assert_rejected(wire.encode({ type = wire.MSG_TYPE_MAX + 1 }))
    assert_rejected(wire.decode_payload("raft", raw_payload(0, 0)))
    assert_rejected(wire.decode_payload("raft", raw_payload(wire.MSG_TYPE_MAX + 1, 0)))
    assert.is_table(wire.decode_payload("raft", raw_payload(1, 0)))
  end)

  it("rejects entry counts and lengths larger than what remains", function()
    assert_rejected(wire.decode_payload("raft", raw_payload(5, 1)))
    assert_rejected(wire.decode_payload("raft", raw_payload(5, 0xffffffff)))
    local entry = string.pack(">I8I8I4I4", 1, 1, 1, 4) .. "abc"
    assert_rejected(wire.decode_payload("raft", raw_payload(5, 1, entry)))
    local huge = string.pack(">I8I8I4I4", 1, 1, 1, 0xffffffff) .. "abcd"
    assert_rejected(wire.decode_payload("raft", raw_payload(5, 1, huge)))
    local ok = string.pack(">I8I8I4I4", 1, 1, 1, 4) .. "abcd"
    assert.is_table(wire.decode_payload("raft", raw_payload(5, 1, ok)))
  end)

  it("rejects bad identifiers and oversized metadata in hellos", function()
    local function hello(id, meta)
      return string.pack(">s4s4", id, meta)
    end
    assert.is_table(wire.decode_payload("hello", hello("a", "")))
    assert.is_table(wire.decode_payload("hello", hello(string.rep("a", 255), "{}")))
    assert_rejected(wire.decode_payload("hello", hello("", "{}")))
    assert_rejected(wire.decode_payload("hello", hello(string.rep("a", 256), "{}")))
    assert_rejected(wire.decode_payload("hello", hello("a\0b", "{}")))
    assert_rejected(wire.decode_payload("hello", hello("a", "{\0}")))
    assert.is_table(wire.decode_payload("hello", hello("a", string.rep("m", 65536))))
    assert_rejected(wire.decode_payload("hello", hello("a", string.rep("m", 65537))))
    assert_rejected(wire.decode_payload("hello", string.pack(">I4", 0xffffffff) .. "abc"))
    assert_rejected(wire.encode({ kind = "hello", identifier = "", metadata = "{}" }))
    assert_rejected(wire.encode({ kind = "hello", identifier = string.rep("a", 256) }))
    assert_rejected(wire.encode({ kind = "hello", identifier = "a",
                                  metadata = string.rep("m", 65537) }))
  end)

  it("rejects an oversize payload length", function()
    local f = wire.encode({ type = 5 })
    local big = f:sub(1, 4) .. string.pack(">I4", wire.MAX_PAYLOAD + 1) .. f:sub(9)
    local v, err = wire.header(big)
    assert.is_nil(v)
    assert.matches("too big", err)
    assert_rejected(wire.decode(big))
    assert.are.equal(2, (wire.header(f:sub(1, 4) .. string.pack(">I4", wire.MAX_PAYLOAD) .. "    ")))
    local v2, err2 = wire.encode({ type = 5, entries = { { data = string.rep("z", wire.MAX_PAYLOAD) } } })
    assert.is_nil(v2)
    assert.matches("too big", err2)
  end)

  it("rejects a CRC mismatch", function()
    local f = wire.encode(sample_msg(3))
    for _, pos in ipairs({ HEADER + 1, HEADER + 30, #f, 9, 12 }) do
      local b = f:byte(pos)
      local bad = f:sub(1, pos - 1) .. string.char((b + 1) % 256) .. f:sub(pos + 1)
      local v, err = wire.decode(bad)
      assert.is_nil(v)
      assert.matches("crc", err)
    end
  end)

  it("rejects bad magic, version and frame type", function()
    local f = wire.encode({ type = 5 })
    assert_rejected(wire.decode("X" .. f:sub(2)))
    assert_rejected(wire.decode(f:sub(1, 1) .. "X" .. f:sub(3)))
    assert_rejected(wire.decode(f:sub(1, 2) .. "\2" .. f:sub(4)))
    assert_rejected(wire.decode(f:sub(1, 3) .. "\8" .. f:sub(5))) -- 3-7: FORWARD, READ_INDEX, PART, MEMBER, JOIN
    assert_rejected(wire.decode(f:sub(1, 3) .. "\11" .. f:sub(5))) -- 10: HEALTH
    assert_rejected(wire.decode(f:sub(1, 3) .. "\0" .. f:sub(5)))
  end)

  it("never crashes on random garbage", function()
    math.randomseed(12345)
    local valid = wire.encode(sample_msg(5))
    local function random_bytes(n)
      local t = {}
      for i = 1, n do t[i] = string.char(math.random(0, 255)) end
      return table.concat(t)
    end
    for _ = 1, 3000 do
      local g = random_bytes(math.random(0, 200))
      wire.decode(g)
      wire.decode("QC\1\2" .. g)
      wire.decode(wire.frame(math.random(1, 2), g))
      wire.decode_payload("raft", raw_payload(math.random(1, 7), math.random(0, 5), g))
      wire.decode_payload("hello", g)
      -- a valid frame with a few bytes changed and the CRC fixed up
      local p = valid:sub(HEADER + 1)
      for _ = 1, 3 do
        local pos = math.random(1, #p)
        p = p:sub(1, pos - 1) .. string.char(math.random(0, 255)) .. p:sub(pos + 1)
      end
      local d = wire.decode(wire.frame(2, p))
      if d then assert.are.equal("raft", d.kind) end
    end
  end)
  describe("HEALTH payloads", function()
    local sample = { seq = 1234567890123, healthy = 0, checks = {
      { name = "web", passing = 1 }, { name = "db.primary-1_x", passing = 0 } } }

    it("round-trip a node's health and its checks' statuses", function()
      local p = assert(wire.health_encode(sample))
      assert.are.equal(8 + 1 + 1 + (1 + 3 + 1) + (1 + 14 + 1), #p)
      assert.are.same(sample, assert(wire.health_decode(p)))
      local none = assert(wire.health_decode(assert(wire.health_encode({ seq = 1, healthy = 1 }))))
      assert.are.same({ seq = 1, healthy = 1, checks = {} }, none)
      local many = { seq = 2, healthy = 1, checks = {} }
      for i = 1, 64 do many.checks[i] = { name = ("c%02d"):format(i) .. string.rep("x", 61), passing = 1 } end
      assert.are.same(many, assert(wire.health_decode(assert(wire.health_encode(many)))))
      many.checks[65] = { name = "one-more", passing = 1 }
      assert_rejected(wire.health_encode(many))
    end)

    it("refuses what a sender could not have meant", function()
      local p = assert(wire.health_encode(sample))
      local function at(pos, byte) return p:sub(1, pos - 1) .. string.char(byte) .. p:sub(pos + 1) end
      assert_rejected(wire.health_decode(""))
      assert_rejected(wire.health_decode(p:sub(1, -2)))       -- cut short
      assert_rejected(wire.health_decode(p .. "\0"))          -- a byte too many
      assert_rejected(wire.health_decode(at(9, 2)))           -- healthy neither 0 nor 1
      assert_rejected(wire.health_decode(at(10, 3)))          -- more checks than follow
      assert_rejected(wire.health_decode(at(10, 65)))         -- over the limit
      assert_rejected(wire.health_decode(at(11, 0)))          -- an empty name
      assert_rejected(wire.health_decode(at(12, 0x20)))       -- a space in a name
      assert_rejected(wire.health_decode(at(12, 0)))          -- a NUL in a name
      assert_rejected(wire.health_decode(at(15, 7)))          -- passing neither 0 nor 1
      local twice = p:sub(1, 9) .. "\2" .. "\3web\1\3web\0"
      assert_rejected(wire.health_decode(twice))              -- the same check twice
      local long = p:sub(1, 9) .. "\1" .. string.char(65) .. string.rep("a", 65) .. "\1"
      assert_rejected(wire.health_decode(long))               -- a name over 64 bytes
      assert_rejected(wire.health_encode({ seq = 1, healthy = 1, checks = { { name = "a b", passing = 1 } } }))
      assert_rejected(wire.health_encode({ seq = 1, healthy = 3 }))
      math.randomseed(4242)
      for _ = 1, 3000 do
        local t = {}
        for i = 1, math.random(0, 60) do t[i] = string.char(math.random(0, 255)) end
        local g = table.concat(t)
        local v = wire.health_decode(g)
        if v then assert.are.equal(g, wire.health_encode(v)) end
        local q = at(math.random(1, #p), math.random(0, 255))
        v = wire.health_decode(q)
        if v then assert.are.equal(q, wire.health_encode(v)) end
      end
    end)
  end)

  describe("version 3 (with a secret)", function()
    local function hex(s)
      return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
    end
    local function bytes(from, n)
      local t = {}
      for i = 1, n do t[i] = string.char((from + i - 1) % 256) end
      return table.concat(t)
    end
    local key = wire.key("s3cret")

    it("parses the headers of every version; CHALLENGE and AUTH exist with a secret only", function()
      local f = wire.frame(2, "x")
      assert.are.same({ 1, 2, 1 }, { wire.header_v(f) })
      for t = 1, 10 do -- 10: HEALTH, in every version
        for _, v in ipairs({ 2, 3 }) do
          local h = "QC" .. string.char(v, t) .. string.pack(">I4I4", 5, 0)
          assert.are.same({ v, t, 5 }, { wire.header_v(h) })
          -- the version-1 reader keeps refusing them
          assert_rejected(wire.header(h))
        end
        local v1 = "QC\1" .. string.char(t) .. string.pack(">I4I4", 5, 0)
        if t <= 7 or t == 10 then
          assert.are.same({ 1, t, 5 }, { wire.header_v(v1) })
        else
          assert_rejected(wire.header_v(v1))
          assert_rejected(wire.header(v1))
        end
      end
      assert_rejected(wire.header_v("QC\3\11" .. string.pack(">I4I4", 0, 0)))
      assert_rejected(wire.header_v("QC\1\11" .. string.pack(">I4I4", 0, 0)))
      assert_rejected(wire.header_v("QC\4\2" .. string.pack(">I4I4", 0, 0)))
      assert_rejected(wire.header_v("QC\3\0" .. string.pack(">I4I4", 0, 0)))
      local v, err = wire.header_v("QC\3\2" .. string.pack(">I4I4", wire.MAX_PAYLOAD + 1, 0))
      assert.is_nil(v)
      assert.matches("too big", err)
      assert_rejected(wire.header_v("QC\3"))
    end)

    it("derives cluster keys and challenge tags exactly as documented (keyed BLAKE2b-256)", function()
      -- computed independently with Python's hashlib.blake2b
      assert.are.equal("6156fa2657a6f29fd107d391d1cbfaf828dc2f23aa72916ecd7e4cee16914b49", hex(key))
      assert.are.equal("8483c9d7ed72f2e8a35e7d687ee7a5d615dbdcb6933ec3047a13562be246799a",
                       hex(wire.tag(key, "C", 0, bytes(0, 32))))
      assert.are_not.equal(key, wire.key("s3cret "))
      assert.are_not.equal(key, wire.key("S3cret"))
      assert.are.equal(key, wire.key("s3cret"))
    end)

    it("both sides of a key exchange make the same session keys, which need the secret and "
       .. "both ephemeral keys", function()
      local pk_d, sk_d = wire.kx_keypair()
      local pk_a, sk_a = wire.kx_keypair()
      local kd, ka = wire.session(key, true, pk_d, sk_d, pk_a)
      local kd2, ka2 = wire.session(key, false, pk_a, sk_a, pk_d)
      assert.are.equal(kd, kd2)
      assert.are.equal(ka, ka2)
      assert.are_not.equal(kd, ka)
      assert.are.equal(32, #kd)
      -- another secret, or another key pair on either side: other keys
      assert.are_not.equal(kd, (wire.session(wire.key("other"), true, pk_d, sk_d, pk_a)))
      local pk_x, sk_x = wire.kx_keypair()
      assert.are_not.equal(kd, (wire.session(key, true, pk_x, sk_x, pk_a)))
      assert.are_not.equal(kd, (wire.session(key, false, pk_x, sk_x, pk_d)))
      -- the key pairs are fresh each time
      assert.are_not.equal(pk_d, pk_a)
      -- a public key of low order (all zeroes) is refused
      assert.is_nil(wire.session(key, true, pk_d, sk_d, string.rep("\0", 32)))
    end)

    it("a sealed frame is encrypted and opens only under its key, direction and sequence number",
       function()
      local pk_d, sk_d = wire.kx_keypair()
      local pk_a = wire.kx_keypair()
      local k = wire.session(key, true, pk_d, sk_d, pk_a)
      local plain = wire.frame(3, "a distinctive value 0123456789")
      local f = wire.seal(plain, k, "D", 7)
      assert.are.equal(#plain + wire.MAC, #f)
      assert.are.equal("QC\3\3", f:sub(1, 4))
      assert.are.equal(plain:sub(5, 8), f:sub(5, 8)) -- the length, in clear
      assert.are.equal("\0\0\0\0", f:sub(9, 12)) -- no CRC of the plaintext
      assert.is_nil(f:find("distinctive", 1, true))
      assert.are.equal(plain:sub(13), assert(wire.open(f, k, "D", 7)):sub(13))
      assert_rejected(wire.open(f, k, "D", 6))
      assert_rejected(wire.open(f, k, "D", 8))
      assert_rejected(wire.open(f, k, "A", 7))
      assert_rejected(wire.open(f, k, "C", 7))
      assert_rejected(wire.open(f, key, "D", 7))
      -- every single flipped bit anywhere, header, payload or MAC, is caught
      for pos = 1, #f, 3 do
        local b = f:byte(pos)
        for bit = 0, 7, 3 do
          local bad = f:sub(1, pos - 1) .. string.char(b ~ (1 << bit)) .. f:sub(pos + 1)
          assert_rejected(wire.open(bad, k, "D", 7))
        end
      end
      -- as is a truncation, an extension, or a frame left in version 1
      assert_rejected(wire.open(f:sub(1, -2), k, "D", 7))
      assert_rejected(wire.open(f .. "\0", k, "D", 7))
      assert_rejected(wire.open(plain .. f:sub(-wire.MAC), k, "D", 7))
      -- AUTH's form: the whole frame associated data, its public key in clear
      local auth = wire.seal(wire.frame(9, pk_d), k, "D", 0, wire.HEADER + wire.KX)
      assert.are.equal(pk_d, auth:sub(wire.HEADER + 1, wire.HEADER + wire.KX))
      assert.is_truthy(wire.open(auth, k, "D", 0, wire.HEADER + wire.KX))
      local forged = auth:sub(1, wire.HEADER) .. pk_a .. auth:sub(-wire.MAC)
      assert_rejected(wire.open(forged, k, "D", 0, wire.HEADER + wire.KX))
    end)
  end)
end)
