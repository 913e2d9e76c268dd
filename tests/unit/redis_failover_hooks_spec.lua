-- examples/redis_failover/hooks.lua against a stand-in qcluster module whose
-- exec answers redis-cli runs from a table of Redis servers: which copy a new
-- leader promotes given the replication offsets, and that it fences every
-- other Redis before reading its offset. The integration spec runs real
-- Redis servers but cannot choose their offsets.
describe("examples/redis_failover hooks", function()
  local q, hooks, saved, servers, runs

  local function node(id, port) return { identifier = id, host = "127.0.0.1", metadata = { redis_port = port } } end

  -- INFO replication as redis-cli prints it for server s.
  local function info(s)
    return table.concat({ "# Replication", "role:" .. s.role, "master_host:" .. (s.master_host or ""),
      "master_port:" .. tostring(s.master_port or 0), "master_link_status:" .. (s.link or "down"),
      "master_replid:" .. s.replid, "master_repl_offset:" .. s.offset, "connected_slaves:0", "" }, "\r\n")
  end

  -- Answers one redis-cli run: the commands of its here-document, applied
  -- to the server on its port, in order.
  local function answer(cmd)
    local port = tonumber(cmd:match("%-p (%d+)"))
    local s = servers[port]
    local body = cmd:match("\n(.*)REDIS_COMMANDS\n$") or ""
    local lines, out = {}, {}
    for l in body:gmatch("([^\n]+)\n") do lines[#lines + 1] = l end
    runs[#runs + 1] = { port = port, commands = lines }
    if not s then return { status = 1, stdout = "", stderr = "Could not connect to Redis: Connection refused" } end
    for _, l in ipairs(lines) do
      if l == "INFO replication" then
        out[#out + 1] = info(s)
      elseif l == "REPLICAOF NO ONE" then
        s.role, s.master_host, s.master_port, s.replid = "master", nil, nil, s.replid .. "'"
        out[#out + 1] = "OK"
      elseif l:match("^REPLICAOF ") then
        local h, p = l:match("^REPLICAOF (%S+) (%d+)$")
        s.role, s.master_host, s.master_port = "slave", h, tonumber(p)
        local m = servers[tonumber(p)]
        if m and m.role == "master" then s.offset, s.replid, s.link = m.offset, m.replid, "up" end
        out[#out + 1] = "OK"
      elseif l:match("^CONFIG SET min%-replicas%-to%-write ") then
        s.fenced = l:match("(%d+)$") ~= "0"
        out[#out + 1] = "OK"
      else
        out[#out + 1] = "PONG"
      end
    end
    return { status = 0, stdout = table.concat(out, "\n"), stderr = "" }
  end

  before_each(function()
    servers, runs = {}, {}
    q = { leader = false, cur_term = 1, logs = {}, pending = {} }
    function q.is_leader() return q.leader end
    function q.term() return q.cur_term end
    function q.self() return node("a", 7021) end
    function q.peers() return { node("b", 7022), node("c", 7023) } end
    function q.get_leader_info() return q.leader and q.self() or nil end
    function q.log(level, msg) q.logs[#q.logs + 1] = level .. " " .. msg end
    function q.now() return 0 end
    function q.after() end
    function q.set_metadata(m, cb)
      q.published = m
      if cb then cb(true) end
    end
    -- Answers come back later, as from the agent's queue: run() delivers them.
    function q.exec(cmd, _, cb) q.pending[#q.pending + 1] = function() cb(answer(cmd)) end end
    saved = package.loaded.qcluster
    package.loaded.qcluster = q
    hooks = dofile("examples/redis_failover/hooks.lua")
  end)

  after_each(function() package.loaded.qcluster = saved end)

  local function run()
    while #q.pending > 0 do table.remove(q.pending, 1)() end
  end

  -- The old primary (port 7020, not a member) is gone; its replicas hold
  -- offsets a, b, c of its history.
  local function replicas(a, b, c)
    for port, off in pairs({ [7021] = a, [7022] = b, [7023] = c }) do
      servers[port] = { role = "slave", master_host = "127.0.0.1", master_port = 7020, replid = "old", offset = off }
    end
  end

  local function elect()
    q.leader, q.cur_term = true, 2
    hooks.on_elected({ term = 2 })
    run()
  end

  it("promotes its own copy when no other holds more, after fencing the others", function()
    replicas(500, 500, 400)
    elect()
    assert.are.equal("master", servers[7021].role)
    assert.is_false(servers[7021].fenced)
    assert.are.equal(2, q.published.redis_primary_term)
    -- the first run on every other Redis fences it, then reads its offset
    for _, port in ipairs({ 7022, 7023 }) do
      local first
      for _, r in ipairs(runs) do
        if r.port == port then
          first = first or r
        end
      end
      assert.are.same({ "CONFIG SET min-replicas-to-write 1000000", "INFO replication" }, first.commands)
      assert.are.equal(7021, servers[port].master_port)
    end
  end)

  it("catches up from the replica with the greatest offset before it promotes its own", function()
    replicas(300, 400, 700)
    elect()
    -- c held the most: made a fenced master to serve the sync, then a
    -- replica of the new primary
    local on_c = {}
    for _, r in ipairs(runs) do
      if r.port == 7023 then on_c[#on_c + 1] = table.concat(r.commands, "; ") end
    end
    assert.are.same({ "CONFIG SET min-replicas-to-write 1000000; INFO replication", "REPLICAOF NO ONE",
      "REPLICAOF 127.0.0.1 7021" }, on_c)
    assert.is_true(servers[7023].fenced)
    assert.are.equal(700, servers[7021].offset)
    assert.are.equal("master", servers[7021].role)
    assert.are.equal(2, q.published.redis_primary_term)
  end)

  it("a master of another history does not count, and a dead Redis is passed over", function()
    replicas(500, 500, 500)
    servers[7022] = { role = "master", replid = "other", offset = 9000 }
    servers[7023] = nil
    elect()
    assert.are.equal("master", servers[7021].role)
    assert.are.equal(500, servers[7021].offset)
    assert.are.equal(7021, servers[7022].master_port)
  end)

  it("does not promote for a term it no longer leads in", function()
    replicas(500, 500, 400)
    q.leader, q.cur_term = true, 2
    hooks.on_elected({ term = 2 })
    q.cur_term = 3 -- a later term began while the offsets were read
    run()
    assert.are.equal("slave", servers[7021].role)
    assert.is_nil(q.published)
  end)
end)
