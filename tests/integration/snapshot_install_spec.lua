-- A follower installs the leader's snapshot off its loop: stopped while
-- the log moved past the leader's compaction, it catches up through a
-- snapshot of 20,000 keys while a writer keeps writing, keeps answering
-- requests while the install is held half-way (QC_TEST_INSTALL_HOLD), even
-- when a new term comes meanwhile, and ends with the same data as every
-- other node.
local A = require("agents")
local socket = require("socket")

local KEYS = 20000
local FILLER = string.rep("x", 100)

-- Reads one HTTP response from s: status, body.
local function read_response(s)
  local line = assert(s:receive("*l"))
  local status = tonumber(line:match("^HTTP/1%.1 (%d+)"))
  local len = 0
  while true do
    local h = assert(s:receive("*l"))
    if h == "" then break end
    local n = h:lower():match("^content%-length:%s*(%d+)")
    if n then len = tonumber(n) end
  end
  local body = len > 0 and assert(s:receive(len)) or ""
  return status, body
end

-- Answers after which a client sends the write again to the node that
-- leads now: leadership moved (a loaded machine lapses leases: with one
-- follower stopped, any stall of the other is a lost quorum), or the
-- write timed out. Values are a function of the key, so a write sent
-- twice leaves the same data.
local RETRY = { [503] = true, [504] = true }

