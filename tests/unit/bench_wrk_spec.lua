-- The wrk script of scripts/bench/kv (scripts/bench/wrk/kv_put.lua), loaded
-- as wrk loads it: one environment per thread plus one for setup() and
-- done(), with a `wrk` table holding the Host header. Checks the requests it
-- builds for both systems, its key draws, and the counts done() adds up.
local cjson = require("cjson.safe")
local mime = require("mime")

local SCRIPT = "scripts/bench/wrk/kv_put.lua"

-- A fresh Lua environment with the script loaded, as one wrk state.
local function state()
  local env = setmetatable({ wrk = { headers = { Host = "127.0.0.1:8001" } } }, { __index = _G })
  assert(loadfile(SCRIPT, "t", env))()
  return env
end

-- A wrk thread: setup() in `main` sets its globals in its own state.
local function thread(main, args)
  local env = state()
  local t = {
    set = function(_, name, v) env[name] = v end,
    get = function(_, name) return env[name] end,
  }
  main.setup(t)
  env.init(args)
  return env, t
end

-- Method, path, headers (lower-case names) and body of one request.
local function parse(req)
  local head, body = req:match("^(.-)\r\n\r\n(.*)$")
  local method, path = head:match("^(%u+) (%S+) HTTP/1%.1\r\n")
  local headers = {}
  for name, value in head:gmatch("\r\n([^:\r\n]+): ([^\r\n]*)") do headers[name:lower()] = value end
  return method, path, headers, body
end

describe("scripts/bench/wrk/kv_put.lua", function()
  it("puts the value to /v1/kv/bench/kN of QCluster with its length", function()
    local env = thread(state(), { [0] = "http://127.0.0.1:8001", "qcluster", "1000", "256", "1" })
    for _ = 1, 50 do
      local method, path, headers, body = parse(env.request())
      assert.equals("PUT", method)
      local k = tonumber(path:match("^/v1/kv/bench/k(%d+)$"))
      assert.is_truthy(k and k >= 1 and k <= 1000, path)
      assert.equals("127.0.0.1:8001", headers.host)
      assert.equals(string.rep("v", 256), body)
      assert.equals("256", headers["content-length"])
    end
  end)

  it("posts base64 JSON to etcd's gateway prefix with its length", function()
    local env = thread(state(), { "etcd", "100", "300", "1", "/v3beta" })
    for _ = 1, 50 do
      local method, path, headers, body = parse(env.request())
      assert.equals("POST", method)
      assert.equals("/v3beta/kv/put", path)
      assert.equals("application/json", headers["content-type"])
      assert.equals(tostring(#body), headers["content-length"])
      local t = assert(cjson.decode(body))
      local k = tonumber(mime.unb64(t.key):match("^bench/k(%d+)$"))
      assert.is_truthy(k and k >= 1 and k <= 100, t.key)
      assert.equals(string.rep("v", 300), mime.unb64(t.value))
    end
  end)

  it("draws every key of N and no other, repeatably per thread", function()
    local main = state()
    local function draws(env)
      local seen = {}
      for i = 1, 400 do seen[i] = tonumber(select(2, parse(env.request())):match("k(%d+)$")) end
      return seen
    end
    local args = { "qcluster", "10", "8", "7" }
    local first = draws(thread(main, args))
    local second = draws(thread(main, args))
    local hit = {}
    for _, k in ipairs(first) do hit[k] = true end
    for k = 1, 10 do assert.is_true(hit[k], "key " .. k) end
    for k in pairs(hit) do assert.is_truthy(k >= 1 and k <= 10) end
    assert.are_not.same(first, second) -- threads 1 and 2 draw differently
    local again = state()
    assert.same(first, draws(thread(again, args))) -- thread 1 of another run
  end)

  it("adds up 2xx and non-2xx answers of every thread in done()", function()
    local main = state()
    local a = thread(main, { "qcluster", "10", "8", "1" })
    local b = thread(main, { "qcluster", "10", "8", "1" })
    a.response(200, {}, "")
    a.response(503, {}, "")
    a.response(307, {}, "")
    b.response(200, {}, "")
    b.response(204, {}, "")
    b.response(503, {}, "")
    local out = {}
    main.io = { write = function(s) out[#out + 1] = s end }
    local latency = setmetatable({ max = 900 }, { __index = { percentile = function(_, p) return p * 10 end } })
    main.done({ duration = 2000000, errors = { connect = 1, read = 2, write = 3, timeout = 4 } }, latency)
    local line = table.concat(out)
    assert.matches("^kvbench ok=3 non2xx=3 connect=1 read=2 write=3 timeout=4 duration_us=2000000 " ..
      "p50_us=500 p99_us=990 max_us=900 cpu_s=%d+%.%d+ statuses=307:1,503:2\n$", line)
  end)

  it("refuses an unknown system or missing arguments", function()
    assert.has_error(function() thread(state(), { "redis", "10", "8", "1" }) end)
    assert.has_error(function() thread(state(), { "qcluster", "0", "8", "1" }) end)
    assert.has_error(function() thread(state(), { "etcd" }) end)
  end)
end)
