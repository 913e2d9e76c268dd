-- examples/failover_vip/hooks.lua against a stand-in qcluster module whose
-- exec only records commands: the order of the `ip` commands and the term
-- fencing, which the namespace spec cannot force (a hook that runs late).
describe("examples/failover_vip hooks", function()
  local q, hooks, saved

  -- A fresh copy of the hooks (their state is per load) with a fake node
  -- that leads when q.leader is true, in term q.cur_term.
  before_each(function()
    q = { leader = false, cur_term = 1, execs = {}, logs = {} }
    function q.is_leader() return q.leader end
    function q.term() return q.cur_term end
    function q.self()
      return { identifier = "server_a", metadata = { vip = "10.77.0.100/24", vip_dev = "eth0" } }
    end
    function q.log(level, msg) q.logs[#q.logs + 1] = level .. " " .. msg end
    function q.after() end
    function q.exec(cmd, _, cb) q.execs[#q.execs + 1] = { cmd = cmd, cb = cb } end
    saved = package.loaded.qcluster
    package.loaded.qcluster = q
    hooks = dofile("examples/failover_vip/hooks.lua")
  end)

  after_each(function() package.loaded.qcluster = saved end)

  -- "add", "del" or "arping" for each command started so far.
  local function kinds()
    local t = {}
    for _, x in ipairs(q.execs) do
      t[#t + 1] = x.cmd:find("arping", 1, true) and "arping" or x.cmd:match("^ip addr (%a+)")
    end
    return table.concat(t, " ")
  end

  -- Completes command n successfully.
  local function finish(n)
    q.execs[n].cb({ status = 0, stdout = "", stderr = "" })
  end

  it("drops a stale VIP at start, then takes it when elected, with a gratuitous ARP", function()
    hooks.on_start({})
    assert.are.equal("del", kinds())
    q.leader, q.cur_term = true, 2
    hooks.on_elected({ term = 2 })
    assert.are.equal("del", kinds(), "one ip command at a time")
    finish(1)
    assert.are.equal("del replace", kinds())
    assert.is_truthy(q.execs[2].cmd:find("ip addr replace '10.77.0.100/24' dev 'eth0'", 1, true))
    finish(2)
    assert.are.equal("del replace arping", kinds())
  end)

  it("a late on_elected, for a term the node no longer leads in, does not take the VIP", function()
    hooks.on_start({})
    finish(1)
    q.leader, q.cur_term = false, 4
    hooks.on_elected({ term = 3 })
    q.leader = true -- leads again, but in term 4: the term-3 hook must not act
    hooks.on_elected({ term = 3 })
    assert.are.equal("del", kinds())
  end)

  it("demoted while the VIP is being added: the delete follows once the add is done", function()
    hooks.on_start({})
    finish(1)
    q.leader, q.cur_term = true, 2
    hooks.on_elected({ term = 2 })
    q.leader, q.cur_term = false, 3
    hooks.on_demoted({ term = 3, reason = "higher_term" })
    assert.are.equal("del replace", kinds())
    finish(2)
    assert.are.equal("del replace del", kinds(), "no ARP for an address it no longer wants")
  end)
end)
