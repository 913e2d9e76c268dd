/* Test-only Lua module over the pure consensus core: specs build nodes,
 * feed them messages, links and virtual time, and read every output.
 * It must stay a thin mirror of raft.h: no logic of its own. */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "core/raft.h"

#define NODE_MT "qcraft.node"

typedef struct node {
    qc_raft *r;
} node;

static qc_raft *check_node(lua_State *L)
{
    node *n = luaL_checkudata(L, 1, NODE_MT);
    if (!n->r) luaL_error(L, "node is closed");
    return n->r;
}

static uint64_t field_u64(lua_State *L, int t, const char *k, uint64_t dflt)
{
    lua_getfield(L, t, k);
    uint64_t v = lua_isnil(L, -1) ? dflt : (uint64_t)luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    return v;
}

static int msg_type(const char *name)
{
    for (int t = 1; t <= QC_MSG_TYPE_MAX; t++)
        if (strcmp(qc_raft_msg_name(t), name) == 0) return t;
    return 0;
}

static void push_u64(lua_State *L, const char *k, uint64_t v)
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

static void push_entry(lua_State *L, const qc_entry *e)
{
    lua_createtable(L, 0, 4);
    push_u64(L, "term", e->term);
    push_u64(L, "index", e->index);
    push_u64(L, "type", e->type);
    lua_pushlstring(L, e->len ? (const char *)e->data : "", e->len);
    lua_setfield(L, -2, "data");
}

