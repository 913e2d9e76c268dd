/* Test-only Lua module over the key-value state machine (src/core/kv.c): stores
 * as userdata, the command codec, apply, reads, snapshots and counters, plus
 * an apply loop in C for scripts/bench/kv_apply. Never linked into the
 * agent; holds no state outside its userdata. */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <string.h>

#include "base/common.h"
#include "core/kv.h"
#include "lua_fields.h"

#define STORE_MT "qckv.store"

static qc_kv **check_store(lua_State *L)
{
    qc_kv **kv = luaL_checkudata(L, 1, STORE_MT);
    if (!*kv) luaL_error(L, "store is closed");
    return kv;
}

static int push_error(lua_State *L, int rc)
{
    lua_pushnil(L);
    lua_pushstring(L, qc_strerror(rc));
    return 2;
}

static size_t opt_size(lua_State *L, int idx, const char *name)
{
    if (lua_isnoneornil(L, idx)) return 0;
    lua_getfield(L, idx, name);
    lua_Integer v = luaL_optinteger(L, -1, 0);
    lua_pop(L, 1);
    return v < 0 ? 0 : (size_t)v;
}

/* qckv.new([{max_key=, max_value=}]) -> store | nil, err */
static int l_new(lua_State *L)
{
    qc_kv_config cfg = {opt_size(L, 1, "max_key"), opt_size(L, 1, "max_value")};
    qc_kv **ud = lua_newuserdatauv(L, sizeof *ud, 0);
    *ud = NULL;
    luaL_setmetatable(L, STORE_MT);
    int rc = qc_kv_new(&cfg, ud);
    if (rc) return push_error(L, rc);
    return 1;
}

static int l_gc(lua_State *L)
{
    qc_kv **kv = luaL_checkudata(L, 1, STORE_MT);
    qc_kv_free(*kv);
    *kv = NULL;
    return 0;
}

static int push_buf(lua_State *L, qc_buf *b, int rc)
{
    if (rc) {
        qc_buf_free(b);
        return push_error(L, rc);
    }
    lua_pushlstring(L, (const char *)b->data, b->len);
    qc_buf_free(b);
    return 1;
}

/* qckv.encode_put(key, value, [cas], [request_id], [origin]) -> string */
static int l_encode_put(lua_State *L)
{
    size_t klen, vlen;
    const char *k = luaL_checklstring(L, 1, &klen);
    const char *v = luaL_checklstring(L, 2, &vlen);
    int64_t cas = luaL_optinteger(L, 3, QC_KV_CAS_NONE);
    uint64_t rid = (uint64_t)luaL_optinteger(L, 4, 0), origin = (uint64_t)luaL_optinteger(L, 5, 0);
    qc_buf b = {0};
    int rc = qc_kv_encode_put(&b, rid, origin, k, klen, v, vlen, cas);
    return push_buf(L, &b, rc);
}

/* qckv.encode_delete(key, [cas], [request_id], [origin]) -> string */
static int l_encode_delete(lua_State *L)
{
    size_t klen;
    const char *k = luaL_checklstring(L, 1, &klen);
    int64_t cas = luaL_optinteger(L, 2, QC_KV_CAS_NONE);
    uint64_t rid = (uint64_t)luaL_optinteger(L, 3, 0), origin = (uint64_t)luaL_optinteger(L, 4, 0);
    qc_buf b = {0};
    int rc = qc_kv_encode_delete(&b, rid, origin, k, klen, cas);
    return push_buf(L, &b, rc);
}

static const char *op_name(int op)
{
    switch (op) {
    case QC_KV_OP_PUT: return "put";
    case QC_KV_OP_DELETE: return "delete";
    default: return "none";
    }
}

/* qckv.decode(cmd) -> {op, key, value, cas, request_id, origin} | nil, err */
static int l_decode(lua_State *L)
{
    size_t len;
    const char *cmd = luaL_checklstring(L, 1, &len);
    qc_kv_cmd c;
    int rc = qc_kv_decode((const uint8_t *)cmd, len, &c);
    if (rc) return push_error(L, rc);
    lua_createtable(L, 0, 6);
    lua_pushstring(L, op_name(c.op));
    lua_setfield(L, -2, "op");
    lua_pushlstring(L, (const char *)c.key, c.klen);
    lua_setfield(L, -2, "key");
    if (c.value) {
        lua_pushlstring(L, (const char *)c.value, c.vlen);
        lua_setfield(L, -2, "value");
    }
    lua_pushinteger(L, c.cas);
    lua_setfield(L, -2, "cas");
    lua_pushinteger(L, (lua_Integer)c.request_id);
    lua_setfield(L, -2, "request_id");
    lua_pushinteger(L, (lua_Integer)c.origin);
    lua_setfield(L, -2, "origin");
    return 1;
}

