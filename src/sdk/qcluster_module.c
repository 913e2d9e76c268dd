/* The Lua 5.4 C module "qcluster" (build/lua/qcluster.so): a Lua program runs
 * an in-process QCluster node (libqcluster) on a libev loop the module owns
 * and only the host's thread drives (step, run, fd), so hooks run on the
 * host's lua_State, inside those calls, one at a time. It starts no thread
 * and installs no signal handler unless asked to (qcluster.on_signal). */
#include <ev.h>
#include <lauxlib.h>
#include <lua.h>
#include <qcluster.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "base/embedded.h"
#include "base/log.h"
#include "lua/luajson.h"

#define LOOP_KEY "qcluster.loop"
#define CLUSTER_MT "qcluster.cluster"
#define CONFIG_KEY "qcluster.config"
/* libev keeps its next timer to itself, so a host that polls fd() wakes at
 * least this often (seconds) to let the node's timers run. */
#define MAX_WAIT 0.01

typedef struct sigwatch {
    ev_signal w;
    int ref; /* the Lua function in the registry, LUA_NOREF when unused */
} sigwatch;

static const struct {
    const char *name;
    int signo;
} signals[] = {
    {"HUP", SIGHUP}, {"INT", SIGINT}, {"TERM", SIGTERM}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}};
#define NSIGNALS (sizeof signals / sizeof signals[0])

/* One per lua_State (a userdata in the registry): the loop every node of
 * this state runs on. */
typedef struct lmod {
    struct ev_loop *loop;
    lua_State *L;    /* the thread whose call runs the loop now; NULL: none */
    int quiet;       /* > 0: signal functions are skipped (a finalizer runs) */
    int interrupted; /* a signal function ran: run() returns early */
    int fd;          /* the loop's backend fd, -1 when unknown */
    ev_timer wake;   /* bounds step(timeout) and run(seconds) */
    sigwatch sig[NSIGNALS];
} lmod;

/* A cluster object: one node. */
typedef struct lcluster {
    qc_node *node;  /* owned; NULL once freed */
    lmod *m;        /* kept alive by the object's user value */
    int hooks_ref;  /* table of hook functions in the registry */
    int anchor_ref; /* the object itself until it has stopped, so GC never frees it mid-stop */
    int quiet;      /* > 0: its hooks are skipped (its finalizer runs) */
    int stopped;    /* on_stop was delivered: the node has really stopped */
} lcluster;

/* ---- the loop ---------------------------------------------------------- */

/* Stops a signal watcher; it was unreferenced when started (libev wants
 * the reference back first). */
static void unwatch(lmod *m, sigwatch *s)
{
    if (!ev_is_active(&s->w)) return;
    ev_ref(m->loop);
    ev_signal_stop(m->loop, &s->w);
}

static int loop_gc(lua_State *L)
{
    lmod *m = lua_touserdata(L, 1);
    if (!m->loop) return 0;
    for (size_t i = 0; i < NSIGNALS; i++) unwatch(m, &m->sig[i]);
    ev_loop_destroy(m->loop);
    m->loop = NULL;
    return 0;
}

static void wake_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ONE);
}

/* libev shows a loop's backend fd (epoll's) only to an ev_embed watcher:
 * start one on a throwaway loop and read it. -1 when it cannot be had. */
static int backend_fd(struct ev_loop *loop)
{
    if (!(ev_backend(loop) & ev_embeddable_backends())) return -1;
    struct ev_loop *outer = ev_loop_new(EVBACKEND_SELECT | EVFLAG_NOENV);
    if (!outer) return -1;
    ev_embed w;
    ev_embed_init(&w, NULL, loop);
    ev_embed_start(outer, &w);
    int fd = w.io.fd;
    ev_embed_stop(outer, &w);
    ev_loop_destroy(outer);
    return fd;
}

