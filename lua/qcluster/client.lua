-- A client of a QCluster agent's HTTP API for Lua programs that run beside
-- an agent (hooks have the agent's own `qcluster` module instead). Blocking,
-- one request a connection, on lua-socket and lua-cjson. Every call returns
-- its result, or nil and a message; it never raises for a failed request.
-- https:// addresses need lua-sec (Debian lua-sec), loaded only for them.
local socket = require("socket")
local http = require("socket.http")
local ltn12 = require("ltn12")
local cjson = require("cjson.safe")

local M = {}
local Client = {}
Client.__index = Client

-- The agent holds a long-poll at most this long (src/api/api.h QC_API_MAX_WAIT_S).
local MAX_WAIT = 300

-- socket.http sets its module-wide TIMEOUT on every socket it opens; this
-- socket keeps the client's own instead, so two clients never share one.
-- The request gets `seconds` in all: before each operation the socket's
-- total timeout is set to the time left, so an agent that sends a byte now
-- and then cannot stretch the call (lua-socket's timeouts are per call).
-- The agent's certificate must name the host asked for: an IP address
-- SAN equal to it, or a DNS SAN equal to it (a "*." one covers one label).
-- LuaSec checks the chain only.
local function names_host(cert, host)
  local san = (cert:extensions() or {})["2.5.29.17"] or {}
  host = host:lower()
  for _, ip in ipairs(san.iPAddress or {}) do
    if ip:lower() == host then return true end
  end
  for _, dns in ipairs(san.dNSName or {}) do
    dns = dns:lower()
    if dns == host then return true end
    local rest = dns:match("^%*(%..+%..+)$")
    if rest and host:match("^[^.]+(%..+)$") == rest then return true end
  end
  return false
end

-- TLS over the connected socket s to host: the wrapped socket, or nil and why.
local function start_tls(s, host, tls, left)
  local ssl = require("ssl")
  local w, err = ssl.wrap(s, tls)
  if not w then return nil, err end
  if not host:match("^[%d.]+$") and not host:find(":", 1, true) then w:sni(host) end
  w:settimeout(left(), "t")
  local ok, herr = w:dohandshake()
  if not ok then return nil, "TLS handshake failed: " .. tostring(herr) end
  local verified, why = w:getpeerverification()
  if not verified then
    return nil, "the agent's certificate is not trusted: " .. tostring(why and why[0] or why)
  end
  if not names_host(w:getpeercertificate(), host) then
    return nil, "the agent's certificate does not name " .. host
  end
  return w
end

local function socket_with_deadline(seconds, tls)
  return function()
    local s, err = socket.tcp()
    if not s then return nil, err end
    local deadline = socket.gettime() + seconds
    local function left() return math.max(deadline - socket.gettime(), 0) end
    local proxy = {}
    if tls then -- https: the handshake follows the connect, in the same time
      proxy.connect = function(_, host, port)
        s:settimeout(left(), "t")
        local ok, cerr = s:connect(host, port)
        if not ok then return nil, cerr end
        local w, terr = start_tls(s, host, tls, left)
        if not w then
          s:close()
          return nil, terr
        end
        s = w
        return 1
      end
    end
    return setmetatable(proxy, { __index = function(_, name)
      if name == "settimeout" then return function() return 1 end end
      local method = s[name]
      if type(method) ~= "function" then return method end
      return function(_, ...)
        s:settimeout(left(), "t")
        return method(s, ...)
      end
    end })
  end
end

-- cjson reads every number as a float; ports, terms and indexes are integers.
local function integers(v)
  if type(v) == "number" then return math.tointeger(v) or v end
  if type(v) ~= "table" then return v end
  for k, x in pairs(v) do v[k] = integers(x) end
  return v
end

-- LuaSec's parameters for https (TLS 1.2 or later, the peer verified); nil
-- and why when lua-sec is missing or cert comes without key.
local function tls_params(opts)
  local function pick(v, env)
    if v == nil or v == "" then v = os.getenv(env) end
    if v == "" then return nil end
    return v
  end
  local cacert = pick(opts.cacert, "QCLUSTER_CACERT")
  local cert, key = pick(opts.cert, "QCLUSTER_CERT"), pick(opts.key, "QCLUSTER_KEY")
  if (cert == nil) ~= (key == nil) then return nil, "cert and key go together" end
  if not pcall(require, "ssl") then return nil, "https needs lua-sec (Debian lua-sec)" end
  return { mode = "client", protocol = "any", verify = "peer", cafile = cacert,
    capath = cacert == nil and "/etc/ssl/certs" or nil, certificate = cert, key = key,
    options = { "all", "no_sslv2", "no_sslv3", "no_tlsv1", "no_tlsv1_1" } }
end

-- opts.api: "HOST:PORT" (default $QCLUSTER_API, else 127.0.0.1:8001), or
-- "https://HOST:PORT" for an agent with api_tls_cert: its certificate must
-- chain to opts.cacert (a PEM file; default $QCLUSTER_CACERT, else the
-- system's CAs) and name the host; opts.cert and opts.key (default
-- $QCLUSTER_CERT, $QCLUSTER_KEY) are this client's certificate and key, for
-- an agent with api_tls_client_ca;
-- opts.token: the agent's api_token, sent as a bearer token; opts.timeout:
-- seconds a whole request may take, connecting to the last byte of the
-- answer (default 5; a long-poll gets its wait on top).
function M.new(opts)
  opts = opts or {}
  local api = opts.api
  if api == nil or api == "" then api = os.getenv("QCLUSTER_API") end
  if api == nil or api == "" then api = "127.0.0.1:8001" end
  local scheme, hostport = "http", api
  if type(api) == "string" and api:lower():match("^https?://") then
    scheme, hostport = api:match("^(%a+)://(.*)$")
    scheme = scheme:lower()
  end
  if type(api) ~= "string" or not hostport:match("^.+:%d+$") then
    return nil, "bad api " .. tostring(api) .. ": expected HOST:PORT or https://HOST:PORT"
  end
  local timeout = opts.timeout or 5
  if type(timeout) ~= "number" or timeout <= 0 then return nil, "timeout must be a positive number" end
  local self = { api = api, base = scheme .. "://" .. hostport, token = opts.token,
    timeout = timeout }
  if scheme == "https" then
    local tls, err = tls_params(opts)
    if not tls then return nil, err end
    self.tls = tls
  end
  return setmetatable(self, Client)
end

-- One request: status, body, headers; or nil and why.
function Client:request(method, path, body, timeout)
  local out = {}
  local headers = { accept = "application/json" }
  if self.token and self.token ~= "" then headers.authorization = "Bearer " .. self.token end
  if body then headers["content-length"] = #body end
  local ok, status, hdrs = http.request {
    url = self.base .. path, method = method, headers = headers,
    source = body and ltn12.source.string(body) or nil, sink = ltn12.sink.table(out),
    create = socket_with_deadline(timeout or self.timeout, self.tls),
  }
  if not ok then return nil, "cannot reach agent at " .. self.api .. ": " .. tostring(status) end
  return status, table.concat(out), hdrs
end

-- GET path as JSON: the decoded answer (an object or a list, so a table)
-- and its status, or nil and why. Statuses in `accept` are answers; any
-- other is an error.
function Client:get_json(path, accept, timeout)
  local status, body = self:request("GET", path, nil, timeout)
  if not status then return nil, body end
  local v = cjson.decode(body)
  if not accept[status] then
    local msg = type(v) == "table" and type(v.error) == "string" and v.error or body
    return nil, string.format("agent at %s answered HTTP %d: %s", self.api, status, msg)
  end
  -- a number, string or null is no answer a caller can index
  if type(v) ~= "table" then return nil, "bad answer from agent at " .. self.api end
  return integers(v), status
end

local OK = { [200] = true }
local LEADER = { [200] = true, [503] = true }

-- {identifier, role, term, leader, peers, commit_index}, as GET /v1/status.
function Client:status()
  return self:get_json("/v1/status", OK)
end

-- Every member with role, up, voter, priority, healthy and checks, as GET
-- /v1/members; opts.healthy = true (or false) lists only the members known
-- healthy (or not), for discovery.
function Client:members(opts)
  local healthy
  if type(opts) == "table" then healthy = opts.healthy end
  if healthy ~= nil and type(healthy) ~= "boolean" then return nil, "healthy must be a boolean" end
  return self:get_json("/v1/members" .. (healthy == nil and "" or "?healthy=" .. tostring(healthy)), OK)
end

-- This agent's health checks, as GET /v1/checks: a list of {name, kind,
-- status ("passing" or "failing"), output, since}.
function Client:checks()
  return self:get_json("/v1/checks", OK)
end

-- A ttl check's report: true, or nil and why (no such check, not a ttl
-- check, refused, unreachable). output: kept as the check's output.
local function report(self, name, verdict, output)
  if type(name) ~= "string" or not name:match("^[%w_%.%-]+$") or #name > 64 then
    return nil, "bad check name " .. tostring(name)
  end
  if output ~= nil and type(output) ~= "string" then return nil, "output must be a string" end
  local status, body = self:request("PUT", "/v1/checks/" .. name .. "/" .. verdict, output or "")
  if not status then return nil, body end
  if status == 200 then return true end
  local v = cjson.decode(body)
  local msg = type(v) == "table" and type(v.error) == "string" and v.error or body
  return nil, string.format("agent at %s answered HTTP %d: %s", self.api, status, msg)
