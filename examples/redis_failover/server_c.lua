-- Node 3 of the redis_failover example, all on loopback (run.sh starts it).
-- Ports come from REDIS_FAILOVER_BASE (default 7500): cluster base+3, API
-- base+13, this node's redis-server base+23 (metadata.redis_port, which the
-- hooks and clients read). Durable state under REDIS_FAILOVER_DIR.
-- Checks: `redis` opens a connection every 20 ms; once one fails, the next
-- come 2 ms apart (retry_ms), so a dead Redis (connect refused at once) fails
-- it in three refusals, a few ms, while a slow connect must time out three
-- times in a row. `redis_ping` asks PING every second (a hung Redis accepts
-- connections but never answers): three answers missing 500 ms, 100 ms
-- apart, fail it. An unhealthy leader hands over.
local base = tonumber(os.getenv("REDIS_FAILOVER_BASE")) or 7500
local dir = os.getenv("REDIS_FAILOVER_DIR") or "/tmp/qcluster-redis-failover"
local redis_port = base + 23

return {
  identifier = "server_c",
  listen_host = "127.0.0.1",
  listen_port = base + 3,
  api_port = base + 13,
  data_dir = dir .. "/server_c/qcluster",
  metadata = { redis_port = redis_port },
  peers = {
    { identifier = "server_a", host = "127.0.0.1", port = base + 1, metadata = { redis_port = base + 21 } },
    { identifier = "server_b", host = "127.0.0.1", port = base + 2, metadata = { redis_port = base + 22 } },
  },
  checks = {
    { name = "redis", tcp = "127.0.0.1:" .. redis_port, interval_ms = 20, retry_ms = 2, rise = 2, fall = 3 },
    { name = "redis_ping", exec = "redis-cli -p " .. redis_port .. " ping | grep -q PONG", interval_ms = 1000,
      timeout_ms = 500, retry_ms = 100, rise = 2, fall = 3 },
  },
  hooks = "hooks.lua",
}
