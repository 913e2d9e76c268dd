-- src/base/spawn.c on libev's default loop when the loop runs late: a
-- command that ended before its deadline counts by its status and output,
-- even when the loop sees the child's end, its pipes' end and the deadline
-- in one pass (the child watcher first, the pipes' end after the timer);
-- one that is still running at the deadline is killed and says so.
-- build/spawn_late comes from mk/lua.mk.

local function run(cmd, timeout_ms, block_ms)
  local p = assert(io.popen(string.format("build/spawn_late %q %d %d 2>/dev/null", cmd,
    timeout_ms, block_ms)))
  local out = p:read("a")
  p:close()
  local status, timed_out, text = out:match("^status (%d+) timed_out (%d) out (.-)\n?$")
  assert(status, "unexpected output: " .. out)
  return tonumber(status), timed_out == "1", text
end

describe("spawn on a loop that runs late", function()
  it("takes a command that ended in time by its status and output", function()
    for _ = 1, 3 do
      local status, timed_out, out = run("echo hi; exit 3", 100, 400)
      assert.is_false(timed_out)
      assert.are.equal(3, status)
      assert.are.equal("hi\n", out)
    end
  end)

  it("still kills a command that runs past its deadline", function()
    local status, timed_out = run("echo started; exec sleep 5", 100, 400)
    assert.is_true(timed_out)
    assert.are.equal(128 + 9, status)
    status, timed_out = run("exec sleep 5", 100, 0)
    assert.is_true(timed_out)
    assert.are.equal(128 + 9, status)
  end)
end)
