-- Checks a node's config table and fills in every default (see the contract's
-- config table). Pure apart from reading secret_file: it never starts
-- anything. src/lua/config.c runs the embedded copy; the unit specs require it.
-- Errors come back as "key: expected ..., got ..." for the caller to prefix
-- with the file name.
local M = {}

M.HOOKS = {
  "on_start", "on_elected", "on_demoted", "on_leader_change", "on_peer_up",
  "on_peer_down", "on_stop", "on_kv_change", "on_member_join", "on_member_leave",
  "on_health_change",
}

-- Documented defaults (README). Keys left out here have no default.
M.DEFAULTS = {
  listen_host = "127.0.0.1",
  api_host = "127.0.0.1",
  heartbeat_ms = 50,
  election_timeout_ms = 300,
  log_level = "info",
  log_format = "text",
  snapshot_entries = 100000,
  kv_max_key_bytes = 1024,
  kv_max_value_bytes = 1048576,
  role = "voter",
  priority = 1,
  preempt = false,
  preempt_delay_ms = 5000,
  max_voters = 5,
  leave_on_stop = false,
  exec_max = 64,
}

local KEYS = {
  "identifier", "listen_host", "listen_port", "peers", "metadata", "api_host",
  "api_port", "data_dir", "heartbeat_ms", "election_timeout_ms", "hook_timeout_ms",
  "hook_stuck_ms", "exec_max", "snapshot_entries", "kv_max_key_bytes", "kv_max_value_bytes",
  "hooks", "log_level", "log_format", "secret", "secret_file", "secret_previous",
  "secret_previous_file", "api_token", "role", "priority",
  "join", "preempt", "preempt_delay_ms", "max_voters", "leave_on_stop", "reap_after",
  "checks", "api_tls_cert", "api_tls_key", "api_tls_client_ca",
}

local KNOWN, IS_HOOK = {}, {}
for _, k in ipairs(KEYS) do KNOWN[k] = true end
for _, k in ipairs(M.HOOKS) do KNOWN[k], IS_HOOK[k] = true, true end

local PEER_KEYS = {
  identifier = true, host = true, port = true, metadata = true, role = true, priority = true,
}
local PEER_NAMES = { "identifier", "host", "port", "metadata", "role", "priority" }
local ROLES = { "voter", "witness", "learner" }
-- A member's priority: 0 never leads, higher is preferred (src/core/members.h).
local PRIORITY_MAX = 1000000
-- reap_after in seconds: ten years keeps its milliseconds well inside 64 bits.
local REAP_MAX = 315360000
local MAX_DEPTH = 32

-- The value JSON null decodes to (qcluster.null); set per check() call.
local null

local function fail(key, fmt, ...)
  local msg = select("#", ...) > 0 and fmt:format(...) or fmt
  error({ msg = key and (key .. ": " .. msg) or msg }, 0)
end

local function describe(v)
  local t = type(v)
  if v == nil then return "nothing" end
  if null ~= nil and v == null then return "null" end
  if t == "string" then
    if #v > 40 then v = v:sub(1, 37) .. "..." end
    return (("%q"):format(v):gsub("\\\n", "\\n"))
  end
  if math.type(v) == "integer" then return tostring(v) end
  if t == "number" then return ("%.14g"):format(v) end
  if t == "boolean" then return tostring(v) end
  return "a " .. t
end
M.describe = describe

local function is_list(t)
  local n = 0
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 then return false end
    n = n + 1
  end
  return n == #t
end

local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

local function suggest(key, names)
  local best, best_d = nil, 3
  for _, k in ipairs(names) do
    local d = distance(key, k)
    if d < best_d then best, best_d = k, d end
  end
  return best and (' (did you mean "%s"?)'):format(best) or ""
end

