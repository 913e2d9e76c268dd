-- qcluster.kv and on_kv_change in the Lua host (src/lua/luahost.c), through
-- build/luahost_driver and its fake KV: reads are local and synchronous,
-- writes answer later through the hook queue, every applied change runs
-- on_kv_change and then the matching watches.
local driver = require("driver")

local dir
local lines = driver.lines

local function run(hooks, events, timeout, wrap)
  return driver.hooks(dir, hooks, events, nil, timeout, wrap)
end

describe("qcluster.kv", function()
  before_each(function() dir = driver.tmpdir() end)
  after_each(function() driver.rmdir(dir) end)

  it("puts, gets, lists and deletes binary keys and values", function()
    local rc, out, err = run([[
      local kv = qcluster.kv
      local k, v = "bin\0key\255", "\0\1\2\255value"
      local function q(s) return (s:gsub("[^%w/]", function(c) return ("\\%d"):format(c:byte()) end)) end
      return { on_start = function()
        kv.put(k, v, function(ok, rev)
          print("put", ok, rev, math.type(rev))
          local got, grev = kv.get(k)
          print("get", got == v, grev == rev, #got)
          kv.put("bin/other", "", function()
            for _, e in ipairs(kv.list("bin")) do
              print("list", q(e.key), q(e.value), e.revision)
            end
            print("all", #kv.list(), #kv.list(""), #kv.list("zzz"), #kv.list("bin\0"))
            kv.delete(k, function(ok2, rev2)
              print("delete", ok2, rev2, kv.get(k))
            end)
          end)
        end)
        print("put returned", kv.get(k))
      end }
    ]], { "on_start" })
    assert.are.equal(0, rc, err)
    assert.are.same({
      "put returned\tnil",
      "put\ttrue\t1\tinteger",
      "get\ttrue\ttrue\t9",
      [[list	bin\0key\255	\0\1\2\255value	1]],
      "list\tbin/other\t\t2",
      "all\t2\t2\t0\t1",
      "delete\ttrue\t3\tnil",
    }, lines(out))
    assert.matches("counter kv runs=3 errors=0", out)
  end)

  it("answers writes with ok and revision, or false and the reason", function()
    local rc, out, err = run([[
      local kv = qcluster.kv
      local function p(tag) return function(...) print(tag, ...) end end
      return { on_start = function()
        kv.put("k", "a", function(ok, rev)
          print("first", ok, rev)
          kv.put("k", "b", { cas = rev + 5 }, p("stale cas"))
          kv.put("k", "c", { cas = 0 }, p("absent cas"))
          kv.put("k", "d", { cas = rev }, p("good cas"))
          kv.delete("k", { cas = 1 }, p("delete cas"))
          kv.delete("missing", p("delete missing"))
          kv.put("nope", "x", p("no leader"))
          kv.delete("nope", p("no leader delete"))
          kv.put("new", "x", { cas = 0 }, p("new"))
          kv.put("quiet", "x") -- no callback at all
          kv.put("k", "e", nil, p("nil opts"))
        end)
      end }
    ]], { "on_start" })
    assert.are.equal(0, rc, err)
    -- Each callback runs once its answer came: "nope" is refused before
    -- kv.put returns, the others once applied; the loop goes on while the
    -- hook runs (on the Lua thread), so those answers may come first.
    local got = lines(out)
    assert.are.equal("first\ttrue\t1", table.remove(got, 1))
    local pos = {}
    for i, l in ipairs(got) do pos[l] = i end
    assert.is_true(pos["no leader\tfalse\tno leader"] < pos["no leader delete\tfalse\tno leader"])
    assert.is_true(pos["stale cas\tfalse\trevision mismatch\t1"] < pos["good cas\ttrue\t2"])
    assert.is_true(pos["good cas\ttrue\t2"] < pos["nil opts\ttrue\t5"])
    table.sort(got)
    assert.are.same({
      "absent cas\tfalse\trevision mismatch\t1",
      "delete cas\tfalse\trevision mismatch\t2",
      "delete missing\tfalse\tnot found",
      "good cas\ttrue\t2",
      "new\ttrue\t3",
      "nil opts\ttrue\t5",
      "no leader\tfalse\tno leader",
      "no leader delete\tfalse\tno leader",
      "stale cas\tfalse\trevision mismatch\t1",
    }, got)
    assert.matches("counter kv runs=10 errors=0", out)
  end)

  it("logs a failed write that has no callback", function()
    local rc, out, err = run([[
      return { on_start = function() qcluster.kv.put("nope", "x") end }
    ]], { "on_start" })
    assert.are.equal(0, rc, err)
    assert.are.same({}, lines(out))
    assert.matches("WARN  hook: kv.put without a callback failed: no leader", err)
  end)

  it("counts and logs errors raised in callbacks, and budgets them", function()
    local rc, out, err = run([[
      return { on_start = function()
        qcluster.kv.put("a", "1", function() error("cb boom") end)
        qcluster.kv.put("b", "2", function() while true do end end)
        qcluster.kv.delete("a", function(ok) print("next ran", ok) end)
      end }
    ]], { "on_start" })
    assert.are.equal(0, rc, err)
    assert.are.same({ "next ran\ttrue" }, lines(out))
    assert.matches("ERROR hook: kv failed: [^\n]*hooks.lua:2: cb boom; stack traceback", err)
    assert.matches("WARN  hook: kv stopped after 200 ms", err)
    assert.matches("counter kv runs=3 errors=2", out)
  end)

  it("rejects bad arguments in the calling hook", function()
    local rc, out, err = run([[
      local function try(...) print((select(2, pcall(...)))) end
      return { on_start = function()
        try(qcluster.kv.put, "k", "v", { cas = -1 })
        try(qcluster.kv.put, "k", "v", { cas = 1.5 })
        try(qcluster.kv.put, "", "v")
        try(qcluster.kv.get, "")
        try(qcluster.kv.put, "k", "v", {}, "not a function")
        try(qcluster.kv.put, "k")
        try(qcluster.kv.watch, "p", "not a function")
      end }
    ]], { "on_start" })
    assert.are.equal(0, rc, err)
    local l = lines(out)
    assert.are.equal(7, #l, out)
    assert.matches("opts.cas: expected an integer >= 0", l[1])
    assert.matches("opts.cas: expected an integer >= 0", l[2])
    -- called through pcall, so no function name or position in the messages
    assert.matches("bad argument #1 to '%S+' %(the key must not be empty%)", l[3])
    assert.matches("bad argument #1 to '%S+' %(the key must not be empty%)", l[4])
    assert.matches("bad argument #4 to '%S+' %(function expected, got string%)", l[5])
    assert.matches("bad argument #2 to '%S+' %(string expected, got no value%)", l[6])
    assert.matches("bad argument #2 to '%S+' %(function expected, got string%)", l[7])
  end)

  it("raises 'kv: not available' when the agent has no KV", function()
    local rc, out, err = run([[
      local function try(f, ...)
        local args = table.pack(...)
        print((select(2, pcall(function() f(table.unpack(args, 1, args.n)) end))))
      end
      return { on_start = function()
        try(qcluster.kv.get, "k")
        try(qcluster.kv.list, "")
        try(qcluster.kv.put, "k", "v", function() print("never") end)
        try(qcluster.kv.delete, "k")
        -- a watch needs nothing from the KV: it only listens
        print(type(qcluster.kv.watch("k", function() end)))
      end }
    ]], { "nokv", "on_start" })
    assert.are.equal(0, rc, err)
    local l = lines(out)
    assert.are.equal(5, #l, out)
    for i = 1, 4 do assert.matches("^[^\n]*hooks.lua:3: kv: not available$", l[i]) end
    assert.are.equal("userdata", l[5])
  end)

  it("raises when a local read does not answer at once; the late answer is harmless",
    function()
      local rc, out, err = run([[
        return { on_start = function()
          print(select(2, pcall(function() return qcluster.kv.get("k") end)))
          print(select(2, pcall(function() return qcluster.kv.list("k") end)))
          collectgarbage()
        end }
      ]], { "kvlate", "on_start" }, 60, driver.valgrind())
      assert.are.equal(0, rc, err)
      local l = lines(out)
      assert.are.equal(2, #l, out)
      assert.matches("hooks.lua:2: kv.get: no local answer$", l[1])
      assert.matches("hooks.lua:3: kv.list: no local answer$", l[2])
    end)

  it("answers writes still in flight after the host is freed, harmlessly", function()
    local rc, out, err = run([[
      return { on_start = function()
        qcluster.kv.put("k", "v", function() print("never") end)
        qcluster.kv.delete("k", function() print("never") end)
        qcluster.kv.put("k2", "v")
      end, on_kv_change = function() print("never") end }
    ]], { "on_start", "drain", "stop" }, 60, driver.valgrind())
    assert.are.equal(0, rc, err)
    assert.are.same({}, lines(out))
  end)
end)

describe("on_kv_change", function()
  before_each(function() dir = driver.tmpdir() end)
  after_each(function() driver.rmdir(dir) end)

  it("gets key, value and revision; value is nil for a delete", function()
    local rc, out, err = run([[
      return { on_kv_change = function(ev)
        print("change", ev.key, ev.value, ev.revision, math.type(ev.revision), ev.term)
      end }
    ]], { "kvchange", "cfg/a", "one", "5", "kvdelete", "cfg/a", "6", "kvchange", "e", "", "7" })
    assert.are.equal(0, rc, err)
    assert.are.same({
      "change\tcfg/a\tone\t5\tinteger\tnil",
      "change\tcfg/a\tnil\t6\tinteger\tnil",
      "change\te\t\t7\tinteger\tnil",
    }, lines(out))
    assert.matches("counter on_kv_change runs=3 errors=0", out)
  end)

  it("runs for a write from a hook before the write's callback", function()
    local rc, out, err = run([[
      return {
        on_start = function()
          qcluster.kv.put("x\0y", "\0", function(ok, rev) print("cb", ok, rev) end)
          qcluster.kv.delete("x\0y", function(ok, rev) print("cb", ok, rev) end)
        end,
        on_kv_change = function(ev)
          print("change", #ev.key, ev.value and #ev.value, ev.revision)
        end,
      }
    ]], { "on_start" })
    assert.are.equal(0, rc, err)
    assert.are.same({ "change\t3\t1\t1", "cb\ttrue\t1", "change\t3\tnil\t2", "cb\ttrue\t2" },
      lines(out))
  end)
end)

describe("qcluster.kv.watch", function()
  before_each(function() dir = driver.tmpdir() end)
  after_each(function() driver.rmdir(dir) end)

  it("runs matching watches after the hook, in registration order, until cancelled",
    function()
      local rc, out, err = run([[
        local w3
        return {
          on_start = function()
            qcluster.kv.watch("app/", function(ev)
              print("w1", ev.key, ev.value, ev.revision)
            end)
            qcluster.kv.watch("", function(ev) print("all", ev.key, ev.value) end)
            w3 = qcluster.kv.watch("app/x", function(ev)
              print("w3", ev.key)
              print("cancel", w3:cancel(), w3:cancel())
            end)
            print(tostring(w3):match("^qcluster.kv.watch: %d+$") ~= nil)
          end,
          on_kv_change = function(ev)
            print("hook", ev.key)
            ev.key, ev.value = "changed", "changed" -- each call gets its own table
          end,
        }
      ]], { "on_start", "kvchange", "app/x", "1", "1", "kvchange", "other", "2", "2",
        "kvchange", "app", "3", "3", "kvdelete", "app/x", "4" })
      assert.are.equal(0, rc, err)
      assert.are.same({
        "true",
        "hook\tapp/x", "w1\tapp/x\t1\t1", "all\tapp/x\t1", "w3\tapp/x", "cancel\ttrue\tfalse",
        "hook\tother", "all\tother\t2",
        "hook\tapp", "all\tapp\t3",
        "hook\tapp/x", "w1\tapp/x\tnil\t4", "all\tapp/x\tnil",
      }, lines(out))
      assert.matches("counter kv_watch runs=7 errors=0", out)
    end)

  it("run without an on_kv_change hook, for writes made from Lua", function()
    local rc, out, err = run([[
      return { on_start = function()
        qcluster.kv.watch("k", function(ev) print("watch", ev.key, ev.value, ev.revision) end)
        qcluster.kv.put("k1", "v", function(ok) print("cb", ok) end)
      end }
    ]], { "on_start" })
    assert.are.equal(0, rc, err)
    assert.are.same({ "watch\tk1\tv\t1", "cb\ttrue" }, lines(out))
  end)

  it("each have their own budget; a failing one is counted and the next runs", function()
    local rc, out, err = run([[
      return { on_start = function()
        qcluster.kv.watch("", function() error("watch boom") end)
        qcluster.kv.watch("", function() while true do end end)
        qcluster.kv.watch("", function(ev) print("third", ev.key) end)
      end }
    ]], { "on_start", "kvchange", "k", "v", "9" })
    assert.are.equal(0, rc, err)
    assert.are.same({ "third\tk" }, lines(out))
    assert.matches("ERROR hook: kv_watch failed: [^\n]*watch boom", err)
    assert.matches("WARN  hook: kv_watch stopped after 200 ms", err)
    assert.matches("counter kv_watch runs=3 errors=2", out)
  end)

  it("made during a change's delivery see only later changes", function()
    local rc, out, err = run([[
      local n = 0
      return { on_kv_change = function(ev)
        n = n + 1
        if n == 1 then
          qcluster.kv.watch("", function(e) print("late watch", e.key) end)
        end
        print("hook", ev.key)
      end }
    ]], { "kvchange", "a", "1", "1", "kvchange", "b", "2", "2" })
    assert.are.equal(0, rc, err)
    assert.are.same({ "hook\ta", "hook\tb", "late watch\tb" }, lines(out))
  end)

  -- on_start rewrites hooks.lua with `text`, so that the next reload reads it.
  local function rewriting(text, top)
    return ([[
      local path = debug.getinfo(1, "S").source:sub(2)
      %s
      return {
        on_start = function()
          qcluster.kv.watch("", function(ev) print("runtime watch", ev.key) end)
          local f = assert(io.open(path, "w"))
          f:write(%q)
          f:close()
        end,
      }
    ]]):format(top or "", text)
  end

  it("made by hooks survive a reload", function()
    local rc, out, err = run(rewriting("return {}"),
      { "on_start", "reload", "kvchange", "k", "v", "1", "reload", "kvchange", "k", "v", "2" })
    assert.are.equal(0, rc, err)
    assert.are.same({ "reload: ok", "runtime watch\tk", "reload: ok", "runtime watch\tk" },
      lines(out))
  end)

  it("made by the hooks file are replaced by the reloaded file's", function()
    local new = [[
      qcluster.kv.watch("", function(ev) print("new file watch", ev.key) end)
      return {}
    ]]
    local rc, out, err = run(rewriting(new,
      'qcluster.kv.watch("", function(ev) print("old file watch", ev.key) end)'),
      { "kvchange", "a", "v", "1", "on_start", "reload", "kvchange", "b", "v", "2",
        "reload", "kvchange", "c", "v", "3" })
    assert.are.equal(0, rc, err)
    assert.are.same({
      "old file watch\ta",
      "reload: ok", "runtime watch\tb", "new file watch\tb",
      "reload: ok", "runtime watch\tc", "new file watch\tc",
    }, lines(out))
  end)

  it("made by a hooks file that fails to reload are dropped; the old ones stay", function()
    local broken = [[
      qcluster.kv.watch("", function(ev) print("broken file watch", ev.key) end)
      error("nope")
    ]]
    local rc, out, err = run(rewriting(broken,
      'qcluster.kv.watch("", function(ev) print("old file watch", ev.key) end)'),
      { "on_start", "reload", "kvchange", "b", "v", "2" })
    assert.are.equal(0, rc, err)
    local l = lines(out)
    assert.matches("^reload: .*hooks.lua:2: nope$", l[1])
    assert.are.same({ "old file watch\tb", "runtime watch\tb" }, { l[2], l[3] })
    assert.are.equal(3, #l)
  end)
end)
