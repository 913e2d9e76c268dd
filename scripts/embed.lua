-- Writes a C file holding each given file, looked up through qc_embedded_lookup():
-- a Lua source by its module name ("lua/config.lua" -> "config"), any other
-- file by the path it was given as ("ui/index.html").
local out = { '#include <stddef.h>\n#include <string.h>\n' }
local names = {}
for i, path in ipairs(arg) do
  local f = assert(io.open(path, "rb"))
  local src = f:read("a")
  f:close()
  names[i] = path:match("^lua/([^/]+)%.lua$") or path
  assert(not names[i]:find('["\\]'), "embed: name needs no C escaping: " .. path)
  local bytes = {}
  for j = 1, #src do bytes[j] = tostring(src:byte(j)) end
  bytes[#bytes + 1] = "0"
  out[#out + 1] = string.format("static const char src_%d[] = {%s};\n", i, table.concat(bytes, ","))
end
out[#out + 1] = "const char *qc_embedded_lookup(const char *name, size_t *len)\n{\n"
for i, name in ipairs(names) do
  out[#out + 1] = string.format(
    '    if (strcmp(name, "%s") == 0) { *len = sizeof src_%d - 1; return src_%d; }\n', name, i, i)
end
out[#out + 1] = "    (void)len;\n    return NULL;\n}\n"
io.write(table.concat(out))
