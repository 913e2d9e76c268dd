-- Health checks on real agents with real commands (README "Health checks"):
-- each kind passes and fails as it should, the rise/fall counting, runaway
-- commands killed with their process group at the timeout while the agent
-- goes on answering and leading, config errors from `qcluster check`, and
-- the local surfaces (API, CLI, Lua, metrics, on_health_change).
local A = require("agents")
local socket = require("socket")
local cjson = require("cjson.safe")

local function has(lines, pattern)
  for _, l in ipairs(lines) do
    if l:match(pattern) then return l end
  end
end

-- The checks of node i by name.
local function checks(c, i)
  local list, status = A.json(c.nodes[i].api, "/v1/checks")
  if status ~= 200 or type(list) ~= "table" then return nil end
  local by = {}
  for _, k in ipairs(list) do by[k.name] = k end
  return by
end

-- Waits until check name of node i has status; returns the check.
local function wait_status(c, i, name, status, timeout)
  return A.wait_for(function()
    local by = checks(c, i)
    return by and by[name] and by[name].status == status and by[name]
  end, timeout or 10)
end

local function metric(c, i, line)
  local _, body = A.http(c.nodes[i].api, "GET", "/metrics")
  return (body or ""):match("\n" .. line:gsub("%p", "%%%0") .. " (%S+)")
end

-- A port nothing listens on (bound, then closed).
local function closed_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return port
end

