-- The original QCluster "Bare Minimum": every second the leader does its
-- work and each follower reports who leads (with the leader's metadata,
-- e.g. the port its service answers on).
local qcluster = require("qcluster")

local hooks = {}

local function work()
  if qcluster.is_leader() then
    qcluster.log("info", "I am the leader!")
    qcluster.log("info", qcluster.self().identifier .. " is doing some work...")
  else
    local leader = qcluster.get_leader_info()
    qcluster.log("info", "I am not the leader :(")
    if leader then
      qcluster.log("info", string.format("This is the leader: %s at %s:%d, its server_port is %s",
        leader.identifier, leader.host, leader.port, tostring(leader.metadata.server_port)))
    else
      qcluster.log("info", "There is no leader right now")
    end
  end
  qcluster.after(1000, work)
end

function hooks.on_start()
  qcluster.after(1000, work)
end

function hooks.on_elected(ev)
  qcluster.log("info", "elected leader for term " .. ev.term)
end

function hooks.on_leader_change(ev)
  qcluster.log("info", "leader is now " .. (ev.leader and ev.leader.identifier or "nobody"))
end

return hooks
