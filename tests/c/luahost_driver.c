/* Test driver for the config loader and the Lua host, run by the busted
 * specs: `check CONFIG` prints the resolved config as JSON (exit 0) or the
 * error (exit 2); `hooks CONFIG EVENT...` fires hooks against a fake view,
 * runs the loop until nothing is left and prints the hook counters. Special
 * events: reload, drain, run (the loop), wait:MS (the loop for MS), stop (free the host right
 * away). Test-only: it must never be linked into the agent. */
#include <ev.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "log.h"
#include "luahost.h"
#include "luajson.h"
#include "metrics.h"

#ifdef QC_DRIVER_METRICS_STUB
/* Until src/metrics.c exists: counters only, enough for the counters here. */
typedef struct stub_series {
    char key[160];
    double v;
} stub_series;
struct qc_metrics {
    stub_series s[256];
    size_t n;
};
qc_metrics *qc_metrics_new(void) { return calloc(1, sizeof(qc_metrics)); }
void qc_metrics_free(qc_metrics *m) { free(m); }
int qc_metrics_declare(qc_metrics *m, const char *n, int t, const char *h)
{
    (void)m, (void)n, (void)t, (void)h;
    return 0;
}
static double *stub_find(qc_metrics *m, const char *name, const char *lv)
{
    char key[160];
    snprintf(key, sizeof key, "%s{%s}", name, lv ? lv : "");
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->s[i].key, key) == 0) return &m->s[i].v;
    if (m->n == 256) return NULL;
    snprintf(m->s[m->n].key, sizeof m->s[m->n].key, "%s", key);
    return &m->s[m->n++].v;
}
void qc_metrics_add(qc_metrics *m, const char *n, const char *ln, const char *lv, double by)
{
    (void)ln;
    double *v = m ? stub_find(m, n, lv) : NULL;
    if (v) *v += by;
}
void qc_metrics_set(qc_metrics *m, const char *n, const char *ln, const char *lv, double x)
{
    (void)ln;
    double *v = m ? stub_find(m, n, lv) : NULL;
    if (v) *v = x;
}
void qc_metrics_observe(qc_metrics *m, const char *n, double s) { (void)m, (void)n, (void)s; }
double qc_metrics_get(const qc_metrics *m, const char *n, const char *ln, const char *lv)
{
    (void)ln;
    double *v = m ? stub_find((qc_metrics *)m, n, lv) : NULL;
    return v ? *v : 0;
}
int qc_metrics_render(const qc_metrics *m, char **out, size_t *len)
{
    (void)m;
    *out = NULL;
    *len = 0;
    return 0;
}
#endif

/* ---- a fake view: this node leads, every peer is up ------------------- */

typedef struct fake {
    const qc_config *cfg;
} fake;

static void self_info(const qc_config *c, qc_peer_info *p)
{
    memset(p, 0, sizeof *p);
    p->identifier = c->identifier;
    p->host = c->listen_host;
    p->port = c->listen_port;
    p->metadata = c->metadata;
    p->role = "leader";
    p->up = p->voter = p->is_self = 1;
}

static void peer_info(const qc_config *c, size_t i, qc_peer_info *p)
{
    memset(p, 0, sizeof *p);
    p->identifier = c->peers[i].identifier;
    p->host = c->peers[i].host;
    p->port = c->peers[i].port;
    p->metadata = c->peers[i].metadata;
    p->role = "follower";
    p->up = p->voter = 1;
}

static int v_is_leader(void *ud) { return ((fake *)ud)->cfg != NULL; }
static uint64_t v_term(void *ud) { return ((fake *)ud)->cfg ? 7 : 0; }
static const char *v_role(void *ud) { return ((fake *)ud)->cfg ? "leader" : "follower"; }
static uint64_t v_commit(void *ud) { return ((fake *)ud)->cfg ? 1 : 0; }
static int v_leader(void *ud, qc_peer_info *out)
{
    fake *f = ud;
    if (!f->cfg) return QC_ENOLEADER;
    self_info(f->cfg, out);
    return 0;
}
static void v_self(void *ud, qc_peer_info *out)
{
    fake *f = ud;
    static const qc_config none = {.identifier = "", .listen_host = "", .metadata = "{}"};
    self_info(f->cfg ? f->cfg : &none, out);
}
static size_t v_peers(void *ud, qc_peer_info *out, size_t max)
{
    fake *f = ud;
    size_t n = f->cfg ? f->cfg->n_peers : 0;
    for (size_t i = 0; i < n && i < max; i++) peer_info(f->cfg, i, &out[i]);
    return n;
}

