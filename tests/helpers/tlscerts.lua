-- Throwaway certificates for the TLS specs, made with the openssl CLI at
-- test time in a directory of the spec's (no network, fixed validity): a CA,
-- a server certificate for 127.0.0.1 and localhost, a client certificate
-- the CA signed, and a second CA with a client certificate of its own (one
-- the first CA never signed), and a server certificate of the CA for an
-- address and name that are not 127.0.0.1's.
local M = {}

local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  if not ok then error("failed: " .. cmd .. "\n" .. out, 2) end
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  assert(f:write(text))
  f:close()
end

local KEY = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"

local function ca(dir, name)
  run(string.format("openssl req -x509 %s -keyout %s/%s.key -out %s/%s.pem -days 3650 "
    .. "-subj '/CN=qcluster test %s'", KEY, dir, name, dir, name, name))
end

-- A certificate name.pem/name.key signed by ca, with the extensions ext.
local function leaf(dir, name, cn, ca_name, ext)
  write(dir .. "/" .. name .. ".ext", ext)
  run(string.format("openssl req %s -keyout %s/%s.key -out %s/%s.csr -subj '/CN=%s'",
    KEY, dir, name, dir, name, cn))
  run(string.format("openssl x509 -req -in %s/%s.csr -CA %s/%s.pem -CAkey %s/%s.key "
    .. "-CAcreateserial -out %s/%s.pem -days 3650 -extfile %s/%s.ext",
    dir, name, dir, ca_name, dir, ca_name, dir, name, dir, name))
end

-- Makes them all in dir; returns a table of absolute paths.
function M.make(dir)
  ca(dir, "ca")
  ca(dir, "otherca")
  leaf(dir, "server", "localhost", "ca",
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
  leaf(dir, "client", "client", "ca", "extendedKeyUsage=clientAuth\n")
  leaf(dir, "stranger", "stranger", "otherca", "extendedKeyUsage=clientAuth\n")
  -- the CA's, but for another address and name
  leaf(dir, "elsewhere", "elsewhere.test", "ca",
    "subjectAltName=IP:127.0.0.9,DNS:elsewhere.test\nextendedKeyUsage=serverAuth\n")
  local t = {}
  for _, n in ipairs({ "ca", "otherca", "server", "client", "stranger", "elsewhere" }) do
    t[n] = dir .. "/" .. n .. ".pem"
    t[n .. "_key"] = dir .. "/" .. n .. ".key"
  end
  return t
end

return M
