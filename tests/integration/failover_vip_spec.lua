-- examples/failover_vip as written (a copy of its configs and hooks), each
-- agent in a network namespace of its own (qcvip-<pid>-server_a..c, plus a
-- client) on a bridge this spec creates, with the example's 10.77.0.0/24
-- addresses, which exist only inside them. Needs root; skipped otherwise.
-- Every process is ended by its PID and every namespace deleted, also on
-- failure.
local A = require("agents")
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
  local pids = {}

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

  local function leader_seen_by(i)
    local out, code = net:exec(IDS[i], "curl -s -m 2 http://127.0.0.1:8400/v1/leader")
    if code ~= 0 then return nil end
    return out:match('"identifier"%s*:%s*"([%w_]+)"')
  end

  -- The leader every running agent names, once they agree.
  local function agreed_leader()
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
    end, 20)
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
      -- The service behind the VIP: answers with the node's name.
      net:spawn(id, string.format("lua5.4 %s/examples/redirect/app.lua %s %d 0.0.0.0", A.root, id, APP_PORT),
        dir .. "/" .. id .. ".app.log")
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
    -- The client still has the dead node's MAC address for the VIP; the new
    -- leader's gratuitous ARP replaces it (without arping, forget it here).
    if select(2, net:exec(new, "command -v arping")) ~= 0 then
      net:exec("client", "ip neigh flush all")
    end
    assert.is_truthy(wait_via_vip(new), "the VIP answers " .. via_vip())
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
