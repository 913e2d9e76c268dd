-- The Lua host (src/lua/luahost.c) through build/luahost_driver: hooks run in
-- event order, failing and runaway hooks are stopped and counted, exec and
-- after callbacks come back through the same queue, reload is safe.
local driver = require("driver")

local dir

-- Writes conf.lua (with extra config text) and hooks.lua; runs the events.
local function run_hooks(hooks, events, extra, timeout)
  driver.write(dir .. "/conf.lua", ([[
return {
  identifier = "a", listen_port = 7001, hook_timeout_ms = 200, hooks = "hooks.lua",
  peers = {{host = "127.0.0.1", port = 7002, identifier = "b", metadata = {zone = "z2"}}},
  metadata = {zone = "z1"},
  %s
}]]):format(extra or ""))
  driver.write(dir .. "/hooks.lua", hooks)
  local args = { "hooks", dir .. "/conf.lua" }
  for _, e in ipairs(events) do args[#args + 1] = e end
  return driver.run(args, timeout)
end

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do
    if not l:match("^counter ") and not l:match("^pending=") then t[#t + 1] = l end
  end
  return t
end

describe("hooks", function()
  before_each(function() dir = driver.tmpdir() end)
  after_each(function() driver.rmdir(dir) end)

  it("run one at a time in the order their events were fired", function()
    local hooks = [[
      local function p(name) return function() print(name) end end
      return { on_start = p("start"), on_elected = p("elected"), on_demoted = p("demoted"),
               on_leader_change = p("leader_change"), on_stop = p("stop") }
    ]]
    local rc, out = run_hooks(hooks, { "on_start", "on_elected", "on_leader_change",
      "on_demoted", "on_elected", "on_stop" })
    assert.are.equal(0, rc)
    assert.are.same({ "start", "elected", "leader_change", "demoted", "elected", "stop" },
      lines(out))
    assert.matches("counter on_elected runs=2 errors=0", out)
    assert.matches("pending=0", out)
  end)

  it("take inline hooks from the config, overridden by the hooks file", function()
    local rc, out = run_hooks("return { on_start = function() print('file start') end }",
      { "on_start", "on_stop" },
      "on_start = function() print('inline start') end,"
      .. " on_stop = function() print('inline stop') end,")
    assert.are.equal(0, rc)
    assert.are.same({ "file start", "inline stop" }, lines(out))
  end)

  it("get the documented arguments and the qcluster module", function()
    local hooks = [[
      local function show(t) return t and t.identifier .. ":" .. t.port .. ":" .. t.metadata.zone
        or "nil" end
      return {
        on_start = function(ev) print("start", show(ev.self)) end,
        on_elected = function(ev)
          print("elected", ev.term, show(ev.self), show(ev.previous_leader))
        end,
        on_demoted = function(ev) print("demoted", ev.term, ev.reason, show(ev.leader)) end,
        on_peer_up = function(p) print("peer_up", show(p), p.up, p.role, p.priority) end,
        on_stop = function(ev) print("stop", ev.reason, ev.term) end,
        on_leader_change = function()
          local ps = qcluster.peers()
          print("module", qcluster.is_leader(), qcluster.term(), show(qcluster.self()),
            show(qcluster.get_leader_info()), #ps, show(ps[1]), ps[1].up, ps[1].role,
            ps[1].priority, math.type(qcluster.now()), qcluster.now() > 1.7e9)
          qcluster.log("info", "hello from a hook")
        end,
      }
    ]]
    local rc, out, err = run_hooks(hooks, { "on_start", "on_elected", "on_demoted",
      "on_peer_up", "on_stop", "on_leader_change" })
    assert.are.equal(0, rc, err)
    assert.are.same({
      "start\ta:7001:z1",
      "elected\t7\ta:7001:z1\tb:7002:z2",
      "demoted\t8\thigher_term\tb:7002:z2",
      "peer_up\tb:7002:z2\ttrue\tfollower\t2",
      "stop\tshutdown\tnil",
      "module\ttrue\t7\ta:7001:z1\ta:7001:z1\t1\tb:7002:z2\ttrue\tfollower\t2\tfloat\ttrue",
    }, lines(out))
    assert.matches("INFO  hook: hello from a hook", err)
  end)

  it("on_member_join and on_member_leave get the Peer and are counted like the others",
    function()
      local hooks = [[
        local function show(p) return p.identifier .. ":" .. p.port .. ":" .. p.metadata.zone end
        return {
          on_member_join = function(p) print("join", show(p), p.role, p.priority) end,
          on_member_leave = function(p) print("leave", show(p)) end,
          on_stop = function() print("stop") end,
        }
      ]]
      local rc, out, err = run_hooks(hooks, { "on_member_join", "on_member_leave", "on_stop",
        "on_member_join" })
      assert.are.equal(0, rc, err)
      assert.are.same({ "join\tb:7002:z2\tfollower\t2", "leave\tb:7002:z2", "stop",
        "join\tb:7002:z2\tfollower\t2" }, lines(out))
      assert.matches("counter on_member_join runs=2 errors=0", out)
      assert.matches("counter on_member_leave runs=1 errors=0", out)
    end)

  it("skip a hook that is not defined, silently", function()
    local rc, out, err = run_hooks("return { on_stop = function() print('stop') end }",
      { "on_member_join", "on_kv_change", "on_stop" })
    assert.are.equal(0, rc)
    assert.are.same({ "stop" }, lines(out))
    assert.is_nil(out:match("on_member_join"))
    assert.are.equal("", err)
  end)

  it("that raise an error are logged and counted, and the next one runs", function()
    local hooks = [[
      return { on_demoted = function() error("boom") end,
               on_stop = function() print("still here") end }
    ]]
    local rc, out, err = run_hooks(hooks, { "on_demoted", "on_stop" })
    assert.are.equal(0, rc)
    assert.are.same({ "still here" }, lines(out))
    assert.matches("ERROR hook: on_demoted failed: [^\n]*hooks.lua:1: boom; stack traceback", err)
    assert.matches("counter on_demoted runs=1 errors=1", out)
    assert.matches("counter on_stop runs=1 errors=0", out)
  end)

  it("that loop forever are stopped within their budget", function()
    local hooks = [[
      return { on_peer_up = function() while true do end end,
               on_stop = function() print("next ran") end }
    ]]
    local rc, out, err, secs = run_hooks(hooks, { "on_peer_up", "on_stop" })
    assert.are.equal(0, rc)
    assert.are.same({ "next ran" }, lines(out))
    assert.matches("WARN  hook: on_peer_up stopped after 200 ms: time budget of 200 ms exceeded",
      err)
    assert.matches("counter on_peer_up runs=1 errors=1", out)
    assert.is_true(secs < 10, "took " .. secs .. " s")
  end)

  it("that swallow the budget error with pcall are stopped all the same", function()
    local hooks = [[
      return {
        on_peer_down = function()
          while true do pcall(function() while true do end end) end
        end,
        on_member_leave = function()
          local co = coroutine.wrap(function() while true do pcall(error, "x") end end)
          while true do pcall(co) end
        end,
        on_stop = function() print("next ran") end,
      }
    ]]
    local rc, out, err = run_hooks(hooks, { "on_peer_down", "on_member_leave", "on_stop" })
    assert.are.equal(0, rc)
    assert.are.same({ "next ran" }, lines(out))
    assert.matches("on_peer_down stopped after 200 ms", err)
    assert.matches("on_member_leave stopped after 200 ms", err)
    assert.matches("counter on_peer_down runs=1 errors=1", out)
  end)

  it("that fail on every event log a bounded number of lines and count the rest", function()
    local events = {}
    for i = 1, 50 do events[i] = "on_peer_up" end
    events[#events + 1] = "on_stop"
    local rc, out, err = run_hooks([[
      return { on_peer_up = function() error("boom") end,
               on_stop = function() print("still here") end }
    ]], events)
    assert.are.equal(0, rc)
    assert.are.same({ "still here" }, lines(out))
    local n = select(2, err:gsub("on_peer_up failed", ""))
    assert.are.equal(5, n)
    assert.matches("on_peer_up: 45 more error lines suppressed", err)
    assert.matches("counter on_peer_up runs=50 errors=50", out)
  end)

  it("that run past their budget are counted as overruns", function()
    local rc, out = run_hooks([[
      return { on_peer_up = function() while true do end end,
               on_peer_down = function() error("not an overrun") end }
    ]], { "on_peer_up", "on_peer_down" })
    assert.are.equal(0, rc)
    assert.matches("counter on_peer_up runs=1 errors=1 overruns=1", out)
    assert.matches("counter on_peer_down runs=1 errors=1 overruns=0", out)
  end)

  it("cannot end the agent with os.exit", function()
    local rc, out, err = run_hooks([[
      return { on_start = function() os.exit(3) end, on_stop = function() print("alive") end }
    ]], { "on_start", "on_stop" })
    assert.are.equal(0, rc)
    assert.are.same({ "alive" }, lines(out))
    assert.matches("os.exit is not allowed", err)
  end)

  it("refuse to load a hooks file with a syntax error, as FILE:LINE", function()
    local rc, _, err = run_hooks("return {\n on_start = function() end end\n}", {})
    assert.are.equal(2, rc)
    assert.are.equal(dir .. "/hooks.lua:2: '}' expected (to close '{' at line 1) near 'end'\n",
      err)
  end)

  it("refuse a hooks file with an unknown hook name", function()
    local rc, _, err = run_hooks("return { on_elcted = function() end }", {})
    assert.are.equal(2, rc)
    assert.matches("^" .. dir:gsub("%p", "%%%0") .. "/hooks.lua: on_elcted: unknown hook", err)
  end)
end)

describe("qcluster.exec", function()
  before_each(function() dir = driver.tmpdir() end)
  after_each(function() driver.rmdir(dir) end)

  it("returns stdout, stderr and the exit status to its callback", function()
    local rc, out = run_hooks([[
      return { on_start = function()
        qcluster.exec("printf 'out\n'; printf 'err' >&2; exit 3", function(r)
          print(("status=%d stdout=[%s] stderr=[%s] timed_out=%s")
            :format(r.status, (r.stdout:gsub("\n", "|")), r.stderr, tostring(r.timed_out)))
        end)
        print("start returned")
      end }
    ]], { "on_start" })
    assert.are.equal(0, rc)
    assert.are.same({ "start returned",
      "status=3 stdout=[out|] stderr=[err] timed_out=false" }, lines(out))
    assert.matches("counter exec runs=1 errors=0", out)
  end)

  it("passes opts.env and runs without a callback", function()
    local rc, out = run_hooks([[
      return { on_start = function()
        qcluster.exec("echo \"$QC_A-$QC_B\" > ]] .. dir .. [[/env.txt")
        qcluster.exec("echo \"$QC_A-$QC_B\"", {env = {QC_A = "x", QC_B = 5}}, function(r)
          print(r.stdout)
        end)
      end }
    ]], { "on_start" })
    assert.are.equal(0, rc)
    assert.are.same({ "x-5" }, lines(out))
    assert.are.equal("-\n", driver.slurp(dir .. "/env.txt"))
  end)

  it("kills the command's process group after opts.timeout_ms", function()
    local rc, out, err, secs = run_hooks([[
      return { on_start = function()
        qcluster.exec("sleep 30 & sleep 30; echo never", {timeout_ms = 200}, function(r)
          print("timed_out", r.timed_out, r.status, r.signal, r.stdout == "")
        end)
      end }
    ]], { "on_start" })
    assert.are.equal(0, rc)
    assert.are.same({ "timed_out\ttrue\t137\t9\ttrue" }, lines(out))
    assert.matches("ran past its timeout", err)
    assert.is_true(secs < 10, "took " .. secs .. " s")
  end)

  it("callbacks run through the queue, after the hooks fired before them", function()
    local rc, out = run_hooks([[
      return {
        on_start = function()
          qcluster.exec("true", function() print("exec callback") end)
          print("start")
        end,
        on_stop = function() print("stop") end,
      }
    ]], { "on_start", "on_stop" })
    assert.are.equal(0, rc)
    assert.are.same({ "start", "stop", "exec callback" }, lines(out))
  end)

  it("callbacks have the hook budget too", function()
    local rc, out, err = run_hooks([[
      return { on_start = function()
        qcluster.exec("true", function() while true do end end)
        qcluster.after(10, function() print("after ran") end)
      end }
    ]], { "on_start" })
    assert.are.equal(0, rc)
    assert.matches("exec stopped after 200 ms", err)
    assert.are.same({ "after ran" }, lines(out))
  end)

  it("runs at most exec_max commands at once; the next calls fail to their callbacks",
    function()
    local log = dir .. "/running"
    local rc, out, err = run_hooks(([[
      local ok, refused, returned = 0, 0, 0
      return { on_start = function()
        for _ = 1, 200 do
          local pid, e = qcluster.exec("echo + >> %s; sleep 0.5; echo - >> %s", function(r)
            if r.error then
              assert(r.status == -1 and r.error:find("exec_max"), r.error)
              refused = refused + 1
            else
              ok = ok + 1
            end
            if ok + refused == 200 then
              print("ok", ok, "refused", refused, "returned nil", returned)
              -- a finished command frees its slot
              qcluster.exec("true", function(r2) print("after", r2.status, r2.error) end)
            end
          end)
          if pid == nil then returned = returned + 1; assert(e:find("exec_max"), e) end
        end
      end }
    ]]):format(log, log), { "on_start" }, "hook_timeout_ms = 20000,") -- 200 forks: slow builds
    assert.are.equal(0, rc, err)
    assert.are.same({ "ok\t64\trefused\t136\treturned nil\t136", "after\t0\tnil" }, lines(out))
    -- never more than 64 at once, as the children themselves saw it
    local running, most = 0, 0
    for c in driver.slurp(log):gmatch("[+-]") do
      running = running + (c == "+" and 1 or -1)
      if running > most then most = running end
    end
    assert.is_true(most > 0 and most <= 64, "most at once: " .. most)
  end)

  it("rejects bad arguments with an error in the hook", function()
    local rc, out, err = run_hooks([[
      return { on_start = function() qcluster.exec("true", {timeout_ms = -1}) end }
    ]], { "on_start" })
    assert.are.equal(0, rc)
    assert.matches("opts.timeout_ms: expected an integer > 0", err)
    assert.matches("counter on_start runs=1 errors=1", out)
  end)
end)

describe("stopping the host", function()
  before_each(function() dir = driver.tmpdir() end)
  after_each(function() driver.rmdir(dir) end)

  it("leaves a hook blocked in C behind instead of waiting for it", function()
    local rc, out, err = run_hooks([[
      return { on_start = function() os.execute("sleep 3"); print("returned") end }
    ]], { "on_start", "wait:300", "stop" })
    assert.are.equal(0, rc, err)
    assert.is_nil(out:match("returned"))
    assert.matches("on_start still running: its thread is left behind until it returns", err)
    assert.matches("on_start still running after %d+ ms %(budget 200 ms%), blocked in a C call:"
      .. " last called execute%(%) at [^\n]*hooks.lua:1", err)
  end)

  it("kills running commands and drops timers and queued hooks", function()
    local pidfile = dir .. "/pid"
    local rc, out = run_hooks(([[
      return {
        on_start = function()
          qcluster.exec("echo $$ > %s; exec sleep 30", function() print("never") end)
          qcluster.after(5000, function() print("never") end)
        end,
        on_stop = function() print("never") end,
      }
    ]]):format(pidfile), { "on_start", "drain", "wait:300", "on_stop", "stop" })
    assert.are.equal(0, rc)
    assert.matches("pending=1", out)
    assert.is_nil(out:match("never"))
    local pid = tonumber(driver.slurp(pidfile))
    assert.is_number(pid)
    assert.is_false(os.execute("kill -0 " .. pid .. " 2>/dev/null") == true)
  end)
end)

describe("qcluster.after", function()
  before_each(function() dir = driver.tmpdir() end)
  after_each(function() driver.rmdir(dir) end)

  it("fires once, in timer order", function()
    local rc, out = run_hooks([[
      return { on_start = function()
        local t0 = qcluster.now()
        qcluster.after(120, function() print("second") end)
        qcluster.after(30, function()
          print("first", qcluster.now() - t0 >= 0.02)
        end)
      end }
    ]], { "on_start" })
    assert.are.equal(0, rc)
    assert.are.same({ "first\ttrue", "second" }, lines(out))
    assert.matches("counter after runs=2 errors=0", out)
  end)
end)

describe("reload", function()
  before_each(function() dir = driver.tmpdir() end)
  after_each(function() driver.rmdir(dir) end)

  -- on_start rewrites hooks.lua with `text`, so the next reload sees it.
  local function rewriting(text)
    return ([[
      local path = debug.getinfo(1, "S").source:sub(2)
      return {
        on_start = function()
          local f = assert(io.open(path, "w"))
          f:write(%q)
          f:close()
        end,
        on_elected = function() print("old elected") end,
      }
    ]]):format(text)
  end

  it("keeps the old hooks when the file is broken", function()
    local rc, out, err = run_hooks(rewriting("return { on_elected = function() end end }"),
      { "on_start", "reload", "on_elected" })
    assert.are.equal(0, rc)
    local l = lines(out)
    assert.matches("^reload: " .. dir:gsub("%p", "%%%0") .. "/hooks.lua:1: .*near 'end'$", l[1])
    assert.are.equal("old elected", l[2])
    assert.matches("reload failed, keeping the old hooks", err)
  end)

  it("keeps the old hooks when the file raises or is not a table", function()
    local rc, out = run_hooks(rewriting("error('nope')"), { "on_start", "reload", "on_elected" })
    assert.are.equal(0, rc)
    assert.matches("^reload: .*hooks.lua:1: nope\nold elected\n", out)
  end)

  it("replaces the hooks when the file is good", function()
    local rc, out = run_hooks(
      rewriting("return { on_elected = function() print('new elected') end }"),
      { "on_start", "on_elected", "reload", "on_elected", "on_start" })
    assert.are.equal(0, rc)
    assert.are.same({ "old elected", "reload: ok", "new elected" }, lines(out))
  end)
end)
