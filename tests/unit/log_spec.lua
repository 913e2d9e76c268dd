-- Log records (src/base/log.c) through build/luahost_driver: log_format = "json"
-- writes one JSON object a line with ts, level, node, component, msg (and
-- hook where it applies), strings escaped; text stays the default; when
-- stderr is the journal (JOURNAL_STREAM), each line starts with <priority>.
local driver = require("driver")
local cjson = require("cjson")

local HOOKS = [[
return {
  on_start = function()
    qcluster.log("info", 'quote " backslash \\ newline \n tab \t bell \7 é bad \255 end')
    qcluster.log("warn", "a warning")
    qcluster.log("debug", "below the level: not written")
  end,
  on_elected = function() error("boom") end,
}
]]

-- The same without a newline in the message: text records are one a line.
local PLAIN_HOOKS = HOOKS:gsub("newline \\n ", "")

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

-- The records of a run (stderr), each decoded, or an error naming the line.
local function records(err)
  local out = {}
  for _, l in ipairs(lines(err)) do
    local ok, v = pcall(cjson.decode, l)
    assert(ok and type(v) == "table", "not a JSON object: " .. l)
    out[#out + 1] = v
  end
  return out
end

describe("log records", function()
  local dir
  before_each(function() dir = driver.tmpdir() end)
  after_each(function() driver.rmdir(dir) end)

  it("are one JSON object a line with log_format = \"json\", every string escaped", function()
    local rc, _, err = driver.hooks(dir, HOOKS, { "on_start", "on_elected" },
      'log_format = "json",')
    assert.are.equal(0, rc, err)
    local recs = records(err)
    assert.are.equal(3, #recs, err)
    for _, r in ipairs(recs) do
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", r.ts)
      assert.are.equal("a", r.node)
      assert.are.equal("hook", r.component)
      assert.are.equal("string", type(r.msg))
    end
    assert.are.equal("info", recs[1].level)
    -- the bytes come back as they were; the one that is not UTF-8 as U+FFFD
    assert.are.equal('quote " backslash \\ newline \n tab \t bell \7 é bad \u{FFFD} end',
      recs[1].msg)
    assert.is_nil(recs[1].hook) -- qcluster.log: no hook field
    assert.are.same({ "warn", "a warning" }, { recs[2].level, recs[2].msg })
    assert.are.equal("error", recs[3].level)
    assert.are.equal("on_elected", recs[3].hook)
    assert.matches("^on_elected failed: .*boom", recs[3].msg)
  end)

  it("stay text by default", function()
    local rc, _, err = driver.hooks(dir, PLAIN_HOOKS, { "on_start" })
    assert.are.equal(0, rc, err)
    local l = lines(err)
    assert.are.equal(2, #l, err)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z INFO  hook: quote \" backslash", l[1])
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z WARN  hook: a warning$", l[#l])
  end)

  -- Runs the driver with stderr on a file and JOURNAL_STREAM set to
  -- what stat(1) says of that file (match) or of another one.
  local function run_journal(format, match)
    driver.write(dir .. "/conf.lua", ([[
return { identifier = "a", listen_port = 7001, hooks = "hooks.lua", log_format = %q }]])
      :format(format))
    driver.write(dir .. "/hooks.lua", PLAIN_HOOKS)
    local errf, other = dir .. "/stderr", dir .. "/other"
    driver.write(errf, "")
    driver.write(other, "")
    local cmd = ("JOURNAL_STREAM=$(stat -c %%d:%%i %s) %s hooks %s on_start on_elected 2>>%s")
      :format(driver.quote(match and errf or other), driver.DRIVER,
        driver.quote(dir .. "/conf.lua"), driver.quote(errf))
    local p = io.popen(cmd)
    p:read("a")
    p:close()
    return lines(driver.slurp(errf))
  end

  it("start with the syslog priority when stderr is the journal", function()
    local l = run_journal("text", true)
    assert.are.equal(3, #l)
    assert.matches("^<6>%d%d%d%d.* INFO  hook: quote", l[1]) -- LOG_INFO
    assert.matches("^<4>.* WARN  hook: a warning$", l[2])   -- LOG_WARNING
    assert.matches("^<3>.* ERROR hook: on_elected failed", l[3]) -- LOG_ERR
    -- json: the prefix, then the object journald keeps as MESSAGE
    l = run_journal("json", true)
    assert.are.equal(3, #l)
    assert.are.equal("<6>", l[1]:sub(1, 3))
    assert.are.equal("warn", cjson.decode(l[2]:match("^<4>(.*)$")).level)
    assert.are.equal("on_elected", cjson.decode(l[3]:match("^<3>(.*)$")).hook)
  end)

  it("have no priority when JOURNAL_STREAM names another file", function()
    local l = run_journal("text", false)
    assert.are.equal(3, #l)
    for _, x in ipairs(l) do assert.matches("^%d%d%d%d%-", x) end
  end)
end)
