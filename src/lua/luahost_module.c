/* The qcluster module: the functions hooks call that read the view or the
 * node (is_leader, term, peers, checks, ...), log and now, the tables of
 * the module and of qcluster.kv, and their registration (luahost_open_all), where
 * each function is put behind the loop-thread proxy unless it runs in
 * place. exec and after (luahost_exec.c) and kv and set_metadata
 * (luahost_kv.c) are only listed here. Part of the Lua host; its private
 * interface is luahost_int.h. */
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>

#include "base/common.h"
#include "base/log.h"
#include "lua/luahost_int.h"
#include "lua/luajson.h"

/* ---- the rest of the qcluster module ----------------------------------- */

/* The hook event being handled, when it is one (its snapshot), else NULL. */
static const job *event_of(const qc_lua *h)
{
    const job *j = h->current;
    return j && j->kind == JOB_HOOK ? j : NULL;
}

/* Whether the node moved to another term since the event being handled. */
static int event_stale(const qc_lua *h)
{
    const job *j = event_of(h);
    return j && luahost_live_term(h->view) != j->snap_term;
}

/* is_leader(): leads now, in the event's term when a hook runs (so a
 * late hook of an older term never sees itself leading). */
static int l_is_leader(lua_State *L)
{
    qc_lua *h = luahost_of(L);
    const qc_view *v = h->view;
    lua_pushboolean(L, v && v->is_leader && v->is_leader(v->ud) && !event_stale(h));
    return 1;
}

/* term(): the term as of the event a hook handles; now for callbacks. */
static int l_term(lua_State *L)
{
    qc_lua *h = luahost_of(L);
    const job *j = event_of(h);
    lua_pushinteger(L, (lua_Integer)(j ? j->snap_term : luahost_live_term(h->view)));
    return 1;
}

/* get_leader_info(): the leader now, or the leader as of the event when
 * the node has moved to another term since. */
static int l_leader(lua_State *L)
{
    qc_lua *h = luahost_of(L);
    const qc_view *v = h->view;
    if (event_stale(h)) {
        const job *j = event_of(h);
        if (j->has_snap_leader)
            luahost_push_peer(L, &j->snap_leader, 0);
        else
            lua_pushnil(L);
        return 1;
    }
    qc_peer_info p = {0};
    if (!v || !v->leader || v->leader(v->ud, &p) != 0) {
        lua_pushnil(L);
        return 1;
    }
    luahost_push_peer(L, &p, 0);
    return 1;
}

static int l_self(lua_State *L)
{
    const qc_view *v = luahost_of(L)->view;
    qc_peer_info p = {0};
    if (!v || !v->self) {
        lua_pushnil(L);
        return 1;
    }
    v->self(v->ud, &p);
    luahost_push_peer(L, &p, 1);
    return 1;
}