/* Pushes this state's lmod userdata (created on first use) and returns it. */
static lmod *push_lmod(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, LOOP_KEY) == LUA_TUSERDATA) return lua_touserdata(L, -1);
    lua_pop(L, 1);
    lmod *m = lua_newuserdatauv(L, sizeof *m, 0);
    memset(m, 0, sizeof *m);
    for (size_t i = 0; i < NSIGNALS; i++) m->sig[i].ref = LUA_NOREF;
    /* an embeddable backend, so that fd() can name its fd */
    m->loop = ev_loop_new(ev_recommended_backends() & ev_embeddable_backends());
    if (!m->loop) luaL_error(L, "qcluster: cannot create an event loop");
    m->fd = backend_fd(m->loop);
    ev_set_userdata(m->loop, m);
    ev_timer_init(&m->wake, wake_cb, 0, 0);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, loop_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, LOOP_KEY);
    return m;
}

/* Runs the loop with flags (EVRUN_ONCE, EVRUN_NOWAIT or 0) on behalf of L,
 * for at most wait seconds when wait > 0. Hooks run inside, on L. */
static void run_loop(lua_State *L, lmod *m, int flags, double wait)
{
    lua_State *outer = m->L;
    m->L = L;
    if (wait > 0) {
        ev_timer_set(&m->wake, wait, 0);
        ev_timer_start(m->loop, &m->wake);
    }
    ev_run(m->loop, flags);
    ev_timer_stop(m->loop, &m->wake);
    m->L = outer;
}

/* ---- pushing values ---------------------------------------------------- */

static void set_string(lua_State *L, const char *field, const char *s)
{
    if (!s) return;
    lua_pushstring(L, s);
    lua_setfield(L, -2, field);
}

static void set_integer(lua_State *L, const char *field, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, field);
}

/* metadata is a JSON object as text; anything else makes an empty table. */
static void set_metadata(lua_State *L, const char *json)
{
    char err[128];
    int ok = json && qc_luajson_decode(L, json, strlen(json), NULL, err, sizeof err) == QC_OK;
    if (ok && !lua_istable(L, -1)) lua_pop(L, 1);
    if (!ok || !lua_istable(L, -1)) lua_newtable(L);
    lua_setfield(L, -2, "metadata");
}

/* A Peer table, shaped as the agent's hooks get it: {identifier, host,
 * port, metadata}, and with state (up, role, voter, priority) the argument
 * of on_peer_* and on_member_*. */
static void push_peer(lua_State *L, const qc_peer *p, int with_state)
{
    lua_createtable(L, 0, with_state ? 8 : 4);
    set_string(L, "identifier", p->identifier ? p->identifier : "");
    set_string(L, "host", p->host ? p->host : "");
    set_integer(L, "port", p->port);
    set_metadata(L, p->metadata);
    if (!with_state) return;
    lua_pushboolean(L, p->up);
    lua_setfield(L, -2, "up");
    set_string(L, "role", p->role);
    lua_pushboolean(L, p->voter);
    lua_setfield(L, -2, "voter");
    set_integer(L, "priority", p->priority);
}

/* The hook argument of ev, field for field as README "Hooks" gives it. */
static void push_event(lua_State *L, const qc_event *ev)
{
    static const struct {
        const char *field;
        size_t off;
    } peers[] = {{"self", offsetof(qc_event, self)},
                 {"leader", offsetof(qc_event, leader)},
                 {"previous_leader", offsetof(qc_event, previous_leader)}};
    if (ev->peer) {
        push_peer(L, ev->peer, 1);
        return;
    }
    lua_createtable(L, 0, 5);
    if (ev->key) {
        lua_pushlstring(L, (const char *)ev->key, ev->klen);
        lua_setfield(L, -2, "key");
        if (ev->value) lua_pushlstring(L, (const char *)ev->value, ev->vlen);
        if (ev->value) lua_setfield(L, -2, "value");
        set_integer(L, "revision", (lua_Integer)ev->revision);
    }
    if (ev->term) set_integer(L, "term", (lua_Integer)ev->term);
    set_string(L, "reason", ev->reason);
    for (size_t i = 0; i < sizeof peers / sizeof peers[0]; i++) {
        const qc_peer *p = *(const qc_peer *const *)((const char *)ev + peers[i].off);
        if (!p) continue;
        push_peer(L, p, 0);
        lua_setfield(L, -2, peers[i].field);
    }
}

