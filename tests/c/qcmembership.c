/* Test-only Lua module: src/agent/membership.c driven through a FAKE host.
 * The fake plays the core (its CONFIG entry, members, leader, commit and
 * match indexes, peers' health), the transport (links, frames, joins) and
 * the agent (hooks, stops, transfers), and records every call membership
 * makes on it, so that tests/unit/membership_spec.lua can assert the
 * decisions (join, leave, promotion, reaping, preempt) with no agent, no
 * socket and a clock of its own. Never linked into the agent. */
#include <ev.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#include "agent/membership.h"
#include "base/common.h"
#include "base/log.h"
#include "core/members.h"
#include "lua_member.h"

#define FAKE_MT "qcmembership.fake"

typedef struct fake_peer {
    uint64_t id;
    uint64_t match;
    int healthy; /* the core's word: 1 healthy, 0 not, -1 unknown */
    int link;    /* the transport's link is up */
} fake_peer;

typedef struct fake {
    lua_State *L; /* the state of the call under way */
    int calls;    /* registry ref of the calls table */
    qc_config cfg;
    qc_membership *mb;
    struct ev_loop *loop;
    uint64_t now;
    qc_buf conf; /* the newest CONFIG entry's data, conf_index 0: none */
    uint64_t conf_index;
    qc_member core[QC_RAFT_MAX_MEMBERS];
    size_t n_core;
    uint64_t leader, commit, last_index;
    int raft_leader, lease_leader, transferring, transfer_rc;
    fake_peer peers[QC_RAFT_MAX_MEMBERS];
    size_t n_peers;
    qc_transfer_done_fn *transfer_done;
    void *transfer_arg;
    qc_net_join_fn *join_done;
    void *join_arg;
} fake;

static fake *check_fake(lua_State *L) { return *(fake **)luaL_checkudata(L, 1, FAKE_MT); }

static fake_peer *peer_of(fake *f, uint64_t id)
{
    for (size_t i = 0; i < f->n_peers; i++)
        if (f->peers[i].id == id) return &f->peers[i];
    if (f->n_peers == QC_RAFT_MAX_MEMBERS) return NULL;
    f->peers[f->n_peers] = (fake_peer){.id = id, .healthy = -1};
    return &f->peers[f->n_peers++];
}

/* ---- recording ---------------------------------------------------------- */

/* Pushes a new call record {fn = fn} appended to the calls table. */
static void call_begin(fake *f, const char *fn)
{
    lua_State *L = f->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, f->calls);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, fn);
    lua_setfield(L, -2, "fn");
}

static void call_end(fake *f)
{
    lua_State *L = f->L;
    lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
    lua_pop(L, 1);
}

static void push_rec(lua_State *L, const qc_member_rec *m) { push_rec_fields(L, m, 0); }

