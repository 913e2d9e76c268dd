-- Node 1 of the redis_failover example, all on loopback (run.sh starts it).
-- Ports come from REDIS_FAILOVER_BASE (default 7500): cluster base+1, API
-- base+11, this node's redis-server base+21 (metadata.redis_port, which the
-- hooks and clients read). Durable state under REDIS_FAILOVER_DIR.
-- Checks: `redis` opens a connection every 50 ms (a dead Redis refuses it:
-- three in a row fail it), `redis_ping` asks PING every second (a hung Redis accepts
-- connections but never answers). An unhealthy leader hands over.
local base = tonumber(os.getenv("REDIS_FAILOVER_BASE")) or 7500
local dir = os.getenv("REDIS_FAILOVER_DIR") or "/tmp/qcluster-redis-failover"
local redis_port = base + 21

return {
  identifier = "server_a",
  listen_host = "127.0.0.1",
  listen_port = base + 1,
  api_port = base + 11,
  data_dir = dir .. "/server_a/qcluster",
  metadata = { redis_port = redis_port },
  peers = {
    { identifier = "server_b", host = "127.0.0.1", port = base + 2, metadata = { redis_port = base + 22 } },
    { identifier = "server_c", host = "127.0.0.1", port = base + 3, metadata = { redis_port = base + 23 } },
  },
  checks = {
    { name = "redis", tcp = "127.0.0.1:" .. redis_port, interval_ms = 50, rise = 2, fall = 3 },
    { name = "redis_ping", exec = "redis-cli -p " .. redis_port .. " ping | grep -q PONG", interval_ms = 1000,
      rise = 2, fall = 3 },
  },
  hooks = "hooks.lua",
}
