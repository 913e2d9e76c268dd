-- Membership in the Lua host (src/lua/luahost.c), through build/luahost_driver
-- and its fake view: qcluster.set_metadata answers through the hook queue
-- like kv.put, on_member_join/on_member_leave get the Peer, and Peers that
-- carry state (peers(), self(), hook arguments) carry the priority.
local driver = require("driver")

local dir
local lines = driver.lines

local function run(hooks, events, timeout, wrap, extra)
  return driver.hooks(dir, hooks, events, extra, timeout, wrap)
end

describe("qcluster.set_metadata", function()
  before_each(function() dir = driver.tmpdir() end)
  after_each(function() driver.rmdir(dir) end)

  it("replaces this node's metadata and calls back with true once committed", function()
    local rc, out, err = run([[
      local function meta() return qcluster.json.encode(qcluster.self().metadata) end
      return { on_start = function()
        qcluster.set_metadata({ zone = "z9", port = 8002, tags = { "a", "b" }, gone = qcluster.null },
          function(...)
            print("cb", select("#", ...), ..., meta())
            qcluster.set_metadata({}, function(ok) print("emptied", ok, meta()) end)
          end)
        print("returned", meta())
      end }
    ]], { "on_start" })
    assert.are.equal(0, rc, err)
    assert.are.same({
      'returned\t{"zone":"z1"}',
      'cb\t1\ttrue\t{"gone":null,"port":8002,"tags":["a","b"],"zone":"z9"}',
      "emptied\ttrue\t{}",
    }, lines(out))
    assert.matches("counter set_metadata runs=2 errors=0", out)
  end)

  it("calls back with false and the view's message when the change fails", function()
    local rc, out, err = run([[
      local function p(tag) return function(...) print(tag, ...) end end
      return {
        on_start = function() qcluster.set_metadata({ a = 1 }, p("later")) end,
        on_elected = function()
          qcluster.set_metadata({ a = 2 }, p("at once"))
          print("elected returned")
        end,
        on_stop = function() print("meta", qcluster.self().metadata.zone, qcluster.self().metadata.a) end,
      }
    ]], { "metafail", "on_start", "run", "metanow", "on_elected", "run", "on_stop" })
    assert.are.equal(0, rc, err)
    assert.are.same({
      "later\tfalse\tno leader to commit it",
      -- answered inside the call, but the callback still waits for the queue
      "elected returned",
      "at once\tfalse\trefused",
      "meta\tz1\tnil",
    }, lines(out))
    assert.matches("counter set_metadata runs=2 errors=0", out)
  end)

  it("logs a failed change that has no callback", function()
    local rc, out, err = run([[
      return { on_start = function() qcluster.set_metadata({ a = 1 }) end }
    ]], { "metafail", "on_start" })
    assert.are.equal(0, rc, err)
    assert.are.same({}, lines(out))
    assert.matches("WARN  hook: set_metadata without a callback failed: no leader to commit it",
      err)
    assert.is_nil(out:match("counter set_metadata"))
  end)

  it("runs its callback through the queue, after the hooks fired before it", function()
    local rc, out, err = run([[
      return {
        on_start = function()
          qcluster.set_metadata({ a = 1 }, function(ok) print("cb", ok) end)
          print("start")
        end,
        on_stop = function() print("stop") end,
      }
    ]], { "on_start", "on_stop" })
    assert.are.equal(0, rc, err)
    assert.are.same({ "start", "stop", "cb\ttrue" }, lines(out))
  end)

  it("counts and logs errors in callbacks, and budgets them", function()
    local rc, out, err = run([[
      return { on_start = function()
        qcluster.set_metadata({ a = 1 }, function() error("cb boom") end)
        qcluster.set_metadata({ a = 2 }, function() while true do end end)
        qcluster.set_metadata({ a = 3 }, function(ok) print("next ran", ok) end)
      end }
    ]], { "on_start" })
    assert.are.equal(0, rc, err)
    assert.are.same({ "next ran\ttrue" }, lines(out))
    assert.matches("ERROR hook: set_metadata failed: [^\n]*hooks.lua:2: cb boom; stack traceback",
      err)
    assert.matches("WARN  hook: set_metadata stopped after 200 ms", err)
    assert.matches("counter set_metadata runs=3 errors=2", out)
  end)

  it("rejects what is not a JSON object with a clear error, and sends nothing", function()
    local rc, out, err = run([[
      local function try(...) print((select(2, pcall(qcluster.set_metadata, ...)))) end
      local cyclic = { a = {} }
      cyclic.a.b = cyclic
      return {
        on_start = function()
          try("zone=z2")
          try()
          try({ a = 1 }, "not a function")
          try({ "a", "b" })
          try({ [true] = 1 })
          try({ 1, a = 2 })
          try({ a = { f = print } })
          try({ a = 0 / 0 })
          try({ a = "\255" })
          try(cyclic)
          print("meta", qcluster.json.encode(qcluster.self().metadata))
          qcluster.set_metadata({ bad = print }, function() print("never") end)
        end,
        on_stop = function() print("loop alive") end,
      }
    ]], { "on_start", "on_stop" }, 60, driver.valgrind())
    assert.are.equal(0, rc, err)
    local l = lines(out)
    assert.are.equal(12, #l, out)
    local fn = "bad argument #%d to 'qcluster.set_metadata' "
    assert.matches(fn:format(1) .. "%(table expected, got string%)", l[1])
    assert.matches(fn:format(1) .. "%(table expected, got no value%)", l[2])
    assert.matches(fn:format(2) .. "%(function expected, got string%)", l[3])
    assert.matches(fn:format(1) .. "%(expected a table with string keys %(a JSON object%), got a list%)",
      l[4])
    assert.matches(fn:format(1) .. "%(expected string keys or a list 1..n, got a key of another kind%)",
      l[5])
    assert.matches(fn:format(1) .. "%(expected string keys or a list 1..n, got both%)", l[6])
    assert.matches(fn:format(1) .. "%(a.f: expected a JSON value, got a function%)", l[7])
    assert.matches(fn:format(1) .. "%(a: expected a finite number, got inf or nan%)", l[8])
    assert.matches(fn:format(1) .. "%(a: text is not valid UTF%-8%)", l[9])
    assert.matches(fn:format(1) .. "%(a%.b%.a%.b[.ab]*: nested too deeply %(a cycle%?%)%)", l[10])
    assert.are.equal('meta\t{"zone":"z1"}', l[11])
    -- not caught: the hook fails, is counted, and the loop carries on
    assert.are.equal("loop alive", l[12])
    assert.matches("ERROR hook: on_start failed: [^\n]*hooks.lua:%d+: bad argument #1 to "
      .. "'set_metadata' %(bad: expected a JSON value, got a function%)", err)
    assert.matches("counter on_start runs=1 errors=1", out)
    assert.is_nil(out:match("counter set_metadata"))
  end)

  it("refuses text that is not UTF-8 (RFC 3629) naming the key, and sends nothing; json too", function()
    local rc, out, err = run([[
      local function try(t) print((select(2, pcall(qcluster.set_metadata, t, print)))) end
      return {
        on_start = function()
          try({ k = "\xC0\xAF" })                 -- overlong '/'
          try({ k = "\xE0\x80\xAF" })             -- overlong, 3 bytes
          try({ a = { b = { "ok", "\xED\xA0\x80" } } }) -- a surrogate
          try({ k = "\xF4\x90\x80\x80" })         -- past U+10FFFF
          try({ k = "cut \xE2\x82" })
          try({ a = { ["\xC0\xAF"] = 1 } })
          print("meta", qcluster.json.encode(qcluster.self().metadata))
          print(qcluster.json.encode({ a = { b = "\xED\xA0\x80" } }))
          print(qcluster.json.decode('{"a": {"b": "\xC0\xAF"}}'))
          print(qcluster.json.decode('{"a": [1, "\\udc00"]}'))
          -- valid 2-, 3- and 4-byte text goes through
          qcluster.set_metadata({ k = "\u{E9}\u{20AC}\u{1F600}" }, function(ok)
            print("set", ok, qcluster.self().metadata.k == "\u{E9}\u{20AC}\u{1F600}")
          end)
        end,
      }
    ]], { "on_start", "run" })
    assert.are.equal(0, rc, err)
    local fn = "bad argument #1 to 'qcluster.set_metadata' "
    local l = lines(out)
    assert.are.equal(11, #l, out)
    assert.matches(fn .. "%(k: text is not valid UTF%-8%)", l[1])
    assert.matches(fn .. "%(k: text is not valid UTF%-8%)", l[2])
    assert.matches(fn .. "%(a%.b%[2%]: text is not valid UTF%-8%)", l[3])
    assert.matches(fn .. "%(k: text is not valid UTF%-8%)", l[4])
    assert.matches(fn .. "%(k: text is not valid UTF%-8%)", l[5])
    assert.matches(fn .. "%(a: a key is not valid UTF%-8%)", l[6])
    assert.are.equal('meta\t{"zone":"z1"}', l[7])
    -- qcluster.json in both directions, alike
    assert.are.equal("nil\ta.b: text is not valid UTF-8", l[8])
    assert.are.equal("nil\ta.b: text is not valid UTF-8", l[9])
    assert.are.equal("nil\ta[2]: text is not valid UTF-8", l[10])
    assert.are.equal("set\ttrue\ttrue", l[11])
  end)

  it("raises 'membership is not available' when the agent has none", function()
    local rc, out, err = run([[
      return { on_start = function()
        print(select(2, pcall(qcluster.set_metadata, { a = 1 }, function() print("never") end)))
        print(select(2, pcall(qcluster.set_metadata, { a = 1 })))
      end }
    ]], { "nomember", "on_start" }, 60, driver.valgrind())
    assert.are.equal(0, rc, err)
    assert.are.same({ "set_metadata: membership is not available",
      "set_metadata: membership is not available" }, lines(out))
  end)

  it("answers changes still in flight after the host is freed, harmlessly", function()
    local rc, out, err = run([[
      return { on_start = function()
        qcluster.set_metadata({ a = 1 }, function() print("never") end)
        qcluster.set_metadata({ a = 2 })
      end }
    ]], { "on_start", "drain", "stop" }, 60, driver.valgrind())
    assert.are.equal(0, rc, err)
    assert.are.same({}, lines(out))
  end)
end)

describe("on_member_join and on_member_leave", function()
  before_each(function() dir = driver.tmpdir() end)
  after_each(function() driver.rmdir(dir) end)

  local hooks = [[
    local function show(tag, p)
      print(tag, p.identifier, p.host, p.port, math.type(p.port), p.metadata.zone, p.role, p.up,
        p.voter, p.priority)
    end
    return {
      on_member_join = function(p) show("join", p) end,
      on_member_leave = function(p) show("leave", p) end,
    }
  ]]

  it("get the member's Peer with identifier, host, port, metadata and its state", function()
    local rc, out, err = run(hooks, { "memberjoin", "c", "10.0.0.3", "7003", '{"zone":"z3"}',
      "memberleave", "b", "127.0.0.1", "7002", '{"zone":"z2","x":[1]}' })
    assert.are.equal(0, rc, err)
    assert.are.same({
      "join\tc\t10.0.0.3\t7003\tinteger\tz3\tlearner\ttrue\tfalse\t1",
      "leave\tb\t127.0.0.1\t7002\tinteger\tz2\tfollower\tfalse\ttrue\t1",
    }, lines(out))
    assert.matches("counter on_member_join runs=1 errors=0", out)
    assert.matches("counter on_member_leave runs=1 errors=0", out)
  end)

  it("run in event order with the other hooks, and may come inline in the config", function()
    local rc, out, err = run("return { on_stop = function() print('stop') end }",
      { "on_start", "memberjoin", "c", "h", "1", "{}", "on_peer_up", "memberleave", "c", "h",
        "1", "{}", "on_stop" }, nil, nil,
      "on_member_join = function(p) print('join', p.identifier) end,"
      .. " on_member_leave = function(p) error('leave boom ' .. p.identifier) end,"
      .. " on_peer_up = function(p) print('up', p.identifier) end,")
    assert.are.equal(0, rc, err)
    assert.are.same({ "join\tc", "up\tb", "stop" }, lines(out))
    assert.matches("ERROR hook: on_member_leave failed: [^\n]*leave boom c", err)
    assert.matches("counter on_member_leave runs=1 errors=1", out)
  end)
end)

describe("priority", function()
  before_each(function() dir = driver.tmpdir() end)
  after_each(function() driver.rmdir(dir) end)

  it("comes with the state of peers(), self() and peer hooks, not with the leader's Peer",
    function()
      driver.write(dir .. "/conf.lua", [[
        return { identifier = "a", listen_port = 7001, hook_timeout_ms = 200, hooks = "hooks.lua",
          peers = {{host = "127.0.0.1", port = 7002, identifier = "b"},
                   {host = "127.0.0.1", port = 7003, identifier = "c"}} }
      ]])
      driver.write(dir .. "/hooks.lua", [[
        return {
          on_start = function(ev)
            for _, p in ipairs(qcluster.peers()) do
              print("peer", p.identifier, p.priority, math.type(p.priority), p.up, p.role)
            end
            print("self", qcluster.self().priority, "event self", ev.self.priority)
            print("leader", qcluster.get_leader_info().identifier,
              qcluster.get_leader_info().priority, qcluster.get_leader_info().up)
          end,
          on_peer_down = function(p) print("down", p.identifier, p.priority) end,
        }
      ]])
      local rc, out, err = driver.run({ "hooks", dir .. "/conf.lua", "on_start", "on_peer_down" })
      assert.are.equal(0, rc, err)
      assert.are.same({
        "peer\tb\t2\tinteger\ttrue\tfollower",
        "peer\tc\t3\tinteger\ttrue\tfollower",
        "self\t1\tevent self\tnil",
        "leader\ta\tnil\tnil",
        "down\tb\t2",
      }, lines(out))
    end)
end)