static const char *status_name(int status)
{
    switch (status) {
    case QC_KV_OK: return "ok";
    case QC_KV_CONFLICT: return "conflict";
    case QC_KV_NOTFOUND: return "notfound";
    case QC_KV_INVALID: return "invalid";
    case QC_KV_TOOBIG: return "toobig";
    default: return "?";
    }
}

static void push_result(lua_State *L, const qc_kv_result *r)
{
    lua_createtable(L, 0, 9);
    lua_pushstring(L, status_name(r->status));
    lua_setfield(L, -2, "status");
    lua_pushstring(L, op_name(r->op));
    lua_setfield(L, -2, "op");
    set_int(L, "index", r->index);
    set_int(L, "revision", r->revision);
    set_int(L, "request_id", r->request_id);
    set_int(L, "origin", r->origin);
    if (r->key) {
        lua_pushlstring(L, (const char *)r->key, r->klen);
        lua_setfield(L, -2, "key");
    }
    if (r->value) {
        lua_pushlstring(L, (const char *)r->value, r->vlen);
        lua_setfield(L, -2, "value");
    }
    lua_pushboolean(L, r->status == QC_KV_OK && r->op == QC_KV_OP_DELETE);
    lua_setfield(L, -2, "deleted");
}

/* store:apply(index, cmd) -> result table | nil, err */
static int l_apply(lua_State *L)
{
    qc_kv **kv = check_store(L);
    uint64_t index = (uint64_t)luaL_checkinteger(L, 2);
    size_t len = 0;
    const char *cmd = luaL_optlstring(L, 3, NULL, &len);
    qc_kv_result res;
    int rc = qc_kv_apply(*kv, index, (const uint8_t *)cmd, len, &res);
    if (rc) return push_error(L, rc);
    push_result(L, &res);
    return 1;
}

