-- The original QCluster "Bare Minimum" as a Lua program with the node inside
-- it (require "qcluster", the C module): every second the leader does its
-- work and each follower says who leads. SIGTERM or SIGINT stops it cleanly
-- (a leader hands over first).
--   lua5.4 examples/embedded_lua/embedded_lua.lua CONFIG [SECONDS]
-- From a checkout it finds build/lua/qcluster.so; installed, the default
-- package.cpath finds it.
local dir = arg[0]:match("^(.*)/[^/]*$") or "."
package.cpath = dir .. "/../../build/lua/?.so;" .. package.cpath
local qcluster = require("qcluster")

local conf_file = arg[1]
if not conf_file then
  io.stderr:write("usage: lua5.4 embedded_lua.lua CONFIG [SECONDS]\n")
  os.exit(2)
end
local seconds = tonumber(arg[2]) or math.huge

local function say(fmt, ...)
  io.stdout:write(fmt:format(...), "\n")
  io.stdout:flush()
end

local me = "this node"
local hooks = {
  on_start = function(ev) me = ev.self.identifier end,
  on_elected = function(ev) say("elected leader for term %d", ev.term) end,
  on_demoted = function(ev) say("demoted in term %d (%s)", ev.term, ev.reason) end,
}

local cluster, err = qcluster.new(conf_file, hooks)
if not cluster then
  io.stderr:write(err, "\n")
  os.exit(2)
end

local running = true
local function stop() running = false end
qcluster.on_signal("TERM", stop)
qcluster.on_signal("INT", stop)

local function report()
  if cluster:is_leader() then
    say("I am the leader!")
    say("%s is doing some work...", me)
    return
  end
  say("I am not the leader :(")
  local leader = cluster:get_leader_info()
  if leader then
    say("This is the leader: %s at %s:%d, its server_port is %s", leader.identifier, leader.host,
      leader.port, tostring(leader.metadata.server_port))
  else
    say("There is no leader right now")
  end
end

-- The node runs only inside run() (and step()): hooks run there too, on
-- this thread. run(1) returns early when a signal came.
while running and seconds > 0 do
  if cluster:run(1) then report() end
  seconds = seconds - 1
end
cluster:stop()
say("%s stopped", me)
