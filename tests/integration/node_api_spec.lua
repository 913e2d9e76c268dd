-- libqcluster's in-process node from C (tests/c/node_test.c, one case a
-- run): thread mode asked and stopped from another thread, loop mode on a
-- program's loop built from settings and stopped by a callback, three nodes
-- in one process, forks from another thread, and what the API refuses.
-- Each run is bounded by timeout(1), which ends it by PID.
local agents = require("tests.helpers.agents")

-- setup(dir, port), when given, starts what the case needs beside it and
-- returns the environment to pass and the pid to end afterwards.
local function run_case(name, setup)
  local dir = agents.sh("mktemp -d /tmp/qc-node-XXXXXX"):gsub("%s+$", "")
  local port = agents.base_port() + 1
  local env, pid = "", nil
  if setup then env, pid = setup(dir, port) end
  local out, code = agents.sh(string.format(
    "cd %s && %s timeout -s KILL 60 %s/build/node_test %s %s %d 2>%s/log",
    dir, env, agents.root, name, dir, port, dir))
  if pid then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
  local log = agents.read(dir .. "/log") or ""
  if not os.getenv("QC_KEEP") then os.execute("rm -rf " .. dir) end
  return out, code, log
end

local function expect_ok(name, setup)
  local out, code, log = run_case(name, setup)
  assert(code == 0 and out:find("ok " .. name, 1, true),
    string.format("node_test %s exited %s:\n%s\n-- log tail:\n%s", name, tostring(code), out,
      log:sub(-2000)))
end

describe("the in-process node (libqcluster)", function()
  it("in thread mode answers qc_is_leader and qc_get_leader_info from another thread, runs exec, "
    .. "and stops from it", function()
    expect_ok("thread")
  end)

  it("in loop mode runs on the program's own loop from settings, with their hooks file; a callback "
    .. "may stop it; callbacks run on_start first, on_elected, on_stop last", function()
    expect_ok("loop")
  end)

  it("in thread mode, while a callback holds the loop, other threads stop hearing 'leader' once "
    .. "the lease lapses, and hear it again once the loop runs", function()
    expect_ok("stuck")
  end)

  it("in loop mode, a stop whose leave_on_stop fails at once does not end the program's ev_run",
    function()
      expect_ok("leave", function(dir, port)
        -- b: a real agent on port + 1 that leads (a has priority 0)
        agents.write(dir .. "/b.lua", string.format([[return {identifier = "b", listen_port = %d,
          api_port = 0, election_timeout_ms = 3000, data_dir = "data-b",
          peers = {{identifier = "a", host = "127.0.0.1", port = %d, priority = 0}}}]], port + 1, port))
        local p = io.popen(string.format("cd %s && exec %s/bin/qcluster agent b.lua >b.log 2>&1 & echo $!",
          dir, agents.root))
        local pid = tonumber(p:read("l"))
        p:close()
        return "QC_PEER_PID=" .. pid, pid
      end)
    end)

  it("runs three nodes of one cluster in one process, each on its own thread; stopping the leader "
    .. "hands over to another", function()
    expect_ok("trio")
  end)

  it("runs three nodes made and started on three threads at once, which agree on a leader",
    function()
      expect_ok("spread")
    end)

  it("in loop mode, a node freed by another watcher of the program's loop while its stop hands "
    .. "over is freed when the stop completes: on_stop still runs, the loop goes on", function()
    expect_ok("free")
  end)

  it("while three nodes run on their threads (API, exec checks, redials), a child that another "
    .. "thread forks and execs inherits none of their descriptors; each is close-on-exec from "
    .. "its birth", function()
    expect_ok("fork")
  end)

  it("refuses a bad config or bad settings with QC_EINVAL and a message naming the file and key", function()
    expect_ok("bad")
  end)
end)
