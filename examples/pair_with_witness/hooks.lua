-- Pair with a witness: two servers take turns running a service (here a
-- state file, <identifier>.service, that a real setup would replace with
-- "start the database as primary" or "take the virtual IP"); the witness only
-- votes, so either server alone with the witness keeps a majority.
local qcluster = require("qcluster")

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"

local function set_service(state, term)
  local me = qcluster.self()
  if me.identifier == "witness" then return end -- it never runs the service
  local path = here .. me.identifier .. ".service"
  local f = io.open(path .. ".tmp", "w")
  if not f then return end
  -- The term is the fencing token: a service that sees a higher term wins.
  f:write(string.format("%s term=%d\n", state, term or qcluster.term()))
  f:close()
  os.rename(path .. ".tmp", path)
  qcluster.log("info", "service " .. state .. " on " .. me.identifier)
end

local hooks = {}

function hooks.on_start() set_service("standby") end

function hooks.on_elected(ev) set_service("active", ev.term) end

function hooks.on_demoted(ev) set_service("standby", ev.term) end

function hooks.on_leader_change(ev)
  local leader = ev.leader and ev.leader.identifier or "nobody"
  qcluster.log("info", "the service runs on " .. leader .. " (term " .. ev.term .. ")")
end

return hooks
