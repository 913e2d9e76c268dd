-- The chaos run (make chaos): five real agents in network namespaces, a
-- nemesis, clients doing compare-and-set and reads, then the checkers.
--
--   lua5.4 tests/chaos/run.lua [DURATION]     (as root, from the repo root)
--
-- DURATION: seconds, or with a unit (90s, 3m, 1h); default 3m. In the host
-- it builds the namespaces, runs itself inside the hub namespace (--inside)
-- and removes everything afterwards. It ends with "N passed, N failed" (one
-- for each checker) and keeps the run's directory when anything failed.
--
-- CHAOS_SEED fixes what the nemesis, the clients and the proxies' jitter
-- draw (a fresh one when unset; printed first, and with the replay command
-- when anything failed). The run is real time, so the same seed gives the
-- same choices, not the same interleaving.
package.path = "./tests/chaos/?.lua;" .. package.path
local socket = require("socket")
local env = require("env")

local NODES = 5

local function parse_duration(s)
  s = s or "3m"
  local n, unit = tostring(s):match("^(%d+%.?%d*)(%a*)$")
  local mult = ({ [""] = 1, s = 1, m = 60, h = 3600 })[unit]
  if not n or not mult then return nil end
  return tonumber(n) * mult
end

local summary -- a copy of what say() prints, kept in the run directory
-- CHAOS_SEED, or a fresh one from /dev/urandom (the clock when unreadable).
local function chaos_seed()
  local s = tonumber(os.getenv("CHAOS_SEED") or "")
  if s then return math.tointeger(s) or math.floor(s) end
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(3)
  if f then f:close() end
  if b and #b == 3 then return b:byte(1) * 65536 + b:byte(2) * 256 + b:byte(3) + 1 end
  return math.floor(socket.gettime() * 1000) % 1000000 + 1
end

local function say(fmt, ...)
  local line = string.format(fmt, ...)
  io.write(line, "\n")
  io.flush()
  if summary then summary:write(line, "\n") end
end

-- ---- the host side ----------------------------------------------------------

local function host_main()
  local duration = parse_duration(arg[1])
  if not duration then
    say("chaos: bad DURATION %q (seconds, or 90s, 3m, 1h)", tostring(arg[1]))
    say("0 passed, 1 failed")
    os.exit(2)
  end
  local why = env.cannot_run()
  if why then
    say("chaos: CANNOT RUN: %s", why)
    say("0 passed, 1 failed")
    os.exit(1)
  end
  local _, code = env.sh("test -x bin/qcluster && test -x build/chaos-proxy")
  if code ~= 0 then
    say("chaos: bin/qcluster and build/chaos-proxy must be built first (make chaos does it)")
    say("0 passed, 1 failed")
    os.exit(1)
  end
  local stale = env.cleanup()
  if stale > 0 then say("chaos: removed %d namespaces left by an earlier run", stale) end
  local base = os.getenv("CHAOS_DIR") or "build/chaos"
  local dir = env.must(string.format("mkdir -p %s && mktemp -d %s/run-%s-XXXX", env.q(base), env.q(base),
    os.date("%Y%m%d-%H%M%S"))):gsub("%s+$", "")
  dir = env.must("cd " .. env.q(dir) .. " && pwd"):gsub("%s+$", "")
  local ok, err = pcall(env.setup, NODES)
  local rc = 1
  if ok then
    -- in the environment: the clients and proxies started inside draw from it too
    local _, _, c = os.execute(string.format("CHAOS_SEED=%d ip netns exec %s lua5.4 tests/chaos/run.lua --inside %s %s",
      chaos_seed(), env.HUB, env.q(dir), tostring(duration)))
    rc = c or 1
  else
    say("chaos: could not build the network: %s", tostring(err))
    say("0 passed, 1 failed")
  end
  env.cleanup()
  if rc == 0 and not os.getenv("CHAOS_KEEP") then
    os.execute("rm -rf " .. env.q(dir))
  end
  os.exit(rc)
end

-- ---- inside the hub -----------------------------------------------------------

