-- The integration specs' process helper (tests/helpers/agents.lua): an
-- exited process counts as gone at once, also while it is a zombie that
-- its reaper has not collected yet (an agent's reaper is PID 1, which may
-- take seconds: every teardown waited for it).
local A = require("agents")

describe("agents.alive", function()
  it("is false for an exited process not yet reaped (a zombie), true for a running one", function()
    -- the child exits once its parent has exec'd a sleep, which never waits
    -- for it, so it stays a zombie while the parent lives; a child that
    -- ended while the parent was still the shell was collected by the shell
    -- (dash reaps finished jobs between commands)
    local p = io.popen("sh -c 'p=$$; (while [ -e /proc/$p ] && "
      .. "[ \"$(cat /proc/$p/comm 2>/dev/null)\" != sleep ]; do :; done) & "
      .. "echo $$ $!; exec sleep 30 >/dev/null' &")
    local parent, child = p:read("n", "n")
    p:close()
    finally(function() os.execute("kill -KILL " .. parent .. " 2>/dev/null") end)
    assert.is_number(parent)
    assert.is_number(child)
    assert.is_truthy(A.wait_for(function()
      local stat = A.read("/proc/" .. child .. "/stat") or ""
      return stat:match("^%d+ %b() Z")
    end, 10), "the child became a zombie")
    assert.is_false(A.alive(child))
    assert.is_true(A.alive(parent))
  end)

  it("reads the state after the command's name, whatever the name holds", function()
    -- /proc/PID/stat: "PID (NAME) STATE ...", and NAME may hold ") Z"
    local dir = A.sh("mktemp -d /tmp/qc-spec-XXXXXX"):gsub("%s+$", "")
    local name = dir .. "/x) Z y"
    os.execute(string.format("ln -s \"$(command -v sleep)\" '%s'", name))
    local p = io.popen(string.format("'%s' 30 >/dev/null 2>&1 & echo $!", name))
    local pid = tonumber(p:read("l"))
    p:close()
    finally(function()
      os.execute("kill -KILL " .. pid .. " 2>/dev/null")
      os.execute("rm -rf " .. dir)
    end)
    assert.is_truthy(A.wait_for(function()
      return (A.read("/proc/" .. pid .. "/comm") or ""):find("x) Z y", 1, true)
    end, 10), "the process runs under that name")
    assert.is_true(A.alive(pid))
  end)

  it("is false for a PID no process has", function()
    local p = io.popen("sh -c 'echo $$'")
    local pid = tonumber(p:read("l"))
    p:close()
    -- that shell has exited and was reaped by io.popen's close
    assert.is_false(A.alive(pid))
  end)
end)
