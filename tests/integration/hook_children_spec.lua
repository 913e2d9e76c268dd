-- A hook's own children (os.execute, io.popen) keep their exit status now
-- that hooks run on a thread of their own beside the agent's loop, even
-- while the agent reaps its own children (an exec check every 10 ms).
local A = require("agents")

local hooks = [[
local qcluster = require("qcluster")
local function record(line)
  local f = io.open(os.getenv("QC_EVENTS"), "a")
  f:write(line, "\n")
  f:close()
end
return {
  on_elected = function()
    local right = 0
    for _ = 1, 30 do
      local ok, how, code = os.execute("sleep 0.01; exit 3")
      if ok == nil and how == "exit" and code == 3 then right = right + 1 end
      local p = io.popen("sleep 0.01; echo hi")
      local out = p:read("a")
      local pok, _, pcode = p:close()
      if out == "hi\n" and pok == true and pcode == 0 then right = right + 1 end
    end
    record("children " .. right)
  end,
}
]]

describe("a hook's own children", function()
  local c
  after_each(function() A.stop(c) end)

  it("report their exit status while the agent reaps its own", function()
    c = A.cluster(1, { hooks = hooks, extra = { hook_timeout_ms = 10000, checks = {
      { name = "busy", exec = "true", interval_ms = 10 } } } })
    A.start_all(c)
    local line = A.wait_for(function()
      for _, l in ipairs(A.events(c, 1)) do
        if l:match("^children ") then return l end
      end
    end, 30)
    assert.are.equal("children 60", line)
  end)
end)