end

function Client:check_pass(name, output) return report(self, name, "pass", output) end
function Client:check_fail(name, output) return report(self, name, "fail", output) end

-- true when the agent leads, false when not; nil and why when it cannot be asked.
function Client:is_leader()
  local st, err = self:status()
  if not st then return nil, err end
  return st.role == "leader"
end

-- The Peer of a /v1/leader answer: the API's fields plus what being the
-- leader implies.
local function leader_peer(v)
  if v.leader == cjson.null or type(v.identifier) ~= "string" then return nil end
  local meta = type(v.metadata) == "table" and v.metadata or {}
  return { identifier = v.identifier, host = v.host, port = v.port, metadata = meta,
    term = v.term, role = "leader", up = true, voter = true, priority = v.priority,
    healthy = v.healthy == true }
end

-- Keeps what a /v1/leader answer said (its term, the leader or none): the
-- next wait_for_leader_change waits for that to differ.
local function remember(self, v, peer)
  if math.type(v.term) ~= "integer" or v.term < 0 then return end
  self.known = { term = v.term, leader = peer and peer.identifier or "none" }
end

local function leader_at(self, path, timeout)
  local v, status = self:get_json(path, LEADER, timeout)
  if not v then return nil, status end
  if status == 503 then
    remember(self, v, nil)
    return nil
  end
  local peer = leader_peer(v)
  if not peer then return nil, "bad answer from agent at " .. self.api end
  remember(self, v, peer)
  return peer
