-- examples/redirect as a user runs it (run.sh in a copy of the example): each
-- node's nginx sends requests to the leader's application, also after the
-- leader's application dies (its `app` health check hands leadership over)
-- and after the leader's machine dies. Every process is ended by its PID
-- (run/pids, and the application this spec restarts).
local A = require("agents")

local PROXIES = { "127.0.0.1:9311", "127.0.0.1:9312", "127.0.0.1:9313" }

local function have_nginx()
  local _, code = A.sh("PATH=$PATH:/usr/sbin:/sbin command -v nginx")
  return code == 0
end

if not have_nginx() then
  describe("examples/redirect", function()
    pending("skipped: nginx is not installed (make deps installs nginx-light)")
  end)
  return
end

describe("examples/redirect", function()
  local c, run_pid

  -- "identifier kind pid" lines run.sh wrote, once every agent is listed.
  local function pids()
    return A.wait_for(function()
      local t = {}
      for id, kind, pid in (A.read(c.dir .. "/run/pids") or ""):gmatch("(%S+) (%S+) (%d+)") do
        t[#t + 1] = { id = id, kind = kind, pid = tonumber(pid) }
      end
      local agents = 0
      for _, p in ipairs(t) do agents = agents + (p.kind == "agent" and 1 or 0) end
      return agents == 3 and t or nil
    end, 20)
  end

  local function pid_of(id, kind)
    for _, p in ipairs(c.pids) do
      if p.id == id and p.kind == kind then return p.pid end
    end
  end

  -- "NAME via UPSTREAM": the app that answers through node i's proxy and
  -- where nginx says it sent the request; nil unless it answers 200.
  local function through(i)
    local status, body, hdrs = A.http(PROXIES[i], "GET", "/")
    if status ~= 200 then return nil end
    return string.format("%s via %s", body:gsub("%s+$", ""), hdrs and hdrs["x-upstream"])
  end

  -- Waits until every proxy in `live` sends to node i's application (its
  -- metadata.server_port), three rounds in a row: right after a reload an
  -- old nginx worker may still take a connection or two.
  local function all_reach(i, live)
    local want, rounds = c.nodes[i].id .. " via 127.0.0.1:" .. (9300 + i), 0
    return A.wait_for(function()
      for _, j in ipairs(live) do
        if through(j) ~= want then
          rounds = 0
          return false
        end
      end
      rounds = rounds + 1
      return rounds >= 3
    end, 15)
  end

  -- Node i's view of its own health (GET /v1/status), or nil.
  local function status_of(i)
    return A.json(c.nodes[i].api, "/v1/status")
  end

  -- Starts node i's application again as run.sh does, in its place in
  -- c.pids (so pid_of and the teardown find the new one).
  local function restart_app(i)
    local id = c.nodes[i].id
    local p = io.popen(string.format("exec lua5.4 %s/app.lua %s %d >>%s/run/%s/app.log 2>&1 </dev/null & echo $!",
      c.dir, id, 9300 + i, c.dir, id))
    local pid = assert(tonumber(p:read("l")), "could not start the application of " .. id)
    p:close()
    for _, e in ipairs(c.pids) do
      if e.id == id and e.kind == "app" then e.pid = pid end
    end
    return pid
  end

  local function answers(live)
    local t = {}
    for _, i in ipairs(live) do t[#t + 1] = PROXIES[i] .. "=" .. tostring(through(i)) end
    return table.concat(t, " ")
  end

  setup(function()
    local dir = A.sh("mktemp -d /tmp/qc-example-XXXXXX"):gsub("%s+$", "")
    os.execute("cp examples/redirect/*.lua examples/redirect/run.sh examples/redirect/nginx.conf.in " .. dir)
    c = { n = 3, dir = dir, nodes = {} }
    local p = io.popen(string.format(
      "QCLUSTER=%s/bin/qcluster exec bash %s/run.sh >%s/run.out 2>&1 </dev/null & echo $!", A.root, dir, dir))
    run_pid = tonumber(p:read("l"))
    p:close()
    c.pids = assert(pids(), "run.sh did not start every node: " .. tostring(A.read(dir .. "/run.out")))
    for i, name in ipairs { "server_a", "server_b", "server_c" } do
      c.nodes[i] = { id = name, api = "127.0.0.1:" .. (8300 + i), pid = pid_of(name, "agent"),
        log = dir .. "/run/" .. name .. "/agent.log" }
    end
  end)

  -- run.sh stops what it started on SIGTERM; whatever is left (run.sh
  -- itself killed, say) is ended by the PIDs it listed.
  teardown(function()
    if run_pid then
      os.execute("kill -TERM " .. run_pid .. " 2>/dev/null")
      A.wait_for(function() return not A.alive(run_pid) end, 10)
      os.execute("kill -KILL " .. run_pid .. " 2>/dev/null")
    end
    for _, sig in ipairs { "TERM", "KILL" } do
      for _, p in ipairs(c and c.pids or {}) do
        if A.alive(p.pid) then os.execute("kill -" .. sig .. " " .. p.pid .. " 2>/dev/null") end
      end
      A.wait_for(function()
        for _, p in ipairs(c and c.pids or {}) do
          if A.alive(p.pid) then return false end
        end
        return true
      end, 5)
    end
    if c and not os.getenv("QC_KEEP") then os.execute("rm -rf " .. c.dir) end
  end)

  it("every node's nginx sends requests to the leader's application", function()
    local li = A.index_of(c, A.must_leader(c, 15))
    assert.is_truthy(all_reach(li, { 1, 2, 3 }), "want " .. c.nodes[li].id .. ": " .. answers { 1, 2, 3 })
  end)

  it("when the leader's application dies, its check hands leadership over and every proxy reaches a live one",
    function()
      local leader = A.must_leader(c, 15)
      local li = A.index_of(c, leader)
      assert.is_truthy(all_reach(li, { 1, 2, 3 }), "want " .. leader .. ": " .. answers { 1, 2, 3 })
      -- Only the application dies; its agent and its nginx run on.
      local app = pid_of(leader, "app")
      os.execute("kill -KILL " .. app .. " 2>/dev/null")
      assert.is_truthy(A.wait_for(function() return not A.alive(app) end, 10), "the application did not exit")
      -- Every agent, the dead application's too, agrees on a new leader.
      local new = A.wait_for(function()
        local l = A.agreed_leader(c, 1)
        return l ~= leader and l
      end, 20)
      assert.is_truthy(new, "leadership stayed with " .. leader .. ", whose application is dead: " ..
        tostring(A.read(c.nodes[li].log)):sub(-1500))
      local ni = A.index_of(c, new)
      -- Every node's proxy, the old leader's included, reaches the new
      -- leader's application, three rounds in a row.
      assert.is_truthy(all_reach(ni, { 1, 2, 3 }), "want " .. new .. ": " .. answers { 1, 2, 3 })
      -- The old leader's agent lives on as an unhealthy follower; it handed
      -- over because of its health.
      assert.is_true(A.alive(c.nodes[li].pid), "the agent of " .. leader .. " is still running")
      local st = status_of(li)
      assert.are.equal("follower", st and st.role)
      assert.is_false(st.healthy)
      assert.is_truthy((A.read(c.nodes[li].log) or ""):find("no longer leader in term %d+ %(unhealthy%)"))
      -- The application comes back: two good answers make the node healthy
      -- again, and it does not take leadership back (no preempt).
      restart_app(li)
      assert.is_truthy(A.wait_for(function()
        local s = status_of(li)
        return s and s.healthy == true
      end, 15), leader .. " turns healthy again once its application answers")
      assert.are.equal(new, A.must_leader(c, 5))
      assert.is_truthy(all_reach(ni, { 1, 2, 3 }), "want " .. new .. ": " .. answers { 1, 2, 3 })
    end)

  it("after the leader's machine dies, the survivors' nginx reach the new leader's application", function()
    local leader = A.must_leader(c, 15)
    local li = A.index_of(c, leader)
    assert.is_truthy(all_reach(li, { 1, 2, 3 }))
    -- The machine dies: its agent and its application (kill -9 by PID).
    A.signal(c, li, "KILL")
    os.execute("kill -KILL " .. pid_of(leader, "app") .. " 2>/dev/null")
    local live = {}
    for i = 1, 3 do
      if i ~= li then live[#live + 1] = i end
    end
    -- The survivors may still name the dead leader for a moment.
    local new = A.wait_for(function()
      local l = A.agreed_leader(c, 1)
      return l ~= leader and l
    end, 20) or A.must_leader(c, 1)
    assert.are_not.equal(leader, new)
    local ni = A.index_of(c, new)
    assert.is_truthy(all_reach(ni, live), "want " .. new .. ": " .. answers(live))
    local log = A.read(c.nodes[live[1]].log) or ""
    assert.is_truthy(log:find("nginx now sends requests to 127.0.0.1:" .. (9300 + ni), 1, true))
  end)
end)
