/* The Lua host's life: qc_lua_new (the state and the module), loading the
 * config and the hooks file (qc_lua_load, qc_lua_load_json,
 * qc_lua_reload_hooks), and qc_lua_free, which ends the Lua thread or
 * leaves it the state when a hook is stuck. Part of the Lua host; its
 * private interface is luahost_int.h. */
#include <lauxlib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/common.h"
#include "base/embedded.h"
#include "base/log.h"
#include "lua/luahost_int.h"

/* Loading a Lua config runs before the loop: it may take this long. */
#define QC_CONFIG_BUDGET_MS 5000

static void declare_metrics(qc_metrics *m)
{
    if (!m) return;
    qc_metrics_declare(m, "qcluster_hook_runs_total", QC_METRIC_COUNTER,
                       "Lua hook calls run, by hook.");
    qc_metrics_declare(m, "qcluster_hook_errors_total", QC_METRIC_COUNTER,
                       "Lua hook calls that failed or ran out of time, by hook.");
    qc_metrics_declare(m, "qcluster_hook_overruns_total", QC_METRIC_COUNTER,
                       "Hook calls that ran past hook_timeout_ms, by hook.");
    qc_metrics_declare(m, "qcluster_hook_duration_seconds", QC_METRIC_HISTOGRAM,
                       "Time spent in Lua hook calls.");
}

int qc_lua_new(struct ev_loop *loop, const qc_view *view, qc_metrics *metrics, qc_lua **out)
{
    *out = NULL;
    qc_lua *h = calloc(1, sizeof *h);
    if (!h) return QC_ENOMEM;
    if (pthread_mutex_init(&h->mu, NULL) != 0) {
        free(h);
        return QC_ENOMEM;
    }
    if (pthread_cond_init(&h->cv, NULL) != 0) {
        pthread_mutex_destroy(&h->mu);
        free(h);
        return QC_ENOMEM;
    }
    h->L = luaL_newstate();
    if (!h->L) {
        pthread_cond_destroy(&h->cv);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return QC_ENOMEM;
    }
    *(qc_lua **)lua_getextraspace(h->L) = h;
    lua_pushcfunction(h->L, luahost_open_all);
    if (lua_pcall(h->L, 0, 0, 0) != LUA_OK) {
        lua_close(h->L);
        pthread_cond_destroy(&h->cv);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return QC_ENOMEM;
    }
    h->view = view;
    h->metrics = metrics;
    h->hook_timeout_ms = QC_DEFAULT_HOOK_TIMEOUT_MS;
    h->exec_max = QC_DEFAULT_EXEC_MAX;
    h->hook_stuck_ms = 3 * QC_DEFAULT_ELECTION_TIMEOUT_MS;
    h->next_watch_id = 1;
    if (loop) qc_lua_attach(h, loop);
    declare_metrics(metrics);
    *out = h;
    return QC_OK;
}

/* Ends the Lua thread. 0, or -1 when its step is stuck: it is left to
 * free the state and h when the hook returns (orphan_free), and h->L is
 * no longer this thread's to touch. */
static void free_loop_side(qc_lua *h, job *keep);

static int stop_thread(qc_lua *h)
{
    if (!h->has_thread) return 0;
    pthread_mutex_lock(&h->mu);
    if (h->busy) {
        h->orphaned = 1;
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
        pthread_detach(h->thread);
        qc_log(QC_LOG_WARN, "hook", "%s still running: its thread is left behind until it returns",
               h->cur_label);
        return -1;
    }
    h->quit = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->thread, NULL);
    h->has_thread = 0;
    return 0;
}

