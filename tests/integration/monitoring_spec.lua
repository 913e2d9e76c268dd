-- examples/monitoring against the real Prometheus (Debian's prometheus, with
-- promtool): the rules and the scrape config check, every alert passes its
-- unit tests, the dashboard asks only for what live agents export, and a
-- Prometheus this spec starts (its own dir and port, ended by its PID)
-- scrapes three agents and fires QClusterLeaderChanged when the leader dies.
local A = require("agents")
local cjson = require("cjson.safe")
local lyaml = require("lyaml")

local EX = A.root .. "/examples/monitoring"
local PROMTOOL = "/usr/bin/promtool"
local PROMETHEUS = "/usr/bin/prometheus"

-- The text of a file, or an error naming it (busted's assert returns more
-- than its first argument, so it cannot wrap a call's argument).
local function must_read(path)
  local s = A.read(path)
  if not s then error("cannot read " .. path, 2) end
  return s
end

local function load_yaml(path) return lyaml.load(must_read(path)) end

local function alert_rules()
  local t = {}
  for _, g in ipairs(load_yaml(EX .. "/qcluster.rules.yml").groups) do
    for _, r in ipairs(g.rules) do
      if r.alert then t[#t + 1] = r end
    end
  end
  return t
end

local function squash(s) return (s:gsub("%s+", " "):gsub("%( ", "("):gsub(" %)", ")")) end

local function dashboard_exprs()
  local d = cjson.decode(must_read(EX .. "/qcluster.dashboard.json"))
  if type(d) ~= "table" or type(d.panels) ~= "table" then error("the dashboard is not a Grafana dashboard") end
  local t = {}
  for _, p in ipairs(d.panels) do
    for _, target in ipairs(p.targets or {}) do t[#t + 1] = { title = p.title, expr = target.expr } end
  end
  return t, d
end

-- The metric names an expression reads (PromQL identifiers that are not
-- functions, keywords or label names).
local function metric_names(expr)
  local t = {}
  local s = expr:gsub("{[^}]*}", ""):gsub("%b[]", ""):gsub("by %b()", ""):gsub('"[^"]*"', "")
    :gsub("%f[%w_:%.]%d[%w%.]*", "") -- numbers and durations: 0.99, 10m
  for name, rest in s:gmatch("([%a_:][%w_:]*)%s*(%(?)") do
    local keyword = name == "by" or name == "without" or name == "or" or name == "unless"
      or name == "and" or name == "offset" or name == "on" or name == "ignoring"
    if rest == "" and not keyword then t[#t + 1] = name end
  end
  return t
end

local function urlencode(s)
  return (s:gsub("[^%w%-_%.~]", function(ch) return string.format("%%%02X", ch:byte()) end))
end

describe("examples/monitoring", function()
  it("promtool accepts the rules and the scrape config", function()
    local out, code = A.sh(PROMTOOL .. " check rules " .. EX .. "/qcluster.rules.yml")
    assert.are.equal(0, code, out)
    assert.matches("SUCCESS: " .. #alert_rules() .. " rules found", out)
    out, code = A.sh("cd " .. EX .. " && " .. PROMTOOL .. " check config prometheus.yml")
    assert.are.equal(0, code, out)
  end)

  it("every alert has unit tests that fire it and keep it quiet, and they pass", function()
    local cases = {}
    for _, t in ipairs(load_yaml(EX .. "/qcluster.rules.test.yml").tests) do
      for _, a in ipairs(t.alert_rule_test) do
        cases[a.alertname] = cases[a.alertname] or { fires = 0, quiet = 0 }
        if #(a.exp_alerts or {}) > 0 then
          cases[a.alertname].fires = cases[a.alertname].fires + 1
        else
          cases[a.alertname].quiet = cases[a.alertname].quiet + 1
        end
      end
    end
    for _, r in ipairs(alert_rules()) do
      assert.is_truthy(cases[r.alert], r.alert .. " has no test")
      assert.is_true(cases[r.alert].fires > 0, r.alert .. " is never tested firing")
      assert.is_true(cases[r.alert].quiet > 0, r.alert .. " is never tested quiet")
    end
    local out, code = A.sh("cd " .. EX .. " && " .. PROMTOOL .. " test rules qcluster.rules.test.yml")
    assert.are.equal(0, code, out)
    assert.matches("SUCCESS", out)
  end)

  it("the dashboard draws every alert's expression", function()
    local exprs = dashboard_exprs()
    assert.is_true(#exprs > 0)
    for _, r in ipairs(alert_rules()) do
      local found
      for _, e in ipairs(exprs) do
        if squash(r.expr):find(squash(e.expr), 1, true) then found = e.title end
      end
      assert.is_truthy(found, r.alert .. ": no dashboard panel draws part of " .. r.expr)
    end
  end)

  describe("with three live agents", function()
    local c, prom, prom_dir, prom_api, killed

    local function prom_json(path)
      local status, body = A.http(prom_api, "GET", path)
      if status ~= 200 then return nil end
      return cjson.decode(body)
    end

    local function query(expr)
      local v = prom_json("/api/v1/query?query=" .. urlencode(expr))
      return v and v.status == "success" and v.data.result, v
    end

    local function alerts(name, state)
      local v = prom_json("/api/v1/alerts")
      local t = {}
      for _, a in ipairs(v and v.data.alerts or {}) do
        if a.labels.alertname == name and a.state == state then t[#t + 1] = a end
      end
      return t
    end

    setup(function()
      -- A longer election timeout than the default keeps a loaded machine
      -- from electing again before the kill.
      c = A.cluster(3, { extra = { election_timeout_ms = 1000, heartbeat_ms = 100 } })
      A.start_all(c)
      A.must_leader(c, 15)
      -- The example's scrape config, pointed at these agents, scraping and
      -- evaluating the example's rules every 250 ms.
      prom_dir = c.dir .. "/prometheus"
      os.execute("mkdir -p " .. prom_dir)
      local conf = must_read(EX .. "/prometheus.yml")
      conf = conf:gsub("scrape_interval: 5s", "scrape_interval: 250ms")
        :gsub("evaluation_interval: 5s", "evaluation_interval: 250ms")
        :gsub("qcluster%.rules%.yml", EX .. "/qcluster.rules.yml")
      for i = 1, 3 do conf = conf:gsub("127%.0%.0%.1:800" .. i, c.nodes[i].api) end
      A.write(prom_dir .. "/prometheus.yml", conf)
      prom_api = "127.0.0.1:" .. (c.base + 50)
      local p = io.popen(string.format("exec %s --config.file=%s/prometheus.yml --storage.tsdb.path=%s/data "
        .. "--web.listen-address=%s >%s/prometheus.log 2>&1 & echo $!",
        PROMETHEUS, prom_dir, prom_dir, prom_api, prom_dir))
      prom = tonumber(p:read("l"))
      p:close()
      assert.is_truthy(A.wait_for(function() return A.http(prom_api, "GET", "/-/ready") == 200 end, 20),
        "Prometheus did not come up: " .. (A.read(prom_dir .. "/prometheus.log") or ""):sub(-2000))
    end)

    teardown(function()
      if prom then
        os.execute("kill -TERM " .. prom .. " 2>/dev/null")
        if not A.wait_for(function() return not A.alive(prom) end, 10) then
          os.execute("kill -KILL " .. prom .. " 2>/dev/null")
        end
      end
      A.stop(c)
    end)

    it("the dashboard reads only metrics the agents export, and each query runs", function()
      local _, body = A.http(c.nodes[1].api, "GET", "/metrics")
      local exported = { up = true, ALERTS = true }
      for name, kind in body:gmatch("# TYPE ([%w_:]+) (%a+)") do
        exported[name] = true
        if kind == "histogram" then
          for _, suffix in ipairs({ "_bucket", "_sum", "_count" }) do exported[name .. suffix] = true end
        end
      end
      for line in body:gmatch("[^\n]+") do
        local name = line:match("^([%w_:]+)[{ ]")
        if name then exported[name] = true end
      end
      local exprs = dashboard_exprs()
      for _, r in ipairs(alert_rules()) do exprs[#exprs + 1] = { title = r.alert, expr = r.expr } end
      for _, e in ipairs(exprs) do
        for _, name in ipairs(metric_names(e.expr)) do
          assert.is_truthy(exported[name], e.title .. ": the agent exports no " .. name)
        end
        local ok, v = query(e.expr)
        assert.is_truthy(ok, e.title .. ": " .. e.expr .. " -> " .. cjson.encode(v or {}))
      end
    end)

    it("fires QClusterLeaderChanged when the leader is killed", function()
      -- Every rule evaluates without error on the scraped agents.
      assert.is_truthy(A.wait_for(function()
        local v = prom_json("/api/v1/rules")
        local n = 0
        for _, g in ipairs(v and v.data.groups or {}) do
          for _, r in ipairs(g.rules) do
            if r.health ~= "ok" then return false end
            n = n + 1
          end
        end
        return n == #alert_rules()
      end, 15), "the rules did not all evaluate: " .. cjson.encode(prom_json("/api/v1/rules") or {}))
      -- Quiet while the leader stays: once each agent has two samples.
      assert.is_truthy(A.wait_for(function()
        local r = query('increase(qcluster_leader_changes_total{job="qcluster"}[5m])')
        return r and #r == 3
      end, 15), "Prometheus did not scrape the three agents")
      A.sleep(1)
      assert.are.same({}, alerts("QClusterLeaderChanged", "firing"))
      assert.are.same({}, alerts("QClusterNoLeader", "firing"))

      local leader = A.must_leader(c)
      killed = A.index_of(c, leader)
      assert.is_true(A.signal(c, killed, "KILL"))
      local new = A.must_leader(c, 15)
      assert.are_not.equal(leader, new)

      local fired = A.wait_for(function()
        local t = alerts("QClusterLeaderChanged", "firing")
        return #t > 0 and t
      end, 15)
      assert.is_truthy(fired, "QClusterLeaderChanged did not fire: "
        .. cjson.encode(prom_json("/api/v1/alerts") or {}))
      assert.are.equal(1, #fired)
      assert.are.equal("qcluster", fired[1].labels.job)
      assert.are.equal("info", fired[1].labels.severity)

      -- The killed agent's target and the survivors' links to it are pending
      -- (their `for` is a minute): the labels match what agents export.
      local down = A.wait_for(function()
        local t = alerts("QClusterAgentDown", "pending")
        return #t > 0 and t
      end, 10)
      assert.is_truthy(down, "QClusterAgentDown is not pending")
      assert.are.equal(1, #down)
      assert.are.equal(c.nodes[killed].api, down[1].labels.instance)
      local peer = A.wait_for(function()
        local t = alerts("QClusterPeerDown", "pending")
        return #t == 2 and t
      end, 10)
      assert.is_truthy(peer, "QClusterPeerDown is not pending on both survivors")
      for _, a in ipairs(peer) do assert.are.equal(leader, a.labels.peer) end
    end)
  end)
end)
