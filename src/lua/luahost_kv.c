/* qcluster.kv (local reads, writes and watches) and qcluster.set_metadata:
 * the bindings over the view's kv_* and set_metadata, and the requests
 * whose answers come later through the hook queue (luahost.c). The kv
 * table itself is registered by luahost_module.c. Part of the Lua host;
 * its private interface is luahost_int.h. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/common.h"
#include "base/log.h"
#include "lua/luahost_int.h"
#include "lua/luajson.h"

/* ---- requests the view answers later (kv writes, set_metadata) -------- */

static void req_unlink(qc_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        r->h->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

/* Registers the callback (stack index cb, 0 for none) and links a request
 * record of kind (JOB_KV, JOB_MEMBER). Raises only before anything is
 * linked; nothing may raise after it until the view has the request. */
static qc_req *req_start(lua_State *L, int cb, int kind, const char *what, const char *label)
{
    qc_lua *h = luahost_of(L);
    int ref = LUA_NOREF;
    if (cb) {
        lua_pushvalue(L, cb);
        ref = luaL_ref(L, LUA_REGISTRYINDEX); /* may raise: nothing is ours yet */
    }
    qc_req *r = calloc(1, sizeof *r);
    if (!r) {
        if (ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, ref);
        luaL_error(L, "out of memory");
    }
    r->fn_ref = ref;
    r->h = h;
    r->kind = kind;
    r->what = what;
    r->label = label;
    r->next = h->reqs;
    if (h->reqs) h->reqs->prev = r;
    h->reqs = r;
    return r;
}

/* Drops a request the view never got (the call raised before it). */
static void req_cancel(qc_lua *h, qc_req *r)
{
    req_unlink(r);
    if (r->fn_ref != LUA_NOREF) luaL_unref(h->L, LUA_REGISTRYINDEX, r->fn_ref);
    free(r);
}

/* The view's answer to r (inside its done: no Lua runs here). Queues the
 * callback with status, revision (JOB_KV) and message (copied: the failure
 * text a JOB_MEMBER callback gets), or logs a failure that has no callback
 * to see it. Frees r. */
static void req_answer(qc_req *r, int status, uint64_t revision, const char *message)
{
    qc_lua *h = r->h;
    if (!h) { /* the host was freed first: nothing left to call */
        free(r);
        return;
    }
    req_unlink(r);
    int ok = r->kind == JOB_KV ? status == QC_KV_OK : status == QC_OK;
    if (!message) message = qc_strerror(status);
    if (r->fn_ref == LUA_NOREF) {
        if (!ok) qc_log(QC_LOG_WARN, "hook", "%s without a callback failed: %s", r->what, message);
        free(r);
        return;
    }
    int keep_msg = r->kind == JOB_MEMBER && !ok;
    job *j = luahost_job_new(r->label, keep_msg ? luahost_str_size(message) : 0);
    if (!j) {
        qc_log(QC_LOG_ERROR, "hook", "%s: out of memory, callback dropped", r->label);
        luahost_drop_ref(h, r->fn_ref);
    } else {
        char *cur = j->strings + luahost_str_size(r->label);
        j->kind = r->kind;
        j->fn_ref = r->fn_ref;
        j->status = status;
        j->revision = revision;
        if (keep_msg) j->reason = luahost_put_str(&cur, message);
        luahost_enqueue(h, j);
    }
    free(r);
}

/* ---- kv ---------------------------------------------------------------- */

/* qcluster.kv: reads (get, list) are LOCAL and may be stale: a hook must
 * never block, and a linearizable read needs a round trip to the leader.
 * The view answers a stale read before its call returns; the answer is
 * copied here (no Lua call runs inside the view's callbacks) and pushed
 * after. Writes (put, delete) go through the view without blocking; their
 * callback comes back through the hook queue, label "kv". */

typedef struct kv_item {
    struct kv_item *next;
    uint64_t revision;
    size_t klen, vlen;
    uint8_t data[]; /* key, then value */
} kv_item;

/* One synchronous read. Held by a userdata box (its __gc frees it) while
 * the read runs; a view that did not answer before returning gets the
 * record (abandoned): its late done frees it. */
typedef struct kv_sync {
    int fired, abandoned, oom, status;
    uint64_t revision;
    uint8_t *value;
    size_t vlen;
    kv_item *items, **tail;
    size_t n;
} kv_sync;

static void kv_sync_free(kv_sync *s)
{
    while (s->items) {
        kv_item *it = s->items;
        s->items = it->next;
        free(it);
    }
    free(s->value);
    free(s);
}

int luahost_kv_sync_gc(lua_State *L)
{
    kv_sync **box = luaL_checkudata(L, 1, KV_SYNC_MT);
    if (*box) kv_sync_free(*box);
    *box = NULL;
    return 0;
}

/* Pushes the box and returns the record in it. */
static kv_sync *kv_sync_new(lua_State *L, kv_sync ***boxp)
{
    kv_sync **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    luaL_setmetatable(L, KV_SYNC_MT);
    kv_sync *s = calloc(1, sizeof *s);
    if (!s) luaL_error(L, "out of memory");
    s->tail = &s->items;
    *box = s;
    *boxp = box;
    return s;
}

static void kv_sync_done(void *arg, const qc_kv_answer *a)
{
    kv_sync *s = arg;
    if (s->abandoned) {
        kv_sync_free(s);
        return;
    }
    if (s->fired) return; /* a second answer breaks the contract: ignored */
    s->fired = 1;
    s->status = a->status;
    s->revision = a->revision;
    if (a->status == QC_KV_OK && a->value) {
        s->value = malloc(a->vlen ? a->vlen : 1);
        if (!s->value) {
            s->oom = 1;
            return;
        }
        memcpy(s->value, a->value, a->vlen);
        s->vlen = a->vlen;
    }
}

static int kv_sync_each(void *arg, const uint8_t *key, size_t klen, const uint8_t *value,
                        size_t vlen, uint64_t revision)
{
    kv_sync *s = arg;
    if (s->abandoned || s->fired || s->oom) return 1;
    kv_item *it = NULL;
    if (klen <= SIZE_MAX / 2 - sizeof *it && vlen <= SIZE_MAX / 2)
        it = malloc(sizeof *it + klen + vlen);
    if (!it) {
        s->oom = 1;
        return 1;
    }
    it->next = NULL;
    it->revision = revision;
    it->klen = klen;
    it->vlen = vlen;
    if (klen) memcpy(it->data, key, klen);
    if (vlen) memcpy(it->data + klen, value, vlen);
    *s->tail = it;
    s->tail = &it->next;
    s->n++;
    return 0;
}

/* After the view's call: raises unless the answer came and was kept. */
static void kv_sync_check(lua_State *L, kv_sync **box, const char *what)
{
    kv_sync *s = *box;
    if (!s->fired) {
        s->abandoned = 1; /* now the late done's to free */
        *box = NULL;
        luaL_error(L, "%s: no local answer", what);
    }
    if (s->oom) luaL_error(L, "%s: out of memory", what);
}

static const qc_view *kv_view(lua_State *L, int has)
{
    const qc_view *v = luahost_of(L)->view;
    if (!v || !has) luaL_error(L, "kv: not available");
    return v;
}

static const char *kv_key(lua_State *L, int i, size_t *len)
{
    const char *k = luaL_checklstring(L, i, len);
    luaL_argcheck(L, *len > 0, i, "the key must not be empty");
    return k;
}

/* qcluster.kv.get(key) -> value, revision | nil (local, maybe stale) */
static int l_kv_get(lua_State *L)
{
    size_t klen;
    const char *key = kv_key(L, 1, &klen);
    const qc_view *v = luahost_of(L)->view;
    v = kv_view(L, v && v->kv_get);
    kv_sync **box;
    kv_sync *s = kv_sync_new(L, &box);
    v->kv_get(v->ud, (const uint8_t *)key, klen, 1, kv_sync_done, s);
    kv_sync_check(L, box, "kv.get");
    if (s->status == QC_KV_NOTFOUND || s->status == QC_ENOTFOUND) {
        lua_pushnil(L);
        return 1;
    }
    if (s->status != QC_KV_OK) return luaL_error(L, "kv.get: %s", luahost_kv_errtext(s->status));
    lua_pushlstring(L, s->value ? (const char *)s->value : "", s->vlen);
    lua_pushinteger(L, (lua_Integer)s->revision);
    return 2;
}

/* qcluster.kv.list([prefix]) -> {{key, value, revision}, ...} in key order
 * (local, maybe stale) */
static int l_kv_list(lua_State *L)
{
    size_t plen = 0;
    const char *prefix = luaL_optlstring(L, 1, "", &plen);
    const qc_view *v = luahost_of(L)->view;
    v = kv_view(L, v && v->kv_list);
    kv_sync **box;
    kv_sync *s = kv_sync_new(L, &box);
    v->kv_list(v->ud, (const uint8_t *)prefix, plen, 1, kv_sync_each, kv_sync_done, s);
    kv_sync_check(L, box, "kv.list");
    if (s->status != QC_KV_OK) return luaL_error(L, "kv.list: %s", luahost_kv_errtext(s->status));
    lua_createtable(L, s->n > 1u << 20 ? 1 << 20 : (int)s->n, 0);
    lua_Integer i = 0;
    for (const kv_item *it = s->items; it; it = it->next) {
        lua_createtable(L, 0, 3);
        lua_pushlstring(L, (const char *)it->data, it->klen);
        lua_setfield(L, -2, "key");
        lua_pushlstring(L, (const char *)it->data + it->klen, it->vlen);
        lua_setfield(L, -2, "value");
        lua_pushinteger(L, (lua_Integer)it->revision);
        lua_setfield(L, -2, "revision");
        lua_rawseti(L, -2, ++i);
    }
    return 1;
}

static void kv_write_done(void *arg, const qc_kv_answer *a)
{
    req_answer(arg, a->status, a->revision, luahost_kv_errtext(a->status));
}

/* Optional opts table and callback from index i on: (cb), (opts, cb),
 * (opts), (nil, cb). Returns the cas to use. */
static int64_t kv_write_args(lua_State *L, int i, int *cb)
{
    int opts = 0;
    *cb = 0;
    if (lua_isfunction(L, i)) {
        *cb = i;
    } else {
        if (!lua_isnoneornil(L, i)) {
            luaL_checktype(L, i, LUA_TTABLE);
            opts = i;
        }
        if (!lua_isnoneornil(L, i + 1)) {
            luaL_checktype(L, i + 1, LUA_TFUNCTION);
            *cb = i + 1;
        }
    }
    if (!opts || lua_getfield(L, opts, "cas") == LUA_TNIL) return QC_KV_CAS_NONE;
    int ok;
    lua_Integer cas = lua_tointegerx(L, -1, &ok);
    if (!ok || cas < 0) luaL_error(L, "opts.cas: expected an integer >= 0");
    lua_pop(L, 1);
    return (int64_t)cas;
}

/* qcluster.kv.put(key, value [, opts] [, cb]); cb(ok, revision_or_err, ...) */
static int l_kv_put(lua_State *L)
{
    size_t klen, vlen;
    const char *key = kv_key(L, 1, &klen);
    const char *value = luaL_checklstring(L, 2, &vlen);
    int cb;
    int64_t cas = kv_write_args(L, 3, &cb);
    const qc_view *v = luahost_of(L)->view;
    v = kv_view(L, v && v->kv_put);
    qc_req *r = req_start(L, cb, JOB_KV, "kv.put", "kv");
    v->kv_put(v->ud, (const uint8_t *)key, klen, (const uint8_t *)value, vlen, cas, kv_write_done,
              r);
    return 0;
}

/* qcluster.kv.delete(key [, opts] [, cb]) */
static int l_kv_delete(lua_State *L)
{
    size_t klen;
    const char *key = kv_key(L, 1, &klen);
    int cb;
    int64_t cas = kv_write_args(L, 2, &cb);
    const qc_view *v = luahost_of(L)->view;
    v = kv_view(L, v && v->kv_delete);
    qc_req *r = req_start(L, cb, JOB_KV, "kv.delete", "kv");
    v->kv_delete(v->ud, (const uint8_t *)key, klen, cas, kv_write_done, r);
    return 0;
}

/* Drops the watches of hooks-file load gen (keep 0), or of every load
 * but keep (gen 0). */
void luahost_watches_drop(qc_lua *h, unsigned gen, unsigned keep)
{
    qc_watch *w = h->watches;
    while (w) {
        qc_watch *next = w->next;
        if (w->file_gen && (gen ? w->file_gen == gen : w->file_gen != keep))
            luahost_watch_free(h, w);
        w = next;
    }
}

/* qcluster.kv.watch(prefix, fn) -> handle with :cancel(). fn(ev) runs for
 * every applied change under prefix, after on_kv_change, with the same ev.
 * Watches need no KV to be registered (a hooks file may make them before
 * the agent has one); they live until cancelled, across reloads. */
int luahost_l_kv_watch(lua_State *L)
{
    qc_lua *h = luahost_of(L);
    size_t plen;
    const char *prefix = luaL_checklstring(L, 1, &plen);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    uint64_t *handle = lua_newuserdatauv(L, sizeof *handle, 0);
    *handle = 0;
    luaL_setmetatable(L, KV_WATCH_MT);
    lua_pushvalue(L, 2);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX); /* may raise: nothing is ours yet */
    qc_watch *w = plen < SIZE_MAX - sizeof *w ? malloc(sizeof *w + plen) : NULL;
    if (!w) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        return luaL_error(L, "out of memory");
    }
    w->fn_ref = ref;
    w->id = h->next_watch_id++;
    w->file_gen = h->loading_gen;
    w->plen = plen;
    if (plen) memcpy(w->prefix, prefix, plen);
    w->next = NULL;
    w->prev = h->watches_tail;
    if (h->watches_tail)
        h->watches_tail->next = w;
    else
        h->watches = w;
    h->watches_tail = w;
    *handle = w->id;
    return 1;
}

