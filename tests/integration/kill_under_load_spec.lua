-- No acknowledged write is lost when a node is killed with -9 in the middle
-- of a stream of writes (a writer process keeps writing while it dies).
local A = require("agents")

-- Ends the writer and its curl of the moment, both by PID.
local function stop_writer(pid)
  os.execute(string.format("kill -STOP %d; pkill -P %d; kill -KILL %d", pid, pid, pid) .. " 2>/dev/null")
end

local function start_writer(api, prefix, acks)
  -- every answer 200 is recorded; anything else is not acknowledged
  local script = string.format([[
i=0
while :; do
  i=$((i+1))
  code=$(curl -s -o /dev/null -m 2 -w '%%{http_code}' -X PUT --data-binary "v$i" http://%s/v1/kv/%s$i)
  [ "$code" = 200 ] && echo "$i" >> %s
done]], api, prefix, acks)
  local p = io.popen("sh -c '" .. script:gsub("'", "'\\''") .. "' >/dev/null 2>&1 & echo $!")
  local pid = tonumber(p:read("l"))
  p:close()
  return pid
end

describe("kill -9 under write load", function()
  local c, writer

  before_each(function()
    c = A.cluster(3)
    A.start_all(c)
  end)

  after_each(function()
    if writer then stop_writer(writer) end
    writer = nil
    A.stop(c)
  end)

  for _, victim in ipairs { "leader", "follower" } do
    it("loses no acknowledged write when the " .. victim .. " dies mid-stream", function()
      local leader = A.must_leader(c)
      local li = A.index_of(c, leader)
      local vi = victim == "leader" and li or li % 3 + 1
      local acks = c.dir .. "/acks"
      writer = start_writer(c.nodes[li].api, "w", acks)
      A.sleep(0.5) -- a fixed moment: make test draws no random choices
      A.signal(c, vi, "KILL")
      A.sleep(0.3)
      stop_writer(writer)
      writer = nil
      local new = A.must_leader(c)
      local api = c.nodes[A.index_of(c, new)].api
      local acked = 0
      for line in (A.read(acks) or ""):gmatch("%d+") do
        local status, body = A.http(api, "GET", "/v1/kv/w" .. line)
        assert.are.equal(200, status, "acknowledged write w" .. line .. " was lost")
        assert.are.equal("v" .. line, body)
        acked = acked + 1
      end
      assert.is_true(acked > 10, "the writer got " .. acked .. " writes through")
    end)
  end
end)