void qc_lua_free(qc_lua *h)
{
    if (!h) return;
    if (h->loop) {
        ev_ref(h->loop);
        ev_check_stop(h->loop, &h->check);
        ev_idle_stop(h->loop, &h->idle);
        ev_ref(h->loop);
        ev_async_stop(h->loop, &h->async);
        ev_timer_stop(h->loop, &h->watchdog);
        if (h->ref_held) ev_unref(h->loop);
        h->ref_held = 0;
    }
    int orphan = stop_thread(h) != 0;
    if (orphan) {
        /* Everything but the state, the watches and the job out is freed
         * here, without touching the state (references are dropped with
         * it); the Lua thread frees the rest. */
        lua_State *L = h->L;
        h->L = NULL;
        job *cur = h->current;
        free_loop_side(h, cur);
        h->L = L;
        h->current = cur;
        pthread_mutex_lock(&h->mu);
        h->quit = 1; /* the thread frees it all once the hook returns */
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
        return;
    }
    free_loop_side(h, NULL);
    while (h->watches) luahost_watch_free(h, h->watches);
    lua_close(h->L);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

/* The loop's side of qc_lua_free: children, timers, jobs but keep,
 * requests, paths. References into the state are dropped only while
 * h->L is set. */
static void free_loop_side(qc_lua *h, job *keep)
{
    while (h->execs) {
        qc_exec *x = h->execs;
        h->execs = x->next;
        luahost_kill_exec(h, x);
    }
    while (h->afters) {
        qc_after *a = h->afters;
        h->afters = a->next;
        if (h->loop) ev_timer_stop(h->loop, &a->w);
        free(a);
    }
    while (h->head) {
        job *j = h->head;
        h->head = j->next;
        if (j != keep) luahost_job_free(h, j);
    }
    h->tail = NULL;
    /* Requests in flight belong to the view until their done: detach them,
     * so that a late done only frees its record (see qc_req). */
    for (qc_req *r = h->reqs; r; r = r->next) r->h = NULL;
    h->reqs = NULL;
    for (int i = 0; i < QC_ERRLOG_LABELS; i++) luahost_errlog_flush(&h->errlog[i]);
    free(h->hooks_path);
    free(h->config_path);
    h->hooks_path = h->config_path = NULL;
}

/* ---- loading ----------------------------------------------------------- */

/* Pushes lua/config.lua's module table (cached in the registry). */
static int push_config_module(lua_State *L, char *err, size_t errlen)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, "qcluster.configmod") == LUA_TTABLE) return QC_OK;
    lua_pop(L, 1);
    size_t n;
    const char *src = qc_embedded_lookup("config", &n);
    if (!src) {
        snprintf(err, errlen, "the config checker is missing from the build");
        return QC_EINVAL;
    }
    if (luaL_loadbuffer(L, src, n, "=lua/config.lua") != LUA_OK ||
        lua_pcall(L, 0, 1, 0) != LUA_OK) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return QC_EINVAL;
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, "qcluster.configmod");
    return QC_OK;
}

/* Every lua check that names a function finds it in the hooks table at
 * tbl (mod: lua/config.lua's module); else the message in err. */
static int lua_checks_ok(qc_lua *h, int mod, int tbl, char *err, size_t errlen)
{
    lua_State *L = h->L;
    lua_getfield(L, mod, "check_lua_checks");
    lua_getfield(L, LUA_REGISTRYINDEX, "qcluster.config");
    lua_pushvalue(L, tbl);
    int ok = lua_pcall(L, 2, 2, 0) == LUA_OK && lua_toboolean(L, -2);
    if (!ok) {
        const char *m = lua_tostring(L, -1);
        snprintf(err, errlen, "%s: %s", h->config_path ? h->config_path : "config",
                 m ? m : "bad lua check");
    }
    lua_pop(L, 2);
    return ok ? QC_OK : QC_EINVAL;
}

/* Pushes a fresh hooks table: inline on_* of the config, then the file's. */
static int build_hooks(qc_lua *h, char *err, size_t errlen)
{
    lua_State *L = h->L;
    int top = lua_gettop(L);
    if (!lua_checkstack(L, 10) || push_config_module(L, err, errlen) != QC_OK) {
        if (!err[0]) snprintf(err, errlen, "out of memory");
        lua_settop(L, top);
        return QC_EINVAL;
    }
    int mod = lua_gettop(L);
    lua_newtable(L);
    int tbl = lua_gettop(L);
    lua_getfield(L, mod, "HOOKS");
    lua_getfield(L, LUA_REGISTRYINDEX, "qcluster.config");
    int names = tbl + 1, conf = tbl + 2;
    for (lua_Integer i = 1; lua_rawgeti(L, names, i) == LUA_TSTRING; i++) {
        if (lua_istable(L, conf)) {
            lua_pushvalue(L, -1);
            lua_gettable(L, conf);
            lua_rawset(L, tbl);
        } else {
            lua_pop(L, 1);
        }
    }
    lua_settop(L, tbl);
    if (!h->hooks_path) {
        int rc = lua_checks_ok(h, mod, tbl, err, errlen);
        if (rc != QC_OK) {
            lua_settop(L, top);
            return rc;
        }
        lua_remove(L, mod);
        return QC_OK;
    }
    lua_pushcfunction(L, luahost_msgh);
    /* Watches the file makes while it loads belong to this load: they
     * replace the previous load's when it succeeds, and go when it fails. */
    unsigned gen = ++h->file_gen;
    h->loading_gen = gen;
    luahost_arm(h, h->hook_timeout_ms);
    int st = qc_config_loadfile(L, h->hooks_path); /* text only, close-on-exec */
    if (st == LUA_OK) st = lua_pcall(L, 0, 1, tbl + 1);
    luahost_disarm(h);
    h->loading_gen = 0;
    if (st != LUA_OK) {
        luahost_watches_drop(h, gen, 0);
        const char *m = lua_tostring(L, -1);
        if (!m) m = "cannot load the hooks file";
        snprintf(err, errlen, "%.*s", (int)strcspn(m, "\n"), m); /* no traceback */
        lua_settop(L, top);
        return st == LUA_ERRFILE ? QC_EIO : QC_EINVAL;
    }
    lua_getfield(L, mod, "check_hooks");
    lua_pushvalue(L, -2);
    if (lua_pcall(L, 1, 2, 0) != LUA_OK || !lua_toboolean(L, -2)) {
        const char *m = lua_tostring(L, -1);
        snprintf(err, errlen, "%s: %s", h->hooks_path, m ? m : "bad hooks table");
        lua_settop(L, top);
        luahost_watches_drop(h, gen, 0);
        return QC_EINVAL;
    }
    luahost_watches_drop(h, 0, gen);
    lua_pop(L, 2);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, tbl);
    }
    lua_settop(L, tbl);
    if (lua_checks_ok(h, mod, tbl, err, errlen) != QC_OK) {
        lua_settop(L, top);
        return QC_EINVAL;
    }
    lua_remove(L, mod);
    return QC_OK;
}

