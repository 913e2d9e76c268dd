-- The layer rules of src/ (README "Layout and development"), checked by
-- `make lint`:
--   1. a file includes headers of its own folder or of a lower layer only,
--      by their layer path ("core/raft.h"); <qcluster.h> (the SDK) only
--      from sdk/ up;
--   2. the core is pure: nothing it includes, followed through src/'s
--      headers, is a header of libev, Lua, threads, unistd or time, and no
--      core file reads a clock;
--   3. no cycles between files: with the objects' symbols (nm), no module
--      calls into a module that calls back into it, however indirectly.
-- usage: lua5.4 scripts/check-layers.lua OBJDIR   (OBJDIR: build/pic)
-- Prints each violation and exits 1 when there is any.

local RANK = { base = 0, core = 1, store = 2, net = 2, lua = 2, api = 3, agent = 4, sdk = 5,
               cli = 6, main = 7 }
local FORBIDDEN_IN_CORE = { ["ev.h"] = true, ["lua.h"] = true, ["lauxlib.h"] = true,
                            ["lualib.h"] = true, ["unistd.h"] = true, ["time.h"] = true,
                            ["sys/time.h"] = true, ["pthread.h"] = true }
local CLOCKS = { "clock_gettime", "gettimeofday", "%f[%w_]time%s*%(", "qc_now_ms", "qc_wall_time",
                 "ev_now", "ev_time" }

local problems = {}
local function problem(fmt, ...) problems[#problems + 1] = string.format(fmt, ...) end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function layer_of(path)
  if path == "src/main.c" then return "main" end
  return path:match("^src/(%w+)/")
end

local files = {}
local ls = assert(io.popen("ls src/*/*.c src/*/*.h src/main.c"))
for path in ls:lines() do files[#files + 1] = path end
ls:close()

-- The includes of a file, quoted and angled, with their line numbers;
-- comments are blanked first so that a commented-out include does not count.
local includes = {}
local function includes_of(path)
  if includes[path] then return includes[path] end
  local text = read(path):gsub("/%*.-%*/", function(c) return (c:gsub("[^\n]", " ")) end)
  local list, n = {}, 0
  for line in (text .. "\n"):gmatch("(.-)\n") do
    n = n + 1
    local q = line:match('^%s*#%s*include%s+"([^"]+)"')
    local a = line:match("^%s*#%s*include%s+<([^>]+)>")
    if q then list[#list + 1] = { name = q, quoted = true, line = n } end
    if a then list[#list + 1] = { name = a, quoted = false, line = n } end
  end
  includes[path] = list
  return list
end

-- 1. who may include whom
for _, path in ipairs(files) do
  local mine = layer_of(path)
  if not RANK[mine] then problem("%s: src/%s/ is no layer (add it to RANK)", path, mine) end
  for _, inc in ipairs(includes_of(path)) do
    if inc.quoted then
      local theirs = inc.name:match("^(%w+)/[%w_]+%.h$")
      if not theirs or not RANK[theirs] then
        problem('%s:%d: include "%s" by its layer path (for example "core/raft.h")', path, inc.line,
                inc.name)
      elseif theirs ~= mine and RANK[theirs] >= RANK[mine] then
        problem('%s:%d: %s/ may not include "%s" (%s/ is not below it)', path, inc.line, mine,
                inc.name, theirs)
      end
    elseif inc.name == "qcluster.h" and RANK[mine] < RANK.sdk then
      problem("%s:%d: <qcluster.h> is the SDK, for sdk/ and above; the error codes are in " ..
              "<qcluster_errors.h>", path, inc.line)
    end
  end
end

-- 2. the pure core, through every src/ header it reaches
for _, path in ipairs(files) do
  if layer_of(path) == "core" then
    local seen, chain = {}, {}
    local function walk(file)
      if seen[file] then return end
      seen[file] = true
      chain[#chain + 1] = file
      for _, inc in ipairs(includes_of(file)) do
        if inc.quoted then
          local sub = "src/" .. inc.name
          if io.open(sub) then walk(sub) end
        elseif FORBIDDEN_IN_CORE[inc.name] then
          problem("%s: the core may not include <%s> (%s)", path, inc.name,
                  table.concat(chain, " -> "))
        end
      end
      chain[#chain] = nil
    end
    walk(path)
    if path:match("%.c$") then
      local code = read(path):gsub("/%*.-%*/", "")
      for _, pat in ipairs(CLOCKS) do
        if code:find(pat) then
          problem("%s: the core may not read a clock (%s); time comes in as an argument", path,
                  pat:gsub("%%f%[%%w_%]", ""):gsub("%%s%*%%", ""))
        end
      end
    end
  end
end

-- 3. no cycles, from the symbols each object defines and uses
local objdir = arg[1] or "build/pic"
local defined, uses, modules = {}, {}, {}
local nm = assert(io.popen("find " .. objdir .. " -name '*.o' | sort | xargs nm -A 2>/dev/null"))
for line in nm:lines() do
  local obj, kind, sym = line:match("^(.-%.o):%s*%x*%s+(%a)%s+(%S+)$")
  if obj then
    local module = obj:sub(#objdir + 2):gsub("%.o$", "")
    -- only objects of today's sources: a build from before a file moved
    -- leaves its old object behind
    local source = io.open("src/" .. module .. ".c")
    if source then source:close() end
    if source then
      modules[module] = true
      uses[module] = uses[module] or {}
      if kind == "U" then
        uses[module][sym] = true
      elseif kind:match("[TDBR]") then
        defined[sym] = module
      end
    end
  end
end
nm:close()
if not next(modules) then problem("no objects under %s: build first (make all)", objdir) end
local edges = {}
for module, syms in pairs(uses) do
  edges[module] = {}
  for sym in pairs(syms) do
    local other = defined[sym]
    if other and other ~= module then edges[module][other] = sym end
  end
end
-- Depth-first search; a grey node met again closes a cycle.
local colour, stack = {}, {}
local names = {}
for m in pairs(modules) do names[#names + 1] = m end
table.sort(names)
local function visit(m)
  colour[m] = "grey"
  stack[#stack + 1] = m
  local next_names = {}
  for o in pairs(edges[m] or {}) do next_names[#next_names + 1] = o end
  table.sort(next_names)
  for _, o in ipairs(next_names) do
    if colour[o] == "grey" then
      local cycle, on = {}, false
      for _, s in ipairs(stack) do
        if s == o then on = true end
        if on then cycle[#cycle + 1] = s end
      end
      cycle[#cycle + 1] = o
      local how = {}
      for i = 1, #cycle - 1 do
        how[#how + 1] = string.format("%s -(%s)-> %s", cycle[i], edges[cycle[i]][cycle[i + 1]],
                                      cycle[i + 1])
      end
      problem("cycle between files: %s", table.concat(how, ", "))
    elseif not colour[o] then
      visit(o)
    end
  end
  stack[#stack] = nil
  colour[m] = "black"
end
for _, m in ipairs(names) do
  if not colour[m] then visit(m) end
end

for _, p in ipairs(problems) do io.stderr:write(p, "\n") end
if #problems > 0 then
  io.stderr:write(string.format("%d layer problem(s); README \"Layout and development\" " ..
                                "draws the layers\n", #problems))
  os.exit(1)
end
print(string.format("layers: %d files, %d modules, no cycles", #files, #names))