local ALL_NAMES = {}
for _, k in ipairs(KEYS) do ALL_NAMES[#ALL_NAMES + 1] = k end
for _, k in ipairs(M.HOOKS) do ALL_NAMES[#ALL_NAMES + 1] = k end

local function key_name(k)
  if type(k) == "string" then return k end
  return "[" .. describe(k) .. "]"
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    return key_name(a) < key_name(b)
  end)
  return keys
end

local function check_unknown(t, known, prefix, names)
  for _, k in ipairs(sorted_keys(t)) do
    if not known[k] then
      local name = prefix .. key_name(k)
      if type(k) == "string" and k:match("^on_") and (names == ALL_NAMES or names == M.HOOKS) then
        fail(name, "unknown hook (known: %s)", table.concat(M.HOOKS, ", "))
      end
      fail(name, "unknown key" .. (type(k) == "string" and suggest(k, names) or ""))
    end
  end
end

local function join_path(dir, p)
  if p:sub(1, 1) == "/" or dir == nil or dir == "" or dir == "." then return p end
  if dir:sub(-1) == "/" then return dir .. p end
  return dir .. "/" .. p
end
M.join_path = join_path

-- ---- value checks --------------------------------------------------------

local function as_integer(v)
  if math.type(v) == "integer" then return v end
  if math.type(v) == "float" then return math.tointeger(v) end
  return nil
end

local function integer(key, v, lo, hi)
  local i = as_integer(v)
  if i == nil or i < lo or (hi and i > hi) then
    local range = hi and ("%d..%d"):format(lo, hi) or (">= %d"):format(lo)
    fail(key, "expected an integer %s, got %s", range, describe(v))
  end
  return i
end

local function string_value(key, v, what)
  if type(v) ~= "string" or v == "" then
    fail(key, "expected %s, got %s", what or "a non-empty string", describe(v))
  end
  return v
end

local function identifier(key, v)
  if type(v) ~= "string" or not v:match("^[%w_%.%-]+$") or #v > 64 then
    fail(key, "expected an identifier (1 to 64 letters, digits, '_', '-', '.'), got %s",
      describe(v))
  end
  return v
end

local function host(key, v)
  if type(v) ~= "string" or v == "" or v:match("%s") then
    fail(key, "expected a host name or address, got %s", describe(v))
  end
  return v
end

local function port(key, v)
  return integer(key, v, 1, 65535)
end

local function one_of(key, v, choices)
  for _, c in ipairs(choices) do
    if v == c then return v end
  end
  local quoted = {}
  for i, c in ipairs(choices) do quoted[i] = ('"%s"'):format(c) end
  fail(key, "expected one of %s, got %s", table.concat(quoted, ", "), describe(v))
end

local function boolean(key, v)
  if type(v) ~= "boolean" then fail(key, "expected true or false, got %s", describe(v)) end
  return v
end

-- A value the agent can announce as JSON; returns a plain copy.
local function json_value(path, v, depth)
  local t = type(v)
  if t == "string" or t == "boolean" then return v end
  if null ~= nil and v == null then return v end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      fail(path, "expected a finite number, got %s", describe(v))
    end
    return v
  end
  if t ~= "table" then
    fail(path, "expected a JSON value (string, number, boolean or table), got %s", describe(v))
  end
  if depth > MAX_DEPTH then fail(path, "expected at most %d levels of nesting", MAX_DEPTH) end
  local copy = {}
  if next(v) ~= nil and is_list(v) then
    for i, x in ipairs(v) do copy[i] = json_value(("%s[%d]"):format(path, i), x, depth + 1) end
    return copy
  end
  for _, k in ipairs(sorted_keys(v)) do
    if type(k) ~= "string" then
      fail(path, "expected a table with string keys or a list, got key %s", describe(k))
    end
    copy[k] = json_value(path .. "." .. k, v[k], depth + 1)
  end
  return copy
end

local function metadata(key, v)
  if v == nil then return {} end
  if type(v) ~= "table" then
    fail(key, "expected a table (a JSON object), got %s", describe(v))
  end
  if next(v) ~= nil and is_list(v) then
    fail(key, "expected a table of named fields (a JSON object), got a list")
  end
  return json_value(key, v, 1)
end
M.metadata = metadata

local function strip_null(t)
  local copy = {}
  for k, v in pairs(t) do
    if v ~= null then copy[k] = v end
  end
  return copy
end

local function list(key, v, what)
  if v == nil then return {} end
  if type(v) ~= "table" or not is_list(v) then
    fail(key, "expected a list of %s, got %s", what, describe(v))
  end
  return v
end

local function peers(c, own)
  local out, seen = {}, {}
  for i, p in ipairs(list("peers", c.peers, "peers {host, port, identifier, metadata}")) do
    local key = ("peers[%d]"):format(i)
    if type(p) ~= "table" then
      fail(key, "expected a table {host, port, identifier, metadata}, got %s", describe(p))
    end
    p = strip_null(p)
    check_unknown(p, PEER_KEYS, key .. ".", PEER_NAMES)
    local id = identifier(key .. ".identifier", p.identifier)
    if id == own then
      fail(key .. ".identifier", "expected an identifier other than this node's own, got %s",
        describe(id))
    end
    if seen[id] then
      fail(key .. ".identifier", "expected a unique identifier, got %s (also peers[%d])",
        describe(id), seen[id])
    end
    seen[id] = i
    if i > 31 then fail("peers", "expected at most 31 peers (32 voters), got %d", #c.peers) end
    out[i] = {
      identifier = id,
      host = host(key .. ".host", p.host),
      port = port(key .. ".port", p.port),
      metadata = metadata(key .. ".metadata", p.metadata),
      role = one_of(key .. ".role", p.role == nil and "voter" or p.role, ROLES),
      priority = integer(key .. ".priority", p.priority == nil and 1 or p.priority, 0,
        PRIORITY_MAX),
    }
  end
  return out
end

-- "host:port" or "[v6]:port" -> host (brackets dropped), port; nil when
-- malformed. The same rules as qc_member_split_addr in src/core/members.c.
local function split_host_port(s)
  if type(s) ~= "string" then return nil end
  local h, digits = s:match("^(.+):(%d+)$")
  if not h or #digits > 5 or h:find("[%s%c]") then return nil end
  local p = tonumber(digits)
  if p < 1 or p > 65535 then return nil end
  if h:sub(1, 1) == "[" then
    h = h:match("^%[([^%[%]]+)%]$")
  elseif h:find("[:%[%]]") then
    h = nil
  end
  if not h or #h > 255 then return nil end
  return h, p
end
M.split_host_port = split_host_port

local function join_list(v)
  local out = {}
  for i, hp in ipairs(list("join", v, '"host:port" strings')) do
    local key = ("join[%d]"):format(i)
    local h = split_host_port(hp)
    if not h then
      fail(key, 'expected "host:port", got %s', describe(hp))
    end
    out[i] = hp
  end
  return out
end

-- A secret is a key, not a document: a larger file is a wrong path (a log,
-- /dev/zero), refused before it is read whole.
local SECRET_MAX = 4096

local function read_secret(path, key)
  key = key or "secret_file"
  local f, err = io.open(path, "rb")
  if not f then fail(key, "cannot read %s", err) end
  local s = f:read(SECRET_MAX + 1)
  f:close()
  if s and #s > SECRET_MAX then
    fail(key, "expected at most %d bytes, got a larger file %s", SECRET_MAX, path)
  end
  s = s and s:gsub("[\r\n]+$", "")
  if not s or s == "" then fail(key, "expected a non-empty file, got %s empty", path) end
  return s
end

-- One key given inline (name) or in a file (name .. "_file"), or nil.
local function one_secret(c, out, dir, name)
  local file = name .. "_file"
  if c[name] ~= nil and c[file] ~= nil then
    fail(file, "expected either %s or %s, got both", name, file)
  end
  if c[name] ~= nil then return string_value(name, c[name]) end
  if c[file] == nil then return nil end
  out[file] = join_path(dir, string_value(file, c[file], "a file name"))
  return read_secret(out[file], file)
end

local function timing(c, out)
  out.heartbeat_ms = integer("heartbeat_ms", c.heartbeat_ms, 1, 60000)
  local min = 3 * out.heartbeat_ms
  local v = c.election_timeout_ms
  local i = as_integer(v)
  if i == nil or i < min or i > 600000 then
    fail("election_timeout_ms", "expected an integer %d..600000 (>= 3 * heartbeat_ms), got %s%s",
      min, describe(v), c.election_timeout_ms_default and " (the default)" or "")
  end
  out.election_timeout_ms = i
  -- Hooks run on the event loop: by default one may take a third of an
  -- election timeout, so a runaway hook cannot cost the node its leadership.
  local hook = c.hook_timeout_ms
  if hook == nil then hook = math.max(1, i // 3) end
  out.hook_timeout_ms = integer("hook_timeout_ms", hook, 1, 3600000)
  -- A hook running this long (blocked in C: Lua stops at hook_timeout_ms)
  -- makes the node unhealthy, so a leader hands over: a few election
  -- timeouts, so that the cluster never waits on a hook for long.
  local stuck = c.hook_stuck_ms
  if stuck == nil then stuck = 3 * i end
  out.hook_stuck_ms = integer("hook_stuck_ms", stuck, 1, 3600000)
  -- each exec child holds a process and three descriptors: bound them
  out.exec_max = integer("exec_max", c.exec_max, 1, 10000)
  out.snapshot_entries = integer("snapshot_entries", c.snapshot_entries, 1, 1000000000)
  out.kv_max_key_bytes = integer("kv_max_key_bytes", c.kv_max_key_bytes, 1, 65536)
  -- a write a follower forwards travels in one frame (8 MiB): keep a value
  -- well under it
  out.kv_max_value_bytes = integer("kv_max_value_bytes", c.kv_max_value_bytes, 0, 4194304)
end

local function api(c, out)
  out.api_host = host("api_host", c.api_host)
  local v = c.api_port
  if v == nil then
    v = out.listen_port + 1000
    if v > 65535 then
      fail("api_port", "expected an integer 0..65535, got nothing (listen_port + 1000 = %d;"
        .. " set api_port)", v)
    end
  end
  out.api_port = integer("api_port", v, 0, 65535)
end

local function secrets(c, out, dir)
  out.secret = one_secret(c, out, dir, "secret")
  -- A rotation moves from secret_previous to secret: without a secret there
  -- is nothing to rotate to, and the same key twice is a rotation not made
  -- (the new key was not put in), so both are refused rather than guessed.
  local prev = one_secret(c, out, dir, "secret_previous")
  local key = c.secret_previous_file ~= nil and "secret_previous_file" or "secret_previous"
  if prev ~= nil and out.secret == nil then
    fail(key, "expected secret or secret_file too (the key rotated to), got none")
  end
  if prev ~= nil and prev == out.secret then
    fail(key, "expected a key other than secret (the one rotated away from), got the same")
  end
  out.secret_previous = prev
  if c.api_token ~= nil then out.api_token = string_value("api_token", c.api_token) end
end

-- TLS on the API: PEM file names, relative to the config. The agent reads
-- and checks the files themselves (src/net/tls.c), so `qcluster check` says
-- which one is unreadable, not PEM, or does not match.
local function api_tls(c, out, dir)
  for _, k in ipairs({ "api_tls_cert", "api_tls_key", "api_tls_client_ca" }) do
    if c[k] ~= nil then out[k] = join_path(dir, string_value(k, c[k], "a file name")) end
  end
  if (out.api_tls_cert == nil) ~= (out.api_tls_key == nil) then
    local missing = out.api_tls_cert == nil and "api_tls_cert" or "api_tls_key"
    fail(missing, "expected a PEM file name (api_tls_cert and api_tls_key go together), got nothing")
  end
  if out.api_tls_client_ca ~= nil and out.api_tls_cert == nil then
    fail("api_tls_client_ca", "expected api_tls_cert and api_tls_key too (client certificates"
      .. " are asked for over TLS only)")
  end
end

local function membership(c, out)
  out.role = one_of("role", c.role, ROLES)
  out.priority = integer("priority", c.priority, 0, PRIORITY_MAX)
  -- join = {} (empty): wait for `qcluster join` rather than form a cluster
  if c.join ~= nil then out.join = join_list(c.join) end
  out.preempt = boolean("preempt", c.preempt)
  out.preempt_delay_ms = integer("preempt_delay_ms", c.preempt_delay_ms, 0, 3600000)
  out.max_voters = integer("max_voters", c.max_voters, 1, 255)
  out.leave_on_stop = boolean("leave_on_stop", c.leave_on_stop)
  local r = c.reap_after
  if r ~= nil and r ~= false then
    if type(r) ~= "number" or r <= 0 or r ~= r or r == math.huge then
      fail("reap_after", "expected a number of seconds > 0 or false, got %s", describe(r))
    end
    if r > REAP_MAX then
      fail("reap_after", "expected at most %d seconds (ten years), got %s", REAP_MAX, describe(r))
    end
    out.reap_after = r
  end
end

-- ---- health checks (README "Health checks") ------------------------------

M.CHECK_KINDS = { "exec", "http", "tcp", "ttl_ms", "lua" }
local CHECK_NAMES = { "name", "exec", "http", "tcp", "ttl_ms", "lua", "interval_ms", "timeout_ms",
  "rise", "fall", "retry_ms" }
local CHECK_KEYS = {}
for _, k in ipairs(CHECK_NAMES) do CHECK_KEYS[k] = true end
M.CHECK_DEFAULTS = { interval_ms = 1000, rise = 2, fall = 2 }
local CHECK_MAX_MS = 86400000
local CHECKS_MAX = 64

-- "http://host[:port][/path]" -> host, port, path; raises naming key.
local function http_url(key, v)
  if type(v) ~= "string" then fail(key, 'expected a URL "http://host:port/path", got %s', describe(v)) end
  if v:match("^[Hh][Tt][Tt][Pp][Ss]://") then
    fail(key, "https is not supported by http checks, got %s (check a plain http port, or use"
      .. " an exec check such as curl -fsS)", describe(v))
  end
  local hostport, path = v:match("^http://([^/?#]+)(.*)$")
  if path == "" then path = "/" end
  local h, p
  if hostport then
    h, p = split_host_port(hostport)
    if not h and not hostport:find("[:%[%]%s%c]") then h, p = hostport, 80 end
  end
  if not h or path:sub(1, 1) ~= "/" or path:find("[%s%c]") or #v > 2048 then
    fail(key, 'expected a URL "http://host:port/path", got %s', describe(v))
  end
  return h, p, path
end

-- The kind a check names, and its resolved fields into out.
local function check_kind(key, t, out, json)
  local kinds = {}
  for _, k in ipairs(M.CHECK_KINDS) do
    if t[k] ~= nil then kinds[#kinds + 1] = k end
  end
  if #kinds == 0 then
    fail(key, "expected exactly one kind (exec, http, tcp, ttl_ms or lua), got none")
  end
  if #kinds > 1 then
    fail(key .. "." .. kinds[2], "expected exactly one kind (exec, http, tcp, ttl_ms or lua),"
      .. " got both %s and %s", kinds[1], kinds[2])
  end
  local kind = kinds[1]
  local k, v = key .. "." .. kind, t[kind]
  out.kind = kind == "ttl_ms" and "ttl" or kind
  if kind == "exec" then
    out.target = string_value(k, v, "a shell command")
  elseif kind == "http" then
    out.host, out.port, out.path = http_url(k, v)
    out.target = v
  elseif kind == "tcp" then
    out.host, out.port = split_host_port(v)
    if not out.host then fail(k, 'expected "host:port", got %s', describe(v)) end
    out.target = v
  elseif kind == "ttl_ms" then
    out.ttl_ms = integer(k, v, 1, CHECK_MAX_MS)
    out.target = tostring(out.ttl_ms)
  else
    -- A function (Lua config), or the name of one in the hooks file's
    -- checks table (any config; checked once the hooks file is loaded).
    if type(v) == "string" and v:match("^[%w_%.%-]+$") then
      out.lua_name = v
    elseif type(v) ~= "function" then
      fail(k, "expected a function%s, or the name of a function in the hooks file's checks"
        .. " table, got %s", json and " (needs a Lua config)" or "", describe(v))
    end
    out.lua = v
    out.target = type(v) == "string" and v or "function"
  end
end

local function check_entry(i, t, seen, json)
  local key = ("checks[%d]"):format(i)
  if type(t) ~= "table" then
    fail(key, "expected a table {name, exec|http|tcp|ttl_ms|lua, interval_ms, timeout_ms,"
      .. " rise, fall}, got %s", describe(t))
  end
  t = strip_null(t)
  check_unknown(t, CHECK_KEYS, key .. ".", CHECK_NAMES)
  local out = {}
  local name = t.name
  if type(name) ~= "string" or not name:match("^[%w_%.%-]+$") or #name > 64 then
    fail(key .. ".name", "expected a name (1 to 64 letters, digits, '_', '-', '.'), got %s",
      describe(name))
  end
  if seen[name] then
    fail(key .. ".name", "expected a unique name, got %s (also checks[%d])", describe(name),
      seen[name])
  end
  seen[name] = i
  out.name = name
  check_kind(key, t, out, json)
  local d = M.CHECK_DEFAULTS
  out.interval_ms = integer(key .. ".interval_ms", t.interval_ms == nil and d.interval_ms
    or t.interval_ms, 10, CHECK_MAX_MS)
  -- t[field], at most the interval (the interval when unset).
  local function within_interval(field)
    local v = t[field] == nil and out.interval_ms or t[field]
    local n = as_integer(v)
    if n == nil or n < 1 or n > out.interval_ms then
      fail(key .. "." .. field, "expected an integer 1..%d (at most interval_ms), got %s",
        out.interval_ms, describe(v))
    end
    return n
  end
  -- One run at a time: a run must end before the next one is due.
  out.timeout_ms = within_interval("timeout_ms")
  out.rise = integer(key .. ".rise", t.rise == nil and d.rise or t.rise, 1, 1000000)
  out.fall = integer(key .. ".fall", t.fall == nil and d.fall or t.fall, 1, 1000000)
  -- How soon a run follows one that disagreed with the status (HAProxy's
  -- fastinter): a refused connect is confirmed in milliseconds, while
  -- timeouts still take fall times timeout_ms.
  out.retry_ms = within_interval("retry_ms")
  return out
end

local function checks(v, json)
  local out, seen = {}, {}
  for i, t in ipairs(list("checks", v, "checks {name, exec|http|tcp|ttl_ms|lua, ...}")) do
    if i > CHECKS_MAX then fail("checks", "expected at most %d checks, got %d", CHECKS_MAX, #v) end
    out[i] = check_entry(i, t, seen, json)
  end
  return out
end

local function inline_hooks(c, out, json)
  for _, name in ipairs(M.HOOKS) do
    local f = c[name]
    if f ~= nil then
      if type(f) ~= "function" then
        fail(name, "expected a function%s, got %s",
          json and " (inline hooks need a Lua config)" or "", describe(f))
      end
      out[name] = f
    end
  end
end

local function check(raw, opts)
  if type(raw) ~= "table" then
    fail(nil, "expected the config to be a table (a Lua file returning a table, or a"
      .. " JSON object), got %s", describe(raw))
  end
  if next(raw) ~= nil and is_list(raw) then
    fail(nil, "expected the config to be a table of named keys, got a list")
  end
  local dir = opts.dir or "."
  local c = strip_null(raw)
  check_unknown(c, KNOWN, "", ALL_NAMES)
  for k, v in pairs(M.DEFAULTS) do
    if c[k] == nil then
      c[k] = v
      if k == "election_timeout_ms" then c.election_timeout_ms_default = true end
    end
  end
  local out = {}
  out.identifier = identifier("identifier", c.identifier)
  out.listen_host = host("listen_host", c.listen_host)
  out.listen_port = port("listen_port", c.listen_port)
  out.peers = peers(c, out.identifier)
  out.metadata = metadata("metadata", c.metadata)
  api(c, out)
  local data_dir = c.data_dir == nil and ("qcluster-data/" .. out.identifier)
    or string_value("data_dir", c.data_dir, "a directory name")
  out.data_dir = join_path(dir, data_dir)
  timing(c, out)
  if c.hooks ~= nil then out.hooks = join_path(dir, string_value("hooks", c.hooks, "a file name")) end
  out.log_level = one_of("log_level", c.log_level, { "debug", "info", "warn", "error" })
  out.log_format = one_of("log_format", c.log_format, { "text", "json" })
  secrets(c, out, dir)
  api_tls(c, out, dir)
  membership(c, out)
  out.checks = checks(c.checks, opts.json)
  inline_hooks(c, out, opts.json)
  return out
end

-- check(raw, opts) -> resolved table, or nil and "key: expected ..., got ...".
-- opts: dir (the config's directory), null (what JSON null decoded to),
-- json (true for a JSON config: only changes messages).
function M.check(raw, opts)
  opts = opts or {}
  null = opts.null
  local ok, res = pcall(check, raw, opts)
  null = nil
  if ok then return res end
  if type(res) == "table" then return nil, res.msg end
  error(res, 0)
end

-- check_hooks(t) -> true, or nil and a message: a hooks file must return a
-- table whose keys are known hook names and whose values are functions, and
-- optionally checks = {NAME = function(done) ... end} for lua checks.
function M.check_hooks(t)
  local ok, err = pcall(function()
    if type(t) ~= "table" then
      fail(nil, "expected the hooks file to return a table of on_* functions, got %s",
        describe(t))
    end
    local known = setmetatable({ checks = true }, { __index = IS_HOOK })
    check_unknown(t, known, "", M.HOOKS)
    for _, name in ipairs(M.HOOKS) do
      if t[name] ~= nil and type(t[name]) ~= "function" then
        fail(name, "expected a function, got %s", describe(t[name]))
      end
    end
    if t.checks ~= nil then
      if type(t.checks) ~= "table" then
        fail("checks", "expected a table of check functions by name, got %s", describe(t.checks))
      end
      for _, k in ipairs(sorted_keys(t.checks)) do
        if type(k) ~= "string" or type(t.checks[k]) ~= "function" then
          fail("checks." .. key_name(k), "expected a function, got %s", describe(t.checks[k]))
        end
      end
    end
  end)
  if ok then return true end
  if type(err) == "table" then return nil, err.msg end
  error(err, 0)
end

-- check_lua_checks(conf, hooks) -> true, or nil and a message: every lua
-- check of the resolved config that names a function finds it in the hooks
-- table's checks (hooks: the merged hooks table, maybe nil).
function M.check_lua_checks(conf, hooks)
  local fns = type(hooks) == "table" and type(hooks.checks) == "table" and hooks.checks or {}
  for i, c in ipairs(type(conf) == "table" and conf.checks or {}) do
    if c.lua_name and type(fns[c.lua_name]) ~= "function" then
      return nil, ('checks[%d].lua: expected a function named %q in the hooks file\'s checks'
        .. " table, got none"):format(i, c.lua_name)
    end
  end
  return true
end

return M
