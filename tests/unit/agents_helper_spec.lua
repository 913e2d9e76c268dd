-- The integration specs' process helper (tests/helpers/agents.lua): an
-- exited process counts as gone at once, also while it is a zombie that
-- its reaper has not collected yet (an agent's reaper is PID 1, which may
-- take seconds: every teardown waited for it).
local A = require("agents")

describe("agents.alive", function()
  it("is false for an exited process not yet reaped (a zombie), true for a running one", function()
    -- the child exits at once; its parent then execs a sleep that never
    -- waits for it, so the child stays a zombie while the parent lives
    local p = io.popen("sh -c 'sleep 0 & echo $$ $!; exec sleep 30 >/dev/null' &")
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

  it("is false for a PID no process has", function()
    local p = io.popen("sh -c 'echo $$'")
    local pid = tonumber(p:read("l"))
    p:close()
    -- that shell has exited and was reaped by io.popen's close
    assert.is_false(A.alive(pid))
  end)
end)
