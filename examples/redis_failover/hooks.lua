-- Redis fail-over: each node runs a redis-server beside its agent. The
-- leader's Redis is the primary, every other Redis replicates from it. Every
-- Redis command runs through qcluster.exec (redis-cli), so nothing here
-- blocks the agent, and every step checks again that the node still leads in
-- the term it acts for: the term is the fencing token.
--
-- Writes a client acknowledged with `WAIT 1` survive a fail-over: before it
-- promotes its Redis, a new leader fences every other Redis it reaches, reads
-- their replication offsets and, when one of them holds more of the stream
-- than its own, catches up from that one first. A Redis that does not answer
-- in time (not one that refuses: that one is down, its copy gone) may hold
-- the newest of them: the promotion waits for it, SLOW_WAIT_MS at most.
local qcluster = require("qcluster")

-- min-replicas-to-write of a fenced master: more replicas than any Redis
-- has, so it answers every write with NOREPLICAS, while it still streams to
-- its replicas what it has (a new leader catches up from it). It is
-- harmless on a replica and reset when a Redis is promoted.
local FENCE = 1000000
local RECONCILE_MS = 200 -- how often every node looks at its own Redis
local CATCHUP_MS = 5000  -- longest wait for catching up before starting over
local REDIS_TIMEOUT_MS = 500 -- one redis-cli run (a hung Redis must not hold a fail-over)
-- A promotion starts over while another Redis does not answer in time, for
-- at most this long: a slow Redis may hold acknowledged writes no other has.
local SLOW_WAIT_MS = CATCHUP_MS

local function log(level, fmt, ...)
  qcluster.log(level, "redis: " .. string.format(fmt, ...))
end

-- Where a node's Redis answers: metadata.redis_port, on metadata.redis_host
-- or else the node's own host.
local function redis_of(peer)
  local m = peer and peer.metadata or {}
  local port = math.tointeger(tonumber(m.redis_port))
  if not port then return nil end
  return { id = peer.identifier, host = m.redis_host or peer.host or "127.0.0.1", port = port }
end

local function self_redis()
  return redis_of(qcluster.self())
end

