-- The man page (docs/qcluster.1) against the code it documents: every
-- config key lua/config.lua accepts, with its default, every hook, every
-- qcluster module function and every command. Text only; rendering and
-- installing are scripts/suite-install.sh's.
local config = dofile("lua/config.lua")

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local page = read("docs/qcluster.1")

-- The body of one .SH section, up to the next .SH.
local function section(name)
  local body = page:match("\n%.SH " .. name .. "\n(.-)\n%.SH ")
  assert(body, "no section " .. name .. " in docs/qcluster.1")
  return body
end

-- A section's .TP entries: {tag = the line after .TP, text = the lines up
-- to the next .TP, .PP or the section's end}.
local function entries(name)
  local out, cur, want_tag = {}, nil, false
  for line in (section(name) .. "\n"):gmatch("([^\n]*)\n") do
    if line == ".TP" then
      want_tag = true
    elseif line == ".PP" then
      cur = nil
    elseif want_tag then
      cur, want_tag = { tag = line, text = "" }, false
      out[#out + 1] = cur
    elseif cur then
      cur.text = cur.text .. line .. "\n"
    end
  end
  return out
end

-- The entry whose tag names word (a whole word, so "preempt" is not found
-- in "preempt_delay_ms"); nil when none.
local function entry_for(list, word)
  for _, e in ipairs(list) do
    for w in e.tag:gmatch("[%w_%.]+") do
      if w == word then return e end
    end
  end
  return nil
end

-- The string values of a Lua table constructor named by pattern in a file.
local function names_in(path, pattern, item)
  local block = read(path):match(pattern)
  assert(block, path .. ": no match for " .. pattern)
  local out = {}
  for name in block:gmatch(item) do out[#out + 1] = name end
  return out
end

-- The arguments of a macro line; a quoted one keeps its spaces.
local function macro_args(rest)
  local args, pos = {}, 1
  while true do
    local q, e = rest:match('^%s*"([^"]*)"?()', pos)
    if not q then q, e = rest:match("^%s*(%S+)()", pos) end
    if not q then return args end
    args[#args + 1], pos = q, e
  end
end

-- Roff lines as a reader sees them: font macros applied (BR, IR, ...
-- alternate fonts with no space between their arguments), escapes gone.
local function plain(text)
  local out = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    local macro, rest = line:match("^%.(%u%u?)%s*(.*)$")
    if macro then line = table.concat(macro_args(rest), #macro == 2 and "" or " ") end
    out[#out + 1] = line
  end
  return (table.concat(out, " "):gsub("\\f[BIRP]", ""):gsub("\\%-", "-"):gsub("\\&", ""))
end

describe("man page qcluster(1)", function()
  it("documents every config key lua/config.lua accepts", function()
    local keys = names_in("lua/config.lua", "\nlocal KEYS = (%b{})", '"([%w_]+)"')
    assert.is_true(#keys > 20, "lua/config.lua's KEYS list no longer parses")
    local list = entries("CONFIGURATION")
    local missing = {}
    for _, k in ipairs(keys) do
      if not entry_for(list, k) then missing[#missing + 1] = k end
    end
    assert.are.same({}, missing)
  end)

  it("gives every default lua/config.lua fills in", function()
    local list = entries("CONFIGURATION")
    local wrong = {}
    for k, v in pairs(config.DEFAULTS) do
      local e = entry_for(list, k)
      local text = e and plain(e.text) or ""
      if not text:find("Default[^.]*" .. tostring(v):gsub("%p", "%%%0")) then
        wrong[#wrong + 1] = ("%s = %s"):format(k, tostring(v))
      end
    end
    table.sort(wrong)
    assert.are.same({}, wrong)
  end)

  it("documents every hook with its argument", function()
    local list = entries("HOOKS")
    local missing = {}
    for _, h in ipairs(config.HOOKS) do
      local e = entry_for(list, h)
      if not (e and plain(e.tag):find(h .. "%(%w+%)")) then missing[#missing + 1] = h end
    end
    assert.are.same({}, missing)
  end)

  it("documents every function of the qcluster module", function()
    local fns = names_in("src/luahost.c", "qcluster_fns%[%] = (%b{})", '{"([%w_]+)",')
    assert.is_true(#fns >= 10, "src/luahost.c's qcluster_fns no longer parses")
    for f in read("src/luahost.c"):gmatch('{"([%w_]+)", l_kv_[%w_]+}') do
      fns[#fns + 1] = "kv." .. f
    end
    local list = entries("HOOKS")
    local missing = {}
    for _, f in ipairs(fns) do
      if not entry_for(list, f) then missing[#missing + 1] = f end
    end
    assert.are.same({}, missing)
  end)

  it("documents every command and its exit status", function()
    local cmds = names_in("src/cli.c", "commands%[%] = (%b{})", '"([%w_]+)"')
    assert.is_true(#cmds >= 8, "src/cli.c's commands[] no longer parses")
    cmds[#cmds + 1] = "agent"
    cmds[#cmds + 1] = "check"
    local list = entries("COMMANDS")
    local missing = {}
    for _, c in ipairs(cmds) do
      local e = entry_for(list, c)
      if not e then missing[#missing + 1] = c end
    end
    assert.are.same({}, missing)
    for _, code in ipairs({ "0", "1", "2", "3" }) do
      assert.is_truthy(entry_for(entries("EXIT STATUS"), code), "exit status " .. code)
    end
  end)

  it("names every option and environment variable of the client", function()
    local opts = entries("OPTIONS")
    for _, o in ipairs({ "api", "json", "cas", "stale", "help" }) do
      local found = false
      for _, e in ipairs(opts) do
        if plain(e.tag):find("%-%-" .. o .. "%f[^%w]") then found = true end
      end
      assert.is_true(found, "--" .. o)
    end
    for _, v in ipairs({ "QCLUSTER_API", "QCLUSTER_API_TOKEN" }) do
      assert.is_truthy(entry_for(entries("ENVIRONMENT"), v), v)
    end
  end)
end)
