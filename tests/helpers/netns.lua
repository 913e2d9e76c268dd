-- Network namespaces for integration specs (the chaos suite's approach,
-- tests/chaos/env.lua, made reusable): a hub namespace holding a bridge and
-- node namespaces each joined to it by a veth (eth0 inside). Every name
-- starts with the set's prefix and is removed by name; every process found
-- inside them is ended by its PID. The host's interfaces are never touched.
local A = require("agents")

local M = {}
M.__index = M

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function must(cmd)
  local out, code = A.sh(cmd)
  if code ~= 0 then error(string.format("command failed (%d): %s\n%s", code, cmd, out), 2) end
  return out
end

-- Why namespaces cannot be made here, or nil.
function M.cannot_run()
  local uid = A.sh("id -u"):gsub("%s", "")
  if uid ~= "0" then return "needs root to create network namespaces (uid " .. uid .. ")" end
  local _, code = A.sh("command -v ip")
  if code ~= 0 then return "needs 'ip' (Debian: iproute2)" end
  return nil
end

-- The PID of the Lua process running this spec (sh's parent).
function M.self_pid()
  return tonumber((A.sh("echo $PPID")))
end

-- A set of namespaces named PREFIX-hub, PREFIX-<name>; nothing exists yet.
function M.new(prefix)
  return setmetatable({ prefix = prefix, hub = prefix .. "-hub", names = {} }, M)
end

function M:ns(name) return self.prefix .. "-" .. name end

-- Our namespaces that exist now (also ones a crashed run left).
function M:list()
  local t = {}
  for line in A.sh("ip netns list"):gmatch("[^\n]+") do
    local ns = line:match("^(%S+)")
    if ns and ns:sub(1, #self.prefix + 1) == self.prefix .. "-" then t[#t + 1] = ns end
  end
  return t
end

-- Creates the hub with its bridge.
function M:create_hub()
  must("ip netns add " .. self.hub)
  must(string.format("ip -n %s link set lo up", self.hub))
  must(string.format("ip -n %s link add br0 type bridge", self.hub))
  must(string.format("ip -n %s link set br0 up", self.hub))
end

-- Creates namespace PREFIX-name on the bridge with address cidr on its eth0.
function M:add(name, cidr)
  local ns, veth = self:ns(name), ("v-" .. name):sub(1, 15)
  must("ip netns add " .. ns)
  self.names[#self.names + 1] = ns
  must(string.format("ip link add %s netns %s type veth peer name eth0 netns %s", veth, self.hub, ns))
  must(string.format("ip -n %s link set %s master br0 up", self.hub, veth))
  must(string.format("ip -n %s addr add %s dev eth0", ns, cidr))
  must(string.format("ip -n %s link set eth0 up", ns))
  must(string.format("ip -n %s link set lo up", ns))
  return ns
end

-- Runs a shell command inside namespace PREFIX-name: output, exit code.
function M:exec(name, cmd)
  return A.sh(string.format("ip netns exec %s sh -c %s", self:ns(name), q(cmd)))
end

-- Starts cmd inside PREFIX-name in the background, output to log; returns
-- its PID (`ip netns exec` execs the command, so the PID is the command's).
function M:spawn(name, cmd, log)
  local p = io.popen(string.format("exec ip netns exec %s %s >>%s 2>&1 </dev/null & echo $!", self:ns(name), cmd,
    q(log)))
  local pid = tonumber(p:read("l"))
  p:close()
  assert(pid, "could not start: " .. cmd)
  return pid
end

-- Ends every process inside our namespaces (by PID, up to three rounds, as
-- new ones may appear while it works) and deletes the namespaces, which takes
-- their veths and the bridge with them. Returns how many namespaces it found.
function M:cleanup()
  local names = self:list()
  for _ = 1, 3 do
    local left = 0
    for _, ns in ipairs(names) do
      for pid in A.sh("ip netns pids " .. ns):gmatch("%d+") do
        left = left + 1
        os.execute("kill -CONT " .. pid .. " 2>/dev/null; kill -KILL " .. pid .. " 2>/dev/null")
      end
    end
    if left == 0 then break end
    A.sleep(0.3)
  end
  for _, ns in ipairs(names) do A.sh("ip netns del " .. ns) end
  return #names
end

-- Removes the namespaces of earlier runs under base ("base-<pid>-...") whose
-- process is gone (a run killed before its teardown).
function M.reap_stale(base)
  for line in A.sh("ip netns list"):gmatch("[^\n]+") do
    local pid = line:match("^" .. base:gsub("%p", "%%%0") .. "%-(%d+)%-")
    if pid and not A.alive(pid) then M.new(base .. "-" .. pid):cleanup() end
  end
end

return M
