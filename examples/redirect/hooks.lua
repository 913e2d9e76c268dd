-- Redirect: every node points its own nginx at the leader's application,
-- found in the leader's metadata.server_port, and reloads nginx. A client
-- may use any node's proxy and always reaches the leader's application.
-- Nothing here blocks the agent: the reload runs through qcluster.exec.
local qcluster = require("qcluster")

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"

-- Where this node's nginx lives (run.sh prepares run/<identifier>/). On a
-- real machine: the directory of /etc/nginx/nginx.conf, and a reload
-- command of plain "nginx -s reload".
local function nginx_dir()
  return here .. "run/" .. qcluster.self().identifier
end

local function quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function reload_command(dir)
  return string.format("nginx -p %s -c %s -e %s -s reload", quote(dir .. "/"), quote(dir .. "/nginx.conf"),
    quote(dir .. "/logs/error.log"))
end

local function read(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Replaces leader.conf in one step (nginx may read it at any moment).
local function write(path, text)
  local f, err = io.open(path .. ".tmp", "w")
  if not f then return nil, err end
  f:write(text)
  f:close()
  return os.rename(path .. ".tmp", path)
end

-- Points nginx at address ("" while no leader is known) and reloads it,
-- unless it points there already (no reload without a real change).
local function point(address, why)
  local dir = nginx_dir()
  local line = string.format('set $leader "%s";\n', address)
  if read(dir .. "/leader.conf") == line then return end
  local ok, err = write(dir .. "/leader.conf", line)
  if not ok then
    qcluster.log("error", "cannot write " .. dir .. "/leader.conf: " .. tostring(err))
    return
  end
  qcluster.log("info", string.format("nginx now sends requests to %s (%s)", address, why))
  qcluster.exec(reload_command(dir), { timeout_ms = 5000 }, function(res)
    if res.status ~= 0 then
      qcluster.log("warn", "nginx reload failed (is nginx running?): " .. tostring(res.stderr))
    end
  end)
end

local function point_at(leader, why)
  local port = leader and leader.metadata and leader.metadata.server_port
  if not port then
    qcluster.log("warn", "the leader " .. leader.identifier .. " announces no server_port; nginx unchanged")
    return
  end
  -- The demo runs on one machine; across machines use leader.host instead.
  point("127.0.0.1:" .. tostring(math.tointeger(port) or port), why)
end

local hooks = {}

-- After a restart the leader may be known already; otherwise nginx answers
-- 503 until one is, but only when it had no leader.conf at all: one left
-- from before keeps serving through this node's restart.
function hooks.on_start()
  local leader = qcluster.get_leader_info()
  if leader then
    point_at(leader, "start")
  elseif not read(nginx_dir() .. "/leader.conf") then
    point("", "start, no leader known yet")
  end
end

-- While no leader is known (an election is running), nginx keeps the last
-- one: a short blip should not turn into errors for clients. A term is the
-- fencing token an application would check on writes.
function hooks.on_leader_change(ev)
  if not ev.leader then return end
  point_at(ev.leader, "leader " .. ev.leader.identifier .. ", term " .. ev.term)
end

return hooks
