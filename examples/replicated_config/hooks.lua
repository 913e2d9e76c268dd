-- Replicated config: the leader publishes a setting in the replicated
-- key-value store, every node reacts to it, and a new leader takes it over
-- after a fail-over (reading the old value, bumping its generation).
local qcluster = require("qcluster")

local KEY = "config/mode"

-- Every node keeps the current setting in <identifier>.mode, next to this
-- file (and the configs), where a service or a test can read it.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"

local hooks = {}

local function generation_of(value)
  return tonumber(value and value:match("%(generation (%d+)%)$")) or 0
end

-- Publishes "primary-on-<me> (generation N+1)" with compare-and-set on the
-- revision this node has. A new leader may not have applied every committed
-- entry yet: then its copy is behind, the put fails with "revision
-- mismatch", and it tries again with the fresher value.
local function publish(attempt)
  if not qcluster.is_leader() then return end
  local ok, old, revision = pcall(qcluster.kv.get, KEY)
  if not ok then
    qcluster.after(50, function() publish(attempt + 1) end)
    return
  end
  local me = qcluster.self().identifier
  local value = string.format("primary-on-%s (generation %d)", me, generation_of(old) + 1)
  qcluster.kv.put(KEY, value, { cas = revision or 0 }, function(done, err)
    if done then
      qcluster.log("info", "published " .. KEY .. " = " .. value)
    elseif attempt < 100 then
      qcluster.log("info", "publishing " .. KEY .. " failed (" .. tostring(err) .. "), retrying")
      qcluster.after(50, function() publish(attempt + 1) end)
    else
      qcluster.log("error", "gave up publishing " .. KEY .. ": " .. tostring(err))
    end
  end)
end

function hooks.on_elected(ev)
  qcluster.log("info", "elected for term " .. ev.term .. ", publishing " .. KEY)
  publish(1)
end

-- Runs on every node (the leader too) once a change is committed and applied.
function hooks.on_kv_change(ev)
  if ev.key ~= KEY then return end
  qcluster.log("info", KEY .. " is now " .. tostring(ev.value))
  local path = here .. qcluster.self().identifier .. ".mode"
  local f = io.open(path .. ".tmp", "w")
  if not f then return end
  f:write(ev.value or "", "\n")
  f:close()
  os.rename(path .. ".tmp", path)
end

return hooks