-- A hooks file recording on_health_change (and what extra adds) in
-- $QC_EVENTS; extra is Lua source of more fields of the returned table.
local function hooks(extra)
  return [[
local qcluster = require("qcluster")
local path = os.getenv("QC_EVENTS")
local function record(line)
  local f = io.open(path, "a")
  f:write(line, "\n")
  f:close()
end
return {
  on_health_change = function(ev)
    record(("health %s %s %s %s"):format(tostring(ev.healthy), ev.check, ev.status,
      (ev.output:gsub("\n", "|"))))
  end,
]] .. (extra or "") .. "\n}\n"
end

local function alive(pid) return A.alive(pid) end

describe("an exec check", function()
  local c

  -- The command's n-th run exits as the n-th letter of PATTERN says (P: 0,
  -- F: 1), then passes; it prints "run N", so the hook's output says which
  -- run changed the node's health.
  local PATTERN = "FFPFFPFFFPFPP"

  setup(function()
    c = A.cluster(1, { hooks = hooks(), extra = { checks = {
      -- 250 ms, not less: the timeout is the interval, and a shell
      -- started on a loaded machine can take longer than 50 ms
      { name = "step", exec = "sh step.sh", interval_ms = 250, rise = 2, fall = 3 },
    } } })
    A.write(c.dir .. "/step.sh", ([[
n=$(cat count 2>/dev/null || echo 0); n=$((n + 1)); echo $n > count
echo "run $n"
r=$(printf %%s %s | cut -c$n); [ "$r" != F ]
]]):format(PATTERN))
    A.start_all(c)
  end)

  teardown(function() A.stop(c) end)

  it("starts failing, passes at its first pass, then fails after fall failures and comes"
    .. " back after rise passes", function()
    assert.is_truthy(A.wait_for(function() return #A.events(c, 1) >= 3 end, 20),
      "expected three health changes, got: " .. table.concat(A.events(c, 1), "; "))
    A.sleep(0.3) -- no further change may come
    assert.are.same({
      "health true step passing run 3",  -- FF then the first P
      "health false step failing run 9|(exit status 1)", -- F F, P, then F F F: fall 3
      "health true step passing run 13", -- P alone, F, then P P: rise 2
    }, A.events(c, 1))
    local k = wait_status(c, 1, "step", "passing")
    assert.are.equal("exec", k.kind)
    assert.matches("^run %d+$", k.output)
    assert.are.equal(true, A.json(c.nodes[1].api, "/v1/status").healthy)
  end)
end)

describe("a check with retry_ms", function()
  local c

  -- Runs pass, then fail from the second run on, then pass from the fifth
  -- on; each run appends its start time (ms) to runs.
  setup(function()
    c = A.cluster(1, { hooks = hooks(), extra = { checks = {
      { name = "flip", exec = "sh flip.sh", interval_ms = 4000, retry_ms = 20, rise = 2, fall = 3 },
    } } })
    A.write(c.dir .. "/flip.sh", [[
n=$(($(cat runs 2>/dev/null | wc -l) + 1))
echo $(($(date +%s%N) / 1000000)) >> runs
echo "run $n"
case $n in 2|3|4) exit 1;; esac
]])
    A.start_all(c)
  end)

  teardown(function() A.stop(c) end)

  it("runs again retry_ms after a result that disagrees with the status, else at the interval",
    function()
    assert.is_truthy(A.wait_for(function() return #A.events(c, 1) >= 3 end, 30),
      "expected three health changes, got: " .. table.concat(A.events(c, 1), "; "))
    assert.are.same({
      "health true flip passing run 1",
      "health false flip failing run 4|(exit status 1)", -- runs 2, 3, 4 fail: fall 3
      "health true flip passing run 6", -- runs 5, 6 pass: rise 2
    }, A.events(c, 1))
    local at = {}
    for ms in (A.read(c.dir .. "/runs") or ""):gmatch("%d+") do at[#at + 1] = tonumber(ms) end
    -- which schedule each run followed: retry_ms (20) or interval_ms (4000)
    local gaps = {}
    for i = 2, 6 do gaps[#gaps + 1] = at[i] - at[i - 1] < 2000 and "retry" or "interval" end
    assert.are.same({ "interval", "retry", "retry", "interval", "retry" }, gaps)
  end)
end)

describe("every kind of check", function()
  local c, hang, api

  setup(function()
    -- accepts connections (the kernel's backlog) but never answers
    hang = assert(socket.bind("127.0.0.1", 0))
    local _, hang_port = hang:getsockname()
    local dead = closed_port()
    c = A.cluster(1, { hooks = hooks([[
  checks = {
    flag = function(done)
      local f = io.open("flag")
      if f then f:close() end
      done(f ~= nil, f and "flag here" or "no flag")
    end,
    silent = function(done) end,
    boom = function(done) error("boom") end,
  },
  on_start = function()
    local ok, err = pcall(qcluster.check_pass, "nope")
    record("check_pass nope " .. tostring(ok) .. " " .. tostring(err))
    ok, err = pcall(qcluster.check_fail, "exec_ok", "x")
    record("check_fail exec_ok " .. tostring(ok) .. " " .. tostring(err))
    record("check_pass beat " .. tostring(qcluster.check_pass("beat", "from lua")))
    qcluster.after(500, function()
      local out = {}
      for _, k in ipairs(qcluster.checks()) do
        out[#out + 1] = k.name .. "=" .. k.kind .. "/" .. type(k.status) .. "/" .. type(k.since)
      end
      record("checks " .. table.concat(out, " "))
    end)
  end,]]), extra = { api_token = "s3cret" } })
    api = c.nodes[1].api
    local fast = "interval_ms = 50, rise = 1, fall = 1"
    local list = table.concat({
      ('{ name = "exec_ok", exec = "echo fine", %s }'):format(fast),
      ('{ name = "exec_bad", exec = "echo broken >&2; exit 3", %s }'):format(fast),
      ('{ name = "http_ok", http = "http://%s/v1/status", %s }'):format(api, fast),
      ('{ name = "http_404", http = "http://%s/nope", %s }'):format(api, fast),
      ('{ name = "http_hang", http = "http://127.0.0.1:%d/", interval_ms = 300,'
        .. ' timeout_ms = 200, rise = 1, fall = 1 }'):format(hang_port),
      ('{ name = "tcp_open", tcp = "127.0.0.1:%d", %s }'):format(c.nodes[1].port, fast),
      ('{ name = "tcp_closed", tcp = "127.0.0.1:%d", %s }'):format(dead, fast),
      ('{ name = "tcp_name", tcp = "localhost:%d", %s }'):format(c.nodes[1].port, fast),
      '{ name = "beat", ttl_ms = 400, interval_ms = 50, rise = 1, fall = 1 }',
      ('{ name = "flag", lua = "flag", %s }'):format(fast),
      '{ name = "silent", lua = "silent", interval_ms = 200, timeout_ms = 100, rise = 1, fall = 1 }',
      ('{ name = "boom", lua = "boom", %s }'):format(fast),
      ('{ name = "inline", lua = function(done) done(true, "inline " .. qcluster.term()) end, %s }')
        :format(fast),
    }, ",\n")
    local text = A.read(c.nodes[1].config):gsub("^return {", "return { checks = {\n" .. list
      .. "\n},\n")
    A.write(c.nodes[1].config, text)
    A.start_all(c)
    A.must_leader(c, 10)
  end)

  teardown(function()
    A.stop(c)
    if hang then hang:close() end
  end)

  it("exec passes on exit 0 and fails otherwise, with its output", function()
    assert.are.equal("fine", wait_status(c, 1, "exec_ok", "passing").output)
    local k = wait_status(c, 1, "exec_bad", "failing")
    assert.is_truthy(A.wait_for(function()
      return checks(c, 1).exec_bad.output == "broken\n(exit status 3)"
    end, 5), checks(c, 1).exec_bad.output)
    assert.are.equal("exec", k.kind)
  end)

  it("http passes on 2xx, fails on another status and at its timeout", function()
    assert.matches("^HTTP/1%.1 200", wait_status(c, 1, "http_ok", "passing").output)
    assert.is_truthy(A.wait_for(function()
      local k = checks(c, 1).http_404
      return k.status == "failing" and k.output:match("^HTTP/1%.1 404")
    end, 5))
    assert.is_truthy(A.wait_for(function()
      return checks(c, 1).http_hang.output == "timed out after 200 ms"
    end, 5))
    assert.are.equal("failing", checks(c, 1).http_hang.status)
    assert.is_truthy(A.wait_for(function()
      return tonumber(metric(c, 1, 'qcluster_check_timeouts_total{check="http_hang"}') or 0) >= 1
    end, 5))
  end)

  it("tcp passes when a connection opens and fails when it is refused", function()
    wait_status(c, 1, "tcp_open", "passing")
    assert.are.equal("connected to localhost:" .. c.nodes[1].port,
      wait_status(c, 1, "tcp_name", "passing").output)
    local k = wait_status(c, 1, "tcp_closed", "failing")
    assert.is_truthy(A.wait_for(function()
      return checks(c, 1).tcp_closed.output:match("Connection refused")
    end, 5), k.output)
  end)

  it("lua checks pass and fail through done, fail when they raise or never answer", function()
    wait_status(c, 1, "flag", "failing")
    A.write(c.dir .. "/flag", "")
    assert.are.equal("flag here", wait_status(c, 1, "flag", "passing").output)
    os.remove(c.dir .. "/flag")
    assert.are.equal("no flag", wait_status(c, 1, "flag", "failing").output)
    assert.is_truthy(A.wait_for(function()
      return checks(c, 1).silent.output == "timed out after 100 ms"
    end, 5))
    assert.is_truthy(A.wait_for(function()
      return checks(c, 1).boom.output:match("boom")
    end, 5))
    assert.are.equal("failing", checks(c, 1).boom.status)
    assert.matches("^inline %d+$", wait_status(c, 1, "inline", "passing").output)
  end)

  it("a ttl check passes on a report until ttl_ms passes, and fails on a fail report",
    function()
    -- a fresh table each time: A.http adds the body's length to it
    local function auth() return { authorization = "Bearer s3cret" } end
    -- without the token: refused like every other write
    assert.are.equal(401, (A.http(api, "PUT", "/v1/checks/beat/pass", "up")))
    assert.are.equal(200, (A.http(api, "PUT", "/v1/checks/beat/pass", "all good", auth())))
    local k = wait_status(c, 1, "beat", "passing")
    assert.is_truthy(k.output == "all good" or k.output == "from lua", k.output)
    assert.are.equal("ttl", k.kind)
    -- no report for ttl_ms: it expires
    assert.are.equal("no report for 400 ms (ttl_ms)", wait_status(c, 1, "beat", "failing").output)
    assert.are.equal(200, (A.http(api, "PUT", "/v1/checks/beat/pass", nil, auth())))
    wait_status(c, 1, "beat", "passing")
    assert.are.equal(200, (A.http(api, "PUT", "/v1/checks/beat/fail", "disk full", auth())))
    assert.are.equal("disk full", wait_status(c, 1, "beat", "failing").output)
    local status, body = A.http(api, "PUT", "/v1/checks/nope/pass", nil, auth())
    assert.are.equal(404, status)
    assert.are.equal("no such check", cjson.decode(body).error)
    status, body = A.http(api, "PUT", "/v1/checks/exec_ok/pass", nil, auth())
    assert.are.equal(409, status)
    assert.matches("not a ttl_ms check", cjson.decode(body).error)
    assert.are.equal(404, (A.http(api, "PUT", "/v1/checks/beat/maybe", nil, auth())))
  end)

  it("the CLI lists checks (exit 1 while one fails) and reports ttl checks", function()
    local env = "QCLUSTER_API_TOKEN=s3cret "
    local out, code = A.sh(env .. A.root .. "/bin/qcluster checks pass beat 'via cli' --api " .. api)
    assert.are.equal(0, code, out)
    assert.are.equal("beat reported passing\n", out)
    assert.are.equal("via cli", wait_status(c, 1, "beat", "passing").output)
    out, code = A.cli("checks", api)
    assert.are.equal(1, code, out) -- exec_bad and others fail
    assert.matches("NAME%s+KIND%s+STATUS%s+SINCE%s+OUTPUT", out)
    assert.matches("\nexec_ok%s+exec%s+passing%s+%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d%s+fine\n", out)
    assert.matches("\nexec_bad%s+exec%s+failing%s+%S+ %S+%s+broken\n", out)
    out, code = A.cli("checks --json", api)
    assert.are.equal(1, code)
    local list = cjson.decode(out)
    assert.are.equal(13, #list)
    for _, k in ipairs(list) do
      assert.is_string(k.name)
      assert.is_truthy(k.status == "passing" or k.status == "failing")
      assert.is_number(k.since)
      assert.is_string(k.output)
    end
    out, code = A.sh(env .. A.root .. "/bin/qcluster checks fail nope --api " .. api)
    assert.are.equal(3, code, out)
    assert.matches("no such check", out)
    out, code = A.sh(env .. A.root .. "/bin/qcluster checks fail exec_ok --api " .. api)
    assert.are.equal(1, code, out)
    out, code = A.cli("checks pass", api)
    assert.are.equal(2, code, out)
  end)

  it("status says healthy false while a check fails; metrics show every check", function()
    assert.are.equal(false, A.json(api, "/v1/status").healthy)
    assert.are.equal("0", metric(c, 1, "qcluster_healthy"))
    assert.are.equal("1", metric(c, 1, 'qcluster_check_passing{check="exec_ok"}'))
    assert.are.equal("0", metric(c, 1, 'qcluster_check_passing{check="exec_bad"}'))
    assert.is_truthy(tonumber(metric(c, 1, 'qcluster_check_duration_seconds{check="exec_ok"}')))
  end)

  it("gives Lua qcluster.checks(), check_pass and check_fail", function()
    local ev = A.events(c, 1)
    assert.is_truthy(has(ev, "^check_pass nope false .*check_pass: no check named 'nope'$"))
    assert.is_truthy(has(ev, "^check_fail exec_ok false .*check_fail: 'exec_ok' is not a"
      .. " ttl_ms check$"))
    assert.is_truthy(has(ev, "^check_pass beat true$"))
    local line = A.wait_for(function() return has(A.events(c, 1), "^checks ") end, 5)
    assert.is_truthy(line)
    assert.matches("exec_ok=exec/string/number", line)
    assert.matches("beat=ttl/string/number", line)
    assert.matches("inline=lua/string/number", line)
  end)
end)

describe("a runaway check command", function()
  local c, term

  -- A lone node elects itself a random 300 to 600 ms after it starts, while
  -- these checks are killed 300 and 500 ms after it starts: the specs below
  -- look at leadership only once it has been won, and then in that term.
  local function leads_in_term()
    local st = A.json(c.nodes[1].api, "/v1/status")
    assert.are.equal("leader", st.role)
    assert.are.equal(term, st.term)
  end

  setup(function()
    c = A.cluster(1, { hooks = hooks(), extra = { checks = {
      { name = "hang", exec = "sleep 100 & echo $! > hang.pid; wait", interval_ms = 2000,
        timeout_ms = 300, fall = 1 },
      { name = "flood", exec = "yes", interval_ms = 2000, timeout_ms = 500, fall = 1 },
      -- a bounded fork loop: 40 sleepers in the check's process group
      { name = "forks", exec = "i=0; while [ $i -lt 40 ]; do sleep 100 & echo $! >> forks.pids;"
        .. " i=$((i+1)); done; wait", interval_ms = 60000, timeout_ms = 500, fall = 1 },
    } } })
    A.start_all(c)
    A.must_leader(c)
    term = A.json(c.nodes[1].api, "/v1/status").term
  end)

  teardown(function()
    -- whatever a failed assertion left behind
    for _, f in ipairs({ "hang.pid", "forks.pids" }) do
      for pid in (A.read(c.dir .. "/" .. f) or ""):gmatch("%d+") do
        os.execute("kill -KILL " .. pid .. " 2>/dev/null")
      end
    end
    A.stop(c)
  end)

  it("is killed at its timeout with its whole process group, and counted", function()
    local k = A.wait_for(function()
      local by = checks(c, 1)
      return by and by.hang.output:match("killed at its timeout") and by.hang
    end, 10)
    assert.is_truthy(k)
    assert.are.equal("(killed at its timeout of 300 ms)", k.output)
    local pid = assert(tonumber(A.read(c.dir .. "/hang.pid")))
    assert.is_truthy(A.wait_for(function() return not alive(pid) end, 5),
      "the check's grandchild " .. pid .. " outlived the timeout")
    assert.is_truthy(tonumber(metric(c, 1, 'qcluster_check_timeouts_total{check="hang"}')) >= 1)
  end)

  it("that floods its output is killed and capped while the agent answers", function()
    local function kills() return tonumber(metric(c, 1, 'qcluster_check_timeouts_total{check="flood"}')) end
    local before = assert(kills())
    local answered = 0
    -- a run killed while the node leads (one runs every 2 s)
    local k = A.wait_for(function()
      local st = A.json(c.nodes[1].api, "/v1/status")
      if st then answered = answered + 1 end
      local by = checks(c, 1)
      return by and kills() > before and by.flood.output:match("killed at its timeout") and by.flood
    end, 10)
    assert.is_truthy(k)
    assert.is_true(answered >= 1)
    assert.is_true(#k.output <= 4096, "output of " .. #k.output .. " bytes")
    assert.matches("^y\ny\ny\n", k.output)
    assert.matches("\n%(killed at its timeout of 500 ms%)$", k.output)
    leads_in_term()
  end)

  it("that forks within its process group loses every child at the timeout", function()
    assert.is_truthy(A.wait_for(function()
      local by = checks(c, 1)
      return by and by.forks.output:match("killed at its timeout")
    end, 10))
    local pids = {}
    for pid in (A.read(c.dir .. "/forks.pids") or ""):gmatch("%d+") do pids[#pids + 1] = pid end
    assert.is_true(#pids >= 1)
    assert.is_truthy(A.wait_for(function()
      for _, pid in ipairs(pids) do
        if alive(pid) then return false end
      end
      return true
    end, 5), "a forked child outlived the check's timeout")
    -- the agent still leads and answers
    leads_in_term()
  end)
end)

describe("a tcp check on a loop that runs late", function()
  local c, listener, filler

  -- The agent is stopped while its check's connect is in flight, and
  -- resumed past the check's deadline once the kernel has completed the
  -- connect: the answer and the deadline are then ready together.
  -- listen(0) with one connection queued drops the check's SYN; its
  -- retransmission (after about 1 s) gets in once that one is accepted.
  setup(function()
    listener = assert(socket.tcp())
    assert(listener:bind("127.0.0.1", 0))
    assert(listener:listen(0))
    local _, port = listener:getsockname()
    filler = assert(socket.connect("127.0.0.1", port))
    c = A.cluster(1, { hooks = hooks(), extra = { checks = {
      { name = "late", tcp = "127.0.0.1:" .. port, interval_ms = 60000, timeout_ms = 3000,
        rise = 1, fall = 1 },
    } } })
    c.port = port
    A.start_all(c)
  end)

  teardown(function()
    A.stop(c)
    if filler then filler:close() end
    if listener then listener:close() end
  end)

  local function connect_state()
    local out = A.sh(("ss -Htn state all dst 127.0.0.1:%d"):format(c.port))
    local states = {}
    for st in out:gmatch("(%S+)%s+%d+%s+%d+") do states[#states + 1] = st end
    return table.concat(states, " ")
  end

  it("takes the connection that opened before its deadline", function()
    -- the first run starts with the agent: its SYN waits beside the filler
    assert.is_truthy(A.wait_for(function() return connect_state():match("SYN%-SENT") end, 10),
      connect_state())
    local t0 = A.now()
    A.signal(c, 1, "STOP")
    local accepted = assert(listener:accept())
    assert.is_truthy(A.wait_for(function()
      return not connect_state():match("SYN%-SENT")
    end, 5), "the check's connect did not complete: " .. connect_state())
    A.sleep(math.max(0, t0 + 3.5 - A.now())) -- past the deadline
    A.signal(c, 1, "CONT")
    local k = A.wait_for(function()
      local by = checks(c, 1)
      return by and by.late.output ~= "not run yet" and by.late
    end, 10)
    accepted:close()
    assert.is_truthy(k)
    assert.are.equal("connected to 127.0.0.1:" .. c.port, k.output)
    assert.are.equal("passing", k.status)
  end)
end)

describe("an exec check on a loop that runs late", function()
  local c

  -- The agent is stopped while its check's command runs, and resumed past
  -- the check's deadline once the command has exited: the child's end and
  -- the deadline are then ready together, and the end came first.
  setup(function()
    c = A.cluster(1, { hooks = hooks(), extra = { checks = {
      { name = "late", exec = "echo $$ > late.pid; while [ ! -e late.go ]; do sleep 0.01; done; echo done",
        interval_ms = 60000, timeout_ms = 2000, rise = 1, fall = 1 },
    } } })
    A.start_all(c)
  end)

  teardown(function() A.stop(c) end)

  it("takes the exit status of a command that ended before its deadline", function()
    -- the first run starts with the agent
    local pid = A.wait_for(function() return tonumber(A.read(c.dir .. "/late.pid") or "") end, 10)
    assert.is_number(pid)
    local t0 = A.now()
    A.signal(c, 1, "STOP")
    A.write(c.dir .. "/late.go", "")
    assert.is_truthy(A.wait_for(function() return not A.alive(pid) end, 5), "the command ended")
    A.sleep(math.max(0, t0 + 2.5 - A.now())) -- past the deadline
    A.signal(c, 1, "CONT")
    local k = A.wait_for(function()
      local by = checks(c, 1)
      return by and by.late.output ~= "not run yet" and by.late
    end, 10)
    assert.is_truthy(k)
    assert.are.equal("done", k.output)
    assert.are.equal("passing", k.status)
  end)
end)

describe("qcluster check", function()
  local dir

  setup(function() dir = A.sh("mktemp -d /tmp/qc-spec-XXXXXX"):gsub("%s+$", "") end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  local BASE = 'identifier = "a", listen_port = 7001, '
  local cases = {
    { "{ name = 'a' }", "checks[1]: expected exactly one kind (exec, http, tcp, ttl_ms or lua),"
      .. " got none" },
    { "{ name = 'a', exec = 'true', http = 'http://h:1/' }", "checks[1].http: expected exactly"
      .. " one kind (exec, http, tcp, ttl_ms or lua), got both exec and http" },
    { "{ name = 'a', http = 'ftp://h:1/' }",
      'checks[1].http: expected a URL "http://host:port/path", got "ftp://h:1/"' },
    { "{ name = 'a', tcp = 'h:99999' }", 'checks[1].tcp: expected "host:port", got "h:99999"' },
    { "{ name = 'a', exec = 'x' }, { name = 'a', tcp = 'h:1' }",
      'checks[2].name: expected a unique name, got "a" (also checks[1])' },
    { "{ name = 'a', exec = 'x', rise = 0 }", "checks[1].rise: expected an integer 1..1000000,"
      .. " got 0" },
    { "{ name = 'a', exec = 'x', fall = 0 }", "checks[1].fall: expected an integer 1..1000000,"
      .. " got 0" },
    { "{ name = 'a', exec = 'x', interval_ms = 5 }",
      "checks[1].interval_ms: expected an integer 10..86400000, got 5" },
    { "{ name = 'a', exec = 'x', interval_ms = 100, retry_ms = 200 }",
      "checks[1].retry_ms: expected an integer 1..100 (at most interval_ms), got 200" },
    { "{ name = 'a', exec = 'x', retry_ms = 0 }",
      "checks[1].retry_ms: expected an integer 1..1000 (at most interval_ms), got 0" },
    { "{ name = 'a', exec = 'x', timout_ms = 5 }",
      'checks[1].timout_ms: unknown key (did you mean "timeout_ms"?)' },
  }
  for _, case in ipairs(cases) do
    it("refuses " .. case[1], function()
      local path = dir .. "/conf.lua"
      A.write(path, "return {" .. BASE .. "checks = {" .. case[1] .. "}}")
      local out, code = A.cli("check " .. path)
      assert.are.equal(2, code, out)
      assert.are.equal(path .. ": " .. case[2] .. "\n", out)
    end)
  end

  it("refuses a lua check in a JSON config without a hooks file function", function()
    local path = dir .. "/conf.json"
    A.write(path, '{"identifier": "a", "listen_port": 7001, "checks": [{"name": "x",'
      .. ' "lua": "probe"}]}')
    local out, code = A.cli("check " .. path)
    assert.are.equal(2, code, out)
    assert.are.equal(path .. ": checks[1].lua: expected a function named \"probe\" in the hooks"
      .. " file's checks table, got none\n", out)
    A.write(dir .. "/hooks.lua", "return { checks = { probe = function(done) done(true) end } }")
    A.write(path, '{"identifier": "a", "listen_port": 7001, "hooks": "hooks.lua",'
      .. ' "checks": [{"name": "x", "lua": "probe"}, {"name": "y", "http": "http://h/"}]}')
    out, code = A.cli("check " .. path)
    assert.are.equal(0, code, out)
  end)
end)
