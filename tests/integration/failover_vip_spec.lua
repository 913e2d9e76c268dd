-- examples/failover_vip as written (a copy of its configs and hooks), each
-- agent in a network namespace of its own (qcvip-<pid>-server_a..c, plus a
-- client) on a bridge this spec creates, with the example's 10.77.0.0/24
-- addresses, which exist only inside them. Each node also runs the service
-- its `service` check asks for. Needs root; skipped otherwise.
-- Every process is ended by its PID and every namespace deleted, also on
-- failure.
local A = require("agents")
local cjson = require("cjson")
local netns = require("netns")

local why = netns.cannot_run()
if why then
  describe("examples/failover_vip", function()
    pending("skipped: " .. why)
  end)
  return
end

local VIP = "10.77.0.100"
local IDS = { "server_a", "server_b", "server_c" }
local APP_PORT = 9400
local BASE = "qcvip"

describe("examples/failover_vip", function()
  local net, dir
  local pids, apps = {}, {}

  local function start(i)
    pids[i] = net:spawn(IDS[i], string.format("%s/bin/qcluster agent %s/%s.lua", A.root, dir, IDS[i]),
      dir .. "/" .. IDS[i] .. ".log")
  end

  -- kill -9 by PID, then waits until it is gone.
  local function kill(i, sig)
    os.execute(string.format("kill -%s %d", sig, pids[i]))
    assert.is_truthy(A.wait_for(function() return not A.alive(pids[i]) end, 10), IDS[i] .. " did not exit")
    pids[i] = nil
  end

  -- The service behind the VIP on node i: answers with the node's name.
  local function start_app(i)
    apps[i] = net:spawn(IDS[i], string.format("lua5.4 %s/examples/redirect/app.lua %s %d 0.0.0.0", A.root, IDS[i],
      APP_PORT), dir .. "/" .. IDS[i] .. ".app.log")
  end

  -- Node i's own view (GET /v1/status), or nil.
  local function status_of(i)
    local out, code = net:exec(IDS[i], "curl -s -m 2 http://127.0.0.1:8400/v1/status")
    if code ~= 0 then return nil end
    local ok, v = pcall(cjson.decode, out)
    return ok and v or nil
  end

  local function leader_seen_by(i)
    local out, code = net:exec(IDS[i], "curl -s -m 2 http://127.0.0.1:8400/v1/leader")
    if code ~= 0 then return nil end
    return out:match('"identifier"%s*:%s*"([%w_]+)"')
  end

  -- The leader every running agent names, once they agree.
  local function agreed_leader(timeout)
    return A.wait_for(function()
      local name
      for i = 1, 3 do
        if pids[i] then
          local l = leader_seen_by(i)
          if not l or (name and l ~= name) then return nil end
          name = l
        end
      end
      return name
    end, timeout or 20)
  end

  local function index_of(id)
    for i, x in ipairs(IDS) do
      if x == id then return i end
    end
  end

  local function has_vip(i)
    local out = A.sh(string.format("ip -n %s -o addr show dev eth0", net:ns(IDS[i])))
    return out:find(" " .. VIP .. "/", 1, true) ~= nil
  end

  -- Which of the nodes in `among` hold the VIP, as "server_b" or "server_a,server_c".
  local function holders(among)
    local t = {}
    for _, i in ipairs(among) do
      if has_vip(i) then t[#t + 1] = IDS[i] end
    end
    return table.concat(t, ",")
  end

  local function wait_holders(want, among)
    return A.wait_for(function() return holders(among) == want end, 15)
  end

  -- What a client on the bridge reaches at the VIP (the node's name).
  local function via_vip()
    local out = net:exec("client", string.format("curl -s -m 2 http://%s:%d/", VIP, APP_PORT))
    return (out:gsub("%s+$", ""))
  end

  local function wait_via_vip(want)
    return A.wait_for(function() return via_vip() == want end, 15)
  end

  -- The client may still have the old holder's MAC address for the VIP; the
  -- new leader's gratuitous ARP replaces it (without arping, forget it here).
  local function client_follows(new)
    if select(2, net:exec(new, "command -v arping")) ~= 0 then
      net:exec("client", "ip neigh flush all")
    end
    return wait_via_vip(new)
  end

  -- The term of the last "VIP ... taken" line in node i's log.
  local function taken_term(i)
    local term
    for t in (A.read(dir .. "/" .. IDS[i] .. ".log") or ""):gmatch("VIP [^\n]* taken on [^\n]* %(term (%d+)%)") do
      term = tonumber(t)
    end
    return term
  end

  local function logs()
    local t = {}
    for _, id in ipairs(IDS) do
      t[#t + 1] = "== " .. id .. "\n" .. (A.read(dir .. "/" .. id .. ".log") or ""):sub(-1500)
    end
    return table.concat(t, "\n")
  end

  setup(function()
    netns.reap_stale(BASE)
    net = netns.new(BASE .. "-" .. netns.self_pid())
    dir = A.sh("mktemp -d /tmp/qc-example-XXXXXX"):gsub("%s+$", "")
    os.execute("cp examples/failover_vip/*.lua " .. dir)
    net:create_hub()
    for i, id in ipairs(IDS) do
      net:add(id, "10.77.0." .. i .. "/24")
      start_app(i)
    end
    net:add("client", "10.77.0.50/24")
    for i = 1, 3 do start(i) end
  end)

  teardown(function()
    if net then net:cleanup() end
    if dir and not os.getenv("QC_KEEP") then os.execute("rm -rf " .. dir) end
  end)

  it("exactly the leader's namespace holds the VIP, and a client reaches the leader through it", function()
    local leader = agreed_leader()
    assert.is_truthy(leader, "no agreed leader\n" .. logs())
    assert.is_truthy(wait_holders(leader, { 1, 2, 3 }), "holders: " .. holders { 1, 2, 3 } .. "\n" .. logs())
    assert.is_truthy(wait_via_vip(leader), "the VIP answers " .. via_vip())
  end)

  it("when the leader's service fails its check, the VIP moves to a healthy node in a higher term", function()
    local old = assert(agreed_leader())
    local oi = index_of(old)
    assert.is_truthy(wait_holders(old, { 1, 2, 3 }), "holders: " .. holders { 1, 2, 3 } .. "\n" .. logs())
    local old_term = assert(taken_term(oi), "no term in the VIP holder's log\n" .. logs())
    -- Only the service dies; the agent and the network stay.
    os.execute("kill -KILL " .. apps[oi])
    assert.is_truthy(A.wait_for(function() return not A.alive(apps[oi]) end, 10), "the service did not exit")
    -- Every agent, the old leader's too, agrees on a new leader.
    local new = A.wait_for(function()
      local l = agreed_leader(1)
      return l ~= old and l
    end, 20)
    assert.is_truthy(new, "leadership stayed with " .. old .. ", whose service is dead\n" .. logs())
    local ni = index_of(new)
    assert.is_truthy(wait_holders(new, { 1, 2, 3 }), "holders: " .. holders { 1, 2, 3 } .. "\n" .. logs())
    assert.is_truthy(client_follows(new), "the VIP answers " .. via_vip())
    -- Fenced by term: the new holder took the VIP in a later term than the
    -- old one, which stepped down as unhealthy and dropped it.
    assert.is_truthy(A.wait_for(function() return (taken_term(ni) or 0) > old_term end, 5), logs())
    assert.is_truthy((A.read(dir .. "/" .. old .. ".log") or ""):find("no longer leader in term %d+ %(unhealthy%)"),
      logs())
    assert.is_true(A.alive(pids[oi]), "the agent of " .. old .. " still runs")
    local st = status_of(oi)
    assert.are.equal("follower", st and st.role)
    assert.is_false(st.healthy)
    -- The service comes back: the node turns healthy again, and neither
    -- leadership nor the VIP move back (no preempt).
    start_app(oi)
    assert.is_truthy(A.wait_for(function()
      local s = status_of(oi)
      return s and s.healthy == true
    end, 15), old .. " turns healthy again once its service answers\n" .. logs())
    assert.are.equal(new, agreed_leader())
    assert.are.equal(new, holders { 1, 2, 3 })
    assert.are.equal(new, via_vip())
  end)

  it("when the leader's machine dies, the VIP moves to the new leader and the client follows", function()
    local old = assert(agreed_leader())
    local oi = index_of(old)
    -- The machine dies: its agent is killed and its network goes away.
    kill(oi, "KILL")
    A.sh(string.format("ip -n %s link set eth0 down", net:ns(old)))
    local live = {}
    for i = 1, 3 do
      if i ~= oi then live[#live + 1] = i end
    end
    local new = agreed_leader()
    assert.is_truthy(new, "no new leader\n" .. logs())
    assert.are_not.equal(old, new)
    assert.is_truthy(wait_holders(new, live), "holders: " .. holders(live) .. "\n" .. logs())
    -- The client still has the dead node's MAC address for the VIP.
    assert.is_truthy(client_follows(new), "the VIP answers " .. via_vip())
  end)

  it("the dead node comes back: at start it drops the VIP it held before the crash, then follows", function()
    local leader = assert(agreed_leader())
    local di
    for i = 1, 3 do
      if not pids[i] then di = i end
    end
    assert.is_true(has_vip(di), "the crashed node still holds the VIP")
    start(di) -- still cut off: on_start alone must drop the address
    assert.is_truthy(A.wait_for(function() return not has_vip(di) end, 15), logs())
    A.sh(string.format("ip -n %s link set eth0 up", net:ns(IDS[di])))
    assert.are.equal(leader, agreed_leader())
    assert.are.equal(leader, holders { 1, 2, 3 })
    assert.are.equal(leader, via_vip())
  end)

  it("a leader that stops cleanly has dropped the VIP when it exits; the next leader takes it", function()
    local old = assert(agreed_leader())
    local oi = index_of(old)
    kill(oi, "TERM")
    assert.is_false(has_vip(oi), "on_stop drops the VIP before the agent exits\n" .. logs())
    local new = agreed_leader()
    assert.is_truthy(new and new ~= old, "no new leader\n" .. logs())
    assert.is_truthy(wait_holders(new, { 1, 2, 3 }), "holders: " .. holders { 1, 2, 3 } .. "\n" .. logs())
    assert.is_truthy(wait_via_vip(new), "the VIP answers " .. via_vip())
  end)
end)
