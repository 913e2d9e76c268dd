-- Key-value operations as a history records them: each is an invocation
-- line and a completion line (JSON, one a line), and the completion says
-- ok (it happened), fail (it did not) or info (nobody knows: the request
-- went out and no answer came, or the answer was a timeout).
local socket = require("socket")
local cjson = require("cjson")
local httpc = require("httpc")

local M = {}

local function url_key(key)
  return (key:gsub("[^%w%._~%-]", function(ch) return string.format("%%%02X", ch:byte()) end))
end

local function revision(body)
  local t = cjson.decode(body or "")
  return type(t) == "table" and math.tointeger(t.revision) or nil
end

-- Classifies an HTTP answer to a read.
local function read_result(res)
  if res.status == 200 then
    return { t = "ok", value = res.body, rev = tonumber(res.headers["x-qcluster-revision"]) }
  elseif res.status == 404 then
    return { t = "ok", rev = 0 } -- absent
  elseif res.status then
    return { t = "fail", code = res.status }
  end
  return { t = res.sent and "info" or "fail", err = res.err }
end

-- Classifies an HTTP answer to a compare-and-set write. A 503 means the
-- node neither proposed nor forwarded it (src/store/replica.c answers it before
-- anything is sent), so it did not happen; a 504 or a lost answer may have.
local function cas_result(res)
  local s = res.status
  if s == 200 then
    local rev = revision(res.body)
    if rev then return { t = "ok", rev = rev } end
    return { t = "info", code = s, err = "200 without a revision" }
  elseif s == 409 then
    local rev = revision(res.body)
    if rev then return { t = "fail", conflict = true, rev = rev, code = s } end
    return { t = "fail", code = s }
  elseif s == 503 or s == 400 or s == 413 then
    return { t = "fail", code = s }
  elseif s then
    return { t = "info", code = s }
  end
  return { t = res.sent and "info" or "fail", err = res.err }
end

-- Performs one operation against api = {host=, port=, name=} and returns
-- (invocation, completion) records; id, process label them. on_invoke(inv)
-- runs before the request goes out, so that the history has the invocation
-- even when the client dies waiting.
function M.perform(api, op, timeout, on_invoke)
  local inv = { t = "invoke", id = op.id, p = op.p, f = op.f, key = op.key, node = api.name,
    value = op.f == "cas" and op.value or nil, cas = op.cas, time = socket.gettime() }
  if on_invoke then on_invoke(inv) end
  local path = "/v1/kv/" .. url_key(op.key)
  local res, done
  if op.f == "read" then
    res = httpc.request(api.host, api.port, "GET", path .. (op.stale and "?stale" or ""), nil, timeout)
    done = read_result(res)
  else
    res = httpc.request(api.host, api.port, "PUT", path .. "?cas=" .. op.cas, op.value, timeout)
    done = cas_result(res)
  end
  done.id, done.time = op.id, socket.gettime()
  return inv, done
end

M.encode = cjson.encode

-- Reads history files (JSON lines) into operations for the checkers:
-- each invocation joined with its completion (none: info).
function M.load(paths)
  local ops, by_id = {}, {}
  for _, path in ipairs(paths) do
    local f = io.open(path, "r")
    if f then
      for line in f:lines() do
        local ok, r = pcall(cjson.decode, line)
        if ok and type(r) == "table" then
          if r.t == "invoke" then
            local op = { id = r.id, process = r.p, f = r.f, key = r.key, node = r.node,
              invoke = r.time, status = "info", cas = math.tointeger(r.cas) }
            if r.f == "cas" then op.value = r.value end
            ops[#ops + 1] = op
            by_id[r.id] = op
          elseif by_id[r.id] then
            local op = by_id[r.id]
            op.status = r.t
            if r.t ~= "info" then op.complete = r.time end
            op.rev = math.tointeger(r.rev)
            op.conflict = r.conflict or nil
            op.code, op.err = r.code, r.err
            if op.f == "read" then
              op.value = r.value
              if r.value == cjson.null then op.value = nil end
            end
          end
        end
      end
      f:close()
    end
  end
  return ops
end

return M
