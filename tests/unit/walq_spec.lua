-- The WAL's writer (src/walq.c) through the test-only module qcwal: which
-- thread does the work when the loop drains it, and that the loop never
-- waits for the writer thread.
package.cpath = "./build/?.so;" .. package.cpath
local qcwal = require("qcwal")

describe("the writer's drain", function()
  it("writes on the draining thread when the writer thread is idle", function()
    -- the loop drains for a new term or vote: with the writer idle it
    -- runs the write itself rather than wake the writer and wait
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local ran, here = qcwal.drain_runs_here(dir, 200)
    os.execute("rm -rf " .. dir)
    assert.are.equal(200, ran, "every write was reported durable")
    assert.is_true(here > 0, "no write was synced on the draining thread")
  end)

  it("answers at once, not done, behind a job, which stays on the writer thread", function()
    -- a snapshot install held by a test, or a slow one, must not stall
    -- the loop: the drain neither runs the job nor waits for it
    local drained, finished, here, done = qcwal.drain_behind_job()
    assert.are.equal(0, drained, "the drain reported the job durable")
    assert.is_false(finished, "the drain waited for the job")
    assert.is_false(here, "the job ran on the draining thread")
    assert.is_true(done, "the job ran in the end")
  end)
end)
