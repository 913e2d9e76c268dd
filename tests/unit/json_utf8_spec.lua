-- The one strict UTF-8 check (src/base/json.c: qc_json_is_utf8 on bytes,
-- qc_json_check_utf8 on JSON text before yajl decodes it) through the
-- test-only module qcmembers, and the member payloads that peers send.
-- Lua's own utf8.len (strict by default) is the independent oracle.
package.cpath = "./build/?.so;" .. package.cpath
local qm = require("qcmembers")

local NOT_UTF8 = "text is not valid UTF-8"

describe("qc_json_is_utf8", function()
  it("takes 1-, 2-, 3- and 4-byte sequences up to U+10FFFF, and NUL", function()
    for _, s in ipairs({ "", "plain ascii", "\xC3\xA9", "\xC2\x80", "\xDF\xBF", "\xE2\x82\xAC",
      "\xE0\xA0\x80", "\xED\x9F\xBF", "\xEE\x80\x80", "\xEF\xBF\xBF", "\xF0\x90\x80\x80",
      "\xF0\x9F\x98\x80", "\xF4\x8F\xBF\xBF", "a\0b" }) do
      assert.is_true(qm.is_utf8(s), ("%q"):format(s))
    end
  end)

  it("refuses overlong forms, surrogates, code points past U+10FFFF and cut sequences", function()
    for _, case in ipairs({
      { "overlong '/' in 2 bytes", "\xC0\xAF" },
      { "overlong U+007F", "\xC1\xBF" },
      { "overlong '/' in 3 bytes", "\xE0\x80\xAF" },
      { "overlong U+07FF", "\xE0\x9F\xBF" },
      { "overlong '/' in 4 bytes", "\xF0\x80\x80\xAF" },
      { "overlong U+FFFF", "\xF0\x8F\xBF\xBF" },
      { "the first surrogate U+D800", "\xED\xA0\x80" },
      { "the last surrogate U+DFFF", "\xED\xBF\xBF" },
      { "a CESU pair for U+10000", "\xED\xA0\x80\xED\xB0\x80" },
      { "U+110000", "\xF4\x90\x80\x80" },
      { "a 4-byte lead past F4", "\xF5\x80\x80\x80" },
      { "a 5-byte form", "\xF8\x88\x80\x80\x80" },
      { "FE and FF", "\xFE\xFF" },
      { "a lone continuation byte", "a\x80b" },
      { "2 bytes cut short", "\xC3" },
      { "3 bytes cut short", "\xE2\x82" },
      { "4 bytes cut short", "\xF0\x9F\x98" },
      { "a cut sequence before ASCII", "\xE2\x82x" },
    }) do
      assert.is_false(qm.is_utf8(case[2]), case[1])
      assert.is_false(qm.is_utf8("ok " .. case[2] .. " ok"), case[1])
    end
  end)

  it("agrees with Lua's utf8.len on 20000 random strings near the edges", function()
    -- Code points where the rules change (Lua's utf8.char also writes
    -- surrogates and values past U+10FFFF), stray bytes, and cuts.
    local points = { 0, 0x41, 0x7F, 0x80, 0x7FF, 0x800, 0xD7FF, 0xD800, 0xDBFF, 0xDC00, 0xDFFF,
      0xE000, 0xFFFF, 0x10000, 0x10FFFF, 0x110000, 0x1FFFFF }
    local bytes = { 0x80, 0xBF, 0xC0, 0xC1, 0xC2, 0xE0, 0xED, 0xF0, 0xF4, 0xF5, 0xFF }
    math.randomseed(20260112)
    local counts = { [true] = 0, [false] = 0 }
    for _ = 1, 20000 do
      local t = {}
      for i = 1, math.random(4) do
        t[i] = math.random(4) == 1 and string.char(bytes[math.random(#bytes)])
          or utf8.char(points[math.random(#points)])
      end
      local s = table.concat(t)
      if math.random(4) == 1 then s = s:sub(1, math.random(0, #s)) end
      local want = utf8.len(s) ~= nil
      counts[want] = counts[want] + 1
      assert.are.equal(want, qm.is_utf8(s), ("%q"):format(s))
    end
    -- the draw did test both answers
    assert.is_true(counts[true] > 2000 and counts[false] > 2000)
  end)
end)

describe("qc_json_check_utf8", function()
  local function bad(text, prefix, first)
    local ok, why = qm.check_utf8(text, prefix, first)
    assert.is_nil(ok, text)
    return why
  end

  it("passes UTF-8 text, escapes of any character and surrogate pairs", function()
    for _, text in ipairs({ "{}", '{"k": "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"}',
      '{"\xF4\x8F\xBF\xBF": ["\\ud83d\\ude00", "\\uD800\\uDC00", "\\udbff\\udfff", "\\u00e9"]}',
      '["\\"\\\\\\/\\b\\f\\n\\r\\t", "\\u0000", "\\uFFFF"]', '"\xED\x9F\xBF\xEE\x80\x80"',
      '{"a": 1.5e3, "b": true, "c": null} /* "\xC0" */ // "\xFF"' }) do
      assert.is_true(qm.check_utf8(text), text)
    end
  end)

  it("names the value whose text is not UTF-8, under the prefix", function()
    assert.are.equal("metadata.k: " .. NOT_UTF8, bad('{"k": "\xC0\xAF"}', "metadata"))
    assert.are.equal("k: " .. NOT_UTF8, bad('{"k": "\xE0\x80\xAF"}'))
    assert.are.equal("a.b[2]: " .. NOT_UTF8, bad('{"a": {"b": [1, "ok", "\xED\xA0\x80"]}}'))
    assert.are.equal("peers[3].metadata.x: " .. NOT_UTF8,
      bad('{"peers": [{}, {"metadata": {"x": 1}}, {"host": "h", "metadata": {"x": "\xF4\x90\x80\x80"}}]}',
        nil, 1))
    assert.are.equal("b: " .. NOT_UTF8, bad('{"a": "fine", "b": "cut \xE2\x82"}'))
    assert.are.equal("[1].y: " .. NOT_UTF8, bad('[{"x": 1}, {"y": "\xFF"}]'))
    assert.are.equal(NOT_UTF8, bad('"\xC0\xAF"'))
    assert.are.equal("p: " .. NOT_UTF8, bad('"\xC0\xAF"', "p"))
    -- a key is named as written, escapes and all
    assert.are.equal('a\\"b\\u00e9: ' .. NOT_UTF8, bad('{"a\\"b\\u00e9": "\xC0\xAF"}'))
  end)

  it("refuses an escape of a lone surrogate: yajl would decode it to CESU or '?'", function()
    for _, esc in ipairs({ "\\ud800", "\\uDBFF", "\\udc00", "\\uDFFF", "\\ud800\\u0041",
      "\\ud800\\ud800", "\\ude00\\ud83d", "\\ud800 \\udc00", "\\ud800\\", "\\ud800\\u12" }) do
      assert.are.equal("metadata.k: " .. NOT_UTF8, bad('{"k": "x' .. esc .. '"}', "metadata"), esc)
    end
  end)

  it("names the object holding a key that is not UTF-8", function()
    assert.are.equal("metadata: a key is not valid UTF-8", bad('{"\xC0\xAF": 1}', "metadata"))
    assert.are.equal("m: a key is not valid UTF-8", bad('{"m": {"ok": 1, "\\udc00": 2}}'))
    assert.are.equal("a key is not valid UTF-8", bad('{"x": 1, "\xED\xA0\x80": 2}'))
  end)

  it("never reads past the text and says something for any input", function()
    local x = 99
    local function rnd(n)
      x = (x * 1103515245 + 12345) % 2147483648
      return x % n + 1
    end
    local alphabet = { "{", "}", "[", "]", ",", ":", '"', "\\", "u", "d8", "dc", "/", "*", "\n",
      "\xC0", "\xED\xA0\x80", "\xC3\xA9", "a", "1" }
    for _ = 1, 5000 do
      local t = {}
      for i = 1, rnd(30) do t[i] = alphabet[rnd(#alphabet)] end
      local text = table.concat(t)
      local ok, why = qm.check_utf8(text, "p")
      assert.is_true(ok == true or type(why) == "string", text)
      if not ok then assert.is_truthy(utf8.len(why), why) end
    end
  end)
end)

describe("member payloads from peers", function()
  local function record(meta)
    return '{"identifier":"n","host":"h","port":9,"metadata":' .. meta .. "}"
  end

  it("a JOIN request or MEMBER update whose metadata is not UTF-8 is malformed", function()
    for _, meta in ipairs({ '{"k":"\xC0\xAF"}', '{"k":"\xE0\x80\xAF"}', '{"k":"\xED\xA0\x80"}',
      '{"k":"\xF4\x90\x80\x80"}', '{"k":"\\ud800"}', '{"k":"\\udc00"}', '{"\xC0\xAF":1}' }) do
      assert.is_nil(qm.rec_decode(record(meta)), meta)
      assert.is_nil(qm.request_decode('{"op":"update","id":1,"member":' .. record(meta) .. "}"),
        meta)
    end
    local r = assert(qm.rec_decode(record('{"k":"\xC3\xA9\\ud83d\\ude00"}')))
    assert.are.equal('{"k":"\xC3\xA9\xF0\x9F\x98\x80"}', r.metadata)
  end)
end)