/* handle:cancel() -> true, or false when it was no longer active. */
int luahost_l_watch_cancel(lua_State *L)
{
    qc_lua *h = luahost_of(L);
    uint64_t *handle = luaL_checkudata(L, 1, KV_WATCH_MT);
    for (qc_watch *w = h->watches; w; w = w->next) {
        if (w->id == *handle) {
            luahost_watch_free(h, w);
            lua_pushboolean(L, 1);
            return 1;
        }
    }
    lua_pushboolean(L, 0);
    return 1;
}

int luahost_l_watch_tostring(lua_State *L)
{
    uint64_t *handle = luaL_checkudata(L, 1, KV_WATCH_MT);
    lua_pushfstring(L, "qcluster.kv.watch: %I", (lua_Integer)*handle);
    return 1;
}

const luaL_Reg luahost_kv_fns[] = {
    {"get", l_kv_get},       {"list", l_kv_list},           {"put", l_kv_put},
    {"delete", l_kv_delete}, {"watch", luahost_l_kv_watch}, {NULL, NULL},
};

/* ---- membership -------------------------------------------------------- */

static const char *member_errtext(int rc)
{
    switch (rc) {
    case QC_EINVAL: return "refused";
    case QC_ENOLEADER: return "no leader";
    case QC_EBUSY: return "timed out, or another membership change is in progress";
    default: return qc_strerror(rc);
    }
}

