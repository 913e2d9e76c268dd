-- The nemesis's choice of faults (no cluster needed): every kind comes in
-- the first faults of a run, so a short run (the gate's) exercises them all.
package.path = "./tests/chaos/?.lua;" .. package.path
local nemesis = require("nemesis")

local function fresh()
  return nemesis.new({ n = 5, nodes = {} }, "/dev/null")
end

describe("chaos nemesis", function()
  it("draws every kind once in the first faults of a run, whatever the seed", function()
    for seed = 1, 50 do
      math.randomseed(seed)
      local nem, seen = fresh(), {}
      for _ = 1, #nemesis.KINDS do
        local k = nem:choose()
        assert.is_nil(seen[k], "seed " .. seed .. ": " .. k .. " twice")
        seen[k] = true
      end
      for _, k in ipairs(nemesis.KINDS) do assert.is_true(seen[k], "seed " .. seed .. ": no " .. k) end
    end
  end)

  it("then goes on drawing kinds of the menu, and leaves the menu's order alone", function()
    local before = table.concat(nemesis.KINDS, " ")
    math.randomseed(1)
    local nem, known = fresh(), {}
    for _, k in ipairs(nemesis.KINDS) do known[k] = true end
    for _ = 1, 200 do
      local k = nem:choose()
      assert.is_true(known[k], tostring(k))
    end
    assert.are.equal(before, table.concat(nemesis.KINDS, " "))
  end)
end)