-- Every Redis of the cluster, this node's first (me: this node's, when the
-- caller has it: each qcluster call from a hook is a trip to the agent's
-- loop thread, and a fail-over waits on them).
local function all_redis(me)
  local t = { me or self_redis() }
  for _, p in ipairs(qcluster.peers()) do
    local r = redis_of(p)
    if r then t[#t + 1] = r end
  end
  return t
end

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs commands (each a list of words) on one Redis in one connection, in
-- order; cb(out) with redis-cli's output, or cb(nil, why) when the Redis
-- could not be reached or an answer was an error. The shell execs redis-cli
-- with the commands in a here-document: one process start, not two (a
-- fail-over waits on two rounds of these).
local function redis(r, commands, cb)
  local lines = {}
  for _, c in ipairs(commands) do lines[#lines + 1] = table.concat(c, " ") .. "\n" end
  local cmd = string.format("exec redis-cli -h %s -p %d <<'REDIS_COMMANDS'\n%sREDIS_COMMANDS\n", quote(r.host),
    r.port, table.concat(lines))
  qcluster.exec(cmd, { timeout_ms = REDIS_TIMEOUT_MS }, function(res)
    local out = res.stdout or ""
    if res.status ~= 0 or res.timed_out then
      return cb(nil, res.timed_out and "timed out" or (res.stderr ~= "" and res.stderr or out))
    end
    -- redis-cli says on stderr, and exits 0, when it cannot connect.
    local err = out:match("^(ERR[^\n]*)") or out:match("\n(ERR[^\n]*)")
      or (res.stderr or ""):match("(Could not connect[^\n]*)") or out:match("^(Could not connect[^\n]*)")
    if err then return cb(nil, err) end
    cb(out)
  end)
end

-- The fields of INFO replication that matter here.
local function parse_info(out)
  local t = {}
  for k, v in out:gmatch("([%w_]+):([^\r\n]*)") do t[k] = v end
  if t.role ~= "master" and t.role ~= "slave" then return nil end
  return {
    role = t.role,
    master_host = t.master_host,
    master_port = tonumber(t.master_port),
    link_up = t.master_link_status == "up",
    replid = t.master_replid,
    offset = tonumber(t.master_repl_offset) or 0,
    replicas = tonumber(t.connected_slaves) or 0,
  }
end

-- A refused connection means the Redis is down, and its copy died with it
-- (no persistence; one that restarts comes back a replica of nowhere, with
-- nothing). Any other failure (a timeout: hung, or a loaded host) leaves a
-- Redis that may still hold writes acknowledged by no other.
local function down(err)
  return tostring(err):find("Connection refused", 1, true) ~= nil
end

local function info(r, extra, cb)
  local commands = {}
  for _, c in ipairs(extra) do commands[#commands + 1] = c end
  commands[#commands + 1] = { "INFO", "replication" }
  redis(r, commands, function(out, err)
    local i = out and parse_info(out)
    cb(i, i and nil or (err or "no INFO replication answer"))
  end)
end

-- Runs fn(r, done) for every r of list at once; then(results) once all
-- called done(value), results[r.id] = value.
local function each(list, fn, after)
  local left, results = #list, {}
  if left == 0 then return after(results) end
  for _, r in ipairs(list) do
    fn(r, function(v)
      results[r.id] = v
      left = left - 1
      if left == 0 then after(results) end
    end)
  end
end

local function replicaof(target)
  return { "REPLICAOF", target.host, tostring(target.port) }
end

local function fence_command()
  return { "CONFIG", "SET", "min-replicas-to-write", tostring(FENCE) }
end

local function same(i, r)
  return i.master_host == r.host and i.master_port == r.port
end

---------------------------------------------------------------- the leader

local elected_term  -- term of the last on_elected
local promoted_term -- term in which this node's Redis was promoted
local promoting     -- the term a promotion runs for, while it runs
local slow_term, slow_since -- the term whose promotion waits for a slow Redis, since when

local function leading(term)
  return qcluster.is_leader() and qcluster.term() == term
end

local promote -- forward
local every_redis -- all_redis() as the promotion under way found it

-- Starts the promotion over a little later (a Redis did not answer, the
-- catch-up took too long). A node that no longer leads stops here.
local function stop(term)
  if promoting == term then promoting = nil end
end

local function retry(term, why)
  stop(term)
  if not leading(term) then return end
  log("warn", "promotion in term %d starts over: %s", term, why)
  qcluster.after(200, function() promote(term) end)
end

-- Every other Redis now replicates from this node's. Those that did not
-- answer are left to their own agents (which follow the leader's metadata).
local function repoint_others(me)
  local others = {}
  for _, r in ipairs(every_redis) do
    if r.id ~= me.id then others[#others + 1] = r end
  end
  -- The caller has just checked that this node leads in term.
  each(others, function(r, done)
    redis(r, { replicaof(me) }, function(out, err)
      if not out then log("warn", "%s:%d does not follow yet: %s", r.host, r.port, tostring(err)) end
      done()
    end)
  end, function() end)
end

local own_metadata -- this node's metadata as the promotion under way found it

local function publish(term)
  local m = {}
  for k, v in pairs(own_metadata or {}) do m[k] = v end
  m.redis_primary_term = term
  qcluster.set_metadata(m, function(ok, err)
    if not ok then log("warn", "could not publish the primary for term %d: %s", term, tostring(err)) end
  end)
end

local function promote_now(term, me)
  redis(me, { { "REPLICAOF", "NO", "ONE" }, { "CONFIG", "SET", "min-replicas-to-write", "0" },
    { "INFO", "replication" } }, function(out, err)
    local i = out and parse_info(out)
    if not i or i.role ~= "master" then return retry(term, "REPLICAOF NO ONE failed: " .. tostring(err)) end
    stop(term)
    if not leading(term) then
      -- Leadership went while the command ran: fence again at once.
      log("warn", "promoted in term %d but no longer leads: fencing", term)
      redis(me, { fence_command() }, function() end)
      return
    end
    promoted_term, slow_term = term, nil
    log("info", "primary in term %d at %s:%d (offset %d)", term, me.host, me.port, i.offset)
    repoint_others(me)
    publish(term)
  end)
end

-- Waits until this node's Redis holds `target` bytes of the stream from its
-- master, then promotes it.
local function catch_up(term, me, target, deadline, from)
  info(me, {}, function(i, err)
    if not leading(term) then return stop(term) end
    if not i then return retry(term, "own Redis: " .. tostring(err)) end
    if i.link_up and i.offset >= target then
      log("info", "caught up to offset %d from %s", target, from)
      return promote_now(term, me)
    end
    if qcluster.now() > deadline then
      return retry(term, string.format("still at offset %d of %d from %s", i.offset, target, from))
    end
    qcluster.after(5, function() catch_up(term, me, target, deadline, from) end)
  end)
end

-- The promotion, for the term this node was elected in:
-- 1. Fence every other Redis it reaches (harmless on replicas) and read
--    every Redis's replication offset, after the fence: no write lands on
--    an old primary after its offset is read. While another Redis does not
--    answer in time (but does not refuse either), start over, up to
--    SLOW_WAIT_MS: it may hold acknowledged writes no other has.
-- 2. The best copy is the one holding the most of the stream, among this
--    node's own, the replicas, and a master of this node's own history (the
--    old primary, still alive). Masters of another history (a primary that
--    was superseded, or a fresh one) hold nothing acknowledged that a
--    replica lacks. Ties go to this node's own.
-- 3. When another copy is better, replicate from it until this node's has
--    as much (a replica is made a fenced master first, so that it serves
--    a sync), then promote: REPLICAOF NO ONE, unfence. Then point the others
--    at it and publish redis_primary_term in this node's metadata.
function promote(term)
  if not leading(term) or promoting == term or promoted_term == term then return end
  local self = qcluster.self()
  local me = redis_of(self)
  if not me then
    log("error", "metadata.redis_port is not set: this node cannot promote a Redis")
    return
  end
  promoting = term
  own_metadata, every_redis = self.metadata, all_redis(me)
  local slow = {} -- the other Redis that did not answer, not down
  each(every_redis, function(r, done)
    info(r, r.id == me.id and {} or { fence_command() }, function(i, err)
      if not i and r.id ~= me.id and not down(err) then slow[#slow + 1] = r.id .. " (" .. tostring(err) .. ")" end
      done(i or false)
    end)
  end, function(infos)
    if not leading(term) then return stop(term) end
    local own = infos[me.id]
    if not own then return retry(term, "own Redis does not answer") end
    if #slow > 0 then
      if slow_term ~= term then slow_term, slow_since = term, qcluster.now() end
      if qcluster.now() - slow_since < SLOW_WAIT_MS / 1000 then
        return retry(term, "waits for " .. table.concat(slow, ", ") .. ": it may hold acknowledged writes")
      end
      log("warn", "promoting in term %d without %s: no answer for %d ms", term, table.concat(slow, ", "),
        SLOW_WAIT_MS)
    end
    local best, best_info = me, own
    for _, r in ipairs(every_redis) do
      local i = infos[r.id]
      if r.id ~= me.id and i and (i.role == "slave" or i.replid == own.replid) then
        -- On a tie, the Redis this node already replicates from wins.
        if i.offset > best_info.offset or (i.offset == best_info.offset and best.id ~= me.id and own.role == "slave"
            and same(own, r)) then
          best, best_info = r, i
        end
      end
    end
    if best.id == me.id then return promote_now(term, me) end
    local from = string.format("%s (%s:%d, offset %d, own %d)", best.id, best.host, best.port,
      best_info.offset, own.offset)
    local deadline = qcluster.now() + CATCHUP_MS / 1000
    if own.role == "slave" and same(own, best) then return catch_up(term, me, best_info.offset, deadline, from) end
    log("info", "catching up from %s first", from)
    -- A replica whose master is gone serves no sync (NOMASTERLINK): make
    -- it a master first, one that takes no write (it was fenced above).
    local prepare = best_info.role == "slave" and { { "REPLICAOF", "NO", "ONE" } } or {}
    redis(best, #prepare > 0 and prepare or { { "PING" } }, function(ok, e)
      if not ok then return retry(term, "REPLICAOF NO ONE on " .. best.id .. ": " .. tostring(e)) end
      if not leading(term) then return stop(term) end
      redis(me, { replicaof(best) }, function(out, err)
        if not out then return retry(term, "REPLICAOF " .. best.id .. ": " .. tostring(err)) end
        catch_up(term, me, best_info.offset, deadline, from)
      end)
    end)
  end)
end

---------------------------------------------------------------- every node

-- The leader's Redis, once it says (in its metadata) that it is the primary
-- of the current term; nil before.
local function ready_leader()
  local l = qcluster.get_leader_info()
  if not l or l.identifier == qcluster.self().identifier then return nil end
  if tonumber((l.metadata or {}).redis_primary_term) ~= qcluster.term() then return nil end
  return redis_of(l)
end

-- One look at this node's own Redis at a time: a follower fences a Redis
-- that is a master and points it at the leader's once that is the primary;
-- a leader whose Redis came back empty (a replica of port 0, as run.sh
-- starts every Redis) promotes again, catching up first.
local looking, last_note

local function reconcile()
  local me = self_redis()
  if looking or not me or (promoting and qcluster.is_leader()) then return end
  looking = true
  info(me, {}, function(i)
    looking = false
    if not i then return end
    if qcluster.is_leader() then
      local term = qcluster.term()
      if promoted_term == term and i.role == "slave" and i.master_port == 0 then
        log("warn", "own Redis restarted while primary in term %d: promoting again", term)
        promoted_term = nil
        promote(term)
      elseif elected_term == term and promoted_term ~= term then
        promote(term)
      end
      return
    end
    local target = ready_leader()
    local commands = {}
    if i.role == "master" then commands[#commands + 1] = fence_command() end
    if target and not (i.role == "slave" and same(i, target)) then commands[#commands + 1] = replicaof(target) end
    if #commands == 0 then return end
    redis(me, commands, function(out, err)
      local note
      if not out then
        note = "own Redis: " .. tostring(err)
      elseif target then
        note = string.format("own Redis now replicates from %s (%s:%d)", target.id, target.host, target.port)
      else
        note = "own Redis fenced: a master while no promoted leader is known"
      end
      -- The fence is renewed on every look; say so once.
      if note ~= last_note then log(out and "info" or "warn", "%s", note) end
      last_note = note
    end)
  end)
end

local function tick()
  reconcile()
  qcluster.after(RECONCILE_MS, tick)
end

local hooks = {}

-- A restarted agent fences its Redis before anything else: it may have been
-- the primary before the crash, and another node may lead now.
function hooks.on_start()
  if not self_redis() then
    log("error", "metadata.redis_port is not set: this node manages no Redis")
    return
  end
  tick()
end

function hooks.on_elected(ev)
  elected_term = ev.term
  promote(ev.term)
end

function hooks.on_demoted()
  elected_term, promoted_term = nil, nil
  reconcile()
end

function hooks.on_leader_change()
  reconcile()
end

return hooks
