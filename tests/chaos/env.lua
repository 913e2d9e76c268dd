-- The chaos suite's world: network namespaces (qcchaos-hub with a bridge,
-- qcchaos-n1..n5 with one veth each), addresses 10.213.0.0/24 that exist
-- only inside them, nftables tables of our own inside each node namespace,
-- the delaying proxies and the agents. Everything it creates carries the
-- qcchaos prefix and is removed by name; every process it starts is ended
-- by its PID. It never touches the host's own interfaces, addresses or
-- ruleset.
local M = {}

M.PREFIX = "qcchaos"
M.HUB = M.PREFIX .. "-hub"
M.BRIDGE = M.PREFIX .. "-br"
M.HUB_ADDR = "10.213.0.254"
M.CLUSTER_PORT = 7000
M.API_PORT = 8000
M.PROXY_BASE = 7100 -- node j's connections to node i arrive at i:7100+j

function M.ns(i) return M.PREFIX .. "-n" .. i end
function M.addr(i) return "10.213.0." .. i end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
M.q = q

-- Runs a shell command; returns its output and exit code.
function M.sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

-- Runs a command that must succeed.
function M.must(cmd)
  local out, code = M.sh(cmd)
  if code ~= 0 then error(string.format("command failed (%d): %s\n%s", code, cmd, out), 2) end
  return out
end

function M.write(path, text)
  local f = assert(io.open(path, "wb"))
  assert(f:write(text))
  f:close()
end

-- Writes atomically (the proxies read their control files while we write).
function M.write_atomic(path, text)
  M.write(path .. ".tmp", text)
  assert(os.rename(path .. ".tmp", path))
end

function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Why this machine cannot run the suite, or nil.
function M.cannot_run()
  local uid = M.sh("id -u"):gsub("%s", "")
  if uid ~= "0" then
    return "the chaos suite must run as root: it creates network namespaces, a bridge and nftables rules" ..
      " (uid " .. uid .. ")"
  end
  for _, tool in ipairs { "ip", "nft" } do
    local _, code = M.sh("command -v " .. tool)
    if code ~= 0 then return "the chaos suite needs '" .. tool .. "' (Debian: iproute2, nftables)" end
  end
  local probe = M.PREFIX .. "-probe"
  M.sh("ip netns del " .. probe)
  local out, code = M.sh("ip netns add " .. probe)
  if code ~= 0 then return "cannot create a network namespace: " .. out end
  out, code = M.sh("ip netns exec " .. probe .. " nft add table inet probe")
  M.sh("ip netns del " .. probe)
  if code ~= 0 then return "nftables does not work inside a namespace: " .. out end
  return nil
end

-- Our namespaces that exist now.
function M.list_namespaces()
  local t = {}
  for line in M.sh("ip netns list"):gmatch("[^\n]+") do
    local name = line:match("^(%S+)")
    if name and name:sub(1, #M.PREFIX + 1) == M.PREFIX .. "-" then t[#t + 1] = name end
  end
  return t
end

-- Ends every process inside our namespaces (by PID; except skip_pid, the
-- caller itself when it runs in the hub) and deletes the namespaces, which
-- takes their veths and the bridge with them.
function M.cleanup(skip_pid)
  local names = M.list_namespaces()
  for _ = 1, 3 do
    local left = 0
    for _, ns in ipairs(names) do
      for pid in M.sh("ip netns pids " .. ns):gmatch("%d+") do
        if tonumber(pid) ~= skip_pid then
          left = left + 1
          os.execute("kill -CONT " .. pid .. " 2>/dev/null; kill -KILL " .. pid .. " 2>/dev/null")
        end
      end
    end
    if left == 0 then break end
    os.execute("sleep 0.3")
  end
  for _, ns in ipairs(names) do M.sh("ip netns del " .. ns) end
  return #names
end

-- Creates the hub (bridge with HUB_ADDR) and n node namespaces on it, each
-- with a NAT table that sends the cluster connections of every other node
-- through this node's proxy, and an empty fault table.
function M.setup(n)
  M.must("ip netns add " .. M.HUB)
  M.must(string.format("ip -n %s link set lo up", M.HUB))
  M.must(string.format("ip -n %s link add %s type bridge", M.HUB, M.BRIDGE))
  M.must(string.format("ip -n %s addr add %s/24 dev %s", M.HUB, M.HUB_ADDR, M.BRIDGE))
  M.must(string.format("ip -n %s link set %s up", M.HUB, M.BRIDGE))
  for i = 1, n do
    local ns, veth = M.ns(i), M.PREFIX .. "-v" .. i
    M.must("ip netns add " .. ns)
    M.must(string.format("ip link add %s netns %s type veth peer name eth0 netns %s", veth, M.HUB, ns))
    M.must(string.format("ip -n %s link set %s master %s up", M.HUB, veth, M.BRIDGE))
    M.must(string.format("ip -n %s addr add %s/24 dev eth0", ns, M.addr(i)))
    M.must(string.format("ip -n %s link set eth0 up", ns))
    M.must(string.format("ip -n %s link set lo up", ns))
    local rules = { "table ip qcchaos_nat {", "  chain pre {", "    type nat hook prerouting priority -100;" }
    for j = 1, n do
      if j ~= i then
        rules[#rules + 1] = string.format("    ip saddr %s tcp dport %d dnat to %s:%d",
          M.addr(j), M.CLUSTER_PORT, M.addr(i), M.PROXY_BASE + j)
      end
    end
    rules[#rules + 1] = "  }\n}"
    M.nft(i, table.concat(rules, "\n"))
    M.nft(i, "table inet qcchaos {\n  chain in { type filter hook input priority 0; }\n" ..
      "  chain out { type filter hook output priority 0; }\n}")
  end
end

-- Loads an nft script inside node i's namespace.
function M.nft(i, script)
  local path = os.tmpname()
  M.write(path, script .. "\n")
  local out, code = M.sh(string.format("ip netns exec %s nft -f %s", M.ns(i), path))
  os.remove(path)
  if code ~= 0 then error("nft in " .. M.ns(i) .. " failed: " .. out .. "\n" .. script, 2) end
end

-- Adds fault rules (a list of strings, "out ..." or "in ...") in node i.
function M.add_rules(i, rules)
  local lines = {}
  for _, r in ipairs(rules) do
    local chain, rule = r:match("^(%S+) (.*)$")
    lines[#lines + 1] = string.format("add rule inet qcchaos %s %s", chain, rule)
  end
  M.nft(i, table.concat(lines, "\n"))
end

function M.flush_rules(i)
  M.nft(i, "flush table inet qcchaos")
end

-- Starts a command in background and returns its PID: `ip netns exec`
-- execs the command, so the PID is the command's own.
function M.spawn(cmd, log)
  local p = io.popen(string.format("%s >>%s 2>&1 </dev/null & echo $!", cmd, q(log)))
  local pid = tonumber(p:read("l"))
  p:close()
  assert(pid, "could not start: " .. cmd)
  return pid
end

-- True while pid runs (a zombie or a gone process is not running).
function M.running(pid)
  local stat = M.read("/proc/" .. pid .. "/stat")
  if not stat then return false end
  local state = stat:match("^%d+ %b() (%S)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

function M.kill(pid, sig)
  os.execute(string.format("kill -%s %d 2>/dev/null", sig or "KILL", pid))
end

return M
