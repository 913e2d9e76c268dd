-- The man page (docs/qcluster.1) against the code it documents: every
-- config key lua/config.lua accepts, with its default, every hook, every
-- qcluster module function and every command. Text only; rendering and
-- installing are scripts/suite-install.sh's.
local config = dofile("lua/config.lua")
local agents = require("agents")

local function read(path)
  return assert(agents.read(path), "cannot read " .. path)
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

-- The names of a section's entries that fail ok(entry or nil, name).
local function undocumented(section_name, names, ok)
  local list, missing = entries(section_name), {}
  for _, name in ipairs(names) do
    if not ok(entry_for(list, name), name) then missing[#missing + 1] = name end
  end
  table.sort(missing)
  return missing
end

local function present(e) return e ~= nil end

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
    assert.are.same({}, undocumented("CONFIGURATION", keys, present))
  end)

  it("gives every default lua/config.lua fills in", function()
    local keys = {}
    for k in pairs(config.DEFAULTS) do keys[#keys + 1] = k end
    assert.are.same({}, undocumented("CONFIGURATION", keys, function(e, k)
      local v = tostring(config.DEFAULTS[k]):gsub("%p", "%%%0")
      return e and plain(e.text):find("Default[^.]*" .. v)
    end))
  end)

  it("documents every hook with its argument", function()
    assert.are.same({}, undocumented("HOOKS", config.HOOKS, function(e, h)
      return e and plain(e.tag):find(h .. "%(%w+%)")
    end))
  end)

  it("documents every function of the qcluster module", function()
    local fns = names_in("src/lua/luahost_module.c", "qcluster_fns%[%] = (%b{})", '{"([%w_]+)",')
    assert.is_true(#fns >= 10, "src/lua/luahost_module.c's qcluster_fns no longer parses")
    local kv = names_in("src/lua/luahost_kv.c", "luahost_kv_fns%[%] = (%b{})", '{"([%w_]+)",')
    assert.is_true(#kv >= 5, "src/lua/luahost_kv.c's luahost_kv_fns no longer parses")
    for _, f in ipairs(kv) do fns[#fns + 1] = "kv." .. f end
    assert.are.same({}, undocumented("HOOKS", fns, present))
  end)

  it("documents every command and its exit status", function()
    local cmds = names_in("src/cli/cli.c", "commands%[%] = (%b{})", '"([%w_]+)"')
    assert.is_true(#cmds >= 8, "src/cli/cli.c's commands[] no longer parses")
    cmds[#cmds + 1] = "agent"
    cmds[#cmds + 1] = "check"
    assert.are.same({}, undocumented("COMMANDS", cmds, present))
    assert.are.same({}, undocumented("EXIT STATUS", { "0", "1", "2", "3" }, present))
  end)

  it("names every option of the client's usage text and every environment variable", function()
    local opts = {}
    for o in read("src/cli/cli.c"):gmatch('\n%s*"  %-%-([%w-]+)') do opts[#opts + 1] = o end
    assert.is_true(#opts >= 4, "src/cli/cli.c's usage text no longer parses")
    assert.are.same({}, undocumented("OPTIONS", opts, present))
    local vars = {}
    local ls = assert(io.popen("ls src/*/*.c src/main.c"))
    for f in ls:lines() do
      for v in read(f):gmatch('getenv%("(QCLUSTER_[%w_]+)"%)') do vars[#vars + 1] = v end
    end
    ls:close()
    assert.is_true(#vars >= 2, "no getenv(\"QCLUSTER_...\") found in src/")
    assert.are.same({}, undocumented("ENVIRONMENT", vars, present))
  end)

  it("carries the version of include/qcluster_errors.h", function()
    local v = read("include/qcluster_errors.h"):match('#define QCLUSTER_VERSION "([^"]+)"')
    assert.is_truthy(v, "no QCLUSTER_VERSION in include/qcluster_errors.h")
    assert.are.equal(v, page:match('\n%.TH QCLUSTER 1 %S+ "QCluster ([^"]+)"'))
  end)
end)
