-- Failover VIP: the leader holds a virtual IP address, every other node
-- makes sure it does not. The address and interface come from each node's
-- own metadata (vip = "ADDRESS/PREFIX", vip_dev = "IFACE"). Needs root (or
-- CAP_NET_ADMIN) for `ip addr`; `arping` (iputils-arping) is optional.
local qcluster = require("qcluster")

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function vip()
  local m = qcluster.self().metadata or {}
  return m.vip, m.vip_dev
end

-- The term this node was elected for; the VIP is wanted only while the node
-- still leads in that very term. A hook that runs late (after the node lost
-- that term) never takes the address back: the term is the fencing token.
local elected_term

local function wanted()
  return elected_term ~= nil and qcluster.is_leader() and qcluster.term() == elected_term
end

-- `ip addr replace` is idempotent; the delete succeeds once the address is
-- gone, whether or not it was there.
local function add_command(cidr, dev)
  return string.format("ip addr replace %s dev %s", quote(cidr), quote(dev))
end

local function del_command(cidr, dev)
  local addr = cidr:match("^[^/]+")
  return string.format("ip addr del %s dev %s 2>/dev/null; ! ip -o addr show dev %s | grep -qF %s",
    quote(cidr), quote(dev), quote(dev), quote(" " .. addr .. "/"))
end

-- A gratuitous ARP so switches and neighbours forget the old holder's MAC
-- address at once instead of after their cache times out. Optional.
local function announce(cidr, dev)
  local cmd = string.format("command -v arping >/dev/null || exit 0; arping -q -U -c 2 -I %s %s",
    quote(dev), quote(cidr:match("^[^/]+")))
  qcluster.exec(cmd, { timeout_ms = 5000 }, function(res)
    if res.status ~= 0 then qcluster.log("warn", "arping failed: " .. tostring(res.stderr)) end
  end)
end

-- One `ip` command at a time, in order: `held` is what this node last made
-- true (nil: unknown, as after a crash), and after each command it looks
-- again, since leadership may have changed while the command ran.
local held, busy

local function converge()
  local cidr, dev = vip()
  if busy or not cidr or not dev then return end
  local want = wanted()
  if held == want then return end
  busy = true
  qcluster.exec(want and add_command(cidr, dev) or del_command(cidr, dev), { timeout_ms = 5000 }, function(res)
    busy = false
    if res.status ~= 0 then
      qcluster.log("error", string.format("%s VIP %s failed: %s", want and "taking" or "dropping", cidr,
        tostring(res.stderr)))
      qcluster.after(1000, converge)
      return
    end
    held = want
    qcluster.log("info", string.format("VIP %s %s on %s (term %d)", cidr, want and "taken" or "dropped", dev,
      qcluster.term()))
    -- No ARP for an address this node stops wanting: it is about to go.
    if want and wanted() then announce(cidr, dev) end
    converge()
  end)
end

local hooks = {}

-- After a crash the address may still be on the interface: drop it.
function hooks.on_start()
  local cidr, dev = vip()
  if not cidr or not dev then
    qcluster.log("error", "metadata.vip and metadata.vip_dev are needed; this node never takes the VIP")
    return
  end
  converge()
end

function hooks.on_elected(ev)
  elected_term = ev.term
  converge()
end

function hooks.on_demoted()
  elected_term = nil
  converge()
end

-- The agent ends the commands it started as it exits, so this last one runs
-- to completion right here. It is quick, and bounded by `timeout`.
function hooks.on_stop()
  local cidr, dev = vip()
  if not cidr or not dev then return end
  elected_term = nil
  if os.execute("timeout 3 sh -c " .. quote(del_command(cidr, dev))) then
    qcluster.log("info", "VIP " .. cidr .. " dropped at stop")
  else
    qcluster.log("error", "VIP " .. cidr .. " could not be dropped at stop")
  end
end

return hooks