static const char *const hook_names[] = {
    "on_start",     "on_elected", "on_demoted",   "on_leader_change", "on_peer_up",
    "on_peer_down", "on_stop",    "on_kv_change", "on_member_join",   "on_member_leave",
    "exec",         "after",      NULL,
};

static int fire(qc_lua *h, const qc_config *c, const char *name)
{
    qc_peer_info self, other;
    self_info(c, &self);
    if (c->n_peers)
        peer_info(c, 0, &other);
    else
        other = self;
    qc_hook_event ev = {.hook = name};
    if (strcmp(name, "on_start") == 0) {
        ev.self = &self;
    } else if (strcmp(name, "on_elected") == 0) {
        ev.term = 7, ev.self = &self, ev.previous_leader = c->n_peers ? &other : NULL;
    } else if (strcmp(name, "on_demoted") == 0) {
        ev.term = 8, ev.reason = "higher_term", ev.leader = &other;
    } else if (strcmp(name, "on_leader_change") == 0) {
        ev.term = 7, ev.leader = &self, ev.previous_leader = c->n_peers ? &other : NULL;
    } else if (strcmp(name, "on_stop") == 0) {
        ev.reason = "shutdown";
    } else if (strncmp(name, "on_peer_", 8) == 0 || strncmp(name, "on_member_", 10) == 0) {
        ev.peer = &other;
    }
    return qc_lua_fire(h, &ev);
}

static void print_counters(qc_lua *h, qc_metrics *m)
{
    printf("pending=%zu\n", qc_lua_pending(h));
    for (int i = 0; hook_names[i]; i++) {
        double runs = qc_metrics_get(m, "qcluster_hook_runs_total", "hook", hook_names[i]);
        double errs = qc_metrics_get(m, "qcluster_hook_errors_total", "hook", hook_names[i]);
        if (runs > 0 || errs > 0)
            printf("counter %s runs=%.0f errors=%.0f\n", hook_names[i], runs, errs);
    }
}

static void on_wait(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ONE);
}

static int run_hooks(struct ev_loop *loop, int argc, char **argv)
{
    qc_metrics *m = qc_metrics_new();
    fake f = {0};
    qc_view view = {.ud = &f,
                    .is_leader = v_is_leader,
                    .term = v_term,
                    .role = v_role,
                    .commit_index = v_commit,
                    .leader = v_leader,
                    .self = v_self,
                    .peers = v_peers};
    qc_lua *h = NULL;
    qc_config cfg;
    char err[1024];
    if (!m || qc_lua_new(loop, &view, m, &h) != QC_OK) {
        fprintf(stderr, "out of memory\n");
        qc_metrics_free(m);
        return 1;
    }
    if (qc_lua_load(h, argv[2], &cfg, err, sizeof err) != QC_OK) {
        fprintf(stderr, "%s\n", err);
        qc_lua_free(h);
        qc_metrics_free(m);
        return 2;
    }
    qc_log_set_level(cfg.log_level);
    f.cfg = &cfg;
    int rc = 0, stop = 0;
    for (int i = 3; i < argc && rc == 0; i++) {
        if (strcmp(argv[i], "reload") == 0) {
            ev_run(loop, 0);
            int r = qc_lua_reload_hooks(h, err, sizeof err);
            printf("reload: %s\n", r == QC_OK ? "ok" : err);
            fflush(stdout);
        } else if (strcmp(argv[i], "drain") == 0) {
            qc_lua_drain(h);
        } else if (strcmp(argv[i], "run") == 0) {
            ev_run(loop, 0);
        } else if (strncmp(argv[i], "wait:", 5) == 0) {
            ev_timer t;
            ev_timer_init(&t, on_wait, atoi(argv[i] + 5) / 1000.0, 0.);
            ev_timer_start(loop, &t);
            ev_run(loop, 0);
            ev_timer_stop(loop, &t);
        } else if (strcmp(argv[i], "stop") == 0) {
            stop = 1; /* free the host with whatever is still running */
            break;
        } else if (fire(h, &cfg, argv[i]) != QC_OK) {
            fprintf(stderr, "cannot queue %s\n", argv[i]);
            rc = 1;
        }
    }
    if (!stop) ev_run(loop, 0);
    print_counters(h, m);
    qc_lua_free(h);
    qc_config_free(&cfg);
    qc_metrics_free(m);
    return rc;
}

/* ---- check ------------------------------------------------------------- */