/* store:noop(index) -> true | nil, err */
static int l_noop(lua_State *L)
{
    qc_kv **kv = check_store(L);
    int rc = qc_kv_apply_noop(*kv, (uint64_t)luaL_checkinteger(L, 2));
    if (rc) return push_error(L, rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* store:get(key) -> value, revision | nil */
static int l_get(lua_State *L)
{
    qc_kv **kv = check_store(L);
    size_t klen;
    const char *k = luaL_checklstring(L, 2, &klen);
    const uint8_t *v;
    size_t vlen;
    uint64_t rev;
    if (qc_kv_get(*kv, k, klen, &v, &vlen, &rev)) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushlstring(L, (const char *)v, vlen);
    lua_pushinteger(L, (lua_Integer)rev);
    return 2;
}

typedef struct list_ctx {
    lua_State *L;
    lua_Integer n, limit;
} list_ctx;

static int list_one(void *arg, const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen,
                    uint64_t revision)
{
    list_ctx *c = arg;
    lua_State *L = c->L;
    if (c->limit >= 0 && c->n >= c->limit) return 1;
    lua_createtable(L, 0, 3);
    lua_pushlstring(L, (const char *)key, klen);
    lua_setfield(L, -2, "key");
    lua_pushlstring(L, (const char *)value, vlen);
    lua_setfield(L, -2, "value");
    set_int(L, "revision", revision);
    lua_rawseti(L, -2, ++c->n);
    return 0;
}

/* store:list([prefix], [limit]) -> {{key, value, revision}, ...} */
static int l_list(lua_State *L)
{
    qc_kv **kv = check_store(L);
    size_t plen = 0;
    const char *prefix = luaL_optlstring(L, 2, "", &plen);
    list_ctx c = {L, 0, luaL_optinteger(L, 3, -1)};
    lua_newtable(L);
    qc_kv_list(*kv, prefix, plen, list_one, &c);
    return 1;
}

/* store:snapshot() -> string */
static int l_snapshot(lua_State *L)
{
    qc_kv **kv = check_store(L);
    qc_buf b = {0};
    int rc = qc_kv_snapshot(*kv, &b);
    return push_buf(L, &b, rc);
}

/* store:restore(data) -> true | nil, err */
static int l_restore(lua_State *L)
{
    qc_kv **kv = check_store(L);
    size_t len;
    const char *d = luaL_checklstring(L, 2, &len);
    int rc = qc_kv_restore(*kv, (const uint8_t *)d, len);
    if (rc) return push_error(L, rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* store:check(klen, vlen) -> true | nil, err */
static int l_check(lua_State *L)
{
    qc_kv **kv = check_store(L);
    lua_Integer k = luaL_checkinteger(L, 2), v = luaL_optinteger(L, 3, 0);
    int rc = qc_kv_check(*kv, (size_t)(k < 0 ? 0 : k), (size_t)(v < 0 ? 0 : v));
    if (rc) return push_error(L, rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* store:stats() -> {keys, bytes, applied_index, revision, puts, ...} */
static int l_stats(lua_State *L)
{
    qc_kv **kv = check_store(L);
    qc_kv_stats s;
    qc_kv_stats_get(*kv, &s);
    lua_createtable(L, 0, 9);
    set_int(L, "keys", s.keys);
    set_int(L, "bytes", s.bytes);
    set_int(L, "applied_index", s.applied_index);
    set_int(L, "revision", s.revision);
    set_int(L, "puts", s.puts);
    set_int(L, "deletes", s.deletes);
    set_int(L, "conflicts", s.conflicts);
    set_int(L, "notfound", s.notfound);
    set_int(L, "invalid", s.invalid);
    return 1;
}

/* store:verify() -> tree height | nil, err (see qc_kv_verify) */
static int l_verify(lua_State *L)
{
    qc_kv **kv = check_store(L);
    uint64_t h;
    int rc = qc_kv_verify(*kv, &h);
    if (rc) return push_error(L, rc);
    lua_pushinteger(L, (lua_Integer)h);
    return 1;
}

/* store:bench(n, keyspace, vsize, [del_every]) applies n puts of random-ish
 * keys from a fixed xorshift stream (and a delete every del_every), all
 * encoded and applied in C, so the caller can time the loop. */
static int l_bench(lua_State *L)
{
    qc_kv **kv = check_store(L);
    lua_Integer n = luaL_checkinteger(L, 2), space = luaL_checkinteger(L, 3);
    lua_Integer vsize = luaL_checkinteger(L, 4), del_every = luaL_optinteger(L, 5, 0);
    luaL_argcheck(L, space > 0 && vsize >= 0 && vsize <= 65536, 3, "bad sizes");
    uint8_t value[65536];
    memset(value, 'v', sizeof value);
    uint64_t x = 88172645463325252ull, index = qc_kv_applied_index(*kv);
    qc_buf b = {0};
    for (lua_Integer i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        char key[32];
        int klen =
            snprintf(key, sizeof key, "key/%016llx", (unsigned long long)(x % (uint64_t)space));
        b.len = 0;
        int rc =
            del_every && i % del_every == 0
                ? qc_kv_encode_delete(&b, (uint64_t)i, 1, key, (size_t)klen, -1)
                : qc_kv_encode_put(&b, (uint64_t)i, 1, key, (size_t)klen, value, (size_t)vsize, -1);
        if (!rc) rc = qc_kv_apply(*kv, ++index, b.data, b.len, NULL);
        if (rc) {
            qc_buf_free(&b);
            return push_error(L, rc);
        }
    }
    qc_buf_free(&b);
    lua_pushboolean(L, 1);
    return 1;
}

static const luaL_Reg store_methods[] = {
    {"apply", l_apply},       {"noop", l_noop},       {"get", l_get},     {"list", l_list},
    {"snapshot", l_snapshot}, {"restore", l_restore}, {"check", l_check}, {"stats", l_stats},
    {"bench", l_bench},       {"verify", l_verify},   {"close", l_gc},    {NULL, NULL},
};

static const luaL_Reg module_fns[] = {
    {"new", l_new},
    {"encode_put", l_encode_put},
    {"encode_delete", l_encode_delete},
    {"decode", l_decode},
    {NULL, NULL},
};

int luaopen_qckv(lua_State *L)
{
    luaL_newmetatable(L, STORE_MT);
    luaL_newlib(L, store_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newlib(L, module_fns);
    return 1;
}
