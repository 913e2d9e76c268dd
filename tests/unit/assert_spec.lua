-- qc_assert (src/base/assert.h): a broken invariant stops the process with
-- a message naming the file, the line and the condition; one that holds
-- does nothing. The same with -DNDEBUG -O2: release builds keep it.
-- build/assert_fire and build/assert_fire_ndebug come from mk/assert.mk.

local SOURCE = "tests/c/assert_fire.c"

-- Runs prog with arg; its stdout, its stderr and the shell's status (128 +
-- the signal when a signal ended it).
local function run(prog, arg)
  local err = os.tmpname()
  local p = assert(io.popen(prog .. " " .. arg .. " 2>" .. err .. "; echo \"rc=$?\""))
  local out = p:read("a")
  p:close()
  local f = assert(io.open(err, "rb"))
  local stderr = f:read("a")
  f:close()
  os.remove(err)
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return out:gsub("rc=%d+%s*$", ""), stderr, rc
end

-- The line and the condition of the check that "break" makes fail, read
-- from the source so that the test follows it.
local function broken_check()
  local n = 0
  for line in io.lines(SOURCE) do
    n = n + 1
    local cond = line:match('"break"%) == 0%) qc_assert%((.*)%);%s*$')
    if cond then return n, cond end
  end
  error("no \"break\" check in " .. SOURCE)
end

for _, prog in ipairs({ "build/assert_fire", "build/assert_fire_ndebug" }) do
  describe(prog, function()
    it("stops at a broken invariant, naming the file, the line and the condition", function()
      local line, cond = broken_check()
      local out, stderr, rc = run(prog, "break")
      assert.are.equal(128 + 6, rc) -- SIGABRT
      assert.are.equal("", out)     -- it did not go on
      -- Its first line (the shell may add its own "Aborted" after it).
      assert.are.equal(string.format("qcluster: %s:%d: invariant failed: %s", SOURCE, line, cond),
                       stderr:match("^[^\n]*"))
    end)

    it("goes on when the invariant holds", function()
      local out, stderr, rc = run(prog, "hold")
      assert.are.equal(0, rc)
      assert.are.equal("went on\n", out)
      assert.are.equal("", stderr)
    end)
  end)
end
