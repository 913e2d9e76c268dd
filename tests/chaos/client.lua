-- One chaos client process: until END_TIME, reads and compare-and-sets on
-- the keys of the current epoch (KEYS keys, new names every EPOCH seconds,
-- so that each key's history stays small enough to check exactly), each on
-- a random node, recording every invocation and completion in HISTORY.
--
-- usage: lua5.4 tests/chaos/client.lua ID HISTORY START END EPOCH KEYS TIMEOUT NODES...
-- NODES: name=host:port
package.path = "./tests/chaos/?.lua;" .. package.path
local socket = require("socket")
local kvops = require("kvops")

local id, history = tonumber(arg[1]), arg[2]
local start, stop = tonumber(arg[3]), tonumber(arg[4])
local epoch, nkeys, timeout = tonumber(arg[5]), tonumber(arg[6]), tonumber(arg[7])
local nodes = {}
for i = 8, #arg do
  local name, host, port = arg[i]:match("^(%w+)=([%d%.]+):(%d+)$")
  nodes[#nodes + 1] = { name = name, host = host, port = tonumber(port) }
end
assert(id and history and stop and epoch and nkeys and timeout and #nodes > 0, "bad arguments")

local seed = tonumber(os.getenv("CHAOS_SEED") or "") or math.floor(socket.gettime() * 1000) % 100000
math.randomseed(id * 7919 + seed)
local out = assert(io.open(history, "a"))
out:setvbuf("line")
-- CHAOS_PLANT=stale-reads: reads ask for the local copy (?stale), which is
-- not linearizable; a run with it must fail, or the pipeline is blind.
local stale = os.getenv("CHAOS_PLANT") == "stale-reads"
local known = {} -- key -> the revision this client saw last
local seq = 0

-- The current epoch's key names.
local function pick_key()
  local e = math.floor((socket.gettime() - start) / epoch)
  return string.format("e%03d-k%d", e, math.random(1, nkeys))
end

while socket.gettime() < stop do
  seq = seq + 1
  local key = pick_key()
  local op = { id = string.format("c%d-%d", id, seq), p = "c" .. id, key = key }
  if math.random() < 0.45 then
    op.f, op.stale = "read", stale
  else
    op.f = "cas"
    op.value = string.format("c%d-%d", id, seq)
    op.cas = known[key] or 0
    if math.random() < 0.1 then op.cas = math.random(0, op.cas + 5) end
  end
  local node = nodes[math.random(#nodes)]
  local _, done = kvops.perform(node, op, timeout, function(inv) out:write(kvops.encode(inv), "\n") end)
  out:write(kvops.encode(done), "\n")
  if done.t == "ok" or done.conflict then known[key] = done.rev end
  socket.sleep(0.01 + math.random() * 0.05)
end
out:close()
