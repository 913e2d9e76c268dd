-- Regression of a bug the chaos run found (scripts/chaos-repro.sh
-- request_ids; fixed in 90c0ce8, and run by scripts/suite-chaos.sh): a node
-- numbered the writes it proposes or forwards from 1 again at every start
-- (src/store/replica.c, next_request), and settles a waiting write with the
-- result of any applied entry that carries its own origin and that number.
-- After a restart it applies its old entries again, so a write it took
-- before it had caught up was answered with an old entry's result: a
-- compare-and-set that cannot succeed was acknowledged 200, and the key
-- stayed absent. Exit 1 when the bug shows, 0 when it does not.
--
-- How: five nodes, 300 writes through a follower (numbers 1..300 in the
-- log), 60 ms delay on every link, kill -9 of every node, restart, wait
-- until the follower names a leader (no KV request before), then one
-- PUT /v1/kv/fresh?cas=5 through it: the key is absent, so the answer must
-- be 409; the follower's write number 1 matches the old entry of "old1".
package.path = "./tests/chaos/?.lua;" .. package.path
local socket = require("socket")
local cjson = require("cjson.safe")
local env = require("env")
local cluster = require("cluster")
local httpc = require("httpc")

local dir = arg[1]
local c = cluster.new(env.sh("pwd"):gsub("%s+$", ""), dir, 5)
local function put(i, path, v)
  local r = httpc.request(env.addr(i), env.API_PORT, "PUT", "/v1/kv/" .. path, v, 5)
  return r.status, r.status and r.body or r.err
end
local function get(i, key)
  local r = httpc.request(env.addr(i), env.API_PORT, "GET", "/v1/kv/" .. key, nil, 5)
  return r.status, r.body, r.headers and r.headers["x-qcluster-revision"]
end

local ok, result = pcall(function()
  for i = 1, 5 do c:start_proxy(i) end
  for i = 1, 5 do c:start(i) end
  local leader = assert(c:agreed_leader(20), "no leader")
  local fi = tonumber(leader:match("%d+")) % 5 + 1
  for i = 1, 300 do assert(put(fi, "old" .. i, "v" .. i) == 200, "write old" .. i) end
  for i = 1, 5 do
    for j = 1, 5 do if i ~= j then c:set_delay(i, j, 60, 0) end end
  end
  c:write_delays()
  for i = 1, 5 do c:kill(i) end
  for i = 1, 5 do c:start(i) end
  local deadline = socket.gettime() + 20
  repeat
    local r = httpc.request(env.addr(fi), env.API_PORT, "GET", "/v1/leader", nil, 1)
    if r.status == 200 then break end
    socket.sleep(0.002)
  until socket.gettime() > deadline
  local status, body = put(fi, "fresh?cas=5", "must-not-be-written")
  print(string.format("PUT /v1/kv/fresh?cas=5 through n%d right after the restart: %s %s", fi,
    tostring(status), tostring(body)))
  socket.sleep(1)
  local gs, gb, grev = get(fi, "fresh")
  print(string.format("GET /v1/kv/fresh a second later: %s %s (revision %s)", tostring(gs), tostring(gb),
    tostring(grev)))
  local t = cjson.decode(body or "")
  return status == 200 and gs == 404, t and t.revision
end)
c:stop_all()
if not ok then
  print("repro broke: " .. tostring(result))
  os.exit(2)
end
if result then
  print("BUG: a compare-and-set that did not take effect was acknowledged (the answer of an old entry)")
  os.exit(1)
end
print("ok: the write was answered for itself")
os.exit(0)
