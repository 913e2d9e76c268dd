-- Real agents with a secret: what crosses a cluster link is unreadable
-- (a relay records it), and a rolling restart moves a cluster to a new
-- secret through secret_previous with a leader and writes all along.
local A = require("agents")

local OLD = "the-old-cluster-secret-long-enough"
local NEW = "the-new-cluster-secret-long-enough"
local VALUE = "qc-distinctive-kv-value-7f3a9e"
local META = "qc-distinctive-metadata-51c2d8"

local function metric(api, name)
  local _, body = A.http(api, "GET", "/metrics")
  return tonumber((body or ""):match("\n" .. name .. " ([%d%.e+]+)"))
end

-- Starts the recording relay: LISTEN -> TARGET, bytes to file. Returns its PID.
local function relay(listen, target, file)
  local p = io.popen(string.format("exec lua5.4 %s/tests/helpers/record_proxy.lua %d %d %s 120 "
    .. ">/dev/null 2>&1 & echo $!", A.root, listen, target, file))
  local pid = tonumber(p:read("l"))
  p:close()
  assert(A.wait_for(function()
    local s = require("socket").connect("127.0.0.1", listen)
    if s then s:close() end
    return s ~= nil
  end, 5), "the relay listens")
  return pid
end

-- Replaces a peer's port in node i's config (the rest kept).
local function peer_port(c, i, from, to)
  local conf, n = A.read(c.nodes[i].config):gsub('%["port"%] = ' .. from .. "([,}])",
    '["port"] = ' .. to .. "%1")
  assert.are.equal(1, n)
  A.write(c.nodes[i].config, conf)
end

-- Rewrites node i's config with these secrets (nil: none).
local function secrets(c, i, secret, previous)
  local conf = A.read(c.nodes[i].config)
  conf = conf:gsub('%["secret[%w_]*"%] = "[^"]*", ', ""):gsub(', %["secret[%w_]*"%] = "[^"]*"', "")
  local add = ""
  if secret then add = add .. string.format('["secret"] = "%s", ', secret) end
  if previous then add = add .. string.format('["secret_previous"] = "%s", ', previous) end
  conf = conf:gsub("^return {", "return { " .. add, 1)
  A.write(c.nodes[i].config, conf)
end

describe("cluster traffic", function()
  local c, pid

  after_each(function()
    if pid then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
    if c then A.stop(c) end
    c, pid = nil, nil
  end)

  -- node1 is made leader and dials node2 through the relay; a KV value and
  -- node1's metadata go to node2 over that link. Returns the recording.
  local function recorded_run(extra)
    c = A.cluster(3, { extra = extra })
    local file = c.dir .. "/recording"
    local relay_port = c.base + 60
    pid = relay(relay_port, c.base + 2, file)
    peer_port(c, 1, c.base + 2, relay_port)
    A.start_all(c)
    local leader = A.must_leader(c, 15)
    if leader ~= "node1" then
      local status = A.http(c.nodes[A.index_of(c, leader)].api, "POST", "/v1/transfer-leadership",
        '{"to": "node1"}')
      assert.are.equal(200, status)
    end
    assert.are.equal("node1", A.must_leader(c, 15))
    assert.are.equal(200, (A.kv_put(c.nodes[1].api, "secret/thing", VALUE)))
    assert.are.equal(200, (A.http(c.nodes[1].api, "PUT", "/v1/self/metadata",
      '{"tag": "' .. META .. '"}')))
    assert.is_truthy(A.wait_for(function()
      local status, body = A.kv_get(c.nodes[2].api, "secret/thing", "?stale")
      return status == 200 and body == VALUE
    end, 10), "node2 has the value")
    assert.is_truthy(A.wait_for(function()
      for _, m in ipairs(A.json(c.nodes[2].api, "/v1/members") or {}) do
        if m.identifier == "node1" and m.metadata and m.metadata.tag == META then return true end
      end
    end, 10), "node2 has node1's metadata")
    os.execute("kill -KILL " .. pid)
    pid = nil
    local rec = A.read(file) or ""
    assert.is_true(#rec > 1000, "the relay recorded the link (" .. #rec .. " bytes)")
    return rec
  end

  it("with a secret, neither a KV value nor metadata crosses a link in clear", function()
    local rec = recorded_run({ secret = OLD })
    assert.is_nil(rec:find(VALUE, 1, true), "the KV value is in the recording")
    assert.is_nil(rec:find(META, 1, true), "the metadata is in the recording")
    assert.is_nil(rec:find("node1", 1, true), "the hello is in the recording")
    for i = 1, 3 do
      assert.are.equal(0, metric(c.nodes[i].api, "qcluster_auth_failures_total"))
    end
  end)

  it("without a secret the same run shows both (the recording sees the link)", function()
    local rec = recorded_run(nil)
    assert.is_truthy(rec:find(VALUE, 1, true))
    assert.is_truthy(rec:find(META, 1, true))
  end)
end)

describe("secret rotation", function()
  local c

  after_each(function()
    if c then A.stop(c) end
    c = nil
  end)

  -- After a node restarts: a leader, a write through it, and every node
  -- (the restarted one too) applies the write.
  local function works(step)
    local leader = A.must_leader(c, 15)
    local api = c.nodes[A.index_of(c, leader)].api
    local status = A.kv_put(api, "rotation/" .. step, step)
    assert.are.equal(200, status, step .. ": a write")
    for i = 1, 3 do
      assert.is_truthy(A.wait_for(function()
        local s, body = A.kv_get(c.nodes[i].api, "rotation/" .. step, "?stale")
        return s == 200 and body == step
      end, 10), step .. ": node" .. i .. " has the write")
    end
  end

  it("a rolling restart moves a cluster to a new secret with a leader and writes throughout",
     function()
    c = A.cluster(3, { extra = { secret = OLD } })
    A.start_all(c)
    works("all-old")
    -- one by one: the new secret, the old one as previous
    for i = 1, 3 do
      assert.is_true(A.signal(c, i, "TERM"))
      secrets(c, i, NEW, OLD)
      A.start(c, i)
      works("node" .. i .. "-new+old")
    end
    -- one by one: the new secret alone
    for i = 1, 3 do
      assert.is_true(A.signal(c, i, "TERM"))
      secrets(c, i, NEW, nil)
      A.start(c, i)
      works("node" .. i .. "-new")
    end
    -- no node ever refused another: there was no moment they could not talk
    for i = 1, 3 do
      assert.are.equal(0, metric(c.nodes[i].api, "qcluster_auth_failures_total"), "node" .. i)
    end
    -- and the old secret is now refused: a node that still has only it
    -- never links (its writes never reach the cluster)
    assert.is_true(A.signal(c, 3, "TERM"))
    secrets(c, 3, OLD, nil)
    A.start(c, 3)
    A.sleep(2)
    assert.is_true(metric(c.nodes[1].api, "qcluster_auth_failures_total") > 0
      or metric(c.nodes[2].api, "qcluster_auth_failures_total") > 0)
  end)
end)
