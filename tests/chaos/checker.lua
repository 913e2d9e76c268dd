-- Checkers over a chaos run's records. Pure functions of tables (no I/O),
-- so tests/chaos/checker_spec.lua can feed them synthetic histories.
--
--   linearizable(ops)   one key's operations against a register with
--                       compare-and-set on revisions; an exact search
--                       (Wing & Gong, with Lowe's memoisation as in Knossos
--                       and Porcupine) over every order real time allows
--   lost_writes(...)    every acknowledged write is still there (or was
--                       overwritten by a later one) once the cluster healed,
--                       and every replica holds the same final value
--   leadership(...)     leadership intervals from the hooks' records never
--                       overlap between two running nodes; one leader a term
--   frozen_leaders(...) a leader that was frozen while another was elected
--                       steps down first thing on waking, in a lower term
--
-- An operation (op) is a table:
--   f        "read" or "cas"
--   invoke   wall-clock seconds when the client sent it
--   complete wall-clock seconds of the answer; nil when unknown (info)
--   status   "ok" (it happened), "fail" (it did not), "info" (unknown)
--   value    cas: the value written; read: the value seen (nil: absent)
--   cas      cas: the revision it was conditional on (0: absent)
--   rev      ok cas: the new revision; ok read: the revision seen (0:
--            absent); fail cas with conflict = true: the current revision
--            the 409 named
--   conflict cas: true when the answer was a 409 (a definite failure that
--            also observed the current revision)
--   id, process, node   for reports
local M = {}

local function describe(op)
  if not op then return "?" end
  local s
  if op.f == "read" then
    s = string.format("read -> %s@%s", tostring(op.value), tostring(op.rev))
  else
    s = string.format("cas(%s, if rev=%s)", tostring(op.value), tostring(op.cas))
    if op.status == "ok" then
      s = s .. " -> ok rev " .. tostring(op.rev)
    elseif op.conflict then
      s = s .. " -> 409 rev " .. tostring(op.rev)
    else
      s = s .. " -> " .. op.status
    end
  end
  return string.format("%s [%s %s %.3f..%s]", s, tostring(op.id or "?"), tostring(op.node or "?"),
    op.invoke or 0, op.complete and string.format("%.3f", op.complete) or "?")
end
M.describe = describe

-- ---- the register model ----------------------------------------------------
-- State: v (value, nil: absent), r (revision, nil: unknown: written by an
-- operation whose answer was lost and that no read saw), lb (r is above this).

local function state_key(s)
  return (s.v or "\0nil") .. "\0" .. tostring(s.r) .. "\0" .. tostring(s.lb)
end

-- Revision r for a state whose revision is unknown: allowed when no other
-- write is known to own r and r is above the lower bound.
local function bind(s, r, owner)
  if s.r ~= nil then return s.r == r end
  if r <= (s.lb or 0) then return false end
  local o = owner[r]
  return o == nil or o == s.v
end

-- The state after op, or nil when op cannot take effect in state s.
local function step(s, op, owner, known_rev)
  if op.f == "read" then
    if s.v ~= op.value then return nil end
    if not bind(s, op.rev, owner) then return nil end
    if s.r == op.rev then return s end
    return { v = s.v, r = op.rev }
  end
  if op.status == "fail" then -- a 409: the revision was not op.cas
    if op.rev == op.cas or not bind(s, op.rev, owner) then return nil end
    if s.r == op.rev then return s end
    return { v = s.v, r = op.rev }
  end
  if not bind(s, op.cas, owner) then return nil end
  if op.status == "ok" then
    if op.rev <= op.cas then return nil end
    return { v = op.value, r = op.rev }
  end
  -- info: it may have taken effect here (the caller also tries without it)
  local r = known_rev[op.value]
  if r and r <= op.cas then return nil end
  return { v = op.value, r = r, lb = r and nil or op.cas }
end

-- Which operations take part: definite failures other than a 409 and reads
-- that got no answer had no effect and observed nothing.
local function relevant(op)
  if op.f == "read" then return op.status == "ok" end
  if op.status == "fail" then return op.conflict == true end
  return op.status == "ok" or op.status == "info"
end

