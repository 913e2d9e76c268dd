-- scripts/check-layers.lua (make lint): each rule of README "Layout and
-- development" is broken once in a small tree of its own, and the checker
-- must name the break; the clean tree and the real one pass.
local ROOT = assert(io.popen("pwd")):read("l")
local CHECKER = ROOT .. "/scripts/check-layers.lua"

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  return ok == true, out
end

local function write(path, text)
  assert(os.execute("mkdir -p " .. path:match("^(.*)/")))
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- A tree with one file per layer that keeps every rule, objects built.
local CLEAN = {
  ["src/base/common.h"] = "#include <stdint.h>\nint base_fn(void);\n",
  ["src/base/common.c"] = '#include "base/common.h"\n#include <time.h>\n' ..
                          "int base_fn(void) { return (int)time(0); }\n",
  ["src/core/raft.h"] = '#include "base/common.h"\nint core_fn(int now);\n',
  ["src/core/raft.c"] = '#include "core/raft.h"\nint core_fn(int now) { return now + 1; }\n',
  ["src/store/wal.c"] = '#include "core/raft.h"\n#include <unistd.h>\n' ..
                        "int wal_fn(void) { return core_fn(base_fn()); }\n",
  ["src/agent/agent.c"] = '#include "core/raft.h"\nint agent_fn(void) { return core_fn(2); }\n',
}

local function tree(changes)
  local dir = os.tmpname()
  os.remove(dir)
  for path, text in pairs(CLEAN) do
    if changes[path] == nil then write(dir .. "/" .. path, text) end
  end
  for path, text in pairs(changes) do
    if text then write(dir .. "/" .. path, text) end
  end
  local ok, out = sh(string.format(
    "cd %s && for c in src/*/*.c; do l=$(basename $(dirname $c)); mkdir -p obj/$l && " ..
    "cc -c -Isrc -I/usr/include/lua5.4 $c -o obj/$l/$(basename $c .c).o || exit 1; done", dir))
  assert(ok, out)
  return dir
end

local function check(changes)
  local dir = tree(changes)
  local ok, out = sh(string.format("cd %s && lua5.4 %s obj", dir, CHECKER))
  os.execute("rm -rf " .. dir)
  return ok, out
end

describe("the layer checker", function()
  it("passes a tree that keeps every rule", function()
    local ok, out = check({})
    assert.is_true(ok, out)
    assert.matches("no cycles", out)
  end)

  it("passes the real tree (make test builds it first)", function()
    local ok, out = sh("lua5.4 " .. CHECKER .. " build/pic")
    assert.is_true(ok, out)
  end)

  it("refuses an include from a higher layer", function()
    local ok, out = check({
      ["src/agent/agent.h"] = "int agent_fn(void);\n",
      ["src/base/log.c"] = '#include "agent/agent.h"\nint log_fn(void) { return 0; }\n',
    })
    assert.is_false(ok)
    assert.matches('src/base/log.c:1: base/ may not include "agent/agent.h"', out, 1, true)
  end)

  it("refuses an include between folders on one floor", function()
    local ok, out = check({
      ["src/store/wal.h"] = "int wal_fn(void);\n",
      ["src/net/net.c"] = '#include "store/wal.h"\nint net_fn(void) { return 0; }\n',
    })
    assert.is_false(ok)
    assert.matches('src/net/net.c:1: net/ may not include "store/wal.h"', out, 1, true)
  end)

  it("refuses an include that does not name its layer", function()
    local ok, out = check({
      ["src/core/raft.c"] = '#include "raft.h"\nint core_fn(int now) { return now; }\n',
    })
    assert.is_false(ok)
    assert.matches('src/core/raft.c:1: include "raft.h" by its layer path', out, 1, true)
  end)

  it("refuses libev, Lua, threads, unistd and time in the core, also through a header", function()
    for _, h in ipairs({ "ev.h", "lua.h", "pthread.h", "unistd.h", "time.h" }) do
      local ok, out = check({
        ["src/base/clock.h"] = "#include <" .. h .. ">\n",
        ["src/core/raft.c"] = '#include "core/raft.h"\n#include "base/clock.h"\n' ..
                              "int core_fn(int now) { return now; }\n",
      })
      assert.is_false(ok, h)
      assert.matches("src/core/raft.c: the core may not include <" .. h .. ">", out, 1, true)
      assert.matches("src/core/raft.c -> src/base/clock.h", out, 1, true)
    end
  end)

  it("refuses a core file that reads a clock", function()
    local ok, out = check({
      ["src/core/raft.c"] = '#include "core/raft.h"\nstruct timespec;\n' ..
                            "int clock_gettime(int, struct timespec *);\n" ..
                            "int core_fn(int now) { return now + clock_gettime(0, 0); }\n",
    })
    assert.is_false(ok)
    assert.matches("src/core/raft.c: the core may not read a clock (clock_gettime)", out, 1, true)
  end)

  it("keeps the SDK header to sdk/ and above", function()
    local ok, out = check({
      ["src/core/raft.c"] = '#include "core/raft.h"\n#include <qcluster.h>\n' ..
                            "int core_fn(int now) { return now; }\n",
      ["src/qcluster.h"] = "",
    })
    assert.is_false(ok)
    assert.matches("src/core/raft.c:2: <qcluster.h> is the SDK", out, 1, true)
  end)

  it("finds a cycle of calls between files, however long", function()
    local ok, out = check({
      ["src/agent/agent.c"] = '#include "core/raft.h"\nint member_fn(void);\n' ..
                              "int agent_fn(void) { return core_fn(2) + member_fn(); }\n",
      ["src/agent/membership.c"] = "int peer_fn(void);\nint member_fn(void) { return peer_fn(); }\n",
      ["src/agent/peer.c"] = "int agent_fn(void);\nint peer_fn(void) { return agent_fn(); }\n",
    })
    assert.is_false(ok)
    assert.matches("cycle between files: agent/agent -(member_fn)-> agent/membership, " ..
                   "agent/membership -(peer_fn)-> agent/peer, agent/peer -(agent_fn)-> agent/agent",
                   out, 1, true)
  end)
end)