/* ---- hooks ------------------------------------------------------------- */

/* Logs the error on top of L (from a hook named what): the message only,
 * which names the file and line; an error object that is no string says
 * its type. */
static void log_error(lua_State *L, const char *what)
{
    const char *msg = lua_tostring(L, -1);
    qc_log(QC_LOG_ERROR, "hook", "%s failed: %s", what, msg ? msg : luaL_typename(L, -1));
}

/* (event, hooks): calls hooks[event.name](argument) when it is defined. */
static int call_hook(lua_State *L)
{
    const qc_event *ev = lua_touserdata(L, 1);
    if (lua_getfield(L, 2, ev->name) != LUA_TFUNCTION) return 0;
    push_event(L, ev);
    lua_call(L, 1, 0);
    return 0;
}

/* Drops the object's anchor: it may be collected once unreferenced. */
static void release(lua_State *L, lcluster *c)
{
    luaL_unref(L, LUA_REGISTRYINDEX, c->anchor_ref);
    c->anchor_ref = LUA_NOREF;
}

/* Runs the Lua hook of ev's name, when there is one, on L. */
static void run_hook(lua_State *L, lcluster *c, const qc_event *ev)
{
    if (!lua_checkstack(L, 4)) {
        qc_log(QC_LOG_ERROR, "hook", "%s: out of Lua stack, skipped", ev->name);
        return;
    }
    int top = lua_gettop(L);
    lua_pushcfunction(L, call_hook);
    lua_pushlightuserdata(L, (void *)ev);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->hooks_ref);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) log_error(L, ev->name);
    lua_settop(L, top);
}

/* Every event of the node: runs the Lua hook of that name on the thread
 * that drives the loop. A hook that fails is logged; the node carries on.
 * on_stop is the node's last event: only once its hook has returned may
 * the object be collected (nothing after it runs Lua or needs the object,
 * while the stop that fired it still uses the node). */
static void on_event(qc_node *node, const qc_event *ev, void *arg)
{
    (void)node;
    lcluster *c = arg;
    lua_State *L = c->m->L;
    if (c->stopped) return;
    if (!c->quiet && L && c->hooks_ref != LUA_NOREF) run_hook(L, c, ev);
    if (strcmp(ev->name, "on_stop") != 0) return;
    c->stopped = 1;
    if (L) release(L, c); /* no L: the state closes, or the object is collected */
}

/* ---- the config -------------------------------------------------------- */

/* Pushes the embedded lua/config.lua module (the agent's own checks). */
static void push_config_module(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, CONFIG_KEY) == LUA_TTABLE) return;
    lua_pop(L, 1);
    size_t len = 0;
    const char *src = qc_embedded_lookup("config", &len);
    if (!src) luaL_error(L, "qcluster: the config checks are missing from the library");
    if (luaL_loadbufferx(L, src, len, "=config.lua", "t") != LUA_OK) lua_error(L);
    lua_call(L, 0, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, CONFIG_KEY);
}

/* Copies t's entries (t at idx: a table, or nil) into the table on top. */
static void merge_into(lua_State *L, int idx)
{
    if (lua_isnil(L, idx)) return;
    luaL_checktype(L, idx, LUA_TTABLE);
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
        lua_pushvalue(L, -2);
        lua_pushvalue(L, -2);
        lua_settable(L, -5);
    }
}

/* With key and its value on top: when they are hooks, copies them into the
 * table at hooks and returns 1. The table under `hooks` wins over on_* keys,
 * whatever order they come in, as a hooks file wins over inline hooks. */
static int take_hooks(lua_State *L, int hooks, const char *key)
{
    int inline_hook = strncmp(key, "on_", 3) == 0;
    if (!inline_hook && (strcmp(key, "hooks") != 0 || !lua_istable(L, -1))) return 0;
    lua_pushvalue(L, hooks);
    if (!inline_hook)
        merge_into(L, lua_gettop(L) - 1);
    else if (lua_getfield(L, -1, key) == LUA_TNIL) {
        lua_pushvalue(L, -3);
        lua_setfield(L, -3, key);
    }
    lua_settop(L, lua_gettop(L) - (inline_hook ? 2 : 1));
    return 1;
}

