-- The WAL's writer (src/walq.c) through the test-only module qcwal: which
-- thread does the work when the loop drains it.
package.cpath = "./build/?.so;" .. package.cpath
local qcwal = require("qcwal")

describe("the writer's drain", function()
  it("writes on the draining thread when the writer thread is idle", function()
    -- the loop waits in a drain for a new term or vote: with the writer
    -- idle it runs the write itself rather than wake the writer and wait
    local ran, here = qcwal.drain_runs_here(20)
    assert.are.equal(20, ran, "every job ran and was reported")
    assert.is_true(here > 0, "no job ran on the draining thread")
  end)
end)