static void member_done(void *arg, int rc, const char *message)
{
    req_answer(arg, rc, 0, message && *message ? message : member_errtext(rc));
}

/* qcluster.set_metadata(t [, cb]): replaces this node's metadata with t (a
 * table that makes a JSON object) through the log, without blocking; cb
 * runs later through the hook queue (label "set_metadata", hook budget) as
 * cb(true) once committed, or cb(false, message). */
int luahost_l_set_metadata(lua_State *L)
{
    qc_lua *h = luahost_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    int cb = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TFUNCTION);
        cb = 2;
    }
    qc_req *r = req_start(L, cb, JOB_MEMBER, "set_metadata", "set_metadata");
    /* From here on r is ours until the view has it: cancel before raising. */
    char *json = NULL, err[300];
    size_t len;
    int rc = qc_luajson_encode(L, 1, &json, &len, err, sizeof err);
    if (rc == QC_OK && json[0] != '{') {
        rc = QC_EINVAL;
        snprintf(err, sizeof err, "expected a table with string keys (a JSON object), got a list");
    }
    if (rc != QC_OK) {
        free(json);
        req_cancel(h, r);
        if (rc == QC_ENOMEM) return luaL_error(L, "set_metadata: out of memory");
        return luaL_argerror(L, 1, err);
    }
    const qc_view *v = h->view;
    if (!v || !v->set_metadata) {
        free(json);
        req_cancel(h, r);
        return luaL_error(L, "set_metadata: membership is not available");
    }
    v->set_metadata(v->ud, json, member_done, r); /* may answer before it returns */
    free(json);
    return 0;
}
