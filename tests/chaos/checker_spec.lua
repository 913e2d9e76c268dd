-- The chaos checkers on synthetic histories: each must pass what is correct
-- and catch what is not, or a clean chaos run proves nothing.
package.path = "./tests/chaos/?.lua;" .. package.path
local C = require("checker")

local n = 0
local function op(f, invoke, complete, t)
  n = n + 1
  t.f, t.invoke, t.complete, t.id = f, invoke, complete, t.id or ("op" .. n)
  t.status = t.status or "ok"
  return t
end
local function cas(i, c, value, expect, t)
  t = t or {}
  t.value, t.cas = value, expect
  return op("cas", i, c, t)
end
local function read(i, c, value, rev) return op("read", i, c, { value = value, rev = rev }) end

-- A random history of a correct register: processes invoke reads and
-- compare-and-sets; each takes effect at one instant inside its interval;
-- some answers are lost (info), and those writes took effect or not.
local function simulate(seed, nops, procs, info_rate)
  math.randomseed(seed)
  local ops, events = {}, {}
  local reg = { v = nil, r = 0 }
  local rev = 0
  local known = {}
  local t
  local function push(e)
    events[#events + 1] = e
    table.sort(events, function(a, b) return a.t < b.t end)
  end
  for p = 1, procs do push({ t = math.random() * 0.01, kind = "invoke", p = p }) end
  local started = 0
  while #events > 0 do
    local e = table.remove(events, 1)
    t = e.t
    if e.kind == "invoke" and started < nops then
      started = started + 1
      local o
      if math.random() < 0.4 then
        o = op("read", t, nil, { process = e.p })
      else
        local expect = known[e.p] or 0
        if math.random() < 0.15 then expect = math.random(0, rev + 2) end
        o = op("cas", t, nil, { process = e.p, value = "v" .. started, cas = expect })
      end
      ops[#ops + 1] = o
      push({ t = t + math.random() * 0.02, kind = "apply", op = o, p = e.p })
    elseif e.kind == "apply" then
      local o = e.op
      local lost = math.random() < info_rate
      if o.f == "read" then
        o.value, o.rev = reg.v, reg.r
      elseif reg.r == o.cas then
        if not (lost and math.random() < 0.5) then -- a lost write may never apply
          rev = rev + math.random(1, 3)
          reg = { v = o.value, r = rev }
          o.rev = rev
        else
          o.rev = nil
        end
      else
        o.status, o.conflict, o.rev = "fail", true, reg.r
      end
      if lost then
        o.status = "info"
        if o.f == "read" then o.value, o.rev = nil, nil end
        push({ t = t + 0.001, kind = "invoke", p = e.p })
      else
        push({ t = t + math.random() * 0.02, kind = "complete", op = o, p = e.p })
      end
    elseif e.kind == "complete" then
      local o = e.op
      o.complete = t
      if o.f == "read" or o.conflict or o.status == "ok" then known[e.p] = o.rev end
      push({ t = t + math.random() * 0.005, kind = "invoke", p = e.p })
    end
  end
  return ops
end

describe("the linearizability checker", function()
  it("accepts a sequential history", function()
    local ok = C.linearizable {
      cas(0, 1, "a", 0, { rev = 5 }), read(2, 3, "a", 5), cas(4, 5, "b", 5, { rev = 7 }),
      read(6, 7, "b", 7), cas(8, 9, "c", 5, { status = "fail", conflict = true, rev = 7 }),
    }
    assert.is_true(ok)
  end)

  it("accepts a read of an absent key before the first write", function()
    assert.is_true(C.linearizable { read(0, 1, nil, 0), cas(2, 3, "a", 0, { rev = 2 }) })
  end)

  it("refuses two compare-and-sets on the same revision that both succeed", function()
    local ok, rep = C.linearizable { cas(0, 2, "a", 0, { rev = 3 }), cas(1, 3, "b", 0, { rev = 4 }) }
    assert.is_false(ok)
    assert.is_truthy(rep.reason)
  end)

  it("refuses a stale read after a write was acknowledged", function()
    local ok = C.linearizable { cas(0, 1, "a", 0, { rev = 5 }), read(2, 3, nil, 0) }
    assert.is_false(ok)
  end)

  it("accepts a read that sees a concurrent write, in either order", function()
    assert.is_true(C.linearizable { cas(0, 4, "a", 0, { rev = 5 }), read(1, 2, "a", 5) })
    assert.is_true(C.linearizable { cas(0, 4, "a", 0, { rev = 5 }), read(1, 2, nil, 0) })
  end)

  it("refuses a read that goes back in time", function()
    local ok = C.linearizable {
      cas(0, 10, "a", 0, { rev = 5 }), read(1, 2, "a", 5), read(3, 4, nil, 0),
    }
    assert.is_false(ok)
  end)

  it("lets a write with a lost answer take effect, when a read saw it", function()
    assert.is_true(C.linearizable { cas(0, nil, "x", 0, { status = "info" }), read(5, 6, "x", 9) })
  end)

  it("refuses a value nobody wrote", function()
    assert.is_false(C.linearizable { read(5, 6, "x", 9) })
  end)

  it("refuses a value whose write definitely failed", function()
    assert.is_false(C.linearizable { cas(0, 1, "x", 0, { status = "fail" }), read(5, 6, "x", 9) })
  end)

  it("lets a write with a lost answer never take effect", function()
    assert.is_true(C.linearizable {
      cas(0, 1, "a", 0, { rev = 2 }), cas(2, nil, "x", 2, { status = "info" }),
      cas(3, 4, "b", 2, { rev = 6 }), read(5, 6, "b", 6),
    })
  end)

  it("binds the revision of a write with a lost answer from a later 409", function()
    assert.is_true(C.linearizable {
      cas(0, 1, "a", 0, { rev = 2 }), cas(2, nil, "x", 2, { status = "info" }),
      cas(3, 4, "b", 2, { status = "fail", conflict = true, rev = 8 }),
      cas(5, 6, "c", 8, { rev = 11 }), read(7, 8, "c", 11),
    })
    -- but not when revision 8 is another value's
    assert.is_false(C.linearizable {
      cas(0, 1, "a", 0, { rev = 2 }), cas(2, nil, "x", 2, { status = "info" }),
      cas(3, 4, "b", 2, { status = "fail", conflict = true, rev = 8 }),
      cas(5, 6, "c", 8, { rev = 11 }), read(7, 8, "z", 8),
    })
  end)

  it("refuses a 409 that names a revision the key did not have", function()
    assert.is_false(C.linearizable {
      cas(0, 1, "a", 0, { rev = 3 }), cas(2, 3, "b", 0, { status = "fail", conflict = true, rev = 0 }),
    })
    assert.is_true(C.linearizable {
      cas(0, 1, "a", 0, { rev = 3 }), cas(2, 3, "b", 0, { status = "fail", conflict = true, rev = 3 }),
    })
  end)

  it("refuses one revision with two values", function()
    local ok, rep = C.linearizable { cas(0, 1, "a", 0, { rev = 3 }), read(2, 3, "b", 3) }
    assert.is_false(ok)
    assert.matches("two values", rep.reason)
  end)

  it("ignores operations that failed without observing anything", function()
    assert.is_true(C.linearizable {
      cas(0, 1, "a", 0, { rev = 3 }), op("read", 2, 3, { status = "fail" }),
      cas(2, 3, "q", 0, { status = "fail" }), read(4, 5, "a", 3),
    })
  end)

  for seed = 1, 20 do
    it("accepts simulated correct histories and catches a planted stale read (seed " .. seed .. ")", function()
      local ops = simulate(seed, 250, 5, seed % 2 == 0 and 0.05 or 0.01)
      local t0 = os.clock()
      local ok, rep = C.linearizable(ops)
      assert.is_true(ok, rep.reason)
      assert.is_true(os.clock() - t0 < 5, "the search took too long")
      -- Plant a stale read: a read that began after an acknowledged write
      -- overwrote an earlier acknowledged value returns that earlier value.
      local planted
      for _, r in ipairs(ops) do
        if r.f == "read" and r.status == "ok" and not planted then
          local newer, older
          for _, w in ipairs(ops) do
            if w.f == "cas" and w.status == "ok" and w.complete < r.invoke then
              if not newer or w.rev > newer.rev then newer = w end
            end
          end
          for _, w in ipairs(ops) do
            if newer and w.f == "cas" and w.status == "ok" and w.rev < newer.rev and
              (not older or w.rev > older.rev) then older = w end
          end
          if older then
            r.value, r.rev = older.value, older.rev
            planted = r
          end
        end
      end
      assert.is_truthy(planted, "no read to plant in")
      local bad, brep = C.linearizable(ops)
      assert.is_false(bad)
      assert.is_truthy(brep.op)
    end)
  end
end)

describe("the lost-write checker", function()
  local ops = {
    cas(0, 1, "a", 0, { key = "k", rev = 3 }), cas(2, 3, "b", 3, { key = "k", rev = 5 }),
    cas(4, nil, "c", 5, { key = "k", status = "info" }),
  }
  it("accepts the last acknowledged value or a later one", function()
    assert.is_true(C.lost_writes(ops, { k = { value = "b", rev = 5 } }, {}))
    assert.is_true(C.lost_writes(ops, { k = { value = "c", rev = 9 } }, {}))
  end)
  it("catches an acknowledged write that is gone", function()
    local ok, rep = C.lost_writes(ops, { k = { value = "a", rev = 3 } }, {})
    assert.is_false(ok)
    assert.matches("lost", rep.problems[1])
  end)
  it("catches a replica that differs and a missing final read", function()
    assert.is_false(C.lost_writes(ops, { k = { value = "b", rev = 5 } },
      { n1 = { k = { value = "b", rev = 5 } }, n2 = { k = { value = "a", rev = 3 } } }))
    assert.is_false(C.lost_writes(ops, { k = { err = "timeout" } }, {}))
  end)
end)

describe("the leadership checkers", function()
  local function recs(text) return C.parse_records(text) end
  it("accepts hand-overs without overlap, and a killed leader's interval ends at the kill", function()
    local records = {
      n1 = recs("start 0\nelected 2 1.0\ndemoted 2 lost_quorum 3.0\n"),
      n2 = recs("start 0\nelected 3 3.2\nstart 6.0\n"),
      n3 = recs("start 0\nelected 4 5.5\n"),
    }
    local procs = { n2 = { kills = { 5.0 } } }
    local ok, rep = C.leadership(records, procs, 10)
    assert.is_true(ok, table.concat(rep.problems, "\n"))
    assert.are.equal(3, rep.intervals)
  end)
  it("catches two running leaders at once, and two leaders of one term", function()
    local records = {
      n1 = recs("elected 2 1.0\ndemoted 2 lost_quorum 3.0\n"),
      n2 = recs("elected 3 2.9\n"),
    }
    local ok, rep = C.leadership(records, {}, 10)
    assert.is_false(ok)
    assert.matches("led at once", rep.problems[1])
    ok = C.leadership({ n1 = recs("elected 2 1\ndemoted 2 x 2\n"), n2 = recs("elected 2 3\n") }, {}, 10)
    assert.is_false(ok)
  end)
  it("excuses a frozen leader, and checks that it steps down first on waking", function()
    local records = {
      n1 = recs("elected 2 1.0\ndemoted 2 higher_term 4.01\n"),
      n2 = recs("elected 3 2.5\n"),
    }
    local procs = { n1 = { pauses = { { stop = 2.0, cont = 4.0, probe = { role = "follower", term = 3 } } } } }
    local ok, rep = C.leadership(records, procs, 10)
    assert.is_true(ok, table.concat(rep.problems, "\n"))
    assert.are.equal(1, #rep.excused)
    local fok, frep = C.frozen_leaders(records, procs, 10)
    assert.is_true(fok, table.concat(frep.problems, "\n"))
    assert.are.equal(1, frep.succeeded)
  end)
  it("catches a woken leader that answers as leader or never steps down", function()
    local records = {
      n1 = recs("elected 2 1.0\ndemoted 2 higher_term 4.01\n"),
      n2 = recs("elected 3 2.5\n"),
    }
    local procs = { n1 = { pauses = { { stop = 2.0, cont = 4.0, probe = { role = "leader", term = 2 } } } } }
    assert.is_false(C.frozen_leaders(records, procs, 10))
    records.n1 = recs("elected 2 1.0\n")
    procs.n1.pauses[1].probe = nil
    assert.is_false(C.frozen_leaders(records, procs, 10))
  end)
end)
