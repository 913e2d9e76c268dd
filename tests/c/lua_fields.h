/* Test-only: setting a field of the table on top of a Lua stack, for the
 * test modules and drivers that hand C records to the specs. */
#ifndef QC_TEST_LUA_FIELDS_H
#define QC_TEST_LUA_FIELDS_H

#include <lua.h>

/* A NULL string leaves the field unset (nil). */
static inline void set_str(lua_State *L, const char *k, const char *v)
{
    if (!v) return;
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

static inline void set_int(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

static inline void set_bool(lua_State *L, const char *k, int v)
{
    lua_pushboolean(L, v);
    lua_setfield(L, -2, k);
}

#endif