-- linearizable(ops [, opts]) -> ok, report
-- report: {ops, info, explored, reason (when not ok), op (the operation no
-- order explains), state}. opts.max_explored bounds the search (then ok is
-- nil: undecided).
function M.linearizable(ops, opts)
  opts = opts or {}
  local max_explored = opts.max_explored or 2e6
  local list, owner, known_rev = {}, {}, {}
  local report = { ops = 0, info = 0, explored = 0 }
  -- Who owns each revision: every answer that tied a value to a revision.
  for _, op in ipairs(ops) do
    if relevant(op) then
      list[#list + 1] = op
      local v, r
      if op.f == "read" and op.value ~= nil then v, r = op.value, op.rev end
      if op.f == "cas" and op.status == "ok" then v, r = op.value, op.rev end
      if v ~= nil then
        if owner[r] ~= nil and owner[r] ~= v then
          report.reason = string.format("revision %d holds two values: %s and %s", r, owner[r], v)
          report.op = op
          return false, report
        end
        if known_rev[v] ~= nil and known_rev[v] ~= r then
          report.reason = string.format("value %s seen at revisions %d and %d", v, known_rev[v], r)
          report.op = op
          return false, report
        end
        owner[r], known_rev[v] = v, r
      end
    end
  end
  -- Events: a call for every operation, a return for each with an answer
  -- (an info operation may take effect at any time after its call).
  local events = {}
  for i, op in ipairs(list) do
    op._idx = i
    report.ops = report.ops + 1
    local call = { op = op, call = true, t = op.invoke }
    events[#events + 1] = call
    if op.status == "info" then
      report.info = report.info + 1
    else
      local ret = { op = op, call = false, t = op.complete, match = call }
      call.match = ret
      events[#events + 1] = ret
    end
  end
  table.sort(events, function(a, b)
    if a.t ~= b.t then return a.t < b.t end
    if a.call ~= b.call then return a.call end -- equal times: concurrent
    return a.op._idx < b.op._idx
  end)
  local head = { next = nil }
  local prev = head
  for _, e in ipairs(events) do
    prev.next, e.prev = e, prev
    prev = e
  end
  local function lift(e)
    e.prev.next = e.next
    if e.next then e.next.prev = e.prev end
    local m = e.match
    if m then
      m.prev.next = m.next
      if m.next then m.next.prev = m.prev end
    end
  end
  local function unlift(e)
    local m = e.match
    if m then
      m.prev.next = m
      if m.next then m.next.prev = m end
    end
    e.prev.next = e
    if e.next then e.next.prev = e end
  end
  -- The set of linearized operations as 62-bit words, for the cache key.
  local words = {}
  for w = 1, (#list // 62) + 1 do words[w] = 0 end
  local function flip(i)
    local w, b = (i - 1) // 62 + 1, (i - 1) % 62
    words[w] = words[w] ~ (1 << b)
  end
  local remaining = 0
  for _, op in ipairs(list) do
    if op.status ~= "info" then remaining = remaining + 1 end
  end
  local state = { v = nil, r = 0 }
  local cache, stack = {}, {}
  local deepest = { depth = -1 }
  local entry = head.next
  while remaining > 0 do
    report.explored = report.explored + 1
    if report.explored > max_explored then
      report.reason = "search budget exceeded (" .. max_explored .. " steps): undecided"
      return nil, report
    end
    if entry and entry.call then
      local nxt = step(state, entry.op, owner, known_rev)
      local taken = false
      if nxt then
        flip(entry.op._idx)
        local key = table.concat(words, ",") .. "|" .. state_key(nxt)
        if not cache[key] then
          cache[key] = true
          stack[#stack + 1] = { entry = entry, state = state }
          state = nxt
          lift(entry)
          if entry.op.status ~= "info" then remaining = remaining - 1 end
          entry = head.next
          taken = true
        else
          flip(entry.op._idx)
        end
      end
      if not taken then entry = entry.next end
    else
      -- a return (or the end): the operations before it must all be placed
      if entry and #stack > deepest.depth then
        deepest = { depth = #stack, op = entry.op, state = state }
      end
      if #stack == 0 then
        report.reason = "no order of the operations explains the answers"
        report.op = deepest.op
        report.state = deepest.state
        return false, report
      end
      local top = table.remove(stack)
      state = top.state
      flip(top.entry.op._idx)
      unlift(top.entry)
      if top.entry.op.status ~= "info" then remaining = remaining + 1 end
      entry = top.entry.next
    end
  end
  return true, report
end

-- Splits one history (a list of ops with a key field) by key.
function M.by_key(ops)
  local keys, order = {}, {}
  for _, op in ipairs(ops) do
    if not keys[op.key] then
      keys[op.key] = {}
      order[#order + 1] = op.key
    end
    table.insert(keys[op.key], op)
  end
  table.sort(order)
  return keys, order
end

-- ---- acknowledged writes survive ------------------------------------------
-- ops: every client operation; final[key] = {value=, rev=} (a linearizable
-- read after healing; value nil: absent), or {err=...} when it failed;
-- replicas[node][key] = {value=, rev=} read locally from each node once they
-- all applied the same index. Returns ok, report {keys, acked, problems}.
function M.lost_writes(ops, final, replicas)
  local problems, acked = {}, 0
  local top, written = {}, {}
  for _, op in ipairs(ops) do
    if op.f == "cas" then
      written[op.key] = written[op.key] or {}
      if op.status ~= "fail" then written[op.key][op.value] = op end
      if op.status == "ok" then
        acked = acked + 1
        if not top[op.key] or op.rev > top[op.key].rev then top[op.key] = op end
      end
    end
  end
  local keys = {}
  for k in pairs(final) do keys[#keys + 1] = k end
  for k in pairs(top) do
    if not final[k] then keys[#keys + 1] = k end
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local f, t = final[k], top[k]
    if not f or f.err then
      problems[#problems + 1] = string.format("%s: no final read (%s)", k, f and f.err or "missing")
    elseif t and (f.rev or 0) < t.rev then
      problems[#problems + 1] = string.format("%s: acknowledged %s lost: final %s@%s",
        k, describe(t), tostring(f.value), tostring(f.rev))
    elseif t and f.rev == t.rev and f.value ~= t.value then
      problems[#problems + 1] = string.format("%s: revision %d should hold %s (acknowledged), holds %s",
        k, t.rev, tostring(t.value), tostring(f.value))
    elseif f.value ~= nil and not (written[k] and written[k][f.value]) then
      problems[#problems + 1] = string.format("%s: final value %s was never written", k, tostring(f.value))
    end
    for node, r in pairs(replicas or {}) do
      local got = r[k]
      if f and not f.err and (not got or got.err or got.value ~= f.value or (got.rev or 0) ~= (f.rev or 0)) then
        problems[#problems + 1] = string.format("%s: replica %s has %s@%s, the cluster %s@%s", k, node,
          tostring(got and got.value), tostring(got and (got.rev or got.err)), tostring(f.value), tostring(f.rev))
      end
    end
  end
  return #problems == 0, { keys = #keys, acked = acked, problems = problems }
end

-- ---- leadership -------------------------------------------------------------
-- records[node] = list of hook records in file order:
--   {kind="start", t}, {kind="elected", term, t}, {kind="demoted", term, reason, t}
-- procs[node] = {kills = {t...}, pauses = {{stop=, cont=}...}} from the nemesis
-- Returns the intervals: {node, term, from, to, ended ("demoted", "killed",
-- "end")}, sorted by from.
function M.intervals(records, procs, end_time)
  local out = {}
  for node, recs in pairs(records) do
    local kills = (procs[node] or {}).kills or {}
    local open
    local function kill_after(t, before)
      for _, k in ipairs(kills) do
        if k >= t and (not before or k <= before) then return k end
      end
    end
    local function close(t, how)
      open.to, open.ended = t, how
      out[#out + 1] = open
      open = nil
    end
    for _, r in ipairs(recs) do
      if r.kind == "start" and open then
        close(kill_after(open.from, r.t) or r.t, "killed")
      elseif r.kind == "elected" then
        if open then close(r.t, "re-elected") end
        open = { node = node, term = r.term, from = r.t }
      elseif r.kind == "demoted" and open then
        close(r.t, "demoted")
      end
    end
    if open then
      local k = kill_after(open.from)
      close(k or end_time, k and "killed" or "end")
    end
  end
  table.sort(out, function(a, b) return a.from < b.from end)
  return out
end

local function paused_at(procs, node, t)
  for _, p in ipairs((procs[node] or {}).pauses or {}) do
    if p.stop <= t and t <= (p.cont or math.huge) then return p end
  end
end

-- leadership(records, procs, end_time) -> ok, report {intervals, overlaps,
-- excused, problems}. Two intervals may overlap only when the older leader
-- was frozen (SIGSTOP) when the newer one was elected; frozen_leaders()
-- checks those.
function M.leadership(records, procs, end_time)
  local iv = M.intervals(records, procs, end_time)
  local problems, excused = {}, {}
  local by_term = {}
  for _, a in ipairs(iv) do
    local other = by_term[a.term]
    if other and other.node ~= a.node then
      problems[#problems + 1] = string.format("term %d has two leaders: %s at %.3f and %s at %.3f",
        a.term, other.node, other.from, a.node, a.from)
    end
    by_term[a.term] = a
  end
  for i = 1, #iv do
    for j = i + 1, #iv do
      local a, b = iv[i], iv[j]
      if b.from >= a.to then break end
      if a.node ~= b.node and b.from < a.to then
        local p = paused_at(procs, a.node, b.from)
        if p then
          excused[#excused + 1] = { old = a, new = b, pause = p }
        else
          problems[#problems + 1] = string.format(
            "%s (term %d, %.3f..%.3f, %s) and %s (term %d, from %.3f) led at once for %.1f ms",
            a.node, a.term, a.from, a.to, a.ended, b.node, b.term, b.from, (math.min(a.to, b.to) - b.from) * 1000)
        end
      end
    end
  end
  return #problems == 0, { intervals = #iv, overlaps = #problems, excused = excused, problems = problems }
end

-- frozen_leaders(records, procs, end_time) -> ok, report {paused_leaders,
-- succeeded, worst_ms, problems}: for every pause of a node that led when
-- it froze and saw another node elected meanwhile: its first record after
-- waking is on_demoted (or it was killed), its term is below the newer
-- leader's, and the status it answered right after waking (procs[node].
-- pauses[i].probe = {role=, term=} or {err=}) did not claim leadership.
function M.frozen_leaders(records, procs, end_time)
  local iv = M.intervals(records, procs, end_time)
  local problems, paused, succeeded, worst = {}, 0, 0, 0
  for node, pr in pairs(procs) do
    for _, p in ipairs(pr.pauses or {}) do
      local led
      for _, a in ipairs(iv) do
        if a.node == node and a.from <= p.stop and a.to >= p.stop then led = a end
      end
      if led and p.cont then
        paused = paused + 1
        local newer
        for _, b in ipairs(iv) do
          if b.node ~= node and b.from >= p.stop and b.from <= p.cont then newer = newer or b end
        end
        if newer then
          succeeded = succeeded + 1
          if led.term >= newer.term then
            problems[#problems + 1] = string.format("%s froze leading term %d, but %s was elected in term %d",
              node, led.term, newer.node, newer.term)
          end
          local first
          for _, r in ipairs(records[node] or {}) do
            if r.t >= p.cont and not first then first = r end
          end
          if led.ended == "demoted" then
            worst = math.max(worst, (led.to - p.cont) * 1000)
            if first and first.kind ~= "demoted" then
              problems[#problems + 1] = string.format("%s woke at %.3f and ran on_%s before on_demoted",
                node, p.cont, first.kind)
            end
          elseif led.ended ~= "killed" then
            problems[#problems + 1] = string.format("%s woke at %.3f and never stepped down from term %d",
              node, p.cont, led.term)
          end
          local probe = p.probe
          if probe and probe.role == "leader" and (probe.term or 0) <= led.term then
            problems[#problems + 1] = string.format(
              "%s answered as leader of term %s right after waking (term %d led by %s meanwhile)",
              node, tostring(probe.term), newer.term, newer.node)
          end
        end
      end
    end
  end
  return #problems == 0, { paused_leaders = paused, succeeded = succeeded, worst_ms = worst, problems = problems }
end

-- Parses a hooks record file ("elected TERM T", "demoted TERM REASON T",
-- "start T") into records.
function M.parse_records(text)
  local recs = {}
  for line in (text or ""):gmatch("[^\n]+") do
    local kind, rest = line:match("^(%S+)%s*(.*)$")
    if kind == "elected" then
      local term, t = rest:match("^(%d+) (%S+)")
      recs[#recs + 1] = { kind = kind, term = tonumber(term), t = tonumber(t) }
    elseif kind == "demoted" then
      local term, reason, t = rest:match("^(%d+) (%S+) (%S+)")
      recs[#recs + 1] = { kind = kind, term = tonumber(term), reason = reason, t = tonumber(t) }
    elseif kind == "start" or kind == "stop" then
      recs[#recs + 1] = { kind = kind, t = tonumber(rest:match("(%S+)$")) }
    end
  end
  return recs
end

return M
