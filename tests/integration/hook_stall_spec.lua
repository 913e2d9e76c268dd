-- A hook blocked in a C call never stalls consensus (README "Hooks"), on
-- real agents: each blocking on_elected below (regex backtracking in
-- string.find, io.read on a FIFO the test writes to once it has looked,
-- os.execute of a sleep, a lua-socket connect to a 127.0.0.1 listener whose
-- backlog is full) blocks once, on the first leader. Until hook_stuck_ms passes
-- that leader keeps leading, no node starts an election, and every API
-- answers reads; the overrun is counted; then the stuck leader turns
-- unhealthy and hands over (on_demoted "unhealthy").
local A = require("agents")
local socket = require("socket")

local STUCK_MS = 1500

-- The hooks: on_elected runs block() the first time any node is elected
-- (a marker file next to the events file), and every hook call is
-- recorded in $QC_EVENTS as "NAME time ...".
local function hooks(block)
  return [[
local qcluster = require("qcluster")
local path = os.getenv("QC_EVENTS")
local marker = path:match("^(.*)/") .. "/blocked"
local function record(...)
  local f = io.open(path, "a")
  f:write(table.concat({ ... }, " "), "\n")
  f:close()
end
local function block()
]] .. block .. [[
end
return {
  on_elected = function(ev)
    local f = io.open(marker, "r")
    if f then f:close(); record("elected", ev.term); return end
    f = io.open(marker, "w"); f:close()
    record("blocking", ev.term, string.format("%.3f", qcluster.now()))
    block()
    record("returned", ev.term, qcluster.term(), tostring(qcluster.is_leader()))
  end,
  on_demoted = function(ev) record("demoted", ev.term, ev.reason) end,
  on_health_change = function(ev) record("health", tostring(ev.healthy), ev.check) end,
}
]]
end