end

-- An identifier for a query: all but unreserved characters percent-encoded.
local function query_value(s)
  return (s:gsub("[^%w%-%._~]", function(ch) return string.format("%%%02X", ch:byte()) end))
end

-- The leader the agent knows: a Peer {identifier, host, port, metadata,
-- term, role, up, voter, priority, healthy}; nil when no leader is known; nil and why on error.
function Client:get_leader_info()
  return leader_at(self, "/v1/leader")
end

-- Waits up to timeout seconds (at most 300) for the leader or the term to
-- differ from what this client's last leader answer said (get_leader_info
-- or a wait; on the first call, the leader now), on the API's long-poll;
-- then answers as get_leader_info. A loop of calls never misses a change:
-- after nil (no leader), the next call returns a leader elected meanwhile
-- at once. With term (a term read earlier), it waits for the term alone to
-- differ from it.
function Client:wait_for_leader_change(timeout, term)
  timeout = timeout or MAX_WAIT
  if type(timeout) ~= "number" or timeout < 0 then return nil, "timeout must be a number >= 0" end
  if timeout > MAX_WAIT then timeout = MAX_WAIT end
  local query
  if term ~= nil then
    if math.type(term) ~= "integer" or term < 0 then return nil, "term must be an integer >= 0" end
    query = string.format("term=%d", term)
  else
    if not self.known then
      local _, err = leader_at(self, "/v1/leader")
      if err then return nil, err end
      if not self.known then return nil, "bad answer from agent at " .. self.api end
    end
    query = string.format("term=%d&leader=%s", self.known.term, query_value(self.known.leader))
  end
  local path = string.format("/v1/leader?wait=%.3f&%s", timeout, query)
  return leader_at(self, path, timeout + self.timeout)
end

return M
