-- wrk script of scripts/bench/kv: puts of a fixed-size value to a key drawn
-- uniformly from N for every request, against QCluster (PUT /v1/kv/KEY,
-- the raw value as the body) or etcd (POST PREFIX/kv/put through its HTTP
-- gateway, base64 JSON). Each wrk thread draws from its own generator,
-- seeded from SEED and the thread's number, so a run is repeatable.
-- Counts answers by status in response() per thread; done() adds them up
-- and prints one line for scripts/bench/kv to read.
--
--   wrk ... -s kv_put.lua URL -- qcluster KEYS VALUE_SIZE SEED
--   wrk ... -s kv_put.lua URL -- etcd KEYS VALUE_SIZE SEED /v3
--
-- wrk runs it under LuaJIT (Lua 5.1); it also loads under Lua 5.4 for its
-- spec (tests/unit/bench_wrk_spec.lua).
-- luacheck: globals wrk setup init request response done id ok non2xx statuses

local threads = {}

-- Runs in wrk's setup state, once per thread before it starts.
function setup(thread)
  threads[#threads + 1] = thread
  thread:set("id", #threads)
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local sextets = { math.floor(n / 262144), math.floor(n / 4096) % 64, math.floor(n / 64) % 64, n % 64 }
    local used = c and 4 or (b and 3 or 2)
    for j = 1, 4 do
      out[#out + 1] = j <= used and B64:sub(sextets[j] + 1, sextets[j] + 1) or "="
    end
  end
  return table.concat(out)
end

local keys, make

local function usage(msg)
  error("kv_put.lua: " .. msg .. " (args: qcluster|etcd KEYS VALUE_SIZE SEED [GATEWAY_PREFIX])")
end

function init(args)
  local system, seed = args[1], tonumber(args[4])
  keys = tonumber(args[2])
  local size = tonumber(args[3])
  if not (keys and keys >= 1 and size and size >= 0 and seed) then usage("bad arguments") end
  math.randomseed(seed * 1000 + (id or 0))
  ok, non2xx, statuses = 0, 0, {}
  local value = string.rep("v", size)
  local host = wrk.headers.Host
  if system == "qcluster" then
    local head = "PUT /v1/kv/bench/k"
    local tail = " HTTP/1.1\r\nHost: " .. host .. "\r\nContent-Length: " .. size .. "\r\n\r\n" .. value
    make = function(k) return head .. k .. tail end
  elseif system == "etcd" then
    -- base64 of every key once: request() only concatenates
    local b64keys = {}
    for k = 1, keys do b64keys[k] = b64("bench/k" .. k) end
    local head = "POST " .. (args[5] or "/v3") .. "/kv/put HTTP/1.1\r\nHost: " .. host ..
      "\r\nContent-Type: application/json\r\nContent-Length: "
    local b64value = b64(value)
    make = function(k)
      local body = '{"key":"' .. b64keys[k] .. '","value":"' .. b64value .. '"}'
      return head .. #body .. "\r\n\r\n" .. body
    end
  else
    usage("unknown system " .. tostring(system))
  end
end

function request()
  return make(math.random(keys))
end

-- Defining response() makes wrk parse every answer: the price of counting
-- non-2xx answers (wrk's own count starts at 400).
function response(status)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    non2xx = non2xx + 1
    statuses[status] = (statuses[status] or 0) + 1
  end
end

-- The line scripts/bench/kv reads: key=value pairs, times in microseconds,
-- cpu_s the CPU seconds of the whole wrk process (all its threads).
function done(summary, latency)
  local sum_ok, sum_non2xx, by_status = 0, 0, {}
  for _, t in ipairs(threads) do
    sum_ok = sum_ok + t:get("ok")
    sum_non2xx = sum_non2xx + t:get("non2xx")
    for status, n in pairs(t:get("statuses")) do by_status[status] = (by_status[status] or 0) + n end
  end
  local codes = {}
  for status, n in pairs(by_status) do codes[#codes + 1] = status .. ":" .. n end
  table.sort(codes)
  local e = summary.errors
  io.write(string.format("kvbench ok=%d non2xx=%d connect=%d read=%d write=%d timeout=%d " ..
    "duration_us=%d p50_us=%d p99_us=%d max_us=%d cpu_s=%.3f statuses=%s\n", sum_ok, sum_non2xx,
    e.connect, e.read, e.write, e.timeout, summary.duration, latency:percentile(50),
    latency:percentile(99), latency.max, os.clock(), #codes > 0 and table.concat(codes, ",") or "-"))
end
