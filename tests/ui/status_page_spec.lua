-- The status page in headless Chromium against a live three-node cluster:
-- one page instance, opened on a follower, follows a fail-over (the leader
-- killed with SIGKILL), escapes metadata, draws the leadership timeline
-- from GET /v1/history (also after a reload; its layout checked by element
-- geometry and by the colours of a screenshot), and says when its agent is
-- gone. QC_UI_SCREENSHOT=FILE keeps the timeline's screenshot (README).
-- Chromium runs in a session of its own and is ended by its process group.
local A = require("agents")
local cjson = require("cjson.safe")

local CDP = A.root .. "/tests/ui/cdp.py"
local WAIT = 30 -- seconds: the page polls every second; the machine may be slow

local function shq(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Starts Chromium on url (flags: more command-line flags); returns {pid,
-- dir, ws} once the page's DevTools socket is known, or raises with
-- Chromium's log.
local function chromium_start(url, flags)
  local b = { dir = (A.sh("mktemp -d /tmp/qc-chromium-XXXXXX"):gsub("%s+$", "")) }
  local p = io.popen(string.format(
    "setsid chromium --headless=new --no-sandbox --disable-gpu --no-first-run " ..
    "--no-default-browser-check --disable-extensions --disable-background-networking " ..
    "--disable-sync --remote-debugging-address=127.0.0.1 --remote-debugging-port=0 " ..
    "--user-data-dir=%s/profile %s %s >%s/chromium.log 2>&1 & echo $!", b.dir, flags or "",
    shq(url), b.dir))
  b.pid = tonumber(p:read("l"))
  p:close()
  local port = A.wait_for(function()
    local s = A.read(b.dir .. "/profile/DevToolsActivePort")
    return s and tonumber(s:match("^(%d+)\n"))
  end, WAIT)
  b.ws = port and A.wait_for(function()
    for _, t in ipairs(A.json("127.0.0.1:" .. port, "/json/list") or {}) do
      if t.type == "page" and t.url == url then return t.webSocketDebuggerUrl end
    end
  end, WAIT)
  if not b.ws then
    error("chromium gave no DevTools page for " .. url .. ":\n" ..
      (A.read(b.dir .. "/chromium.log") or ""):sub(-2000))
  end
  return b
end

-- Ends Chromium (browser, renderers, zygotes: one process group) and
-- removes its profile.
local function chromium_stop(b)
  if not b then return end
  if b.pid then
    os.execute("kill -TERM -" .. b.pid .. " 2>/dev/null")
    if not A.wait_for(function() return not A.alive(b.pid) end, 10) then
      os.execute("kill -KILL -" .. b.pid .. " 2>/dev/null")
      A.wait_for(function() return not A.alive(b.pid) end, 5)
    end
    os.execute("kill -KILL -" .. b.pid .. " 2>/dev/null") -- stragglers of the group
  end
  os.execute("rm -rf " .. b.dir)
end

-- The value of a JavaScript expression in the page (nil, error on failure).
local function eval(b, expr)
  local out, code = A.sh("/usr/bin/python3 " .. CDP .. " " .. shq(b.ws) .. " " .. shq(expr))
  if code ~= 0 then return nil, out end
  return cjson.decode(out)
end

-- What the page shows, read from its DOM.
local PAGE_STATE = [[(() => {
  const text = id => document.getElementById(id).textContent;
  return {
    mark: window.__qcMark || null,
    self: text('self-id'), leader: text('leader'), term: text('term'),
    unreachable: document.body.classList.contains('unreachable'),
    banner: getComputedStyle(document.getElementById('banner')).display,
    injected: document.getElementById('injected') !== null,
    rows: [...document.querySelectorAll('#members tr')].map(tr =>
      ({ id: tr.dataset.id, cells: [...tr.cells].map(td => td.textContent) })),
    checks: [...document.querySelectorAll('#checks tr')].map(tr =>
      ({ name: tr.dataset.name, cells: [...tr.cells].map(td => td.textContent) })),
    transitions: [...document.querySelectorAll('#transitions li')].map(li =>
      ({ to: li.dataset.to, term: li.dataset.term, text: li.textContent })),
  };
})()]]

-- Waits until pred(state) holds; returns the state, or raises with the last
-- state the page showed.
local function wait_page(b, what, pred)
  local last, err
  local ok = A.wait_for(function()
    last, err = eval(b, PAGE_STATE)
    return last and pred(last)
  end, WAIT)
  if ok then return last end
  error(string.format("the page never showed %s; last state: %s %s", what,
    last and cjson.encode(last) or "none", err or ""), 2)
end

-- The timeline as drawn: leadership spans (consecutive bars of one leader
-- merged) in time order, with the geometry the layout checks need.
local TIMELINE = [[(() => {
  const svg = document.querySelector('#timeline svg');
  if (!svg) return null;
  const W = +svg.getAttribute('width');
  const num = (e, a) => +e.getAttribute(a);
  const bars = [...svg.querySelectorAll('rect.bar')].map(e => ({
    cls: e.getAttribute('class'), leader: e.dataset.leader || null, x: num(e, 'x'),
    y: num(e, 'y'), w: num(e, 'width'), h: num(e, 'height') }));
  const leads = bars.filter(b => b.leader).sort((a, b) => a.x - b.x);
  const spans = [];
  for (const b of leads) {
    const last = spans[spans.length - 1];
    if (last && last.leader === b.leader && Math.abs(last.x + last.w - b.x) < 1) last.w = b.x + b.w - last.x;
    else spans.push({ leader: b.leader, x: b.x, y: b.y, w: b.w, h: b.h });
  }
  const names = [...svg.querySelectorAll('text.name')].map(t => {
    const r = t.getBBox(); return { name: t.textContent, right: r.x + r.width, y: r.y, h: r.height };
  });
  const box = document.getElementById('timeline');
  return {
    mark: window.__qcMark || null, width: W, box: box.clientWidth,
    overflow: box.scrollWidth > box.clientWidth,
    left: Math.min(...bars.map(b => b.x)), right: Math.max(...bars.map(b => b.x + b.w)),
    spans, names, follow: bars.filter(b => b.cls === 'bar follow' && b.w >= 6),
    terms: svg.querySelectorAll('line.term').length,
    reasons: [...document.querySelectorAll('#transitions li')].map(li => li.dataset.reason),
  };
})()]]

local function wait_timeline(b, what, pred)
  local last, err
  local ok = A.wait_for(function()
    last, err = eval(b, TIMELINE)
    return last and last ~= cjson.null and pred(last)
  end, WAIT)
  if ok then return last end
  error(string.format("the timeline never showed %s; last: %s %s", what,
    last and cjson.encode(last) or "none", err or ""), 2)
end

local function span_names(t)
  local out = {}
  for i, sp in ipairs(t.spans) do out[i] = sp.leader end
  return out
end

local function near(rgb, want)
  for i = 1, 3 do
    if math.abs(rgb[i] - want[i]) > 40 then return false end
  end
  return true
end

local function row(state, id)
  for _, r in ipairs(state.rows) do
    if r.id == id then return r.cells end
  end
end

local function transition_to(state, id)
  for _, t in ipairs(state.transitions) do
    if t.to == id then return t end
  end
end

describe("the status page in headless Chromium", function()
  local c, b, leader, fi

  setup(function()
    assert(A.sh("command -v chromium") ~= "", "chromium is not installed (make deps)")
    -- each node's check fails while "<its events file>.down" exists
    c = A.cluster(3, { extra = { metadata = { note = '<b id="injected">html</b>' },
      checks = { { name = "alive", exec = 'test ! -e "$QC_EVENTS.down" || { echo down; exit 1; }',
        interval_ms = 300, rise = 1, fall = 1 } } } })
    A.start_all(c)
    leader = A.must_leader(c, WAIT)
    fi = A.index_of(c, leader) % 3 + 1
    b = chromium_start("http://" .. c.nodes[fi].api .. "/ui")
  end)

  teardown(function()
    chromium_stop(b)
    A.stop(c)
  end)

  it("shows this node, the leader, the term and every member", function()
    local s = wait_page(b, "the leader and three members", function(s)
      return s.leader == leader and #s.rows == 3
    end)
    assert.are.equal(c.nodes[fi].id, s.self)
    assert.is_truthy(tonumber(s.term) and tonumber(s.term) >= 1)
    assert.is_false(s.unreachable)
    assert.are.equal("none", s.banner)
    for i = 1, 3 do
      local cells = row(s, c.nodes[i].id)
      assert.is_truthy(cells, c.nodes[i].id)
      -- identifier, address, role, reachable, health, voter, priority, metadata
      assert.are.equal("127.0.0.1:" .. c.nodes[i].port, cells[2])
      assert.are.equal(c.nodes[i].id == leader and "leader" or "follower", cells[3])
      assert.are.equal("up", cells[4])
      assert.are.equal("yes", cells[6])
      assert.are.equal("1", cells[7])
    end
    local first = transition_to(s, leader)
    assert.is_truthy(first, "no transition to " .. leader)
  end)

  it("shows metadata as text, never as HTML", function()
    local s = wait_page(b, "the members", function(s) return #s.rows == 3 end)
    assert.is_false(s.injected)
    assert.is_truthy(row(s, c.nodes[fi].id)[8]:find('note=<b id="injected">html</b>', 1, true))
  end)

  it("shows each member's health and, for its own node, a failing check's output", function()
    local s = wait_page(b, "three healthy members and the passing check", function(s)
      local ok = #s.rows == 3 and #s.checks == 1 and s.checks[1].cells[3] == "passing"
      for _, r in ipairs(s.rows) do ok = ok and r.cells[5] == "healthy" end
      return ok
    end)
    assert.are.same({ "alive", "exec", "passing" },
      { s.checks[1].cells[1], s.checks[1].cells[2], s.checks[1].cells[3] })
    assert.are.equal("", s.checks[1].cells[5]) -- a passing check's output is not shown
    -- this page's own node and the other follower turn unhealthy (the
    -- leader stays healthy, so leadership stays where the next case needs it)
    local other = 6 - fi - A.index_of(c, leader)
    A.write(c.nodes[fi].events .. ".down", "")
    A.write(c.nodes[other].events .. ".down", "")
    s = wait_page(b, "both unhealthy, with the failing output", function(st)
      local mine, theirs = row(st, c.nodes[fi].id), row(st, c.nodes[other].id)
      return mine and theirs and mine[5] == "unhealthy: alive" and theirs[5] == "unhealthy: alive"
        and st.checks[1] and st.checks[1].cells[3] == "failing"
    end)
    assert.matches("^down\n", s.checks[1].cells[5]) -- the command's output, then why
    os.remove(c.nodes[fi].events .. ".down")
    os.remove(c.nodes[other].events .. ".down")
    wait_page(b, "everyone healthy again", function(st)
      for _, r in ipairs(st.rows) do
        if r.cells[5] ~= "healthy" then return false end
      end
      return #st.rows == 3
    end)
  end)

  it("the same page instance shows the new leader and the transition after the leader is killed",
    function()
      assert.are.equal("m1", eval(b, "window.__qcMark = 'm1'"))
      assert.is_true(A.signal(c, A.index_of(c, leader), "KILL"))
      local new = A.must_leader(c, WAIT)
      assert.are_not.equal(leader, new)
      local s = wait_page(b, "the new leader " .. new, function(s)
        local r = row(s, leader)
        return s.leader == new and transition_to(s, new) and r and r[4] == "down"
      end)
      assert.are.equal("m1", s.mark) -- not reloaded: the page updated itself
      local t = transition_to(s, new)
      assert.is_truthy(t.text:find("\u{2192} " .. new, 1, true), t.text)
      assert.is_truthy(tonumber(t.term) > tonumber(s.transitions[#s.transitions].term))
      assert.are.equal("leader", row(s, new)[3])
    end)

  it("says the agent is unreachable when its own agent is gone, keeping what it last read", function()
    local shown = wait_page(b, "a leader", function(s) return s.leader ~= "" end).leader
    assert.is_true(A.signal(c, fi, "KILL"))
    local s = wait_page(b, "the unreachable state", function(s)
      return s.unreachable and s.banner ~= "none"
    end)
    assert.are.equal("m1", s.mark)
    assert.are.equal(shown, s.leader)
    assert.are.equal(3, #s.rows)
  end)
end)

-- A cluster of its own, without checks: its history holds only what the
-- case does to it.
describe("the status page's leadership timeline in headless Chromium", function()
  local c, b, leader, page_node

  setup(function()
    assert(A.sh("command -v chromium") ~= "", "chromium is not installed (make deps)")
    c = A.cluster(3)
    A.start_all(c)
    leader = A.must_leader(c, WAIT)
    -- on a follower: its agent sees both fail-overs
    page_node = A.index_of(c, leader) % 3 + 1
    b = chromium_start("http://" .. c.nodes[page_node].api .. "/ui")
    -- Loaded before the case marks it: DevTools lists the page before its
    -- document commits, and a mark set on the blank one it replaces is lost.
    wait_page(b, "its node", function(s) return s.self == c.nodes[page_node].id end)
  end)

  teardown(function()
    chromium_stop(b)
    A.stop(c)
  end)

  it("draws three leadership spans with the right names after two fail-overs, also after a reload",
    function()
      -- the first fail-over: the leader killed
      assert.is_true(A.signal(c, A.index_of(c, leader), "KILL"))
      local second = A.must_leader(c, WAIT)
      assert.are_not.equal(leader, second)
      local third
      for i = 1, 3 do
        if c.nodes[i].id ~= leader and c.nodes[i].id ~= second then third = c.nodes[i].id end
      end
      local status, body = A.http(c.nodes[A.index_of(c, second)].api, "POST",
        "/v1/transfer-leadership", cjson.encode({ to = third }))
      assert.are.equal(200, status, body)
      assert.are.equal(third, A.must_leader(c, WAIT))
      -- The spans are the leaders of the page's agent's history: three,
      -- unless the loaded machine made a lease lapse in between (then the
      -- extra election is in the history, and drawn too).
      local api = c.nodes[page_node].api
      local function shows_three(t)
        local want = {}
        for _, e in ipairs(A.json(api, "/v1/history") or {}) do
          if e.leader ~= cjson.null and e.leader ~= want[#want] then want[#want + 1] = e.leader end
        end
        local got = span_names(t)
        return #got >= 3 and got[1] == leader and got[#got - 1] == second and got[#got] == third
          and table.concat(got, " ") == table.concat(want, " ")
      end
      assert.are.equal("m2", eval(b, "window.__qcMark = 'm2'"))
      wait_timeline(b, "three spans " .. leader .. " " .. second .. " " .. third, function(x)
        return x.mark == "m2" and shows_three(x)
      end)
      -- built from the agent's history, not from what this page saw
      assert.is_true(eval(b, "setTimeout(() => location.reload(), 0), true"))
      local t = wait_timeline(b, "the same spans after the reload", function(x)
        return (x.mark == nil or x.mark == cjson.null) and shows_three(x)
      end)
      -- the reasons: the leader's connection closed, then a hand-over
      local reasons = " " .. table.concat(t.reasons, " ") .. " "
      assert.is_truthy(reasons:find(" leader_down ", 1, true), reasons)
      assert.is_truthy(reasons:find(" transfer ", 1, true), reasons)
      -- layout: fits its box, names left of the bars, spans in order, terms marked
      assert.is_false(t.overflow)
      assert.is_true(t.width <= t.box and t.width >= 480, cjson.encode(t))
      assert.is_true(t.right <= t.width and t.left >= 100, cjson.encode(t))
      assert.are.equal(3, #t.names)
      for _, n in ipairs(t.names) do assert.is_true(n.right < t.left, cjson.encode(n)) end
      for i = 2, #t.spans do
        assert.is_true(t.spans[i].x >= t.spans[i - 1].x + t.spans[i - 1].w - 1)
      end
      assert.is_true(t.terms >= 3)
      -- what Chromium paints: leader spans in the accent colour, followers grey
      local points, kinds = {}, {}
      for _, sp in ipairs(t.spans) do
        if sp.w >= 4 then
          points[#points + 1], kinds[#kinds + 1] = { sp.x + sp.w / 2, sp.y + 1.5 }, "lead"
        end
      end
      assert.is_true(#points >= 2, "spans too narrow to sample: " .. cjson.encode(t.spans))
      local f = t.follow[1]
      points[#points + 1], kinds[#kinds + 1] = { f.x + f.w / 2, f.y + f.h / 2 }, "follow"
      local png = b.dir .. "/timeline.png"
      local clip = [[(() => { const r = document.querySelector('#timeline svg').getBoundingClientRect();
        return { x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height }; })()]]
      local out, code = A.sh("/usr/bin/python3 " .. CDP .. " " .. shq(b.ws) .. " --png " .. shq(png) ..
        " " .. shq(clip) .. " " .. shq(cjson.encode(points)))
      assert.are.equal(0, code, out)
      local shot = cjson.decode(out)
      assert.are.same({ t.width, math.floor(eval(b, clip).height + 0.5) }, { shot.width, shot.height })
      for i, rgb in ipairs(shot.points) do
        local want_rgb = kinds[i] == "lead" and { 0x0b, 0x6b, 0xcb } or { 0xdd, 0xe1, 0xe5 }
        assert.is_true(near(rgb, want_rgb), kinds[i] .. " at " .. cjson.encode(points[i]) ..
          " is " .. cjson.encode(rgb))
      end
      if os.getenv("QC_UI_SCREENSHOT") then
        os.execute("cp " .. shq(png) .. " " .. shq(os.getenv("QC_UI_SCREENSHOT")))
      end
    end)
end)

-- api_tls_cert: the same page over HTTPS, its requests on the page's scheme.
describe("the status page over HTTPS in headless Chromium", function()
  local c, b

  teardown(function()
    chromium_stop(b)
    A.stop(c)
  end)

  it("shows the node and its leader when served over HTTPS", function()
    c = A.cluster(1)
    local pem = require("tlscerts").make(c.dir)
    local conf = A.read(c.nodes[1].config):gsub("^return {", string.format(
      "return {api_tls_cert = %q, api_tls_key = %q, ", pem.server, pem.server_key))
    A.write(c.nodes[1].config, conf)
    A.start(c, 1)
    assert.is_truthy(A.wait_for(function()
      local _, code = A.sh(string.format("curl -sf -o /dev/null --cacert %s https://%s/v1/leader",
        pem.ca, c.nodes[1].api))
      return code == 0
    end, WAIT), A.read(c.nodes[1].log))
    -- the throwaway CA is in no trust store Chromium reads
    b = chromium_start("https://" .. c.nodes[1].api .. "/ui", "--ignore-certificate-errors")
    local s = wait_page(b, "the leader over HTTPS", function(st)
      return st.leader == "node1" and #st.rows == 1
    end)
    assert.are.equal("node1", s.self)
    assert.is_false(s.unreachable)
  end)
end)
