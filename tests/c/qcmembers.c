/* Test-only Lua module over the member list codec (src/core/members.c): CONFIG
 * entry data, member lists as userdata, the MEMBER and JOIN payloads, the
 * core's reading of a member list, and the C side of the config's
 * membership keys (qc_config_load). Never linked into the agent. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <string.h>

#include "base/common.h"
#include "base/json.h"
#include "core/members.h"
#include "lua/config.h"
#include "lua_member.h"

#define LIST_MT "qcmembers.list"

static int push_error(lua_State *L, int rc)
{
    lua_pushnil(L);
    lua_pushstring(L, qc_strerror(rc));
    return 2;
}

static int push_buf(lua_State *L, qc_buf *b, int rc)
{
    if (rc) {
        qc_buf_free(b);
        return push_error(L, rc);
    }
    lua_pushlstring(L, b->data ? (const char *)b->data : "", b->len);
    qc_buf_free(b);
    return 1;
}

/* ---- records <-> tables ------------------------------------------------ */

static const char *opt_str(lua_State *L, int t, const char *key)
{
    lua_getfield(L, t, key);
    const char *s = lua_tostring(L, -1); /* kept alive by the table */
    lua_pop(L, 1);
    return s;
}

static int opt_int(lua_State *L, int t, const char *key, int def)
{
    lua_getfield(L, t, key);
    int v = lua_isnil(L, -1) ? def : (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

/* A record view of the table at t: its strings belong to the table. The
 * role is a name ("voter", ...; an unknown name is -1, absent is voter) or a
 * number; metadata is JSON text or nil. */
static qc_member_rec rec_of(lua_State *L, int t)
{
    luaL_checktype(L, t, LUA_TTABLE);
    qc_member_rec m = {0};
    m.identifier = (char *)opt_str(L, t, "identifier");
    m.host = (char *)opt_str(L, t, "host");
    m.metadata = (char *)opt_str(L, t, "metadata");
    m.port = opt_int(L, t, "port", 0);
    m.priority = opt_int(L, t, "priority", 1);
    lua_getfield(L, t, "role");
    if (lua_type(L, -1) == LUA_TNUMBER)
        m.role = (int)lua_tointeger(L, -1);
    else if (!lua_isnil(L, -1))
        m.role = qc_member_role_parse(lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_getfield(L, t, "voting");
    m.voting = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return m;
}

static void push_rec(lua_State *L, const qc_member_rec *m)
{
    push_rec_fields(L, m, 1);
    set_int(L, "flags", qc_member_flags(m));
}

static void push_list(lua_State *L, const qc_members *ms)
{
    lua_createtable(L, (int)ms->n, 0);
    for (size_t i = 0; i < ms->n; i++) {
        push_rec(L, &ms->v[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

/* ---- lists as userdata ------------------------------------------------- */

static qc_members *check_list(lua_State *L, int idx) { return luaL_checkudata(L, idx, LIST_MT); }

static qc_members *new_list(lua_State *L)
{
    qc_members *ms = lua_newuserdatauv(L, sizeof *ms, 0);
    memset(ms, 0, sizeof *ms);
    luaL_setmetatable(L, LIST_MT);
    return ms;
}

static int l_list_gc(lua_State *L)
{
    qc_members_free(check_list(L, 1));
    return 0;
}

/* qcmembers.new([{rec...}]) -> list | nil, err (put in order) */
static int l_new(lua_State *L)
{
    int has = !lua_isnoneornil(L, 1);
    if (has) luaL_checktype(L, 1, LUA_TTABLE);
    qc_members *ms = new_list(L);
    lua_Integer n = has ? (lua_Integer)lua_rawlen(L, 1) : 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        qc_member_rec r = rec_of(L, lua_gettop(L));
        int rc = qc_members_put(ms, &r);
        lua_pop(L, 1);
        if (rc) return push_error(L, rc);
    }
    return 1;
}

/* list:put(rec) -> true | nil, err */
static int l_put(lua_State *L)
{
    qc_members *ms = check_list(L, 1);
    qc_member_rec r = rec_of(L, 2);
    int rc = qc_members_put(ms, &r);
    if (rc) return push_error(L, rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* list:remove(identifier) -> true | nil, err */
static int l_remove(lua_State *L)
{
    int rc = qc_members_remove(check_list(L, 1), luaL_checkstring(L, 2));
    if (rc) return push_error(L, rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* list:find(identifier) -> 1-based index | nil */
static int l_find(lua_State *L)
{
    int i = qc_members_find(check_list(L, 1), luaL_checkstring(L, 2));
    if (i < 0) return 0;
    lua_pushinteger(L, i + 1);
    return 1;
}

/* list:find_id(id) -> 1-based index | nil */
static int l_find_id(lua_State *L)
{
    int i = qc_members_find_id(check_list(L, 1), (uint64_t)luaL_checkinteger(L, 2));
    if (i < 0) return 0;
    lua_pushinteger(L, i + 1);
    return 1;
}

static int l_records(lua_State *L)
{
    push_list(L, check_list(L, 1));
    return 1;
}

static int l_len(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check_list(L, 1)->n);
    return 1;
}

/* list:copy() -> list | nil, err */
static int l_copy(lua_State *L)
{
    qc_members *src = check_list(L, 1);
    qc_members *dst = new_list(L);
    int rc = qc_members_copy(src, dst);
    return rc ? push_error(L, rc) : 1;
}

/* list:encode() -> CONFIG entry data | nil, err */
static int l_list_encode(lua_State *L)
{
    qc_buf b = {0};
    int rc = qc_members_encode(check_list(L, 1), &b);
    return push_buf(L, &b, rc);
}

/* qcmembers.encode({rec...}) -> CONFIG entry data | nil, err. The records
 * go in as they are (no put), so invalid lists reach the encoder. */
static int l_encode(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t n = (size_t)lua_rawlen(L, 1);
    qc_member_rec *v = lua_newuserdatauv(L, (n ? n : 1) * sizeof *v, 0);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 1, (lua_Integer)i + 1);
        v[i] = rec_of(L, lua_gettop(L));
        lua_pop(L, 1);
    }
    qc_members ms = {v, n};
    qc_buf b = {0};
    int rc = qc_members_encode(&ms, &b);
    return push_buf(L, &b, rc);
}

/* qcmembers.decode(data) -> {rec...} | nil, err */
static int l_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    qc_members ms;
    int rc = qc_members_decode((const uint8_t *)s, len, &ms);
    if (rc) return push_error(L, rc);
    push_list(L, &ms);
    qc_members_free(&ms);
    return 1;
}

/* ---- the core's list --------------------------------------------------- */

/* qcmembers.conf_read(data) -> {{id, flags}...}, used | nil, err */
static int l_conf_read(lua_State *L)
{
    size_t len, n, used;
    const char *s = luaL_checklstring(L, 1, &len);
    qc_member core[QC_RAFT_MAX_MEMBERS];
    int rc = qc_raft_conf_read((const uint8_t *)s, len, core, &n, &used);
    if (rc) return push_error(L, rc);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_createtable(L, 0, 2);
        set_int(L, "id", (lua_Integer)core[i].id);
        set_int(L, "flags", core[i].flags);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_pushinteger(L, (lua_Integer)used);
    return 2;
}

/* qcmembers.conf_write({{id, flags}...}) -> the core's list bytes */
static int l_conf_write(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t n = (size_t)lua_rawlen(L, 1);
    luaL_argcheck(L, n <= QC_RAFT_MAX_MEMBERS, 1, "too many members");
    qc_member core[QC_RAFT_MAX_MEMBERS];
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 1, (lua_Integer)i + 1);
        lua_getfield(L, -1, "id");
        lua_getfield(L, -2, "flags");
        core[i] = (qc_member){.id = (uint64_t)lua_tointeger(L, -2),
                              .flags = (uint8_t)lua_tointeger(L, -1)};
        lua_pop(L, 3);
    }
    size_t size = qc_raft_conf_size(n);
    uint8_t buf[2 + 9 * QC_RAFT_MAX_MEMBERS];
    luaL_argcheck(L, size <= sizeof buf, 1, "unexpected list size");
    qc_raft_conf_write(buf, core, n);
    lua_pushlstring(L, (const char *)buf, size);
    return 1;
}

/* ---- records, requests, answers ---------------------------------------- */

/* qcmembers.validate(rec) -> true | nil, err */
static int l_validate(lua_State *L)
{
    qc_member_rec r = rec_of(L, 1);
    int rc = qc_member_rec_validate(&r);
    if (rc) return push_error(L, rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* qcmembers.flags(rec) -> core flags */
static int l_flags(lua_State *L)
{
    qc_member_rec r = rec_of(L, 1);
    lua_pushinteger(L, qc_member_flags(&r));
    return 1;
}

static int l_rec_encode(lua_State *L)
{
    qc_member_rec r = rec_of(L, 1);
    qc_buf b = {0};
    int rc = qc_member_rec_encode(&r, &b);
    return push_buf(L, &b, rc);
}

static int l_rec_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    qc_member_rec r;
    int rc = qc_member_rec_decode((const uint8_t *)s, len, &r);
    if (rc) return push_error(L, rc);
    push_rec(L, &r);
    qc_member_rec_free(&r);
    return 1;
}

static const char *const op_names[] = {"join", "leave", "update", NULL};

/* qcmembers.request_encode({op = "join", id = N, member = rec}) */
static int l_request_encode(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    qc_member_request req = {0};
    lua_getfield(L, 1, "op");
    req.op = lua_type(L, -1) == LUA_TNUMBER ? (int)lua_tointeger(L, -1)
                                            : luaL_checkoption(L, -1, NULL, op_names) + 1;
    lua_getfield(L, 1, "id");
    req.id = (uint64_t)lua_tointeger(L, -1);
    lua_getfield(L, 1, "member");
    req.rec = rec_of(L, lua_gettop(L));
    qc_buf b = {0};
    int rc = qc_member_request_encode(&req, &b);
    return push_buf(L, &b, rc);
}

/* qcmembers.request_decode(data) -> {op, id, member} | nil, err */
static int l_request_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    qc_member_request req;
    int rc = qc_member_request_decode((const uint8_t *)s, len, &req);
    if (rc) return push_error(L, rc);
    lua_createtable(L, 0, 3);
    set_str(L, "op", op_names[req.op - 1]);
    set_int(L, "id", (lua_Integer)req.id);
    push_rec(L, &req.rec);
    lua_setfield(L, -2, "member");
    qc_member_request_free(&req);
    return 1;
}

/* qcmembers.answer_encode({ok, retry, error, leader}) */
static int l_answer_encode(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    qc_join_answer a = {0};
    lua_getfield(L, 1, "ok");
    a.ok = lua_toboolean(L, -1);
    lua_getfield(L, 1, "retry");
    a.retry = lua_toboolean(L, -1);
    a.error = (char *)opt_str(L, 1, "error");
    a.leader = (char *)opt_str(L, 1, "leader");
    qc_buf b = {0};
    int rc = qc_join_answer_encode(&a, &b);
    return push_buf(L, &b, rc);
}

static int l_answer_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    qc_join_answer a;
    int rc = qc_join_answer_decode((const uint8_t *)s, len, &a);
    if (rc) return push_error(L, rc);
    lua_createtable(L, 0, 4);
    set_bool(L, "ok", a.ok);
    set_bool(L, "retry", a.retry);
    set_str(L, "error", a.error);
    set_str(L, "leader", a.leader);
    qc_join_answer_free(&a);
    return 1;
}

/* qcmembers.split_addr("host:port") -> host, port | nil, err */
static int l_split_addr(lua_State *L)
{
    char host[QC_MEMBER_HOST_MAX + 1];
    int port;
    int rc = qc_member_split_addr(luaL_checkstring(L, 1), host, sizeof host, &port);
    if (rc) return push_error(L, rc);
    lua_pushstring(L, host);
    lua_pushinteger(L, port);
    return 2;
}

static int l_hash_id(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)qc_hash_id(luaL_checkstring(L, 1)));
    return 1;
}

static int l_role_name(lua_State *L)
{
    lua_pushstring(L, qc_member_role_name((int)luaL_checkinteger(L, 1)));
    return 1;
}

static int l_role_parse(lua_State *L)
{
    lua_pushinteger(L, qc_member_role_parse(luaL_optstring(L, 1, NULL)));
    return 1;
}

/* ---- the config's membership keys, as src/lua/config.c copies them --------- */

static void push_config(lua_State *L, const qc_config *c)
{
    lua_createtable(L, 0, 12);
    set_str(L, "identifier", c->identifier);
    set_str(L, "role", qc_member_role_name(c->role));
    set_int(L, "priority", c->priority);
    set_bool(L, "preempt", c->preempt);
    set_int(L, "preempt_delay_ms", c->preempt_delay_ms);
    set_int(L, "max_voters", c->max_voters);
    set_int(L, "reap_after_ms", c->reap_after_ms);
    set_bool(L, "leave_on_stop", c->leave_on_stop);
    lua_createtable(L, (int)c->n_join, 0);
    for (size_t i = 0; i < c->n_join; i++) {
        lua_pushstring(L, c->join[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "join");
    lua_createtable(L, (int)c->n_peers, 0);
    for (size_t i = 0; i < c->n_peers; i++) {
        lua_createtable(L, 0, 6);
        set_str(L, "identifier", c->peers[i].identifier);
        set_str(L, "host", c->peers[i].host);
        set_int(L, "port", c->peers[i].port);
        set_str(L, "metadata", c->peers[i].metadata);
        set_str(L, "role", qc_member_role_name(c->peers[i].role));
        set_int(L, "priority", c->peers[i].priority);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "peers");
}

/* qcmembers.config(path) -> {...} | nil, "FILE: key: message". Loads in a
 * fresh state where every qcluster.* function returns nothing. */
static int l_config(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_State *C = luaL_newstate();
    if (!C) return push_error(L, QC_ENOMEM);
    luaL_openlibs(C);
    char err[1024] = "cannot set up the qcluster stub";
    int rc = luaL_dostring(C, "qcluster = setmetatable({}, {__index = function() "
                              "return function() end end})") == LUA_OK
                 ? QC_OK
                 : QC_ENOMEM;
    qc_config cfg;
    if (rc == QC_OK) rc = qc_config_load(C, path, &cfg, err, sizeof err);
    lua_close(C);
    if (rc) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    push_config(L, &cfg);
    qc_config_free(&cfg);
    return 1;
}

/* qcmembers.is_utf8(bytes) -> boolean (qc_json_is_utf8). */
static int l_is_utf8(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_pushboolean(L, qc_json_is_utf8((const uint8_t *)s, n));
    return 1;
}

/* qcmembers.check_utf8(json [, prefix [, first]]) -> true | nil, message
 * (qc_json_check_utf8; first defaults to 0). */
static int l_check_utf8(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *prefix = luaL_optstring(L, 2, NULL);
    int first = (int)luaL_optinteger(L, 3, 0);
    char why[256];
    if (qc_json_check_utf8(s, n, prefix, first, why, sizeof why) == QC_OK) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
}

static const luaL_Reg list_methods[] = {
    {"put", l_put},         {"remove", l_remove}, {"find", l_find},          {"find_id", l_find_id},
    {"records", l_records}, {"copy", l_copy},     {"encode", l_list_encode}, {NULL, NULL},
};

static const luaL_Reg module_fns[] = {
    {"new", l_new},
    {"encode", l_encode},
    {"decode", l_decode},
    {"conf_read", l_conf_read},
    {"conf_write", l_conf_write},
    {"validate", l_validate},
    {"flags", l_flags},
    {"rec_encode", l_rec_encode},
    {"rec_decode", l_rec_decode},
    {"request_encode", l_request_encode},
    {"request_decode", l_request_decode},
    {"answer_encode", l_answer_encode},
    {"answer_decode", l_answer_decode},
    {"split_addr", l_split_addr},
    {"hash_id", l_hash_id},
    {"role_name", l_role_name},
    {"role_parse", l_role_parse},
    {"config", l_config},
    {"is_utf8", l_is_utf8},
    {"check_utf8", l_check_utf8},
    {NULL, NULL},
};

int luaopen_qcmembers(lua_State *L);

int luaopen_qcmembers(lua_State *L)
{
    luaL_newmetatable(L, LIST_MT);
    luaL_newlib(L, list_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_list_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_len);
    lua_setfield(L, -2, "__len");
    lua_pop(L, 1);
    luaL_newlib(L, module_fns);
    lua_pushinteger(L, QC_RAFT_MAX_MEMBERS);
    lua_setfield(L, -2, "MAX_MEMBERS");
    lua_pushinteger(L, QC_RAFT_MAX_VOTERS);
    lua_setfield(L, -2, "MAX_VOTERS");
    lua_pushinteger(L, QC_MEMBER_VOTER);
    lua_setfield(L, -2, "VOTER");
    lua_pushinteger(L, QC_MEMBER_NO_LEAD);
    lua_setfield(L, -2, "NO_LEAD");
    return 1;
}
