-- The status page in headless Chromium against a live three-node cluster:
-- one page instance, opened on a follower, follows a fail-over (the leader
-- killed with SIGKILL), escapes metadata, and says when its agent is gone.
-- Chromium runs in a session of its own and is ended by its process group.
local A = require("agents")
local cjson = require("cjson.safe")

local CDP = A.root .. "/tests/ui/cdp.py"
local WAIT = 30 -- seconds: the page polls every second; the machine may be slow

local function shq(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Starts Chromium on url; returns {pid, dir, ws} once the page's DevTools
-- socket is known, or raises with Chromium's log.
local function chromium_start(url)
  local b = { dir = (A.sh("mktemp -d /tmp/qc-chromium-XXXXXX"):gsub("%s+$", "")) }
  local p = io.popen(string.format(
    "setsid chromium --headless=new --no-sandbox --disable-gpu --no-first-run " ..
    "--no-default-browser-check --disable-extensions --disable-background-networking " ..
    "--disable-sync --remote-debugging-address=127.0.0.1 --remote-debugging-port=0 " ..
    "--user-data-dir=%s/profile %s >%s/chromium.log 2>&1 & echo $!", b.dir, shq(url), b.dir))
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
        interval_ms = 100, rise = 1, fall = 1 } } } })
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
