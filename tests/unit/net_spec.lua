-- The cluster transport (src/net.c) through real build/net_node processes on
-- loopback: links, messages, fast down detection, bad frames.
package.cpath = "./build/?.so;" .. package.cpath
local socket = require("socket")
local wire = require("qcwire")

local NODE = "./build/net_node"

local started = {} -- every process of the current test: { pid, out, err }

local function start(id, port, peers)
  local out, err = os.tmpname(), os.tmpname()
  local cmd = string.format("exec %s %s %d %s >%s 2>%s & echo $!", NODE, id, port,
                            table.concat(peers or {}, " "), out, err)
  local f = assert(io.popen(cmd))
  local pid = tonumber(f:read("*l"))
  f:close()
  assert(pid, "no pid for " .. id)
  local p = { id = id, pid = pid, out = out, err = err, port = port }
  started[#started + 1] = p
  return p
end

local function signal(p, sig)
  os.execute(string.format("kill -%s %d 2>/dev/null", sig, p.pid))
end

local function alive(p)
  return os.execute(string.format("kill -0 %d 2>/dev/null", p.pid)) == true
end

local function lines(p)
  local t = {}
  local f = io.open(p.out)
  if not f then return t end
  for l in f:lines() do t[#t + 1] = l end
  f:close()
  return t
end

-- Waits for a line matching pattern (plain text) after line index `after`;
-- returns its index and the time it took, or nil after timeout seconds.
local function wait_line(p, text, timeout, after)
  local t0 = socket.gettime()
  repeat
    local ls = lines(p)
    for i = (after or 0) + 1, #ls do
      if ls[i]:find(text, 1, true) then return i, socket.gettime() - t0 end
    end
    socket.sleep(0.005)
  until socket.gettime() - t0 > timeout
  return nil
end

local function count_lines(p, text, after)
  local n = 0
  local ls = lines(p)
  for i = (after or 0) + 1, #ls do
    if ls[i]:find(text, 1, true) then n = n + 1 end
  end
  return n
end

local function must_see(p, text, timeout, after)
  local i = wait_line(p, text, timeout or 3, after)
  assert(i, string.format("%s never printed '%s'; output:\n%s", p.id, text,
                          table.concat(lines(p), "\n"):sub(-2000)))
  return i
end

local function peer(id, port)
  return string.format("%s@127.0.0.1:%d", id, port)
end

local function port_free(port)
  local s = socket.tcp()
  local ok = s:bind("127.0.0.1", port)
  s:close()
  return ok ~= nil
end

-- Three free consecutive ports below the ephemeral range; other suites may be
-- running on this machine at the same time.
local function base_port()
  for _ = 1, 100 do
    local port = 20000 + math.random(0, 1200) * 10
    if port_free(port) and port_free(port + 1) and port_free(port + 2) then return port end
  end
  error("no free ports")
end

describe("net", function()
  after_each(function()
    for _, p in ipairs(started) do
      signal(p, "KILL")
      os.remove(p.out)
      os.remove(p.err)
    end
    started = {}
  end)

  it("two nodes link up, say hello and exchange messages", function()
    local port = base_port()
    local a = start("a", port, { peer("b", port + 1) })
    local b = start("b", port + 1, { peer("a", port) })
    must_see(a, "link b up")
    must_see(b, "link a up")
    must_see(a, 'hello b {"node":"b"}')
    must_see(b, 'hello a {"node":"a"}')
    must_see(a, "msg b 5 term=")
    must_see(b, "msg a 5 term=")
    assert.are.equal(0, count_lines(a, "link b down"))
  end)

  it("a message over the frame limit travels in parts, between heartbeats", function()
    local port = base_port()
    local a = start("a", port, { peer("b", port + 1) })
    local b = start("b", port + 1, { peer("a", port) })
    must_see(b, "msg a 5 term=")
    local mark = #lines(b)
    signal(a, "USR2")
    local sent = must_see(a, "big crc=")
    local crc = lines(a)[sent]:match("crc=(%x+)")
    local got = must_see(b, "msg a 8 len=20971520 crc=" .. crc, 10, mark)
    -- heartbeats kept flowing around it and after it
    must_see(b, "msg a 5 term=", 2, got)
    signal(b, "USR1")
    must_see(b, "bad_frames 0", 2, got)
  end)

  it("a node killed with -9 is reported down at once and up again after a restart", function()
    local port = base_port()
    local ids = { "a", "b", "c" }
    local function peers_of(me)
      local t = {}
      for i, id in ipairs(ids) do
        if id ~= me then t[#t + 1] = peer(id, port + i - 1) end
      end
      return t
    end
    local a = start("a", port, peers_of("a"))
    local b = start("b", port + 1, peers_of("b"))
    local c = start("c", port + 2, peers_of("c"))
    for _, pair in ipairs({ { a, "b" }, { a, "c" }, { b, "a" }, { b, "c" }, { c, "a" }, { c, "b" } }) do
      must_see(pair[1], "msg " .. pair[2] .. " 5")
    end
    signal(c, "KILL")
    local ia, ta = wait_line(a, "link c down", 2)
    local ib, tb = wait_line(b, "link c down", 2)
    assert.is_truthy(ia)
    assert.is_truthy(ib)
    -- the close is seen through the read watcher, not a timeout
    assert.is_true(ta < 0.5 and tb < 0.5, string.format("down after %.3f s / %.3f s", ta, tb))
    if os.getenv("NET_SPEC_VERBOSE") then print(string.format("down after %.3f / %.3f s", ta, tb)) end
    assert.are.equal(0, count_lines(a, "link b down"))
    local c2 = start("c", port + 2, peers_of("c"))
    must_see(a, "link c up", 3, ia)
    must_see(b, "link c up", 3, ib)
    must_see(a, "msg c 5", 3, ia)
    must_see(c2, "msg a 5")
    must_see(c2, "msg b 5")
  end)

  it("garbage on the port closes only that connection and is counted", function()
    local port = base_port()
    local a = start("a", port, { peer("b", port + 1) })
    local b = start("b", port + 1, { peer("a", port) })
    must_see(a, "msg b 5")
    must_see(b, "msg a 5")
    local bad = {
      "GET / HTTP/1.0\r\n\r\n", -- bad magic
      wire.frame(2, "x"):sub(1, 12) .. "y", -- bad CRC
      wire.encode({ kind = "hello", identifier = "stranger" }), -- unknown peer
      wire.encode({ type = 5, from = wire.hash_id("b"), to = wire.hash_id("a") }), -- no hello
      "QC\1\2" .. string.pack(">I4I4", wire.MAX_PAYLOAD + 1, 0), -- oversize length
      "QC\9\2" .. string.pack(">I4I4", 0, 0), -- unknown version
      "QC\1\7" .. string.pack(">I4I4", 0, 0), -- unknown frame type
    }
    for _, g in ipairs(bad) do
      local s = assert(socket.connect("127.0.0.1", port))
      s:settimeout(2)
      assert(s:send(g))
      local data, err = s:receive(1)
      assert.is_nil(data)
      assert.are.equal("closed", err)
      s:close()
    end
    local mark = #lines(a)
    signal(a, "USR1")
    must_see(a, "bad_frames " .. #bad, 2, mark)
    -- the real peer is untouched: no link change, messages keep coming both ways
    mark = #lines(a)
    local mark_b = #lines(b)
    must_see(a, "msg b 5", 2, mark)
    must_see(b, "msg a 5", 2, mark_b)
    assert.are.equal(0, count_lines(a, "link b down"))
    assert.are.equal(0, count_lines(b, "link a down"))
    assert.are.equal(1, count_lines(a, "link b up"))
  end)

  it("a bad frame after a peer's hello drops that peer's link, which comes back", function()
    local port = base_port()
    local a = start("a", port, { peer("b", port + 1) })
    local b = start("b", port + 1, { peer("a", port) })
    must_see(a, "msg b 5")
    local cases = {
      wire.encode({ type = 5, from = wire.hash_id("c"), to = wire.hash_id("a") }), -- wrong sender
      wire.encode({ type = 5, from = wire.hash_id("b"), to = wire.hash_id("b") }), -- wrong recipient
      wire.frame(2, "short"), -- malformed message
      wire.encode({ kind = "hello", identifier = "b" }), -- second hello
      wire.frame(5, ""), -- part without its flag
      wire.frame(5, "\2piece"), -- part with a bad flag
      wire.frame(5, "\1short"), -- parts that join into a malformed message
    }
    for n, g in ipairs(cases) do
      local mark = #lines(a)
      local s = assert(socket.connect("127.0.0.1", port))
      s:settimeout(2)
      assert(s:send(wire.encode({ kind = "hello", identifier = "b" }) .. g))
      local data, err = s:receive(1)
      assert.is_nil(data)
      assert.are.equal("closed", err)
      s:close()
      local down = must_see(a, "link b down", 2, mark)
      must_see(a, "link b up", 3, down)
      signal(a, "USR1")
      must_see(a, "bad_frames " .. n, 2, down)
    end
    must_see(a, "msg b 5", 2, #lines(a))
    must_see(b, "msg a 5", 2, #lines(b))
  end)

  it("a hello from the real peer on a new connection replaces the old one quietly", function()
    local port = base_port()
    local a = start("a", port, { peer("b", port + 1) })
    local b = start("b", port + 1, { peer("a", port) })
    must_see(a, "msg b 5")
    local s = assert(socket.connect("127.0.0.1", port))
    assert(s:send(wire.encode({ kind = "hello", identifier = "b", metadata = '{"x":1}' })))
    must_see(a, 'hello b {"x":1}')
    s:close()
    -- closing it is a close of a connection from b: the link drops and recovers
    must_see(a, "link b down", 2)
    must_see(a, "link b up", 3, wait_line(a, "link b down", 0))
    must_see(b, "msg a 5", 2, #lines(b))
  end)

  it("stops cleanly on SIGTERM", function()
    local port = base_port()
    local a = start("a", port, { peer("b", port + 1) })
    must_see(a, "ready a")
    signal(a, "TERM")
    must_see(a, "exit", 2)
    local t0 = socket.gettime()
    while alive(a) and socket.gettime() - t0 < 2 do socket.sleep(0.01) end
    assert.is_false(alive(a))
  end)
end)