static void push_list(lua_State *L, const qc_members *ms)
{
    lua_createtable(L, (int)ms->n, 0);
    for (size_t i = 0; i < ms->n; i++) {
        push_rec(L, &ms->v[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

static const char *name_of(fake *f, uint64_t id) { return qc_membership_name_of(f->mb, id); }

/* ---- the fake host ------------------------------------------------------ */

static uint64_t h_now(void *ud) { return ((fake *)ud)->now; }

static void h_conf(void *ud, qc_entry *out)
{
    fake *f = ud;
    *out = (qc_entry){.index = f->conf_index, .type = QC_ENTRY_CONFIG};
    if (f->conf_index) {
        out->data = f->conf.data;
        out->len = (uint32_t)f->conf.len;
    }
}

static size_t h_core_members(void *ud, qc_member *out)
{
    fake *f = ud;
    memcpy(out, f->core, f->n_core * sizeof *out);
    return f->n_core;
}

static int h_raft_leader(void *ud) { return ((fake *)ud)->raft_leader; }
static int h_lease_leader(void *ud) { return ((fake *)ud)->lease_leader; }
static uint64_t h_leader(void *ud) { return ((fake *)ud)->leader; }
static uint64_t h_commit(void *ud) { return ((fake *)ud)->commit; }
static uint64_t h_last_index(void *ud) { return ((fake *)ud)->last_index; }

static uint64_t h_match(void *ud, uint64_t peer)
{
    fake_peer *p = peer_of(ud, peer);
    return p ? p->match : 0;
}

static int h_peer_healthy(void *ud, uint64_t peer)
{
    fake_peer *p = peer_of(ud, peer);
    return p ? p->healthy : -1;
}

/* Takes data as the newest CONFIG entry and the core's membership, as the
 * core does with an appended CONFIG entry. */
static int take_conf(fake *f, const uint8_t *data, size_t len, qc_members *decoded)
{
    int rc = qc_members_decode(data, len, decoded);
    if (rc) return rc;
    qc_buf_free(&f->conf);
    f->conf = (qc_buf){0};
    rc = qc_buf_append(&f->conf, data, len);
    if (rc) return rc;
    f->conf_index = ++f->last_index;
    f->n_core = decoded->n;
    for (size_t i = 0; i < decoded->n; i++)
        f->core[i] = (qc_member){.id = qc_hash_id(decoded->v[i].identifier),
                                 .flags = qc_member_flags(&decoded->v[i])};
    return QC_OK;
}

static int h_propose(void *ud, const uint8_t *data, size_t len)
{
    fake *f = ud;
    qc_members ms;
    int rc = take_conf(f, data, len, &ms);
    call_begin(f, "propose");
    if (rc == QC_OK) {
        push_list(f->L, &ms);
        lua_setfield(f->L, -2, "list");
    }
    set_int(f->L, "rc", rc);
    call_end(f);
    qc_members_free(&ms);
    return rc;
}

static void h_link(void *ud, uint64_t peer, int up)
{
    fake *f = ud;
    call_begin(f, "core_link");
    set_str(f->L, "to", name_of(f, peer));
    set_bool(f->L, "up", up);
    call_end(f);
}

static int h_send(void *ud, uint64_t peer, const uint8_t *data, size_t len)
{
    fake *f = ud;
    qc_member_request req;
    int rc = qc_member_request_decode(data, len, &req);
    static const char *const ops[] = {"?", "join", "leave", "update"};
    call_begin(f, "send");
    set_str(f->L, "to", name_of(f, peer));
    if (rc == QC_OK) {
        set_str(f->L, "op", req.op >= 1 && req.op <= 3 ? ops[req.op] : "?");
        push_rec(f->L, &req.rec);
        lua_setfield(f->L, -2, "rec");
    }
    call_end(f);
    qc_member_request_free(&req);
    return rc;
}

static int h_add_peer(void *ud, const char *identifier, const char *host, int port)
{
    fake *f = ud;
    call_begin(f, "add_peer");
    set_str(f->L, "identifier", identifier);
    set_str(f->L, "host", host);
    set_int(f->L, "port", port);
    call_end(f);
    return QC_OK;
}

static void h_remove_peer(void *ud, uint64_t peer)
{
    fake *f = ud;
    call_begin(f, "remove_peer");
    set_str(f->L, "to", name_of(f, peer));
    call_end(f);
    fake_peer *p = peer_of(f, peer);
    if (p) p->link = 0;
}

static int h_link_up(void *ud, uint64_t peer)
{
    fake_peer *p = peer_of(ud, peer);
    return p && p->link;
}

static int h_join(void *ud, const char *host, int port, const uint8_t *payload, size_t len,
                  int timeout_ms, qc_net_join_fn *done, void *arg)
{
    fake *f = ud;
    qc_member_rec rec;
    int rc = qc_member_rec_decode(payload, len, &rec);
    call_begin(f, "join");
    set_str(f->L, "host", host);
    set_int(f->L, "port", port);
    set_int(f->L, "timeout_ms", timeout_ms);
    if (rc == QC_OK) {
        push_rec(f->L, &rec);
        lua_setfield(f->L, -2, "rec");
    }
    call_end(f);
    qc_member_rec_free(&rec);
    f->join_done = done;
    f->join_arg = arg;
    return QC_OK;
}

static void h_fire(void *ud, const qc_hook_event *ev)
{
    fake *f = ud;
    call_begin(f, "fire");
    set_str(f->L, "hook", ev->hook);
    if (ev->peer) {
        set_str(f->L, "peer", ev->peer->identifier);
        set_str(f->L, "role", ev->peer->role);
        set_bool(f->L, "is_self", ev->peer->is_self);
    }
    call_end(f);
}

static void h_want_stop(void *ud, const char *reason)
{
    fake *f = ud;
    call_begin(f, "want_stop");
    set_str(f->L, "reason", reason);
    call_end(f);
}

static int h_transfer(void *ud, uint64_t target, int reason, qc_transfer_done_fn *done, void *arg)
{
    fake *f = ud;
    call_begin(f, "transfer");
    if (target) set_str(f->L, "to", name_of(f, target));
    set_str(f->L, "reason", qc_raft_reason_name(reason));
    call_end(f);
    if (f->transfer_rc) return f->transfer_rc;
    f->transfer_done = done;
    f->transfer_arg = arg;
    return QC_OK;
}

static int h_transferring(void *ud) { return ((fake *)ud)->transferring; }

static void h_preempting(void *ud)
{
    fake *f = ud;
    call_begin(f, "preempting");
    call_end(f);
}

static const qc_membership_host fake_host = {
    .now = h_now,
    .conf = h_conf,
    .core_members = h_core_members,
    .raft_leader = h_raft_leader,
    .lease_leader = h_lease_leader,
    .leader = h_leader,
    .commit = h_commit,
    .last_index = h_last_index,
    .match = h_match,
    .peer_healthy = h_peer_healthy,
    .propose = h_propose,
    .link = h_link,
    .send = h_send,
    .add_peer = h_add_peer,
    .remove_peer = h_remove_peer,
    .link_up = h_link_up,
    .join = h_join,
    .fire = h_fire,
    .want_stop = h_want_stop,
    .transfer = h_transfer,
    .transferring = h_transferring,
    .preempting = h_preempting,
};

/* done of a request of this node (join, leave, set_metadata). */
static void on_done(void *arg, int rc, const char *message)
{
    fake *f = arg;
    call_begin(f, "done");
    set_int(f->L, "rc", rc);
    set_str(f->L, "error", rc ? qc_strerror(rc) : NULL);
    set_str(f->L, "message", message);
    call_end(f);
}

/* ---- tables in ---------------------------------------------------------- */

static char *dup_field(lua_State *L, int t, const char *key, const char *def)
{
    lua_getfield(L, t, key);
    const char *s = lua_tostring(L, -1);
    char *out = s ? strdup(s) : def ? strdup(def) : NULL;
    lua_pop(L, 1);
    return out;
}

static lua_Integer int_field(lua_State *L, int t, const char *key, lua_Integer def)
{
    lua_getfield(L, t, key);
    lua_Integer v = lua_isnil(L, -1) ? def : lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

static int role_field(lua_State *L, int t)
{
    lua_getfield(L, t, "role");
    int r = lua_isnil(L, -1) ? QC_MROLE_VOTER : qc_member_role_parse(lua_tostring(L, -1));
    lua_pop(L, 1);
    return r;
}

/* A record view of the table at t (strings borrowed from it). */
static qc_member_rec rec_of(lua_State *L, int t)
{
    luaL_checktype(L, t, LUA_TTABLE);
    qc_member_rec r = {0};
    lua_getfield(L, t, "identifier");
    r.identifier = (char *)lua_tostring(L, -1);
    lua_getfield(L, t, "host");
    r.host = (char *)lua_tostring(L, -1);
    lua_getfield(L, t, "metadata");
    r.metadata = (char *)(lua_isnil(L, -1) ? "{}" : lua_tostring(L, -1));
    lua_getfield(L, t, "voting");
    r.voting = lua_toboolean(L, -1);
    lua_pop(L, 4); /* the table keeps the strings alive */
    r.port = (int)int_field(L, t, "port", 0);
    r.priority = (int)int_field(L, t, "priority", 1);
    r.role = role_field(L, t);
    return r;
}

/* The list of records at t (caller frees). */
static int list_of(lua_State *L, int t, qc_members *out)
{
    luaL_checktype(L, t, LUA_TTABLE);
    memset(out, 0, sizeof *out);
    for (lua_Integer i = 1; i <= (lua_Integer)luaL_len(L, t); i++) {
        lua_rawgeti(L, t, i);
        qc_member_rec r = rec_of(L, lua_gettop(L));
        int rc = qc_members_put(out, &r);
        lua_pop(L, 1);
        if (rc) {
            qc_members_free(out);
            return rc;
        }
    }
    return QC_OK;
}

static uint64_t id_arg(lua_State *L, int idx)
{
    return lua_isnoneornil(L, idx) ? 0 : qc_hash_id(luaL_checkstring(L, idx));
}

/* ---- methods ------------------------------------------------------------ */

static void load_cfg(lua_State *L, qc_config *c)
{
    c->identifier = dup_field(L, 1, "identifier", "a");
    c->listen_host = dup_field(L, 1, "host", "127.0.0.1");
    c->listen_port = (int)int_field(L, 1, "port", 7001);
    c->metadata = dup_field(L, 1, "metadata", NULL);
    c->role = role_field(L, 1);
    c->priority = (int)int_field(L, 1, "priority", 1);
    c->election_timeout_ms = (int)int_field(L, 1, "election_timeout_ms", 300);
    c->max_voters = (int)int_field(L, 1, "max_voters", 5);
    c->reap_after_ms = int_field(L, 1, "reap_after_ms", 0);
    c->preempt_delay_ms = (int)int_field(L, 1, "preempt_delay_ms", 0);
    lua_getfield(L, 1, "preempt");
    c->preempt = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 1, "peers");
    size_t n = lua_istable(L, -1) ? (size_t)luaL_len(L, -1) : 0;
    c->peers = calloc(n ? n : 1, sizeof *c->peers);
    for (size_t i = 0; c->peers && i < n; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i + 1);
        int t = lua_gettop(L);
        c->peers[i] = (qc_peer_conf){.identifier = dup_field(L, t, "identifier", "?"),
                                     .host = dup_field(L, t, "host", "127.0.0.1"),
                                     .port = (int)int_field(L, t, "port", 7002),
                                     .metadata = dup_field(L, t, "metadata", NULL),
                                     .role = role_field(L, t),
                                     .priority = (int)int_field(L, t, "priority", 1)};
        c->n_peers = i + 1;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_getfield(L, 1, "join");
    if (lua_istable(L, -1)) {
        n = (size_t)luaL_len(L, -1);
        c->join = calloc(n ? n : 1, sizeof *c->join);
        for (size_t i = 0; c->join && i < n; i++) {
            lua_rawgeti(L, -1, (lua_Integer)i + 1);
            c->join[i] = strdup(luaL_checkstring(L, -1));
            c->n_join = i + 1;
            lua_pop(L, 1);
        }
        c->join_set = 1;
    }
    lua_pop(L, 1);
}

static void free_cfg(qc_config *c)
{
    free(c->identifier);
    free(c->listen_host);
    free(c->metadata);
    for (size_t i = 0; i < c->n_peers; i++) {
        free(c->peers[i].identifier);
        free(c->peers[i].host);
        free(c->peers[i].metadata);
    }
    free(c->peers);
    for (size_t i = 0; i < c->n_join; i++) free(c->join[i]);
    free(c->join);
}

/* qcmembership.new{identifier=, host=, port=, role=, priority=, metadata=,
 * election_timeout_ms=, max_voters=, reap_after_ms=, preempt=,
 * preempt_delay_ms=, peers={{identifier=, host=, port=, ...}}, join={...}}:
 * a membership on a fake host, its table set up from peers (or empty with
 * join). Returns the fake, or nil and the setup's error. */
static int l_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    fake **ud = lua_newuserdatauv(L, sizeof *ud, 0);
    *ud = calloc(1, sizeof **ud);
    if (!*ud) return luaL_error(L, "out of memory");
    luaL_setmetatable(L, FAKE_MT);
    fake *f = *ud;
    f->L = L;
    lua_newtable(L);
    f->calls = luaL_ref(L, LUA_REGISTRYINDEX);
    load_cfg(L, &f->cfg);
    f->loop = ev_loop_new(EVFLAG_AUTO);
    qc_membership_host host = fake_host;
    host.ud = f;
    if (!f->loop || qc_membership_new(&f->cfg, &host, &f->mb) != QC_OK)
        return luaL_error(L, "out of memory");
    int rc = qc_membership_setup(f->mb, f->loop);
    if (rc) {
        lua_pushnil(L);
        lua_pushstring(L, qc_strerror(rc));
        return 2;
    }
    /* The first start: the core counts every configured node a voter (a
     * node that joins: none, itself included). */
    if (!f->cfg.join_set)
        f->core[f->n_core++] = (qc_member){.id = qc_hash_id(f->cfg.identifier), .flags = 1};
    for (size_t i = 0; i < qc_membership_count(f->mb) && !f->cfg.join_set; i++)
        f->core[f->n_core++] = (qc_member){.id = qc_membership_at(f->mb, i)->id, .flags = 1};
    return 1;
}

static int l_gc(lua_State *L)
{
    fake **ud = luaL_checkudata(L, 1, FAKE_MT);
    fake *f = *ud;
    if (!f) return 0;
    f->L = L;
    qc_membership_free(f->mb);
    if (f->loop) ev_loop_destroy(f->loop);
    qc_buf_free(&f->conf);
    free_cfg(&f->cfg);
    luaL_unref(L, LUA_REGISTRYINDEX, f->calls);
    free(f);
    *ud = NULL;
    return 0;
}

/* f:core{now=, leader=NAME|false, leads=bool (role and lease), lease=bool,
 * commit=, last_index=, match={NAME=index}, healthy={NAME=bool},
 * transferring=bool, transfer_rc=}: sets what the fake core says. */
static int l_core(lua_State *L)
{
    fake *f = check_fake(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    f->now = (uint64_t)int_field(L, 2, "now", (lua_Integer)f->now);
    f->commit = (uint64_t)int_field(L, 2, "commit", (lua_Integer)f->commit);
    f->last_index = (uint64_t)int_field(L, 2, "last_index", (lua_Integer)f->last_index);
    f->transfer_rc = (int)int_field(L, 2, "transfer_rc", f->transfer_rc);
    lua_getfield(L, 2, "leader");
    if (lua_type(L, -1) == LUA_TSTRING) f->leader = qc_hash_id(lua_tostring(L, -1));
    if (lua_type(L, -1) == LUA_TBOOLEAN) f->leader = 0;
    lua_getfield(L, 2, "leads");
    if (!lua_isnil(L, -1)) f->raft_leader = f->lease_leader = lua_toboolean(L, -1);
    lua_getfield(L, 2, "lease");
    if (!lua_isnil(L, -1)) f->lease_leader = lua_toboolean(L, -1);
    lua_getfield(L, 2, "transferring");
    if (!lua_isnil(L, -1)) f->transferring = lua_toboolean(L, -1);
    lua_pop(L, 4);
    static const char *const maps[] = {"match", "healthy"};
    for (int k = 0; k < 2; k++) {
        lua_getfield(L, 2, maps[k]);
        for (int has = lua_istable(L, -1) && (lua_pushnil(L), 1); has && lua_next(L, -2);
             lua_pop(L, 1)) {
            fake_peer *p = peer_of(f, qc_hash_id(luaL_checkstring(L, -2)));
            if (p && k == 0) p->match = (uint64_t)lua_tointeger(L, -1);
            if (p && k == 1) p->healthy = lua_toboolean(L, -1);
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* f:conf(list): the newest CONFIG entry (appended) is list; the core's
 * membership follows it. Returns its index. */
static int l_conf(lua_State *L)
{
    fake *f = check_fake(L);
    qc_members ms, decoded;
    qc_buf buf = {0};
    int rc = list_of(L, 2, &ms);
    if (rc == QC_OK) rc = qc_members_encode(&ms, &buf);
    if (rc == QC_OK) rc = take_conf(f, buf.data, buf.len, &decoded);
    if (rc == QC_OK) qc_members_free(&decoded);
    qc_members_free(&ms);
    qc_buf_free(&buf);
    if (rc) return luaL_error(L, "bad list: %s", qc_strerror(rc));
    lua_pushinteger(L, (lua_Integer)f->conf_index);
    return 1;
}

/* f:begin(quiet_until [, at]): the core started; the list applied is the
 * entry in effect (the config's peers when there is none), or with at = 0
 * nothing applied yet (a restart with no snapshot: entries replay later). */
static int l_begin(lua_State *L)
{
    fake *f = check_fake(L);
    f->L = L;
    qc_entry e;
    h_conf(f, &e);
    if (!lua_isnoneornil(L, 3)) {
        if (luaL_checkinteger(L, 3) != 0) return luaL_argerror(L, 3, "only 0 (nothing applied)");
        e = (qc_entry){.type = QC_ENTRY_CONFIG};
    }
    qc_membership_begin(f->mb, (uint64_t)luaL_optinteger(L, 2, 0), &e);
    return 0;
}

/* f:apply(): the newest CONFIG entry (f:conf or a proposal) was applied.
 * f:apply(list, index): an older entry holding list, at index, was applied
 * (a restarted node replays its log); the newest stays as it is. */
static int l_apply(lua_State *L)
{
    fake *f = check_fake(L);
    f->L = L;
    qc_entry e;
    h_conf(f, &e);
    qc_members ms;
    qc_buf buf = {0};
    if (!lua_isnoneornil(L, 2)) {
        uint64_t index = (uint64_t)luaL_checkinteger(L, 3); /* before anything is allocated */
        int rc = list_of(L, 2, &ms);
        if (rc == QC_OK) {
            rc = qc_members_encode(&ms, &buf);
            qc_members_free(&ms);
        }
        if (rc) {
            qc_buf_free(&buf);
            return luaL_error(L, "bad list: %s", qc_strerror(rc));
        }
        e = (qc_entry){
            .index = index, .type = QC_ENTRY_CONFIG, .data = buf.data, .len = (uint32_t)buf.len};
    }
    if (f->commit < e.index) f->commit = e.index;
    qc_membership_apply_list(f->mb, &e);
    qc_buf_free(&buf);
    return 0;
}

/* f:sync(): QC_EVENT_CONFIG, the table follows the entry in effect. */
static int l_sync(lua_State *L)
{
    fake *f = check_fake(L);
    f->L = L;
    qc_membership_sync(f->mb);
    return 0;
}

/* f:tick([now]): the member timer. */
static int l_tick(lua_State *L)
{
    fake *f = check_fake(L);
    f->L = L;
    if (!lua_isnoneornil(L, 2)) f->now = (uint64_t)luaL_checkinteger(L, 2);
    qc_membership_tick(f->mb);
    return 0;
}

/* f:link(NAME, up): the transport's link to NAME came up or went down. */
static int l_link(lua_State *L)
{
    fake *f = check_fake(L);
    f->L = L;
    uint64_t id = id_arg(L, 2);
    fake_peer *p = peer_of(f, id);
    if (p) p->link = lua_toboolean(L, 3);
    qc_membership_link(f->mb, id, lua_toboolean(L, 3));
    return 0;
}

/* f:frame(FROM, op, rec): a MEMBER frame from FROM ("join", "leave",
 * "update"; rec a record table). */
static int l_frame(lua_State *L)
{
    fake *f = check_fake(L);
    f->L = L;
    static const char *const ops[] = {"join", "leave", "update", NULL};
    qc_member_request req = {.op = luaL_checkoption(L, 3, NULL, ops) + 1, .rec = rec_of(L, 4)};
    qc_buf buf = {0};
    int rc = qc_member_request_encode(&req, &buf);
    if (rc == QC_OK) qc_membership_on_frame(f->mb, id_arg(L, 2), buf.data, buf.len);
    qc_buf_free(&buf);
    if (rc) return luaL_error(L, "bad request: %s", qc_strerror(rc));
    return 0;
}

/* f:ask_join(rec, host_seen) -> {ok=, retry=, error=, leader=}: a node that
 * is not a member asks this one to let it in. */
static int l_ask_join(lua_State *L)
{
    fake *f = check_fake(L);
    f->L = L;
    qc_member_rec rec = rec_of(L, 2);
    qc_buf req = {0}, answer = {0};
    if (qc_member_rec_encode(&rec, &req) != QC_OK) return luaL_error(L, "bad record");
    qc_membership_on_join(f->mb, rec.identifier, luaL_optstring(L, 3, "127.0.0.1"), req.data,
                          req.len, &answer);
    qc_buf_free(&req);
    qc_join_answer ans;
    int rc = qc_join_answer_decode(answer.data, answer.len, &ans);
    qc_buf_free(&answer);
    if (rc) return luaL_error(L, "bad answer: %s", qc_strerror(rc));
    lua_createtable(L, 0, 5);
    set_bool(L, "ok", ans.ok);
    set_bool(L, "retry", ans.retry);
    set_str(L, "error", ans.error);
    set_str(L, "leader", ans.leader);
    push_list(L, &ans.members);
    lua_setfield(L, -2, "members");
    qc_join_answer_free(&ans);
    return 1;
}

/* f:answer_join{ok=, retry=, error=, leader=, members={...}} or
 * f:answer_join(nil, rc): the join in flight is answered. */
static int l_answer_join(lua_State *L)
{
    fake *f = check_fake(L);
    f->L = L;
    qc_net_join_fn *done = f->join_done;
    if (!done) return luaL_error(L, "no join in flight");
    f->join_done = NULL;
    if (lua_isnil(L, 2)) {
        done(f->join_arg, (int)luaL_checkinteger(L, 3), NULL, 0);
        return 0;
    }
    luaL_checktype(L, 2, LUA_TTABLE);
    qc_join_answer ans = {0};
    lua_getfield(L, 2, "ok");
    ans.ok = lua_toboolean(L, -1);
    lua_getfield(L, 2, "retry");
    ans.retry = lua_toboolean(L, -1);
    lua_getfield(L, 2, "error");
    ans.error = (char *)lua_tostring(L, -1);
    lua_getfield(L, 2, "leader");
    ans.leader = (char *)lua_tostring(L, -1);
    lua_getfield(L, 2, "members");
    int rc = lua_istable(L, -1) ? list_of(L, lua_gettop(L), &ans.members) : QC_OK;
    qc_buf buf = {0};
    if (rc == QC_OK) rc = qc_join_answer_encode(&ans, &buf);
    qc_members_free(&ans.members);
    if (rc == QC_OK) done(f->join_arg, QC_OK, buf.data, buf.len);
    qc_buf_free(&buf);
    if (rc) return luaL_error(L, "bad answer: %s", qc_strerror(rc));
    return 0;
}

/* f:transfer_done(rc): the hand-over the fake was asked for ended. */
static int l_transfer_done(lua_State *L)
{
    fake *f = check_fake(L);
    f->L = L;
    qc_transfer_done_fn *done = f->transfer_done;
    if (!done) return luaL_error(L, "no transfer in flight");
    f->transfer_done = NULL;
    done(f->transfer_arg, (int)luaL_optinteger(L, 2, 0));
    return 0;
}

/* f:join{addresses}, f:leave([NAME]), f:set_metadata(json): this node's
 * requests; their done shows as a {fn = "done"} call. */
static int l_join(lua_State *L)
{
    fake *f = check_fake(L);
    f->L = L;
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *addr[16];
    size_t n = (size_t)luaL_len(L, 2);
    if (n > 16) return luaL_error(L, "at most 16 addresses");
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 2, (lua_Integer)i + 1);
        addr[i] = luaL_checkstring(L, -1); /* kept alive by the table */
        lua_pop(L, 1);
    }
    qc_membership_join(f->mb, addr, n, on_done, f);
    return 0;
}

static int l_leave(lua_State *L)
{
    fake *f = check_fake(L);
    f->L = L;
    qc_membership_leave(f->mb, luaL_optstring(L, 2, NULL), on_done, f);
    return 0;
}

static int l_set_metadata(lua_State *L)
{
    fake *f = check_fake(L);
    f->L = L;
    qc_membership_set_metadata(f->mb, luaL_checkstring(L, 2), on_done, f);
    return 0;
}

/* f:calls() -> the calls membership made on the fake since the last
 * f:calls(), in order; f:peers() -> the member table's rows. */
static int l_calls(lua_State *L)
{
    fake *f = check_fake(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, f->calls);
    luaL_unref(L, LUA_REGISTRYINDEX, f->calls);
    lua_newtable(L);
    f->calls = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

static int l_peers(lua_State *L)
{
    fake *f = check_fake(L);
    size_t n = qc_membership_count(f->mb);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        const qc_peer *p = qc_membership_at(f->mb, i);
        lua_createtable(L, 0, 8);
        set_str(L, "identifier", p->identifier);
        set_str(L, "host", p->host);
        set_int(L, "port", p->port);
        set_str(L, "role", qc_membership_rest_role(p->role, p->voting));
        set_int(L, "priority", p->priority);
        set_bool(L, "up", p->up);
        set_bool(L, "removed", p->removed);
        set_str(L, "metadata", p->metadata ? p->metadata : p->conf_metadata);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

int luaopen_qcmembership(lua_State *L)
{
    static const luaL_Reg methods[] = {{"core", l_core},
                                       {"conf", l_conf},
                                       {"begin", l_begin},
                                       {"apply", l_apply},
                                       {"sync", l_sync},
                                       {"tick", l_tick},
                                       {"link", l_link},
                                       {"frame", l_frame},
                                       {"ask_join", l_ask_join},
                                       {"answer_join", l_answer_join},
                                       {"transfer_done", l_transfer_done},
                                       {"join", l_join},
                                       {"leave", l_leave},
                                       {"set_metadata", l_set_metadata},
                                       {"calls", l_calls},
                                       {"peers", l_peers},
                                       {NULL, NULL}};
    /* The decisions show as calls; the log would only clutter the TAP
     * output the test runner prints. */
    qc_log_set_level(QC_LOG_ERROR + 1);
    luaL_newmetatable(L, FAKE_MT);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, l_new);
    lua_setfield(L, -2, "new");
    return 1;
}
