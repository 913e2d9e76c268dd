-- GET /ui from a live agent, without a browser: the page compiled into the
-- binary (the agent runs from another directory), its headers, HEAD, and
-- that a read-only page needs no API token.
local A = require("agents")

describe("the status page at /ui", function()
  local c

  setup(function()
    c = A.cluster(1, { extra = { api_token = "ui-spec-token" } })
    A.start_all(c)
    assert.is_truthy(A.wait_for(function()
      return A.http(c.nodes[1].api, "GET", "/v1/status") == 200
    end, 15), "the agent's API did not come up")
  end)

  teardown(function() A.stop(c) end)

  it("serves ui/index.html as built in, with no token and safe headers", function()
    local status, body, h = A.http(c.nodes[1].api, "GET", "/ui")
    assert.are.equal(200, status)
    assert.are.equal(A.read(A.root .. "/ui/index.html"), body)
    assert.are.equal("text/html; charset=utf-8", h["content-type"])
    assert.are.equal("nosniff", h["x-content-type-options"])
    assert.matches("no%-store", h["cache-control"])
    local csp = h["content-security-policy"]
    assert.is_string(csp)
    assert.matches("default%-src 'none'", csp)
    assert.matches("connect%-src 'self'", csp)
    assert.matches("frame%-ancestors 'none'", csp)
  end)

  it("needs no external asset and reads only the API", function()
    local _, body = A.http(c.nodes[1].api, "GET", "/ui")
    assert.is_nil(body:find("https?://"))
    assert.is_nil(body:find("<script[^>]+src"))
    assert.is_nil(body:find("<link[^>]+stylesheet"))
    assert.is_nil(body:find("innerHTML", 1, true))
    for _, path in ipairs({ "/v1/status", "/v1/members", "/v1/leader", "/v1/history" }) do
      assert.is_truthy(body:find(path, 1, true), path)
    end
  end)

  it("answers HEAD with the headers of GET and no body", function()
    local status, hbody, h = A.http(c.nodes[1].api, "HEAD", "/ui")
    assert.are.equal(200, status)
    assert.are.equal("", hbody)
    assert.are.equal("text/html; charset=utf-8", h["content-type"])
    assert.are.equal("nosniff", h["x-content-type-options"])
    assert.is_string(h["content-security-policy"])
  end)

  it("takes no write", function()
    local status, _, h = A.http(c.nodes[1].api, "POST", "/ui", "{}",
      { authorization = "Bearer ui-spec-token" })
    assert.are.equal(405, status)
    assert.are.equal("GET, HEAD", h["allow"])
  end)
end)