static void set_str(lua_State *L, const char *k, const char *v)
{
    if (!v) return;
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

static void set_json(lua_State *L, const char *k, const char *text)
{
    char err[128];
    if (qc_luajson_decode(L, text, strlen(text), NULL, err, sizeof err) != QC_OK)
        lua_pushstring(L, err);
    lua_setfield(L, -2, k);
}

/* Runs under lua_pcall: builds the output table from the C struct plus the
 * later-issue keys that only live in the resolved Lua table. */
static int build_output(lua_State *L)
{
    const qc_config *c = lua_touserdata(L, 1);
    lua_newtable(L);
    set_str(L, "identifier", c->identifier);
    set_str(L, "listen_host", c->listen_host);
    set_int(L, "listen_port", c->listen_port);
    set_json(L, "metadata", c->metadata);
    set_str(L, "api_host", c->api_host);
    set_int(L, "api_port", c->api_port);
    set_str(L, "data_dir", c->data_dir);
    set_int(L, "heartbeat_ms", c->heartbeat_ms);
    set_int(L, "election_timeout_ms", c->election_timeout_ms);
    set_int(L, "hook_timeout_ms", c->hook_timeout_ms);
    set_str(L, "hooks", c->hooks_path);
    set_str(L, "log_level", qc_log_level_name(c->log_level));
    set_str(L, "secret", c->secret ? "(set)" : NULL);
    set_str(L, "api_token", c->api_token ? "(set)" : NULL);
    set_str(L, "dir", c->dir);
    lua_createtable(L, (int)c->n_peers, 0);
    for (size_t i = 0; i < c->n_peers; i++) {
        lua_newtable(L);
        set_str(L, "identifier", c->peers[i].identifier);
        set_str(L, "host", c->peers[i].host);
        set_int(L, "port", c->peers[i].port);
        set_json(L, "metadata", c->peers[i].metadata);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "peers");
    static const char *const later[] = {"role",          "priority",         "join",
                                        "preempt",       "preempt_delay_ms", "max_voters",
                                        "leave_on_stop", "reap_after",       NULL};
    lua_getfield(L, LUA_REGISTRYINDEX, "qcluster.config");
    for (int i = 0; later[i]; i++) {
        lua_getfield(L, -1, later[i]);
        lua_setfield(L, -3, later[i]);
    }
    lua_pop(L, 1);
    return 1;
}

static int check(struct ev_loop *loop, const char *path)
{
    char err[1024];
    qc_config cfg;
    qc_lua *h = NULL;
    fake f = {0};
    qc_view view = {.ud = &f,
                    .is_leader = v_is_leader,
                    .term = v_term,
                    .leader = v_leader,
                    .self = v_self,
                    .peers = v_peers};
    /* The full load (with the hooks file) decides validity... */
    if (qc_lua_new(loop, &view, NULL, &h) != QC_OK) return 1;
    int rc = qc_lua_load(h, path, &cfg, err, sizeof err);
    qc_lua_free(h);
    if (rc != QC_OK) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    qc_config_free(&cfg);
    /* ...then a plain state gives us the resolved table to print. */
    lua_State *L = luaL_newstate();
    if (!L) return 1;
    luaL_openlibs(L);
    /* The printed values come from this second load; a config calling
     * qcluster.* gets nil from every function here. */
    if (luaL_dostring(L, "qcluster = setmetatable({}, {__index = function() "
                         "return function() end end})") != LUA_OK) {
        lua_close(L);
        return 1;
    }
    if (qc_config_load(L, path, &cfg, err, sizeof err) != QC_OK) {
        fprintf(stderr, "%s\n", err);
        lua_close(L);
        return 2;
    }
    char *json = NULL;
    size_t len;
    lua_pushcfunction(L, build_output);
    lua_pushlightuserdata(L, &cfg);
    rc = lua_pcall(L, 1, 1, 0) == LUA_OK ? qc_luajson_encode(L, -1, &json, &len, err, sizeof err)
                                         : QC_EINVAL;
    if (rc == QC_OK)
        printf("%s\n", json);
    else
        fprintf(stderr, "cannot print: %s\n", lua_tostring(L, -1));
    free(json);
    qc_config_free(&cfg);
    lua_close(L);
    return rc == QC_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "check") != 0 && strcmp(argv[1], "hooks") != 0)) {
        fprintf(stderr, "usage: %s check CONFIG | hooks CONFIG EVENT...\n", argv[0]);
        return 2;
    }
    struct ev_loop *loop = ev_default_loop(0);
    if (!loop) {
        fprintf(stderr, "cannot start libev\n");
        return 1;
    }
    int rc = strcmp(argv[1], "check") == 0 ? check(loop, argv[2]) : run_hooks(loop, argc, argv);
    fflush(stdout);
    ev_loop_destroy(loop);
    return rc;
}
