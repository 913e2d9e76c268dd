-- The cluster transport (src/net.c) through real build/net_node processes on
-- loopback: links, messages, fast down detection, bad frames, joins from
-- strangers and removed peers.
package.cpath = "./build/?.so;" .. package.cpath
local socket = require("socket")
local wire = require("qcwire")

local NODE = "./build/net_node"

local started = {} -- every process of the current test: { pid, out, err }

-- env: extra environment variables of the process, { NAME = "value" }.
local function start(id, port, peers, env)
  local out, err = os.tmpname(), os.tmpname()
  local vars = {}
  for k, v in pairs(env or {}) do vars[#vars + 1] = string.format("%s='%s'", k, v) end
  local cmd = string.format("exec env %s %s %s %d %s >%s 2>%s & echo $!", table.concat(vars, " "),
                            NODE, id, port, table.concat(peers or {}, " "), out, err)
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

-- Four free consecutive ports below the ephemeral range; other suites may be
-- running on this machine at the same time.
local function base_port()
  for _ = 1, 100 do
    local port = 20000 + math.random(0, 1200) * 10
    if port_free(port) and port_free(port + 1) and port_free(port + 2) and port_free(port + 3) then
      return port
    end
  end
  error("no free ports")
end

local function hello(id)
  return wire.encode({ kind = "hello", identifier = id })
end

-- Reads one whole frame from s: type and payload, or nil and an error.
local function read_frame(s)
  local h, err = s:receive(wire.HEADER)
  if not h then return nil, err end
  local type, len = wire.header(h)
  if not type then return nil, len end
  local payload, perr = s:receive(len)
  if not payload then return nil, perr end
  assert(wire.decode_payload and wire.crc32c(payload) == string.unpack(">I4", h, 9), "bad crc")
  return type, payload
end

-- Expects s to be closed by the other side, within 2 s.
local function expect_closed(s)
  s:settimeout(2)
  local data, err = s:receive(1)
  assert.is_nil(data)
  assert.are.equal("closed", err)
  s:close()
end

local function bad_frames(p)
  local mark = #lines(p)
  signal(p, "USR1")
  local i = must_see(p, "bad_frames ", 2, mark)
  return tonumber(lines(p)[i]:match("bad_frames (%d+)"))
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
    -- without on_join a stranger's hello is refused like any bad frame
    local a = start("a", port, { peer("b", port + 1) }, { NET_NODE_JOINS = "0" })
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
      "QC\1\9" .. string.pack(">I4I4", 0, 0), -- unknown frame type
      hello("stranger") .. wire.frame(7, "let me in"), -- join, with joins refused
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
      wire.frame(7, "let me in"), -- a join from a member
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

  it("a stranger asks to join and gets the answer; it is never taken for a peer", function()
    local port = base_port()
    local a = start("a", port, { peer("b", port + 1) })
    local b = start("b", port + 1, { peer("a", port) })
    must_see(a, "msg b 5")
    must_see(b, "msg a 5")
    -- c dials both members at once: two joins in flight
    local c = start("c", port + 2, {},
                    { NET_NODE_JOIN = string.format("127.0.0.1:%d,localhost:%d", port, port + 1) })
    must_see(a, "join from c please from c")
    must_see(a, "join seen c 127.0.0.1")
    must_see(b, "join from c please from c")
    must_see(c, "join answer 0 welcome c")
    local t0 = socket.gettime()
    while count_lines(c, "join answer") < 2 and socket.gettime() - t0 < 2 do socket.sleep(0.01) end
    assert.are.equal(2, count_lines(c, "join answer 0 welcome c"))
    assert.are.equal(0, count_lines(c, "called again"))
    -- not a peer: no hello, link or close reported for it, and no bad frame
    for _, p in ipairs({ a, b }) do
      assert.are.equal(0, count_lines(p, "hello ?"))
      assert.are.equal(0, count_lines(p, "link ?"))
      assert.are.equal(0, count_lines(p, "closed"))
      assert.are.equal(0, count_lines(p, "frame"))
      assert.are.equal(0, bad_frames(p))
    end
    assert.are.equal(0, count_lines(a, "link b down"))
    -- by hand: the answer is one JOIN frame, then the member closes
    local s = assert(socket.connect("127.0.0.1", port))
    s:settimeout(2)
    assert(s:send(hello("d") .. wire.frame(7, "by hand")))
    local type, payload = read_frame(s)
    assert.are.equal(7, type)
    assert.are.equal("welcome d", payload)
    expect_closed(s)
    must_see(a, "join from d by hand")
    -- an empty join payload is fine too
    s = assert(socket.connect("127.0.0.1", port))
    s:settimeout(2)
    assert(s:send(hello("e") .. wire.frame(7, "")))
    assert.are.equal(7, (read_frame(s)))
    expect_closed(s)
    must_see(b, "msg a 5", 2, #lines(b))
  end)

  it("a stranger sending anything but one join is closed and counted; links stay up", function()
    local port = base_port()
    local a = start("a", port, { peer("b", port + 1) })
    local b = start("b", port + 1, { peer("a", port) })
    must_see(a, "msg b 5")
    must_see(b, "msg a 5")
    local cases = {
      wire.encode({ type = 5, from = wire.hash_id("s"), to = wire.hash_id("a") }), -- raft
      "GET / HTTP/1.0\r\n\r\n", -- garbage
      wire.frame(5, "\1piece"), -- part
      wire.frame(3, "forward"), -- forward
      wire.frame(4, string.rep("\0", 18)), -- read index
      wire.frame(6, "member"), -- member
      hello("s"), -- second hello
      hello("b"), -- a second hello naming a peer
      wire.frame(7, "x"):sub(1, 12) .. "y", -- a join with a bad CRC
    }
    for n, g in ipairs(cases) do
      local s = assert(socket.connect("127.0.0.1", port))
      assert(s:send(hello("s") .. g))
      expect_closed(s)
      assert.are.equal(n, bad_frames(a))
    end
    assert.are.equal(0, count_lines(a, "join from"))
    assert.are.equal(0, count_lines(a, "frame "))
    assert.are.equal(1, count_lines(a, "hello b")) -- the real b's only
    must_see(a, "msg b 5", 2, #lines(a))
    must_see(b, "msg a 5", 2, #lines(b))
    assert.are.equal(0, count_lines(a, "link b down"))
    assert.are.equal(0, count_lines(b, "link a down"))
  end)

  it("at most 16 strangers at once; the 17th is closed at hello, uncounted", function()
    local port = base_port()
    local a = start("a", port, { peer("b", port + 1) })
    must_see(a, "ready a")
    local held = {}
    for i = 1, 16 do
      held[i] = assert(socket.connect("127.0.0.1", port))
      assert(held[i]:send(hello("s" .. i)))
    end
    socket.sleep(0.2)
    local extra = assert(socket.connect("127.0.0.1", port))
    assert(extra:send(hello("s17")))
    expect_closed(extra)
    assert.are.equal(0, bad_frames(a))
    -- one leaves: there is room for one more, which may join
    held[1]:close()
    socket.sleep(0.2)
    local late = assert(socket.connect("127.0.0.1", port))
    late:settimeout(2)
    assert(late:send(hello("late") .. wire.frame(7, "me too")))
    local type, payload = read_frame(late)
    assert.are.equal(7, type)
    assert.are.equal("welcome late", payload)
    expect_closed(late)
    -- the ones still held may join as well
    held[2]:settimeout(2)
    assert(held[2]:send(wire.frame(7, "still here")))
    assert.are.equal("welcome s2", select(2, read_frame(held[2])))
    expect_closed(held[2])
    for i = 3, 16 do held[i]:close() end
  end)

  it("a join to a closed port answers QC_EIO at once", function()
    local port = base_port()
    local c = start("c", port, {}, { NET_NODE_JOIN = "127.0.0.1:" .. (port + 1),
                                     NET_NODE_JOIN_TIMEOUT_MS = "5000" })
    local _, took = wait_line(c, "join answer -3", 2)
    assert.is_truthy(took, table.concat(lines(c), "\n"))
    assert.is_true(took < 1, string.format("answered after %.3f s", took))
    -- a name that does not resolve is QC_EIO too
    local d = start("d", port + 2, {}, { NET_NODE_JOIN = "no-such-host.invalid:" .. port })
    must_see(d, "join answer -3", 5)
  end)

  it("a join to a member that never answers times out with QC_EBUSY", function()
    local port = base_port()
    local server = assert(socket.bind("127.0.0.1", port + 1))
    finally(function() server:close() end)
    local c = start("c", port, {}, { NET_NODE_JOIN = "127.0.0.1:" .. (port + 1),
                                     NET_NODE_JOIN_TIMEOUT_MS = "300" })
    server:settimeout(3)
    local conn = assert(server:accept())
    finally(function() conn:close() end)
    local _, took = wait_line(c, "join answer -7", 3)
    assert.is_truthy(took, table.concat(lines(c), "\n"))
    assert.is_true(took < 1.5, string.format("timed out after %.3f s", took))
    -- it sent its join, alone (no hello), before giving up
    conn:settimeout(1)
    local type, payload = read_frame(conn)
    assert.are.equal(7, type)
    assert.are.equal("please from c", payload)
    expect_closed(conn)
    assert.are.equal(1, count_lines(c, "join answer"))
  end)

  it("pending joins are dropped without an answer when the transport is freed", function()
    local port = base_port()
    local server = assert(socket.bind("127.0.0.1", port + 1))
    finally(function() server:close() end)
    local c = start("c", port, {}, { NET_NODE_JOIN = string.format("127.0.0.1:%d,127.0.0.1:%d",
                                                                   port + 1, port + 1),
                                     NET_NODE_JOIN_TIMEOUT_MS = "10000" })
    server:settimeout(3)
    local c1 = assert(server:accept())
    local c2 = assert(server:accept())
    finally(function() c1:close(); c2:close() end)
    signal(c, "TERM")
    must_see(c, "exit", 2)
    assert.are.equal(0, count_lines(c, "join answer"))
  end)

  it("a join whose member closes or answers wrongly is QC_EIO; a bad answer is counted", function()
    local port = base_port()
    local server = assert(socket.bind("127.0.0.1", port + 1))
    finally(function() server:close() end)
    server:settimeout(3)
    local answers = {
      false, -- closes without an answer
      wire.frame(2, "not a join"), -- another frame type
      wire.frame(7, "welcome"):sub(1, 12) .. "welcomX", -- bad CRC
      "HTTP/1.0 400 Bad Request\r\n\r\n", -- not a frame at all
    }
    for i, answer in ipairs(answers) do
      local c = start("c" .. i, port + 2, {}, { NET_NODE_JOIN = "127.0.0.1:" .. (port + 1) })
      local conn = assert(server:accept())
      conn:settimeout(2)
      assert.are.equal(7, (read_frame(conn)))
      if answer then assert(conn:send(answer)) end
      conn:close()
      local _, took = wait_line(c, "join answer -3", 2)
      assert.is_truthy(took, table.concat(lines(c), "\n"))
      assert.are.equal(answer and 1 or 0, bad_frames(c))
      signal(c, "KILL")
      while alive(c) do socket.sleep(0.01) end
    end
  end)

  it("a removed peer's links close quietly and its later hellos are a stranger's", function()
    local port = base_port()
    local a = start("a", port, { peer("b", port + 1) })
    local b = start("b", port + 1, { peer("a", port) })
    must_see(a, "msg b 5")
    must_see(b, "msg a 5")
    local mark_b = #lines(b)
    signal(a, "HUP")
    local removed = must_see(a, "removed 1")
    must_see(b, "link a down", 2, mark_b)
    socket.sleep(0.3)
    -- no callback about b on a after the removal, and nothing from b
    for _, what in ipairs({ "msg b", "hello b", "link b", "closed b", "frame b" }) do
      assert.are.equal(0, count_lines(a, what, removed), what)
    end
    -- b keeps dialling; its hello now opens a stranger's connection and its
    -- raft frames are bad frames there
    assert.is_true(bad_frames(a) > 0)
    assert.are.equal(0, count_lines(a, "join from b"))
    -- by hand, as b: a join is answered like any stranger's
    local s = assert(socket.connect("127.0.0.1", port))
    s:settimeout(2)
    assert(s:send(hello("b") .. wire.frame(7, "again")))
    local type, payload = read_frame(s)
    assert.are.equal(7, type)
    assert.are.equal("welcome b", payload)
    expect_closed(s)
    must_see(a, "join from b again")
    signal(a, "HUP")
    must_see(a, "removed 0", 2, removed)
  end)

  for _, where in ipairs({ "msg", "hello", "link", "closed" }) do
    it("a peer removed from inside its own " .. where .. " callback is gone cleanly", function()
      local port = base_port()
      local a = start("a", port, { peer("b", port + 1), peer("c", port + 2) },
                      { NET_NODE_REMOVE_IN = where })
      local b = start("b", port + 1, { peer("a", port) })
      local c = start("c", port + 2, { peer("a", port) })
      if where == "closed" then
        must_see(a, "msg b 5")
        signal(b, "KILL")
      end
      local i = must_see(a, "removed b in " .. where .. ": ok")
      must_see(a, "msg c 5", 2, i)
      socket.sleep(0.2)
      assert.are.equal(0, count_lines(a, "msg b", i))
      assert.are.equal(0, count_lines(a, "hello b", i))
      assert.are.equal(0, count_lines(a, "link b", i))
      assert.is_true(alive(a))
      must_see(c, "msg a 5", 2, #lines(c))
      signal(a, "TERM")
      must_see(a, "exit", 2)
    end)
  end

  it("MEMBER frames from a peer reach on_frame", function()
    local port = base_port()
    local a = start("a", port, { peer("b", port + 1) })
    local b = start("b", port + 1, { peer("a", port) })
    must_see(a, "msg b 5")
    local s = assert(socket.connect("127.0.0.1", port))
    assert(s:send(hello("b") .. wire.frame(6, "add d") .. wire.frame(3, "fwd")))
    must_see(a, "frame b 6 add d")
    must_see(a, "frame b 3 fwd")
    s:close()
    must_see(b, "msg a 5", 2, #lines(b))
    assert.are.equal(0, bad_frames(a))
  end)
end)