-- GET path with a short timeout: status, body (nil and the error when it
-- does not answer in time).
local function get(api, path, timeout)
  local host, port = api:match("^(.-):(%d+)$")
  local s = socket.tcp()
  s:settimeout(timeout)
  local ok, err = s:connect(host, tonumber(port))
  if not ok then s:close(); return nil, err end
  s:send("GET " .. path .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
  local parts = {}
  while true do
    local data, e, partial = s:receive(8192)
    if data then parts[#parts + 1] = data
    else
      if partial and #partial > 0 then parts[#parts + 1] = partial end
      if e ~= "closed" then s:close(); return nil, e end
      break
    end
  end
  s:close()
  local text = table.concat(parts)
  local status = tonumber(text:match("^HTTP/1%.%d (%d+)"))
  return status, text:match("\r\n\r\n(.*)$")
end

local function metric(api, line)
  local _, body = A.http(api, "GET", "/metrics")
  return tonumber((body or ""):match("\n" .. line:gsub("%p", "%%%0") .. " (%d+)"))
end

local function has(lines, pattern)
  for _, l in ipairs(lines) do
    local m = { l:match(pattern) }
    if #m > 0 then return table.unpack(m) end
  end
end

-- Runs the scenario with block (Lua source of block()'s body).
local function stall(block)
  local c = A.cluster(3, { hooks = hooks(block), extra = { heartbeat_ms = 50,
    election_timeout_ms = 300, hook_timeout_ms = 100, hook_stuck_ms = STUCK_MS } })
  local ok, err, li = pcall(function()
    A.start_all(c)
    local leader = A.must_leader(c, 15)
    local li = A.index_of(c, leader)
    local started = A.wait_for(function()
      local t = has(A.events(c, li), "^blocking %d+ ([%d.]+)$")
      return t and tonumber(t)
    end, 5)
    assert(started, "the first leader's on_elected did not start blocking")
    local elections = {}
    for i = 1, c.n do elections[i] = metric(c.nodes[i].api, "qcluster_elections_total") end
    -- Until shortly before hook_stuck_ms: the same leader, every API answers.
    local until_t = started + (STUCK_MS - 300) / 1000
    local reads = 0
    while A.now() < until_t do
      for i = 1, c.n do
        local status, body = get(c.nodes[i].api, "/v1/status", 0.5)
        assert.are.equal(200, status, c.nodes[i].id .. " did not answer: " .. tostring(body))
        reads = reads + 1
      end
      local status, body = get(c.nodes[li].api, "/v1/leader", 0.5)
      assert.are.equal(200, status)
      assert.matches('"identifier":"' .. leader .. '"', body)
      A.sleep(0.05)
    end
    assert.is_true(reads > 0, "the window closed before any read; the machine is too slow")
    for i = 1, c.n do
      assert.are.equal(elections[i], metric(c.nodes[i].api, "qcluster_elections_total"),
        c.nodes[i].id .. " started an election while the hook blocked")
    end
    assert.are.equal(1, metric(c.nodes[li].api,
      'qcluster_hook_overruns_total{hook="on_elected"}'))
    assert.are.equal(1, metric(c.nodes[li].api, 'qcluster_hook_errors_total{hook="on_elected"}'))
    assert.matches("on_elected still running after %d+ ms", A.read(c.nodes[li].log))
    -- Past hook_stuck_ms: unhealthy, and leadership moves by a transfer.
    local moved = A.wait_for(function()
      local now = A.agreed_leader(c, 1)
      return now and now ~= leader and now
    end, 10)
    assert(moved, "leadership stayed on the stuck node")
    local log = A.read(c.nodes[li].log)
    assert.matches("stuck for %d+ ms", log)
    -- handed over because unhealthy (on_demoted waits behind the hook)
    assert.matches("no longer leader in term %d+ %(unhealthy%)", log)
    return c, li
  end)
  if not ok then
    A.stop(c)
    error(err, 0)
  end
  return c, li
end

describe("a hook blocked in a C call", function()
  local c
  after_each(function() A.stop(c); c = nil end)

  it("(string.find backtracking) does not stall consensus; the stuck leader hands over",
    function()
    local li
    c, li = stall([[string.find(("a"):rep(40), ("a*"):rep(7) .. "b")]])
    -- logged once, with what it was doing
    local log = A.read(c.nodes[li].log)
    assert.matches("on_elected still running after %d+ ms %(budget 100 ms%), blocked in a C call:"
      .. " last called find%(%) at [^\n]*hooks.lua:%d+", log)
    assert.are.equal(1, select(2, log:gsub("on_elected still running after", "")))
  end)

  it("(io.read on a pipe) does not stall consensus; the node is healthy once it returns",
    function()
    -- a FIFO the test writes to only once it has seen the node stuck: a
    -- fixed sleep could end before a loaded machine got that far
    local fifo = os.tmpname()
    os.remove(fifo)
    assert(os.execute("mkfifo " .. fifo))
    local li
    c, li = stall(([[io.open(%q, "r"):read("a")]]):format(fifo))
    -- qcluster_healthy (what QClusterNodeUnhealthy watches) says what
    -- /v1/status says: 0 while the hook is stuck, 1 once it returned
    local stuck = A.wait_for(function()
      local st = A.json(c.nodes[li].api, "/v1/status")
      return st and st.healthy == false and metric(c.nodes[li].api, "qcluster_healthy") == 0
    end, 10)
    local w = io.open(fifo, "w") -- the hook's read returns at our close
    w:close()
    os.remove(fifo)
    assert(stuck, "qcluster_healthy stayed 1 on the node with a stuck hook")
    -- the queued on_demoted runs once the read returns; health comes back
    assert(A.wait_for(function()
      local st = A.json(c.nodes[li].api, "/v1/status")
      return st and st.healthy == true
    end, 15), "the node did not turn healthy again")
    assert.are.equal(1, metric(c.nodes[li].api, "qcluster_healthy"))
    -- on_demoted runs after the hook that held it up, maybe after the check
    local ev
    assert.is_truthy(A.wait_for(function()
      ev = A.events(c, li)
      return has(ev, "^(demoted %d+ unhealthy)$")
    end, 10), "on_demoted did not run after the stuck hook returned")
    -- the hook answered from its event: the term it was elected in, and
    -- is_leader() false now that the node no longer leads
    local term = has(ev, "^blocking (%d+) ")
    assert.is_not_nil(has(ev, "^(returned " .. term .. " " .. term .. " false)$"))
  end)

  it("(os.execute) does not stall consensus; the stuck leader hands over", function()
    c = stall([[os.execute("sleep 4")]])
  end)

  it("(lua-socket connect to a full backlog) does not stall consensus", function()
    local srv = assert(socket.tcp())
    assert(srv:bind("127.0.0.1", 0))
    assert(srv:listen(0))
    local _, port = srv:getsockname()
    local fillers = {}
    for i = 1, 3 do
      fillers[i] = socket.tcp()
      fillers[i]:settimeout(0)
      fillers[i]:connect("127.0.0.1", port)
    end
    local ok, err = pcall(function()
      c = stall(([[
        local s = require("socket").tcp()
        s:connect("127.0.0.1", %d)
      ]]):format(port))
    end)
    for _, f in ipairs(fillers) do f:close() end
    srv:close()
    assert(ok, err)
  end)
end)