/* Turns the config table at idx into s: every key but the hooks goes over
 * as JSON, to be checked as a config file is. The on_* keys are copied into
 * the hooks table at hooks; so is the table under `hooks` (a string there
 * stays a hooks file path). Returns 0, or -1 with a message in err. */
static int settings_from_table(lua_State *L, int idx, int hooks, qc_settings *s, char *err,
                               size_t errlen)
{
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            snprintf(err, errlen, "settings: keys must be strings, got a %s", luaL_typename(L, -2));
            return -1;
        }
        const char *key = lua_tostring(L, -2);
        if (take_hooks(L, hooks, key)) continue;
        char *json = NULL, msg[200];
        size_t len = 0;
        if (qc_luajson_encode(L, -1, &json, &len, msg, sizeof msg) != QC_OK) {
            snprintf(err, errlen, "settings: %s: %s", key, msg);
            return -1;
        }
        int rc = qc_settings_set_json(s, key, json);
        free(json);
        if (rc != QC_OK) {
            snprintf(err, errlen, "settings: %s: %s", key, qc_strerror(rc));
            return -1;
        }
    }
    return 0;
}

/* Creates c->node from the config at idx (a path or a table), adding its
 * hook functions to the table at hooks. Returns 0, or -1 with err set. */
static int node_new(lua_State *L, lcluster *c, int idx, int hooks, char *err, size_t errlen)
{
    if (lua_type(L, idx) == LUA_TSTRING)
        return qc_node_new(lua_tostring(L, idx), &c->node, err, errlen) == QC_OK ? 0 : -1;
    qc_settings *s = qc_settings_new();
    if (!s) return luaL_error(L, "qcluster.new: out of memory");
    int rc = settings_from_table(L, idx, hooks, s, err, errlen);
    if (rc == 0 && qc_node_new_settings(s, &c->node, err, errlen) != QC_OK) rc = -1;
    qc_settings_free(s);
    return rc;
}

/* Checks the hooks table at idx with the agent's rules (known names,
 * functions only). Returns 0, or -1 with err set. */
static int check_hooks(lua_State *L, int idx, char *err, size_t errlen)
{
    push_config_module(L);
    lua_getfield(L, -1, "check_hooks");
    lua_pushvalue(L, idx);
    lua_call(L, 1, 2);
    int ok = lua_toboolean(L, -2);
    if (!ok) snprintf(err, errlen, "hooks: %s", lua_tostring(L, -1));
    lua_pop(L, 3);
    return ok ? 0 : -1;
}

/* Arguments of qcluster.new at 1 (config) and 2 (hooks): creates c->node
 * and fills the hooks table at hooks (the config's, then the argument's).
 * Returns 0, or -1 with err set. */
static int load(lua_State *L, lcluster *c, int hooks, char *err, size_t errlen)
{
    if (node_new(L, c, 1, hooks, err, errlen) != 0) return -1;
    lua_pushvalue(L, hooks);
    merge_into(L, 2);
    lua_pop(L, 1);
    return check_hooks(L, hooks, err, errlen);
}

/* ---- cluster objects --------------------------------------------------- */

static lcluster *check_cluster(lua_State *L)
{
    lcluster *c = luaL_checkudata(L, 1, CLUSTER_MT);
    if (!c->node) luaL_error(L, "qcluster: the cluster was freed");
    return c;
}

/* qcluster.new(config [, hooks]) -> cluster | nil, message. config: a
 * config file path, or a table of config-file keys with hook functions as
 * on_* keys or under `hooks`; hooks: more hook functions. The node starts
 * at once; it runs (and hooks run) inside step, run and stop. */
