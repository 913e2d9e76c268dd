-- A node whose state file (term, vote) is lost while its log stays must not
-- start afresh at term 0: it could vote again in a term it voted in, and two
-- leaders could win one term. It refuses with a clear error; wiped, it
-- rejoins as a new member. A first start killed before its first state
-- write starts as usual.
local A = require("agents")

local function log_since(node, from)
  return (A.read(node.log) or ""):sub(from + 1)
end

-- A write through whoever leads, retried while there is none yet.
local function put(c, key, value)
  return A.wait_for(function()
    local leader = A.agreed_leader(c, 10)
    local i = leader and A.index_of(c, leader)
    return i and A.kv_put(c.nodes[i].api, key, value) == 200
  end, 15)
end

local function stale_sees(api, key, value, timeout)
  return A.wait_for(function()
    local status, body = A.kv_get(api, key, "?stale")
    return status == 200 and body == value
  end, timeout or 10)
end

-- Members node i's API lists, by identifier.
local function members(c, i)
  local t = {}
  for _, p in ipairs(A.json(c.nodes[i].api, "/v1/members") or {}) do t[p.identifier] = p end
  return t
end

-- Rewrites node i's config to join through node j, with no peers.
local function join_through(c, i, j)
  local conf = dofile(c.nodes[i].config)
  conf.peers = nil
  conf.join = { "127.0.0.1:" .. c.nodes[j].port }
  A.write(c.nodes[i].config, "return " .. A.lua_value(conf) .. "\n")
end

describe("a node whose state file is lost", function()
  local c, li, fi

  setup(function()
    c = A.cluster(3)
    A.start_all(c)
    li = A.index_of(c, A.must_leader(c))
    fi = li % 3 + 1
  end)

  teardown(function() A.stop(c) end)

  it("refuses to start while its log stays, naming the data_dir and how to rejoin", function()
    assert.is_truthy(put(c, "before", "kept"), "a write before the loss")
    assert.is_truthy(stale_sees(c.nodes[fi].api, "before", "kept"), "the follower holds it")
    assert.is_true(A.signal(c, fi, "KILL"))
    local dir = A.data_dir(c, fi)
    assert.is_true(#A.wal_segments(c, fi) > 0, "the follower's log is on disk")
    assert.is_truthy(os.remove(dir .. "/state"), "removed " .. dir .. "/state")
    local from = #(A.read(c.nodes[fi].log) or "")
    local code = A.run_once(c, fi, 15)
    local log = log_since(c.nodes[fi], from)
    assert.are_not.equal(137, code, "the agent started without its state (killed after 15 s)")
    assert.are_not.equal(0, code, "the agent must exit non-zero; its log:\n" .. log)
    assert.is_truthy(log:find(dir .. "/state is missing", 1, true),
      "the log names the missing state file:\n" .. log)
    assert.is_truthy(log:find("remove the node's data_dir and start it with join", 1, true),
      "the log says how to rejoin as new:\n" .. log)
    assert.is_nil(A.read(dir .. "/state"), "a refused start wrote no state of its own")
    assert.is_true(#A.wal_segments(c, fi) > 0, "the log is left as it was")
    assert.is_truthy(put(c, "after", "two nodes"), "the other two carry on")
  end)

  it("rejoins as a new member once its data_dir is wiped and it starts with join", function()
    os.execute("rm -rf " .. A.data_dir(c, fi))
    join_through(c, fi, li)
    A.start(c, fi)
    assert.is_truthy(stale_sees(c.nodes[fi].api, "before", "kept", 15), "it caught up")
    assert.is_truthy(stale_sees(c.nodes[fi].api, "after", "two nodes", 15), "it caught up")
    assert.is_truthy(A.wait_for(function()
      local t = members(c, li)
      local me = t[c.nodes[fi].id]
      return me and me.up and me.voter
    end, 15), "the leader lists it as a voter again")
    assert.is_truthy(put(c, "rejoined", "yes"), "the cluster takes writes")
    assert.is_truthy(stale_sees(c.nodes[fi].api, "rejoined", "yes"), "it follows")
    assert.is_truthy(A.read(A.data_dir(c, fi) .. "/state"), "it wrote its state")
  end)
end)

describe("a data_dir without a state file", function()
  local c

  after_each(function() A.stop(c) end)

  it("starts afresh from what a first start killed before its state write leaves", function()
    c = A.cluster(3)
    local dir = A.data_dir(c, 1)
    assert.are.equal(0, select(2, A.sh("mkdir -p " .. dir .. " && touch " .. dir .. "/lock "
      .. dir .. "/state.tmp")))
    A.start_all(c)
    A.must_leader(c)
    assert.is_truthy(put(c, "k", "v"), "the cluster takes writes")
    assert.is_truthy(stale_sees(c.nodes[1].api, "k", "v"), "node1 takes part")
  end)

  it("is refused once an agent got past its state write, even with an empty log", function()
    c = A.cluster(1)
    local dir = A.data_dir(c, 1)
    assert.are.equal(0, select(2, A.sh("mkdir -p " .. dir .. "/wal " .. dir .. "/snap")))
    local code = A.run_once(c, 1, 15)
    local log = A.read(c.nodes[1].log) or ""
    assert.are_not.equal(137, code, "the agent started without its state (killed after 15 s)")
    assert.are_not.equal(0, code, "the agent must exit non-zero; its log:\n" .. log)
    assert.is_truthy(log:find(dir .. "/state is missing", 1, true), log)
    assert.is_nil(A.read(dir .. "/state"), "a refused start wrote no state of its own")
  end)
end)