/* Loads the config (from path, or from json when set) and then the hooks. */
static int load_config(qc_lua *h, const char *path, const char *dir, const char *json, size_t len,
                       qc_config *cfg, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (h->running || h->busy) {
        snprintf(err, errlen, "%s: cannot load while a hook runs", path);
        return QC_EBUSY;
    }
    luahost_arm(h, QC_CONFIG_BUDGET_MS); /* a Lua config may loop, too */
    int rc = json ? qc_config_load_json(h->L, path, dir, json, len, cfg, err, errlen)
                  : qc_config_load(h->L, path, cfg, err, errlen);
    luahost_disarm(h);
    if (rc != QC_OK) return rc;
    h->hook_timeout_ms =
        cfg->hook_timeout_ms > 0 ? cfg->hook_timeout_ms : QC_DEFAULT_HOOK_TIMEOUT_MS;
    h->exec_max = cfg->exec_max > 0 ? cfg->exec_max : QC_DEFAULT_EXEC_MAX;
    h->hook_stuck_ms = cfg->hook_stuck_ms > 0
                           ? cfg->hook_stuck_ms
                           : 3 * (cfg->election_timeout_ms > 0 ? cfg->election_timeout_ms
                                                               : QC_DEFAULT_ELECTION_TIMEOUT_MS);
    free(h->hooks_path);
    free(h->config_path);
    h->hooks_path = NULL;
    if (!(h->config_path = strdup(path)) ||
        (cfg->hooks_path && !(h->hooks_path = strdup(cfg->hooks_path)))) {
        snprintf(err, errlen, "%s: out of memory", path);
        qc_config_free(cfg);
        return QC_ENOMEM;
    }
    rc = build_hooks(h, err, errlen);
    if (rc != QC_OK) {
        qc_config_free(cfg);
        return rc;
    }
    lua_setfield(h->L, LUA_REGISTRYINDEX, "qcluster.hooks");
    return QC_OK;
}

int qc_lua_load(qc_lua *h, const char *path, qc_config *cfg, char *err, size_t errlen)
{
    return load_config(h, path, NULL, NULL, 0, cfg, err, errlen);
}

int qc_lua_load_json(qc_lua *h, const char *name, const char *dir, const char *json, size_t len,
                     qc_config *cfg, char *err, size_t errlen)
{
    return load_config(h, name, dir, json, len, cfg, err, errlen);
}

int qc_lua_reload_hooks(qc_lua *h, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (h->running || h->busy) {
        snprintf(err, errlen, "cannot reload while a hook runs");
        return QC_EBUSY;
    }
    if (!h->hooks_path) return QC_OK; /* nothing to re-read */
    int rc = build_hooks(h, err, errlen);
    if (rc != QC_OK) {
        qc_log(QC_LOG_WARN, "hook", "reload failed, keeping the old hooks: %s", err);
        return rc;
    }
    lua_setfield(h->L, LUA_REGISTRYINDEX, "qcluster.hooks");
    qc_log(QC_LOG_INFO, "hook", "hooks reloaded from %s", h->hooks_path);
    return QC_OK;
}