static int l_new(lua_State *L)
{
    luaL_argexpected(L, lua_type(L, 1) == LUA_TSTRING || lua_istable(L, 1), 1, "string or table");
    luaL_argexpected(L, lua_isnoneornil(L, 2) || lua_istable(L, 2), 2, "table");
    lua_settop(L, 2);
    lmod *m = push_lmod(L);                           /* 3 */
    lcluster *c = lua_newuserdatauv(L, sizeof *c, 1); /* 4 */
    memset(c, 0, sizeof *c);
    c->m = m;
    c->hooks_ref = c->anchor_ref = LUA_NOREF;
    lua_pushvalue(L, 3);
    lua_setiuservalue(L, 4, 1);
    luaL_setmetatable(L, CLUSTER_MT);
    lua_newtable(L); /* 5: the hooks */
    char err[512] = "";
    if (load(L, c, 5, err, sizeof err) != 0) {
        luaL_pushfail(L);
        lua_pushstring(L, err[0] ? err : "qcluster.new: cannot create the node");
        return 2;
    }
    lua_pushvalue(L, 5);
    c->hooks_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    int rc = qc_node_on(c->node, NULL, on_event, c);
    /* No writer thread: the log is written and fsynced inside step/run. */
    if (rc == QC_OK) rc = qc_node_set_wal_thread(c->node, 0);
    if (rc == QC_OK) rc = qc_node_start(c->node, m->loop);
    if (rc != QC_OK) {
        luaL_pushfail(L);
        lua_pushfstring(L, "qcluster.new: cannot start the node: %s",
                        *qc_node_error(c->node) ? qc_node_error(c->node) : qc_strerror(rc));
        return 2;
    }
    lua_pushvalue(L, 4);
    c->anchor_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, 4);
    return 1;
}

/* cluster:is_leader() -> boolean: this node leads and its lease holds. */
static int l_is_leader(lua_State *L)
{
    lua_pushboolean(L, qc_is_leader(check_cluster(L)->node));
    return 1;
}

/* (peer): pushes the Peer table; run protected so that p is always freed. */
static int push_leader(lua_State *L)
{
    push_peer(L, lua_touserdata(L, 1), 0);
    return 1;
}

/* cluster:get_leader_info() -> Peer | nil when no leader is known. */
static int l_get_leader_info(lua_State *L)
{
    qc_peer *p = NULL;
    if (qc_get_leader_info(check_cluster(L)->node, &p) != QC_OK || !p) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushcfunction(L, push_leader);
    lua_pushlightuserdata(L, p);
    int rc = lua_pcall(L, 1, 1, 0);
    qc_peer_free(p);
    if (rc != LUA_OK) lua_error(L);
    return 1;
}

/* The loop must not run inside itself: a hook may stop nodes, not step. */
static lcluster *check_idle(lua_State *L, const char *what)
{
    lcluster *c = check_cluster(L);
    if (c->m->L) luaL_error(L, "qcluster: %s called from a hook", what);
    return c;
}

/* cluster:step([timeout]): one turn of the loop; waits at most timeout
 * seconds (default 0: never) for something to do. Every node of this Lua
 * state shares the loop, so one step serves them all. */
static int l_step(lua_State *L)
{
    lcluster *c = check_idle(L, "step");
    double wait = luaL_optnumber(L, 2, 0);
    run_loop(L, c->m, wait > 0 ? EVRUN_ONCE : EVRUN_NOWAIT, wait);
    return 0;
}

/* cluster:run(seconds): runs the loop that long, or until a function given
 * to qcluster.on_signal ran. Returns true when it ran the whole time. */
static int l_run(lua_State *L)
{
    lcluster *c = check_idle(L, "run");
    double wait = luaL_checknumber(L, 2);
    c->m->interrupted = 0;
    if (wait > 0) run_loop(L, c->m, 0, wait);
    lua_pushboolean(L, !c->m->interrupted);
    return 1;
}

/* cluster:fd() -> integer (nil when the backend has none): readable when
 * the loop has I/O to handle. */
static int l_fd(lua_State *L)
{
    int fd = check_cluster(L)->m->fd;
    if (fd < 0)
        lua_pushnil(L);
    else
        lua_pushinteger(L, fd);
    return 1;
}

/* cluster:timeout() -> seconds the host may wait on fd() before step(0). */
static int l_timeout(lua_State *L)
{
    lmod *m = check_cluster(L)->m;
    lua_pushnumber(L, ev_pending_count(m->loop) > 0 ? 0 : MAX_WAIT);
    return 1;
}