static void push_entries(lua_State *L, const char *field, const qc_entry *e, size_t n)
{
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        push_entry(L, &e[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, field);
}

/* Reads a list of entry tables at index t into an array owned by the Lua
 * registry until the next call (data borrowed from the Lua strings). */
static qc_entry *check_entries(lua_State *L, int t, size_t *n)
{
    *n = 0;
    if (lua_isnoneornil(L, t)) return NULL;
    luaL_checktype(L, t, LUA_TTABLE);
    size_t len = (size_t)luaL_len(L, t);
    if (!len) return NULL;
    qc_entry *e = lua_newuserdatauv(L, len * sizeof *e, 0);
    lua_setfield(L, LUA_REGISTRYINDEX, "qcraft.entries");
    for (size_t i = 0; i < len; i++) {
        lua_geti(L, t, (lua_Integer)i + 1);
        size_t dl = 0;
        lua_getfield(L, -1, "data");
        const char *d = lua_tolstring(L, -1, &dl);
        lua_pop(L, 1);
        e[i] = (qc_entry){.term = field_u64(L, -1, "term", 0),
                          .index = field_u64(L, -1, "index", 0),
                          .type = (uint32_t)field_u64(L, -1, "type", QC_ENTRY_DATA),
                          .len = (uint32_t)dl,
                          .data = (uint8_t *)d};
        lua_pop(L, 1);
    }
    *n = len;
    return e;
}

static void push_msg(lua_State *L, const qc_msg *m)
{
    lua_createtable(L, 0, 10);
    lua_pushstring(L, qc_raft_msg_name(m->type));
    lua_setfield(L, -2, "type");
    push_u64(L, "from", m->from);
    push_u64(L, "to", m->to);
    push_u64(L, "term", m->term);
    push_u64(L, "ctx", m->ctx);
    push_u64(L, "index", m->index);
    push_u64(L, "log_term", m->log_term);
    push_u64(L, "commit", m->commit);
    push_u64(L, "flags", m->flags);
    lua_pushboolean(L, m->reject);
    lua_setfield(L, -2, "reject");
    if (m->n_entries) push_entries(L, "entries", m->entries, m->n_entries);
}

static int l_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    uint64_t peers[32];
    size_t n = 0;
    lua_getfield(L, 1, "peers");
    luaL_checktype(L, -1, LUA_TTABLE);
    for (lua_Integer i = 1; i <= (lua_Integer)luaL_len(L, -1) && n < 32; i++) {
        lua_geti(L, -1, i);
        peers[n++] = (uint64_t)luaL_checkinteger(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    qc_raft_config cfg = {
        .id = field_u64(L, 1, "id", 0),
        .peers = peers,
        .n_peers = n,
        .heartbeat_ms = (uint32_t)field_u64(L, 1, "heartbeat", 50),
        .election_ms = (uint32_t)field_u64(L, 1, "election", 300),
        .fast_retry_ms = (uint32_t)field_u64(L, 1, "fast_retry", 5),
        .seed = field_u64(L, 1, "seed", 1),
        .no_lead = (int)field_u64(L, 1, "no_lead", 0),
        .max_batch = (uint32_t)field_u64(L, 1, "max_batch", 0),
        .max_inflight = (uint32_t)field_u64(L, 1, "max_inflight", 0),
    };
    qc_hard_state hs = {0};
    int has_hs = 0;
    lua_getfield(L, 1, "hs");
    if (lua_istable(L, -1)) {
        has_hs = 1;
        hs.term = field_u64(L, -1, "term", 0);
        hs.vote = field_u64(L, -1, "vote", 0);
        hs.commit = field_u64(L, -1, "commit", 0);
    }
    lua_pop(L, 1);
    node *nd = lua_newuserdatauv(L, sizeof *nd, 0);
    nd->r = NULL;
    luaL_setmetatable(L, NODE_MT);
    int rc = qc_raft_new(&cfg, has_hs ? &hs : NULL, field_u64(L, 1, "now", 0), &nd->r);
    if (rc) return luaL_error(L, "qc_raft_new: %d", rc);
    return 1;
}

static int l_step(lua_State *L)
{
    qc_raft *r = check_node(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    qc_msg m = {0};
    lua_getfield(L, 2, "type");
    m.type = (uint8_t)msg_type(luaL_checkstring(L, -1));
    lua_pop(L, 1);
    m.from = field_u64(L, 2, "from", 0);
    m.to = field_u64(L, 2, "to", 0);
    m.term = field_u64(L, 2, "term", 0);
    m.ctx = field_u64(L, 2, "ctx", 0);
    m.index = field_u64(L, 2, "index", 0);
    m.log_term = field_u64(L, 2, "log_term", 0);
    m.commit = field_u64(L, 2, "commit", 0);
    m.flags = (uint8_t)field_u64(L, 2, "flags", 0);
    lua_getfield(L, 2, "reject");
    m.reject = (uint8_t)lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 2, "entries");
    size_t n = 0;
    m.entries = check_entries(L, lua_gettop(L), &n);
    m.n_entries = (uint32_t)n;
    lua_pushinteger(L, qc_raft_step(r, &m, (uint64_t)luaL_checkinteger(L, 3)));
    return 1;
}

static int l_tick(lua_State *L)
{
    qc_raft_tick(check_node(L), (uint64_t)luaL_checkinteger(L, 2));
    return 0;
}

/* node:link(peer, state, now): state true (up), false (down) or "gone". */
static int l_link(lua_State *L)
{
    int state = lua_type(L, 3) == LUA_TSTRING ? QC_LINK_GONE
                : lua_toboolean(L, 3)         ? QC_LINK_UP
                                              : QC_LINK_DOWN;
    qc_raft_link(check_node(L), (uint64_t)luaL_checkinteger(L, 2), state,
                 (uint64_t)luaL_checkinteger(L, 4));
    return 0;
}

static int l_transfer(lua_State *L)
{
    lua_pushinteger(L, qc_raft_transfer(check_node(L), (uint64_t)luaL_optinteger(L, 2, 0),
                                        (uint64_t)luaL_checkinteger(L, 3),
                                        (int)luaL_optinteger(L, 4, 0)));
    return 1;
}

/* node:set_healthy(healthy, now): the node's own health verdict. */
static int l_set_healthy(lua_State *L)
{
    qc_raft *r = check_node(L);
    luaL_checktype(L, 2, LUA_TBOOLEAN);
    qc_raft_set_healthy(r, lua_toboolean(L, 2), (uint64_t)luaL_checkinteger(L, 3));
    return 0;
}

/* node:peer_healthy(peer) -> 1 healthy, 0 unhealthy, -1 unknown */
static int l_peer_healthy(lua_State *L)
{
    qc_raft *r = check_node(L);
    lua_pushinteger(L, qc_raft_peer_healthy(r, (uint64_t)luaL_checkinteger(L, 2)));
    return 1;
}

/* Returns {hs = {...} or nil, msgs = {...}, events = {...}} and advances. */
static int l_ready(lua_State *L)
{
    qc_raft *r = check_node(L);
    qc_ready rd;
    qc_raft_ready(r, &rd);
    lua_createtable(L, 0, 3);
    if (rd.hard_state_changed) {
        lua_createtable(L, 0, 3);
        push_u64(L, "term", rd.hs.term);
        push_u64(L, "vote", rd.hs.vote);
        push_u64(L, "commit", rd.hs.commit);
        lua_setfield(L, -2, "hs");
    }
    lua_createtable(L, (int)rd.n_msgs, 0);
    for (size_t i = 0; i < rd.n_msgs; i++) {
        push_msg(L, &rd.msgs[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "msgs");
    lua_createtable(L, (int)rd.n_events, 0);
    static const char *const types[] = {"?", "elected", "demoted", "leader", "campaign", "config"};
    for (size_t i = 0; i < rd.n_events; i++) {
        const qc_raft_event *e = &rd.events[i];
        lua_createtable(L, 0, 5);
        lua_pushstring(L, types[e->type <= QC_EVENT_CONFIG ? e->type : 0]);
        lua_setfield(L, -2, "type");
        if (e->type == QC_EVENT_ELECTED && e->reason) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, "relay");
        } else if (e->reason) {
            lua_pushstring(L, qc_raft_reason_name(e->reason));
            lua_setfield(L, -2, "reason");
        }
        push_u64(L, "term", e->term);
        push_u64(L, "leader", e->leader);
        push_u64(L, "prev_leader", e->prev_leader);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "events");
    lua_pushboolean(L, rd.msgs_early);
    lua_setfield(L, -2, "msgs_early");
    push_entries(L, "entries", rd.entries, rd.n_entries);
    push_entries(L, "committed", rd.committed, rd.n_committed);
    if (rd.has_snapshot) {
        lua_createtable(L, 0, 3);
        push_u64(L, "index", rd.snapshot_index);
        push_u64(L, "term", rd.snapshot_term);
        lua_pushlstring(L, rd.snapshot ? (const char *)rd.snapshot : "", rd.snapshot_len);
        lua_setfield(L, -2, "data");
        lua_setfield(L, -2, "snapshot");
    }
    qc_raft_advance(r);
    return 1;
}

static int l_role(lua_State *L)
{
    lua_pushstring(L, qc_raft_role_name(qc_raft_role(check_node(L))));
    return 1;
}

#define GETTER(name, expr)                                                                         \
    static int l_##name(lua_State *L)                                                              \
    {                                                                                              \
        qc_raft *r = check_node(L);                                                                \
        lua_pushinteger(L, (lua_Integer)(expr));                                                   \
        return 1;                                                                                  \
    }
GETTER(term, qc_raft_term(r))
GETTER(leader, qc_raft_leader(r))
GETTER(vote, qc_raft_vote(r))
GETTER(id, qc_raft_id(r))
GETTER(next_deadline, qc_raft_next_deadline(r))
GETTER(lease_until, qc_raft_lease_until(r) == UINT64_MAX ? -1 : (lua_Integer)qc_raft_lease_until(r))

GETTER(commit, qc_raft_commit(r))

static int l_propose(lua_State *L)
{
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    uint64_t index = 0;
    int rc = qc_raft_propose(check_node(L), data, len, (uint64_t)luaL_checkinteger(L, 3), &index);
    lua_pushinteger(L, rc);
    lua_pushinteger(L, (lua_Integer)index);
    return 2;
}

/* node:propose_config({{id=, voter=, no_lead=}, ...}, now) -> rc, index */
static int l_propose_config(lua_State *L)
{
    qc_raft *r = check_node(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    qc_member m[QC_RAFT_MAX_MEMBERS];
    size_t n = 0;
    for (lua_Integer i = 1; i <= (lua_Integer)luaL_len(L, 2) && n < QC_RAFT_MAX_MEMBERS; i++) {
        lua_geti(L, 2, i);
        lua_getfield(L, -1, "voter");
        int voter = lua_toboolean(L, -1);
        lua_getfield(L, -2, "no_lead");
        int no_lead = lua_toboolean(L, -1);
        lua_pop(L, 2);
        m[n++] = (qc_member){
            .id = field_u64(L, -1, "id", 0),
            .flags = (uint8_t)((voter ? QC_MEMBER_VOTER : 0) | (no_lead ? QC_MEMBER_NO_LEAD : 0))};
        lua_pop(L, 1);
    }
    uint8_t data[2 + 9 * QC_RAFT_MAX_MEMBERS];
    qc_raft_conf_write(data, m, n);
    uint64_t index = 0;
    int rc = qc_raft_propose_config(r, data, qc_raft_conf_size(n),
                                    (uint64_t)luaL_checkinteger(L, 3), &index);
    lua_pushinteger(L, rc);
    lua_pushinteger(L, (lua_Integer)index);
    return 2;
}

static int l_restore(lua_State *L)
{
    qc_raft *r = check_node(L);
    size_t n;
    qc_entry *e = check_entries(L, 4, &n);
    lua_pushinteger(L, qc_raft_restore(r, (uint64_t)luaL_checkinteger(L, 2),
                                       (uint64_t)luaL_checkinteger(L, 3), e, n));
    return 1;
}

static int l_compact(lua_State *L)
{
    lua_pushinteger(L, qc_raft_compact(check_node(L), (uint64_t)luaL_checkinteger(L, 2)));
    return 1;
}

static int l_read_index(lua_State *L)
{
    uint64_t index = 0;
    int rc = qc_raft_read_index(check_node(L), (uint64_t)luaL_checkinteger(L, 2), &index);
    lua_pushinteger(L, rc);
    lua_pushinteger(L, (lua_Integer)index);
    return 2;
}

GETTER(last_index, qc_raft_last_index(r))
GETTER(applied, qc_raft_applied(r))
GETTER(stable, qc_raft_stable(r))

/* A boolean: 0 is true in Lua, and Cluster:process loops while it holds. */
static int l_has_ready(lua_State *L)
{
    lua_pushboolean(L, qc_raft_has_ready(check_node(L)));
    return 1;
}

/* node:persisted(index, term): the writes handed out up to there are durable. */
static int l_persisted(lua_State *L)
{
    qc_raft_persisted(check_node(L), (uint64_t)luaL_checkinteger(L, 2),
                      (uint64_t)luaL_checkinteger(L, 3));
    return 0;
}

static int l_step_down(lua_State *L)
{
    lua_pushinteger(L, qc_raft_step_down(check_node(L), (uint64_t)luaL_checkinteger(L, 2),
                                         (int)luaL_optinteger(L, 3, QC_DEMOTE_SHUTDOWN)));
    return 1;
}

static int l_link_up(lua_State *L)
{
    lua_pushboolean(L, qc_raft_link_up(check_node(L), (uint64_t)luaL_checkinteger(L, 2)));
    return 1;
}

static int l_is_leader(lua_State *L)
{
    qc_raft *r = check_node(L);
    lua_pushboolean(L, qc_raft_is_leader(r, (uint64_t)luaL_checkinteger(L, 2)));
    return 1;
}

static int l_gc(lua_State *L)
{
    node *n = luaL_checkudata(L, 1, NODE_MT);
    qc_raft_free(n->r);
    n->r = NULL;
    return 0;
}

static const luaL_Reg node_methods[] = {
    {"step", l_step},
    {"propose", l_propose},
    {"propose_config", l_propose_config},
    {"restore", l_restore},
    {"compact", l_compact},
    {"read_index", l_read_index},
    {"last_index", l_last_index},
    {"applied", l_applied},
    {"stable", l_stable},
    {"has_ready", l_has_ready},
    {"persisted", l_persisted},
    {"tick", l_tick},
    {"link", l_link},
    {"transfer", l_transfer},
    {"set_healthy", l_set_healthy},
    {"peer_healthy", l_peer_healthy},
    {"ready", l_ready},
    {"role", l_role},
    {"term", l_term},
    {"leader", l_leader},
    {"vote", l_vote},
    {"id", l_id},
    {"is_leader", l_is_leader},
    {"next_deadline", l_next_deadline},
    {"lease_until", l_lease_until},
    {"commit", l_commit},
    {"step_down", l_step_down},
    {"link_up", l_link_up},
    {"close", l_gc},
    {NULL, NULL},
};

int luaopen_qcraft(lua_State *L)
{
    luaL_newmetatable(L, NODE_MT);
    lua_newtable(L);
    luaL_setfuncs(L, node_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, l_new);
    lua_setfield(L, -2, "new");
    lua_pushinteger(L, QC_MSG_FLAG_FAST);
    lua_setfield(L, -2, "FLAG_FAST");
    lua_pushinteger(L, QC_MSG_FLAG_TRANSFER);
    lua_setfield(L, -2, "FLAG_TRANSFER");
    lua_pushinteger(L, QC_MSG_FLAG_UNHEALTHY);
    lua_setfield(L, -2, "FLAG_UNHEALTHY");
    return 1;
}