local function inside_main()
  local cjson = require("cjson")
  local checker = require("checker")
  local kvops = require("kvops")
  local httpc = require("httpc")
  local cluster = require("cluster")
  local nemesis = require("nemesis")
  local dir, duration = arg[2], tonumber(arg[3])
  local root = env.sh("pwd"):gsub("%s+$", "")
  local seed = chaos_seed()
  math.randomseed(seed)
  local t_begin = socket.gettime()
  say("chaos: %d nodes in namespaces %s-n1..n%d on a bridge, %s of faults, seed %d", NODES, env.PREFIX,
    NODES, duration >= 60 and string.format("%.1f min", duration / 60) or (duration .. " s"), seed)
  say("chaos: run directory %s", dir)
  env.must("mkdir -p " .. env.q(dir .. "/history"))
  summary = io.open(dir .. "/summary.txt", "w")
  if summary then summary:setvbuf("line") end

  local c = cluster.new(root, dir, NODES)
  local client_pids = {}
  local results, failures = {}, 0
  local function result(name, ok, text)
    results[#results + 1] = { name = name, ok = ok, text = text }
    if not ok then failures = failures + 1 end
  end

  -- The wake probe: what a frozen node says first, and a read through it
  -- (kept in the history, so a stale answer shows up as non-linearizable).
  local probe_hist = assert(io.open(dir .. "/history/probe.jsonl", "a"))
  probe_hist:setvbuf("line")
  local probe_seq = 0
  local function current_key()
    return string.format("e%03d-k%d", math.floor((socket.gettime() - t_begin) / 10), math.random(1, 3))
  end
  local function on_wake(i, p)
    local v, status = c:get(i, "/v1/status", 2)
    if status == 200 and type(v) == "table" then
      p.probe = { role = v.role, term = math.tointeger(v.term), t = socket.gettime() }
    else
      p.probe = { err = tostring(status) }
    end
    probe_seq = probe_seq + 1
    local op = { id = "probe-" .. probe_seq, p = "probe", f = "read", key = current_key() }
    local _, done = kvops.perform(c.nodes[i].api, op, 2, function(inv) probe_hist:write(cjson.encode(inv), "\n") end)
    probe_hist:write(cjson.encode(done), "\n")
  end
  local nem = nemesis.new(c, dir .. "/nemesis.jsonl", on_wake)

  local function teardown()
    for _, pid in ipairs(client_pids) do env.kill(pid, "KILL") end
    c:stop_all()
  end

  local ok, err = xpcall(function()
    for i = 1, NODES do c:start_proxy(i) end
    for i = 1, NODES do c:start(i) end
    local first = c:agreed_leader(20)
    if not first then error("no leader 20 s after the start; see " .. dir .. "/n*/agent.log") end
    say("chaos: leader %s after %.1f s; starting clients and the nemesis", first, socket.gettime() - t_begin)

    -- Clients: each key's history stays small (new key names every 10 s).
    local t0 = t_begin
    local stop = socket.gettime() + duration
    local nodes = {}
    for i = 1, NODES do nodes[#nodes + 1] = string.format("n%d=%s:%d", i, env.addr(i), env.API_PORT) end
    for k = 1, 5 do
      client_pids[#client_pids + 1] = env.spawn(string.format(
        "exec lua5.4 tests/chaos/client.lua %d %s %.3f %.3f 10 3 3 %s", k,
        env.q(dir .. "/history/client" .. k .. ".jsonl"), t0, stop, table.concat(nodes, " ")),
        dir .. "/clients.log")
    end
    nem:run(stop)

    -- Heal, let the clients finish, then ask the cluster how it ended.
    nem:heal_all()
    local t_heal = socket.gettime()
    for _, pid in ipairs(client_pids) do
      for _ = 1, 100 do
        if not env.running(pid) then break end
        socket.sleep(0.05)
      end
      env.kill(pid, "KILL")
    end
    client_pids = {}
    local leader = c:agreed_leader(30)
    local t_leader = socket.gettime()
    local applied = leader and c:converged(30)
    local t_conv = socket.gettime()
    result("healed", leader ~= nil and applied ~= nil, leader and applied and
      string.format("leader %s %.1f s after healing, all %d replicas at index %d %.1f s after healing",
        leader, t_leader - t_heal, NODES, applied, t_conv - t_heal)
      or string.format("no agreed leader or no convergence 30 s after healing (leader %s)", tostring(leader)))

    -- Final reads: linearizable through the leader (part of the history),
    -- then each replica's own copy.
    local ops = kvops.load((function()
      local t = {}
      for k = 1, 5 do t[#t + 1] = dir .. "/history/client" .. k .. ".jsonl" end
      t[#t + 1] = dir .. "/history/probe.jsonl"
      return t
    end)())
    local keys = {}
    for _, op in ipairs(ops) do keys[op.key] = true end
    local final, replicas = {}, {}
    local fh = assert(io.open(dir .. "/history/final.jsonl", "w"))
    local li = leader and tonumber(leader:match("%d+")) or 1
    local n = 0
    for key in pairs(keys) do
      n = n + 1
      local _, done = kvops.perform(c.nodes[li].api, { id = "final-" .. n, p = "final", f = "read", key = key }, 5,
        function(inv) fh:write(cjson.encode(inv), "\n") end)
      fh:write(cjson.encode(done), "\n")
      if done.t == "ok" then
        final[key] = { value = done.value, rev = math.tointeger(done.rev) }
      else
        final[key] = { err = tostring(done.code or done.err) }
      end
    end
    fh:close()
    for i = 1, NODES do
      local r = {}
      for key in pairs(keys) do
        local res = httpc.request(env.addr(i), env.API_PORT, "GET", "/v1/kv/" .. key .. "?stale", nil, 2)
        if res.status == 200 then
          r[key] = { value = res.body, rev = tonumber(res.headers["x-qcluster-revision"]) }
        elseif res.status == 404 then
          r[key] = { rev = 0 }
        else
          r[key] = { err = tostring(res.status or res.err) }
        end
      end
      replicas["n" .. i] = r
    end

    -- The hooks' records, read before the agents stop.
    local t_end = socket.gettime()
    local records = {}
    for i = 1, NODES do records["n" .. i] = checker.parse_records(env.read(c.nodes[i].records)) end
    teardown()

    -- Faults.
    local parts = {}
    local total = 0
    for _, k in ipairs(nemesis.KINDS) do
      local cnt = nem.counts[k] or 0
      total = total + cnt
      local extra = ""
      if k == "kill" or k == "pause" then
        extra = string.format(" (%d of the leader)", nem.counts[k .. " (of the leader)"] or 0)
      end
      parts[#parts + 1] = string.format("%s %d%s", k, cnt, extra)
    end
    say("faults: %d injected: %s; %d of them with loss or delay on top", total, table.concat(parts, ", "),
      nem.counts.combined or 0)

    -- Operations.
    local all = kvops.load { dir .. "/history/client1.jsonl", dir .. "/history/client2.jsonl",
      dir .. "/history/client3.jsonl", dir .. "/history/client4.jsonl", dir .. "/history/client5.jsonl",
      dir .. "/history/probe.jsonl", dir .. "/history/final.jsonl" }
    local st = { read = {}, cas = {} }
    for _, op in ipairs(all) do
      local s = op.status
      if op.f == "cas" and op.conflict then s = "409" end
      st[op.f][s] = (st[op.f][s] or 0) + 1
    end
    local function fmt(t)
      return string.format("ok %d, failed %d%s, unknown %d", t.ok or 0, t.fail or 0,
        t["409"] and string.format(", 409 %d", t["409"]) or "", t.info or 0)
    end
    local nreads, ncas = 0, 0
    for _, v in pairs(st.read) do nreads = nreads + v end
    for _, v in pairs(st.cas) do ncas = ncas + v end
    say("operations: %d by 5 clients (+ %d wake probes, %d final reads): reads %d (%s); cas %d (%s)",
      #all, probe_seq, n, nreads, fmt(st.read), ncas, fmt(st.cas))

    -- Every time from here on counts from the run's start, for reading.
    for _, op in ipairs(all) do
      op.invoke = op.invoke - t_begin
      if op.complete then op.complete = op.complete - t_begin end
    end
    for _, recs in pairs(records) do
      for _, r in ipairs(recs) do r.t = r.t - t_begin end
    end
    local procs = {}
    for name, pr in pairs(nem.procs) do
      local p = { kills = {}, pauses = {} }
      for _, k in ipairs(pr.kills) do p.kills[#p.kills + 1] = k - t_begin end
      for _, x in ipairs(pr.pauses) do
        p.pauses[#p.pauses + 1] = { stop = x.stop - t_begin, cont = x.cont and x.cont - t_begin, probe = x.probe }
      end
      procs[name] = p
    end
    t_end = t_end - t_begin
    say("(times below are seconds since the run began; the history files hold wall-clock times)")

    -- Linearizability, key by key.
    local by, order = checker.by_key(all)
    local lin_ok, bad, undecided, explored, maxops, t_lin = true, {}, 0, 0, 0, os.clock()
    for _, key in ipairs(order) do
      local okk, rep = checker.linearizable(by[key], { max_explored = 5e6 })
      explored = explored + rep.explored
      maxops = math.max(maxops, rep.ops)
      if okk == nil then undecided = undecided + 1 end
      if not okk then
        lin_ok = false
        bad[#bad + 1] = string.format("  %s (%d ops): %s; first unexplained: %s\n" ..
          "    (grep '\"%s\"' %s/history/*.jsonl)", key, rep.ops, rep.reason, checker.describe(rep.op), key, dir)
      end
    end
    result("linearizable", lin_ok, string.format(
      "%d keys (at most %d ops each), %d non-linearizable, %d undecided; %d search steps in %.1f s",
      #order, maxops, #bad - undecided, undecided, explored, os.clock() - t_lin) ..
      (#bad > 0 and ("\n" .. table.concat(bad, "\n")) or ""))

    local lw_ok, lw = checker.lost_writes(all, final, replicas)
    result("no-lost-writes", lw_ok, string.format(
      "%d acknowledged writes on %d keys; final values read through %s and on each of %d replicas; %d problems",
      lw.acked, lw.keys, leader or "?", NODES, #lw.problems) ..
      (#lw.problems > 0 and ("\n  " .. table.concat(lw.problems, "\n  ", 1, math.min(#lw.problems, 20))) or ""))

    local ld_ok, ld = checker.leadership(records, procs, t_end)
    result("one-leader", ld_ok, string.format(
      "%d leadership intervals from the hooks on %d nodes, %d overlaps between running nodes, " ..
      "%d while the older leader was frozen",
      ld.intervals, NODES, ld.overlaps, #ld.excused) ..
      (#ld.problems > 0 and ("\n  " .. table.concat(ld.problems, "\n  ")) or ""))

    local fz_ok, fz = checker.frozen_leaders(records, procs, t_end)
    result("frozen-leaders", fz_ok, string.format(
      "%d leaders frozen, %d saw a successor elected; each stepped down first on waking " ..
      "(at most %.0f ms after SIGCONT), in a lower term",
      fz.paused_leaders, fz.succeeded, fz.worst_ms) ..
      (#fz.problems > 0 and ("\n  " .. table.concat(fz.problems, "\n  ")) or ""))

    -- Figures, not checks: how long the cluster went without a leader
    -- after the leader was killed or frozen (until another's on_elected).
    local iv = checker.intervals(records, procs, t_end)
    local function next_leader(node, t)
      for _, b in ipairs(iv) do
        if b.node ~= node and b.from >= t then return b.from - t end
      end
    end
    local gaps = { kill = {}, pause = {}, crash = {} }
    local crashes = {}
    for _, cr in ipairs(nem.crashes or {}) do
      crashes[#crashes + 1] = { from = cr.from - t_begin, to = cr.to - t_begin,
        restart = cr.restart and cr.restart - t_begin }
    end
    local function in_crash(t)
      for _, cr in ipairs(crashes) do
        if t >= cr.from and t <= cr.to then return true end
      end
    end
    for _, cr in ipairs(crashes) do
      if cr.restart then gaps.crash[#gaps.crash + 1] = next_leader(nil, cr.restart) end
    end
    for _, a in ipairs(iv) do
      if a.ended == "killed" and not in_crash(a.to) then
        gaps.kill[#gaps.kill + 1] = next_leader(a.node, a.to)
      end
      for _, p in ipairs(procs[a.node].pauses) do
        if a.from <= p.stop and a.to >= p.stop then
          gaps.pause[#gaps.pause + 1] = next_leader(a.node, p.stop)
        end
      end
    end
    local function stats(t)
      table.sort(t)
      if #t == 0 then return "none" end
      return string.format("%d, p50 %.0f ms, max %.0f ms", #t, t[(#t + 1) // 2] * 1000, t[#t] * 1000)
    end
    say("fail-over (to the next on_elected): leader killed %s; leader frozen %s; " ..
      "every node killed, after the restart: %s", stats(gaps.kill), stats(gaps.pause), stats(gaps.crash))
  end, debug.traceback)

  if not ok then
    teardown()
    say("chaos: the run broke: %s", tostring(err))
    result("run", false, "did not finish")
  end
  for _, r in ipairs(results) do say("%-16s %s  %s", r.name, r.ok and "PASS" or "FAIL", r.text) end
  say("chaos: took %.0f s", socket.gettime() - t_begin)
  if failures > 0 then
    say("chaos: kept %s: history/*.jsonl (every operation), n*/agent.log, n*/leader.records (hooks), " ..
      "nemesis.jsonl (faults)", dir)
    say("chaos: replay the same faults and client choices (real time: not the same interleaving): " ..
      "CHAOS_SEED=%d make chaos DURATION=%s", seed, tostring(math.tointeger(duration) or duration))
  end
  say("%d passed, %d failed", #results - failures, failures)
  os.exit(failures == 0 and 0 or 1)
end

if arg[1] == "--inside" then inside_main() else host_main() end