-- PUTs name..i = value(i) for i in [from, to] to w's node, pipelined 100
-- at a time on one connection. Returns the first i answered with a RETRY
-- status (to + 1 when all were 200); any other answer fails the spec.
local function put_batches(w, name, from, to)
  local host, port = w.c.nodes[w.i].api:match("^(.*):(%d+)$")
  local s = socket.tcp()
  s:settimeout(15)
  assert(s:connect(host, tonumber(port)))
  for first = from, to, 100 do
    local last = math.min(first + 99, to)
    local reqs = {}
    for i = first, last do
      local v = name .. i .. FILLER
      reqs[#reqs + 1] = string.format("PUT /v1/kv/%s%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s",
        name, i, #v, v)
    end
    assert(s:send(table.concat(reqs)))
    for i = first, last do
      local status, body = read_response(s)
      if RETRY[status] then
        s:close()
        return i, string.format("PUT %s%d to %s: %s %s", name, i, w.c.nodes[w.i].id, status, body)
      end
      assert(status == 200, string.format("PUT %s%d: %s %s", name, i, tostring(status), body))
    end
  end
  s:close()
  return to + 1
end

-- The node that every node but w.stopped (SIGSTOPped: it cannot answer)
-- names as leader, once they agree.
local function leader_now(w)
  local name = A.wait_for(function()
    local agreed
    for i = 1, w.c.n do
      if i ~= w.stopped then
        local v, status = A.json(w.c.nodes[i].api, "/v1/leader")
        if status ~= 200 or not v or (agreed and v.identifier ~= agreed) then return nil end
        agreed = v.identifier
      end
    end
    return agreed
  end, 15)
  return assert(name and A.index_of(w.c, name), "no agreed leader")
end

-- Every PUT of [from, to] answered 200, the failed ones sent again to
-- whichever node leads now (w.i follows it), a bounded number of times.
local function put_range(w, name, from, to)
  local i, why = put_batches(w, name, from, to)
  while i <= to do
    w.retries = w.retries + 1
    assert(w.retries <= 20, "gave up after 20 retries; last: " .. why)
    w.i = leader_now(w)
    io.stderr:write(why, "; sending it again to ", w.c.nodes[w.i].id, "\n")
    i, why = put_batches(w, name, i, to)
  end
end

local function log_has(c, i, text, from)
  return ((A.read(c.nodes[i].log) or ""):sub((from or 0) + 1)):find(text, 1, true) ~= nil
end

describe("installing the leader's snapshot", function()
  local c, hold

  setup(function()
    c = A.cluster(3, { extra = { snapshot_entries = 2000 } })
    hold = c.dir .. "/hold"
    for i = 1, 3 do c.nodes[i].env = "QC_TEST_INSTALL_HOLD=" .. hold end
    A.start_all(c)
  end)

  teardown(function()
    os.remove(hold)
    A.stop(c)
  end)

  it("a follower stopped past compaction catches up by a 20k-key snapshot while writes go on,"
    .. " answering requests during the install, through a new term", function()
    local leader = A.must_leader(c, 15)
    local li = A.index_of(c, leader)
    local fi = li % 3 + 1
    local follower = c.nodes[fi].api
    local writer = { c = c, i = li, retries = 0, stopped = fi }
    A.signal(c, fi, "STOP")
    put_range(writer, "k", 1, KEYS)
    -- the snapshot child runs in the background at the lowest priority:
    -- on a busy machine it ends well after the writes
    assert.is_truthy(A.wait_for(function() return log_has(c, writer.i, "log compacted") end, 60),
      "the leader compacted its log")
    local mark = #(A.read(c.nodes[fi].log) or "")
    A.write(hold, "")
    A.signal(c, fi, "CONT")
    writer.stopped = nil
    -- the writer keeps writing while the follower receives the snapshot
    local w = 0
    local queued = A.wait_for(function()
      put_range(writer, "w", w + 1, w + 50)
      w = w + 50
      return log_has(c, fi, "installing the leader's snapshot at", mark)
    end, 30)
    assert.is_truthy(queued, "the follower queued the install")
    -- a new term while the install is held: leadership moves to the third
    -- node, so the follower's term changes (a vote request, then appends
    -- of the new term), which must be made durable behind the install:
    -- the follower's loop must not wait for it (it did, until the hold
    -- ended; so would any term change after the SIGCONT, under load)
    local ti, moved_status, moved_body
    for _ = 1, 5 do -- a loaded machine may move leadership meanwhile: 409
      local li_now = leader_now({ c = c, stopped = fi })
      ti = 6 - li_now - fi
      moved_status, moved_body = A.http(c.nodes[li_now].api, "POST", "/v1/transfer-leadership",
        string.format('{"to": "%s"}', c.nodes[ti].id))
      if moved_status == 200 then break end
    end
    assert.are.equal(200, moved_status, "the transfer: " .. tostring(moved_body))
    writer.i = ti
    local st_new = assert(A.json(c.nodes[ti].api, "/v1/status"))
    local moved = A.wait_for(function()
      local st = A.json(follower, "/v1/status")
      return st and st.term >= st_new.term
    end, 30)
    assert.is_truthy(moved, "the follower answers in the new term while the install is held")
    -- held: the loop still answers, from the store it had before
    for _ = 1, 5 do
      put_range(writer, "w", w + 1, w + 50)
      w = w + 50
      local st, err = A.json(follower, "/v1/status")
      assert.are.equal(c.nodes[fi].id, st and st.identifier, "the follower's status: " .. tostring(err))
      -- the last key, not the first: appends of the first keys may have
      -- sat in the stopped follower's socket and been applied on waking
      assert.are.equal(404, (A.kv_get(follower, "k" .. KEYS, "?stale")))
    end
    assert.is_falsy(log_has(c, fi, "installed the leader's snapshot", mark),
      "the install waited for the hold")
    os.remove(hold)
    local installed = A.wait_for(function()
      put_range(writer, "w", w + 1, w + 50)
      w = w + 50
      return log_has(c, fi, "installed the leader's snapshot", mark)
    end, 30)
    assert.is_truthy(installed, "the follower installed the snapshot once released")
    put_range(writer, "w", w + 1, w + 200)
    w = w + 200
    -- every node ends with the same keys, values and revisions
    local want = KEYS + w
    local bodies
    local same = A.wait_for(function()
      bodies = {}
      for i = 1, 3 do
        local status, body = A.http(c.nodes[i].api, "GET", "/v1/kv?prefix=&stale")
        if status ~= 200 then return false end
        bodies[i] = body
      end
      return bodies[1] == bodies[2] and bodies[2] == bodies[3]
    end, 30)
    assert.is_truthy(same, "the three nodes hold the same data")
    local list = require("cjson").decode(bodies[fi])
    assert.are.equal(want, #list)
    local status, value = A.kv_get(follower, "k1", "?stale")
    assert.are.equal(200, status)
    assert.are.equal("k1" .. FILLER, value)
  end)
end)
