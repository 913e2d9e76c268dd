-- examples/redis_failover as a user runs it (run.sh, real redis-server
-- processes), with a writer that counts only writes acknowledged with
-- WAIT 1. After kill -9 of the primary's node, kill -9 of the primary's
-- Redis alone, SIGSTOP of the primary's agent and a clean `qcluster
-- transfer`: one primary (the leader's Redis), every other live Redis
-- replicating from it, and every acknowledged write readable there. Every
-- process is ended by its PID (run.sh's list and those this spec starts).
local A = require("agents")

local EX = A.root .. "/examples/redis_failover"
package.path = EX .. "/?.lua;" .. package.path
local client = require("client")
local FILLER_MB = 40 -- more than a loopback socket's buffers hold (tcp_rmem's 32 MB at most)

local _, no_redis = A.sh("command -v redis-server && command -v redis-cli")
if no_redis ~= 0 then
  describe("examples/redis_failover", function()
    pending("skipped: redis-server is not installed (make deps installs redis-server and redis-sentinel)")
  end)
  return
end

describe("examples/redis_failover", function()
  local dir, base, run_pid, writer_pid
  local nodes = {} -- id -> {api, redis_port, agent = pid, redis = pid, config}
  local ids = { "server_a", "server_b", "server_c" }
  local extra = {} -- pids this spec started itself

  local function env()
    return string.format("REDIS_FAILOVER_BASE=%d REDIS_FAILOVER_DIR=%s QCLUSTER=%s/bin/qcluster", base, dir, A.root)
  end

  local function spawn(cmd)
    local p = io.popen(string.format("%s exec %s </dev/null & echo $!", env(), cmd))
    local pid = assert(tonumber(p:read("l")))
    p:close()
    extra[#extra + 1] = pid
    return pid
  end

  local function redis_info(id)
    local out, code = A.sh(string.format("timeout 2 redis-cli -p %d info replication", nodes[id].redis_port))
    if code ~= 0 or not out:find("role:") then return nil end
    local t = {}
    for k, v in out:gmatch("([%w_]+):([^\r\n]*)") do t[k] = v end
    return t
  end

  -- The leader every agent of `live` names, once they agree on one other
  -- than `old`.
  local function leader_among(live, old)
    return A.wait_for(function()
      local name
      for _, id in ipairs(live) do
        local v, status = A.json(nodes[id].api, "/v1/leader")
        if status ~= 200 or not v or (name and v.identifier ~= name) then return nil end
        name = v.identifier
      end
      return name ~= old and name
    end, 15)
  end

  local forgiven = {} -- acknowledged writes a failed case lost (and reported)

  local function acked()
    local t = {}
    for n in (A.read(dir .. "/acked") or ""):gmatch("(%d+)\n") do
      n = tonumber(n)
      if not forgiven[n] then t[#t + 1] = n end
    end
    return t
  end

  local function describe_redis(redis_ids)
    local t = {}
    for _, id in ipairs(redis_ids) do
      local i = redis_info(id) or {}
      t[#t + 1] = string.format("%s:%s master_port=%s link=%s offset=%s", id, tostring(i.role),
        tostring(i.master_port), tostring(i.master_link_status), tostring(i.master_repl_offset))
    end
    return table.concat(t, "; ")
  end

  -- Waits until `leader`'s Redis is the only master among redis_ids and
  -- every other one replicates from it with its link up.
  local function settled(leader, redis_ids)
    return A.wait_for(function()
      for _, id in ipairs(redis_ids) do
        local i = redis_info(id)
        if not i then return false end
        if id == leader then
          if i.role ~= "master" then return false end
        elseif i.role ~= "slave" or tonumber(i.master_port) ~= nodes[leader].redis_port
            or i.master_link_status ~= "up" then
          return false
        end
      end
      return true
    end, 20)
  end

  -- One primary (the agreed leader's Redis), the others following it, the
  -- writer going on, and every write it had acknowledged readable there.
  local function check(agents_live, redis_ids, old_leader)
    local leader = leader_among(agents_live, old_leader)
    assert.is_truthy(leader, "no agreed leader (other than " .. tostring(old_leader) .. ") among "
      .. table.concat(agents_live, ","))
    assert.is_truthy(settled(leader, redis_ids), "want " .. leader .. " primary: " .. describe_redis(redis_ids))
    local before = #acked()
    assert.is_truthy(A.wait_for(function() return #acked() > before + 50 end, 15),
      "the writer gets no acknowledged write through " .. leader)
    local numbers = acked()
    local missing, err = client.missing("127.0.0.1", nodes[leader].redis_port, numbers)
    assert.is_truthy(missing, tostring(err))
    assert.are.same({}, missing, string.format("%d of %d acknowledged writes are missing on %s", #missing,
      #numbers, leader))
    return leader
  end

  local function others(id)
    local t = {}
    for _, x in ipairs(ids) do
      if x ~= id then t[#t + 1] = x end
    end
    return t
  end

  setup(function()
    dir = A.sh("mktemp -d /tmp/qc-redis-XXXXXX"):gsub("%s+$", "")
    base = A.base_port()
    local p = io.popen(string.format("%s exec bash %s/run.sh >%s/run.out 2>&1 </dev/null & echo $!", env(), EX, dir))
    run_pid = tonumber(p:read("l"))
    p:close()
    local list = A.wait_for(function()
      local t, agents = {}, 0
      for id, kind, pid in (A.read(dir .. "/pids") or ""):gmatch("(%S+) (%S+) (%d+)") do
        t[#t + 1] = { id = id, kind = kind, pid = tonumber(pid) }
        if kind == "agent" then agents = agents + 1 end
      end
      return agents == 3 and t
    end, 20)
    assert(list, "run.sh did not start every node: " .. tostring(A.read(dir .. "/run.out")))
    for i, id in ipairs(ids) do
      nodes[id] = { api = "127.0.0.1:" .. (base + 10 + i), redis_port = base + 20 + i,
        config = EX .. "/" .. id .. ".lua", log = dir .. "/" .. id .. "/agent.log" }
    end
    for _, e in ipairs(list) do nodes[e.id][e.kind] = e.pid end
    local apis = {}
    for _, id in ipairs(ids) do apis[#apis + 1] = nodes[id].api end
    writer_pid = spawn(string.format("lua5.4 %s/client.lua writer --qcluster %s --acked %s/acked --stop %s/stop "
      .. ">%s/writer.log 2>&1", EX, table.concat(apis, ","), dir, dir, dir))
  end)

  teardown(function()
    if dir then A.write(dir .. "/stop", "") end
    if writer_pid then A.wait_for(function() return not A.alive(writer_pid) end, 3) end
    if run_pid then
      os.execute("kill -TERM " .. run_pid .. " 2>/dev/null")
      A.wait_for(function() return not A.alive(run_pid) end, 10)
    end
    local all = { run_pid }
    for _, pid in ipairs(extra) do all[#all + 1] = pid end
    for _, id in ipairs(ids) do
      if nodes[id] then
        all[#all + 1] = nodes[id].agent
        all[#all + 1] = nodes[id].redis
      end
    end
    for _, sig in ipairs { "CONT", "TERM", "KILL" } do
      for _, pid in ipairs(all) do
        if A.alive(pid) then os.execute("kill -" .. sig .. " " .. pid .. " 2>/dev/null") end
      end
      if sig ~= "CONT" then
        A.wait_for(function()
          for _, pid in ipairs(all) do
            if A.alive(pid) then return false end
          end
          return true
        end, 5)
      end
    end
    if dir and not os.getenv("QC_KEEP") then os.execute("rm -rf " .. dir) end
  end)

  local function kill(pid)
    os.execute("kill -KILL " .. pid .. " 2>/dev/null")
    assert.is_truthy(A.wait_for(function() return not A.alive(pid) end, 10), "pid " .. pid .. " did not exit")
  end

  local function restart_redis(id)
    nodes[id].redis = spawn(string.format("bash %s/run.sh redis %s", EX, id))
  end

  local function restart_agent(id)
    nodes[id].agent = spawn(string.format("%s/bin/qcluster agent %s >>%s 2>&1", A.root, nodes[id].config,
      nodes[id].log))
  end

  -- A case that fails half-way may leave a node dead or frozen, and lose
  -- writes: after_each brings every node back and forgives the writes the
  -- settled primary lacks, so that each later case tests what it says.
  local failed
  local function case(name, fn)
    it(name, function()
      failed = true
      fn()
      failed = false
    end)
  end

  after_each(function()
    if not failed then return end
    failed = false
    for _, id in ipairs(ids) do
      for _, kind in ipairs { "redis", "agent" } do
        if A.alive(nodes[id][kind]) then os.execute("kill -CONT " .. nodes[id][kind] .. " 2>/dev/null") end
      end
      if not A.alive(nodes[id].redis) then restart_redis(id) end
      if not A.alive(nodes[id].agent) then restart_agent(id) end
    end
    local leader = leader_among(ids)
    if leader and settled(leader, ids) then
      for _, n in ipairs(client.missing("127.0.0.1", nodes[leader].redis_port, acked()) or {}) do
        forgiven[n] = true
      end
    end
  end)

  case("the leader's Redis is the primary, the others replicate from it", function()
    check(ids, ids)
  end)

  case("kill -9 of the primary's node (Redis and agent): a survivor's Redis takes over, nothing acknowledged lost",
    function()
      local old = check(ids, ids)
      kill(nodes[old].redis)
      kill(nodes[old].agent)
      check(others(old), others(old), old)
      -- The node comes back (Redis empty): it follows the new primary.
      restart_redis(old)
      restart_agent(old)
      check(ids, ids)
    end)

  -- The replica that holds the newest acknowledged writes hangs (SIGSTOP of
  -- its Redis) while the primary's node dies, and the other survivor, whose
  -- copy is behind, is elected: it must wait for the hung one and catch up
  -- from it, not promote its own copy and have the hung one follow it.
  case("a replica holding the newest acknowledged writes hangs through the fail-over: nothing acknowledged lost",
    function()
      local old = check(ids, ids)
      local ahead, behind = others(old)[1], others(old)[2]
      local log_from = #(A.read(nodes[behind].log) or "")
      -- WAIT 1 is answered by `ahead` alone while `behind` is frozen. The
      -- filler (40 MB) fills the sockets to `behind`, so the writes after it
      -- stay in the primary's output buffer and die with it: else `behind`
      -- would read them from its socket once it runs again.
      os.execute("kill -STOP " .. nodes[behind].redis)
      local c = assert(client.connect("127.0.0.1", nodes[old].redis_port, 5))
      local filler = string.rep("x", 1 << 20)
      for k = 1, FILLER_MB do
        assert.are.equal("OK", client.call(c, "SET", "filler:" .. k, filler))
      end
      c:close()
      local n = #acked()
      local grew = A.wait_for(function() return #acked() >= n + 20 end, 5)
      os.execute("kill -STOP " .. nodes[ahead].redis)
      kill(nodes[old].redis)
      kill(nodes[old].agent)
      os.execute("kill -CONT " .. nodes[behind].redis)
      assert.is_truthy(grew, "no write acknowledged while " .. behind .. "'s Redis was frozen")
      -- `ahead`'s agent, its Redis hung, fails its redis_ping check and
      -- hands over if it was elected: `behind` leads, and promotes or says
      -- that it waits.
      local said = A.wait_for(function()
        local l = (A.read(nodes[behind].log) or ""):sub(log_from + 1)
        return l:match("starts over: waits for [^\n]*" .. ahead) or l:match("primary in term %d+")
      end, 30)
      os.execute("kill -CONT " .. nodes[ahead].redis)
      assert.is_truthy(said, behind .. " neither promoted nor waited for " .. ahead)
      local leader = check(others(old), others(old), old)
      c = assert(client.connect("127.0.0.1", nodes[leader].redis_port, 5))
      for k = 1, FILLER_MB do client.call(c, "DEL", "filler:" .. k) end
      c:close()
      restart_redis(old)
      restart_agent(old)
      check(ids, ids)
    end)

  case("kill -9 of the primary's Redis alone: its health check hands over, nothing acknowledged lost", function()
    local old = check(ids, ids)
    kill(nodes[old].redis)
    check(ids, others(old), old)
    assert.is_truthy((A.read(nodes[old].log) or ""):find("no longer leader in term %d+ %(unhealthy%)"))
    restart_redis(old)
    check(ids, ids)
  end)

  case("SIGSTOP of the primary's agent: the new leader fences its Redis and makes it a replica", function()
    local old = check(ids, ids)
    os.execute("kill -STOP " .. nodes[old].agent)
    -- Its Redis still runs, with the frozen agent unable to act: the new
    -- leader fences it and makes it replicate from the new primary.
    local ok, err = pcall(check, others(old), ids, old)
    os.execute("kill -CONT " .. nodes[old].agent)
    assert(ok, err)
    check(ids, ids)
  end)

  case("a clean qcluster transfer moves the primary, nothing acknowledged lost", function()
    local old = check(ids, ids)
    local out, code = A.cli("transfer", nodes[old].api)
    assert.are.equal(0, code, out)
    check(ids, ids, old)
  end)
end)