/* cluster:stop() -> true | nil, message: stops cleanly (a leader hands
 * over first); on_demoted and on_stop run before it returns. From a hook
 * it only asks: the node stops at the loop's next turn, and the object
 * stays (uncollectable, "running") until it has; stop() may be called
 * again. */
static int l_stop(lua_State *L)
{
    lcluster *c = check_cluster(L);
    if (c->stopped) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_State *outer = c->m->L;
    c->m->L = L;
    int rc = qc_node_stop(c->node); /* on_stop, when it stops here, releases c */
    c->m->L = outer;
    if (rc != QC_OK) {
        luaL_pushfail(L);
        lua_pushstring(L, qc_strerror(rc));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* Finalizer: stops (without hooks: Lua is collecting) and frees. */
static int l_gc(lua_State *L)
{
    lcluster *c = luaL_checkudata(L, 1, CLUSTER_MT);
    c->quiet++; /* other nodes' hooks still run */
    c->m->quiet++;
    qc_node_free(c->node);
    c->m->quiet--;
    c->quiet--;
    c->node = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, c->hooks_ref);
    c->hooks_ref = LUA_NOREF;
    return 0;
}

static int l_tostring(lua_State *L)
{
    lcluster *c = luaL_checkudata(L, 1, CLUSTER_MT);
    lua_pushfstring(L, "qcluster.cluster (%s)",
                    !c->node     ? "freed"
                    : c->stopped ? "stopped"
                                 : "running");
    return 1;
}

/* ---- signals ------------------------------------------------------------ */

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    lmod *m = ev_userdata(loop);
    sigwatch *s = (sigwatch *)w;
    lua_State *L = m->L;
    m->interrupted = 1;
    ev_break(loop, EVBREAK_ONE);
    if (!L || m->quiet || !lua_checkstack(L, 3)) return;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) log_error(L, "signal function");
    lua_settop(L, top);
}

/* qcluster.on_signal(name, fn | nil): fn runs inside step/run when signal
 * name ("TERM", "INT", "HUP", "USR1", "USR2") arrives, and run() returns
 * early; nil restores the default action. */
static int l_on_signal(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    size_t i = 0;
    while (i < NSIGNALS && strcmp(signals[i].name, name) != 0) i++;
    if (i == NSIGNALS) return luaL_argerror(L, 1, "one of TERM, INT, HUP, USR1, USR2");
    luaL_argexpected(L, lua_isnoneornil(L, 2) || lua_isfunction(L, 2), 2, "function or nil");
    lmod *m = push_lmod(L);
    sigwatch *s = &m->sig[i];
    unwatch(m, s);
    luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
    s->ref = LUA_NOREF;
    if (lua_isnoneornil(L, 2)) {
        signal(signals[i].signo, SIG_DFL);
        return 0;
    }
    lua_pushvalue(L, 2);
    s->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    ev_signal_init(&s->w, signal_cb, signals[i].signo);
    ev_signal_start(m->loop, &s->w);
    ev_unref(m->loop); /* a watched signal alone keeps no loop running */
    return 0;
}

static const luaL_Reg cluster_methods[] = {
    {"is_leader", l_is_leader},
    {"get_leader_info", l_get_leader_info},
    {"step", l_step},
    {"run", l_run},
    {"fd", l_fd},
    {"timeout", l_timeout},
    {"stop", l_stop},
    {NULL, NULL},
};

static const luaL_Reg cluster_meta[] = {
    {"__gc", l_gc},
    {"__close", l_stop},
    {"__tostring", l_tostring},
    {NULL, NULL},
};

static const luaL_Reg module_functions[] = {
    {"new", l_new},
    {"on_signal", l_on_signal},
    {NULL, NULL},
};

int luaopen_qcluster(lua_State *L)
{
    if (luaL_newmetatable(L, CLUSTER_MT)) {
        luaL_setfuncs(L, cluster_meta, 0);
        luaL_newlib(L, cluster_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    luaL_newlib(L, module_functions);
    lua_pushliteral(L, QCLUSTER_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