static int l_peers(lua_State *L)
{
    const qc_view *v = luahost_of(L)->view;
    qc_peer_info small[32];
    qc_peer_info *ps = small;
    size_t n = v && v->peers ? v->peers(v->ud, small, 32) : 0;
    if (n > 32) {
        ps = lua_newuserdatauv(L, n * sizeof *ps, 0);
        size_t again = v->peers(v->ud, ps, n);
        if (again < n) n = again;
    }
    lua_createtable(L, n > 1024 ? 1024 : (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        luahost_push_peer(L, &ps[i], 1);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, qc_wall_time());
    return 1;
}

static int l_log(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    int level = qc_log_parse_level(name);
    luaL_argcheck(L, level >= 0, 1, "expected \"debug\", \"info\", \"warn\" or \"error\"");
    const char *msg = luaL_tolstring(L, 2, NULL);
    qc_log(level, "hook", "%s", msg);
    return 0;
}

/* qcluster.checks() -> {{name, kind, status, output, since}, ...}: this
 * node's health checks ({} when it has none). */
static int l_checks(lua_State *L)
{
    const qc_view *v = luahost_of(L)->view;
    qc_check_info small[16], *cs = small;
    size_t n = v && v->checks ? v->checks(v->ud, small, 16) : 0;
    if (n > 16) {
        cs = lua_newuserdatauv(L, n * sizeof *cs, 0);
        size_t again = v->checks(v->ud, cs, n);
        if (again < n) n = again;
    }
    lua_createtable(L, (int)(n > 64 ? 64 : n), 0);
    for (size_t i = 0; i < n; i++) {
        lua_createtable(L, 0, 6);
        lua_pushstring(L, cs[i].name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, cs[i].kind);
        lua_setfield(L, -2, "kind");
        lua_pushstring(L, cs[i].passing ? "passing" : "failing");
        lua_setfield(L, -2, "status");
        lua_pushstring(L, cs[i].output ? cs[i].output : "");
        lua_setfield(L, -2, "output");
        lua_pushnumber(L, cs[i].since);
        lua_setfield(L, -2, "since");
        lua_pushnumber(L, cs[i].duration);
        lua_setfield(L, -2, "duration");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* check_pass/check_fail(name [, output]) -> true: a ttl check's report;
 * raises for no such check or one that is not a ttl check. */
static int check_report(lua_State *L, int pass, const char *fn)
{
    const char *name = luaL_checkstring(L, 1);
    size_t len = 0;
    const char *out = luaL_optlstring(L, 2, "", &len);
    const qc_view *v = luahost_of(L)->view;
    int rc = v && v->check_report ? v->check_report(v->ud, name, pass, out, len) : QC_ENOTFOUND;
    if (rc == QC_ENOTFOUND) return luaL_error(L, "%s: no check named '%s'", fn, name);
    if (rc == QC_EINVAL) return luaL_error(L, "%s: '%s' is not a ttl_ms check", fn, name);
    if (rc != QC_OK) return luaL_error(L, "%s: %s", fn, qc_strerror(rc));
    lua_pushboolean(L, 1);
    return 1;
}

static int l_check_pass(lua_State *L) { return check_report(L, 1, "check_pass"); }
static int l_check_fail(lua_State *L) { return check_report(L, 0, "check_fail"); }

static int l_no_exit(lua_State *L)
{
    return luaL_error(L, "os.exit is not allowed inside the agent");
}

static const luaL_Reg qcluster_fns[] = {
    {"is_leader", l_is_leader},
    {"get_leader_info", l_leader},
    {"self", l_self},
    {"peers", l_peers},
    {"term", l_term},
    {"now", l_now},
    {"log", l_log},
    {"exec", luahost_l_exec},
    {"after", luahost_l_after},
    {"set_metadata", luahost_l_set_metadata},
    {"checks", l_checks},
    {"check_pass", l_check_pass},
    {"check_fail", l_check_fail},
    {NULL, NULL},
};

/* Functions that stay on the thread that runs hooks: they touch nothing of
 * the loop's (watches are the Lua side's; the log is thread-safe). */
static int runs_in_place(lua_CFunction f)
{
    return f == l_now || f == l_log || f == luahost_l_kv_watch;
}

/* Pushes a table of fns, each behind l_proxy unless runs_in_place (prefix:
 * "qcluster." or "qcluster.kv.", for argument errors). */
static void push_lib(lua_State *L, const luaL_Reg *fns, const char *prefix)
{
    lua_newtable(L);
    for (; fns->name; fns++) {
        char name[64];
        snprintf(name, sizeof name, "%s%s", prefix, fns->name);
        if (runs_in_place(fns->func))
            lua_pushcfunction(L, fns->func);
        else
            luahost_push_proxied(L, fns->func, name);
        lua_setfield(L, -2, fns->name);
    }
}

/* Pushes the qcluster.kv table; sets up the metatables it needs. */
static void open_kv(lua_State *L)
{
    luaL_newmetatable(L, KV_SYNC_MT);
    lua_pushcfunction(L, luahost_kv_sync_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, KV_WATCH_MT);
    lua_newtable(L);
    lua_pushcfunction(L, luahost_l_watch_cancel);
    lua_setfield(L, -2, "cancel");
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, luahost_l_watch_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    push_lib(L, luahost_kv_fns, "qcluster.kv.");
}

/* Runs under lua_pcall: standard libraries and the qcluster module. */
int luahost_open_all(lua_State *L)
{
    luaL_openlibs(L);
    /* A hook must not end the agent. */
    lua_getglobal(L, "os");
    lua_pushcfunction(L, l_no_exit);
    lua_setfield(L, -2, "exit");
    lua_pop(L, 1);
    push_lib(L, qcluster_fns, "qcluster.");
    open_kv(L);
    lua_setfield(L, -2, "kv");
    lua_newtable(L);
    qc_luajson_register(L);
    lua_setfield(L, -2, "json");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_pushstring(L, QC_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushvalue(L, -1);
    lua_setglobal(L, "qcluster");
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "qcluster");
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "qcluster.hooks");
    return 0;
}
