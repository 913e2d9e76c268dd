-- build/api_fake for the API and CLI specs: a fake agent view on a port,
-- driven by signals (SIGUSR1 toggles "leader known" and bumps the term,
-- SIGUSR2 bumps the term only).
local socket = require("socket")

local M = {}

-- QC_API_FAKE / QC_FAKE_LOG let a sanitizer build run the same specs.
local FAKE = os.getenv("QC_API_FAKE") or "./build/api_fake"
local LOG = os.getenv("QC_FAKE_LOG") or "/dev/null"

-- Starts api_fake on port (with a bearer token if given), waits until it
-- accepts connections and returns its pid.
function M.start(port, token)
  local cmd = FAKE .. " " .. port .. (token and (" " .. token) or "") .. " >/dev/null 2>>" .. LOG .. " & echo $!"
  local p = assert(io.popen(cmd))
  local pid = assert(tonumber(p:read("*l")), "no pid")
  p:close()
  for _ = 1, 250 do
    local s = socket.connect("127.0.0.1", port)
    if s then
      s:close()
      return pid
    end
    socket.sleep(0.02)
  end
  os.execute("kill " .. pid)
  error("api_fake did not start on port " .. port)
end

return M
