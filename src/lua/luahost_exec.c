/* qcluster.exec and qcluster.after: the children and timers a hook starts
 * (fork + ev_child or a pidfd + ev_io through spawn.c, SIGKILL of the
 * process group after the timeout), each of whose callbacks comes back as a
 * job on the hook queue (luahost.c). Part of the Lua host; its private
 * interface is luahost_int.h. Nothing here runs Lua or blocks. */
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/common.h"
#include "base/log.h"
#include "base/spawn.h"
#include "lua/luahost_int.h"

extern char **environ;

/* exec(): a command runs at most this long unless opts.timeout_ms says. */
#define QC_EXEC_DEFAULT_TIMEOUT_MS 30000
/* exec(): output kept per stream; the rest is read and dropped. */
#define QC_EXEC_MAX_OUTPUT (1u << 20)

/* ---- exec ----------------------------------------------------------- */

/* Drops a callback's reference from the loop thread (out of memory paths):
 * while a step is out the state is the Lua thread's, and the slot is left
 * (a small leak, on a path that is already failing). */
void luahost_drop_ref(qc_lua *h, int ref)
{
    if (!h->busy && h->L) luaL_unref(h->L, LUA_REGISTRYINDEX, ref);
}

static void exec_unlink(qc_exec *x)
{
    qc_lua *h = x->h;
    if (x->prev)
        x->prev->next = x->next;
    else
        h->execs = x->next;
    if (x->next) x->next->prev = x->prev;
}

/* The child ended (spawn.c): its callback, if any, goes on the queue with
 * the output, which the job takes over. */
static void exec_done(void *ud, qc_spawn_result *r)
{
    qc_exec *x = ud;
    qc_lua *h = x->h;
    exec_unlink(x);
    h->n_execs--;
    if (x->fn_ref != LUA_NOREF) {
        job *j = luahost_job_new("exec", 0);
        if (!j) {
            qc_log(QC_LOG_ERROR, "hook", "exec: out of memory, callback dropped");
            luahost_drop_ref(h, x->fn_ref);
        } else {
            j->kind = JOB_EXEC;
            j->fn_ref = x->fn_ref;
            j->status = r->status;
            j->signal = r->signal;
            j->timed_out = r->timed_out;
            j->out = r->out;
            j->out_len = r->out_len;
            j->err = r->err;
            j->err_len = r->err_len;
            r->out = r->err = NULL;
            luahost_enqueue(h, j);
        }
    }
    free(x);
}

/* Builds the child's environment as a Lua userdata (char *[]), keeping the
 * "K=V" strings alive in a table just below it. Raises on bad opts.env. */
static char **build_env(lua_State *L, int opts)
{
    size_t n0 = 0;
    while (environ && environ[n0]) n0++;
    lua_newtable(L); /* keeps the strings */
    int keep = lua_gettop(L);
    size_t k = 0;
    if (opts && lua_getfield(L, opts, "env") != LUA_TNIL) {
        if (!lua_istable(L, -1)) luaL_error(L, "opts.env: expected a table");
        int env = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, env)) {
            size_t kl;
            if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "opts.env: keys must be strings");
            const char *key = lua_tolstring(L, -2, &kl);
            if (kl == 0 || strchr(key, '=')) luaL_error(L, "opts.env: bad name '%s'", key);
            if (!lua_isstring(L, -1)) luaL_error(L, "opts.env.%s: expected a string", key);
            lua_pushfstring(L, "%s=%s", key, lua_tostring(L, -1));
            lua_rawseti(L, keep, (lua_Integer)++k);
            lua_pop(L, 1);
        }
    }
    lua_settop(L, keep);
    char **envp = lua_newuserdatauv(L, (n0 + k + 1) * sizeof *envp, 0);
    size_t m = 0;
    for (size_t i = 0; i < n0; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t nl = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        int replaced = 0;
        for (size_t e = 1; e <= k && !replaced; e++) {
            lua_rawgeti(L, keep, (lua_Integer)e);
            const char *s = lua_tostring(L, -1);
            replaced = strncmp(s, environ[i], nl) == 0 && s[nl] == '=';
            lua_pop(L, 1);
        }
        if (!replaced) envp[m++] = environ[i];
    }
    for (size_t e = 1; e <= k; e++) {
        lua_rawgeti(L, keep, (lua_Integer)e);
        envp[m++] = (char *)lua_tostring(L, -1); /* anchored in keep */
        lua_pop(L, 1);
    }
    envp[m] = NULL;
    return envp;
}

static int exec_fail(lua_State *L, int ref, const char *what)
{
    int e = errno;
    if (ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, ref);
    luaL_pushfail(L);
    lua_pushfstring(L, "exec: %s: %s", what, strerror(e));
    return 2;
}

static int exec_timeout_opt(lua_State *L, int opts)
{
    if (!opts || lua_getfield(L, opts, "timeout_ms") == LUA_TNIL) return QC_EXEC_DEFAULT_TIMEOUT_MS;
    int ok;
    lua_Integer ms = lua_tointegerx(L, -1, &ok);
    if (!ok || ms <= 0 || ms > 86400000) luaL_error(L, "opts.timeout_ms: expected an integer > 0");
    lua_pop(L, 1);
    return (int)ms;
}

/* An exec refused before it started (exec_max reached): nil, message, and
 * the callback (ref, taken over) gets {status = -1, error = message}
 * through the queue, so a hook that only looks at its callback sees it. */
static int exec_refuse(lua_State *L, int ref, const char *msg)
{
    qc_lua *h = luahost_of(L);
    if (ref != LUA_NOREF) {
        job *j = luahost_job_new("exec", luahost_str_size(msg));
        if (!j) {
            luaL_unref(L, LUA_REGISTRYINDEX, ref);
        } else {
            char *cur = j->strings + luahost_str_size("exec");
            j->kind = JOB_EXEC;
            j->fn_ref = ref;
            j->status = -1;
            j->reason = luahost_put_str(&cur, msg);
            luahost_enqueue(h, j);
        }
    }
    luaL_pushfail(L);
    lua_pushstring(L, msg);
    return 2;
}

/* qcluster.exec(command [, opts] [, callback]) -> pid | nil, err */
int luahost_l_exec(lua_State *L)
{
    qc_lua *h = luahost_of(L);
    const char *cmd = luaL_checkstring(L, 1);
    int opts = 0, cb = 0;
    if (lua_isfunction(L, 2)) {
        cb = 2;
    } else {
        if (!lua_isnoneornil(L, 2)) {
            luaL_checktype(L, 2, LUA_TTABLE);
            opts = 2;
        }
        if (!lua_isnoneornil(L, 3)) {
            luaL_checktype(L, 3, LUA_TFUNCTION);
            cb = 3;
        }
    }
    if (!h->loop) return luaL_error(L, "qcluster.exec needs an event loop");
    int timeout_ms = exec_timeout_opt(L, opts);
    char **envp = build_env(L, opts);
    int ref = LUA_NOREF;
    if (cb) {
        lua_pushvalue(L, cb);
        ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    /* From here on nothing may raise: we own the callback's reference. */
    if (h->n_execs >= h->exec_max) {
        char msg[96];
        snprintf(msg, sizeof msg, "exec: %d commands already running (exec_max)", h->n_execs);
        return exec_refuse(L, ref, msg);
    }
    qc_exec *x = calloc(1, sizeof *x);
    if (!x) {
        errno = ENOMEM;
        return exec_fail(L, ref, "alloc");
    }
    qc_spawn_opts so = {.cmd = cmd,
                        .envp = envp,
                        .timeout_ms = timeout_ms,
                        .max_output = QC_EXEC_MAX_OUTPUT,
                        .label = "exec"};
    const char *what = "spawn";
    if (qc_spawn_start(h->loop, &so, exec_done, x, &x->s, &what) != 0) {
        int e = errno;
        free(x);
        errno = e;
        return exec_fail(L, ref, what);
    }
    x->h = h;
    x->fn_ref = ref;
    h->n_execs++;
    x->next = h->execs;
    if (h->execs) h->execs->prev = x;
    h->execs = x;
    lua_pushinteger(L, qc_spawn_pid(x->s));
    return 1;
}

/* ---- after ------------------------------------------------------------- */

static void after_unlink(qc_after *a)
{
    if (a->prev)
        a->prev->next = a->next;
    else
        a->h->afters = a->next;
    if (a->next) a->next->prev = a->prev;
}

static void on_after(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_after *a = w->data;
    qc_lua *h = a->h;
    after_unlink(a);
    job *j = luahost_job_new("after", 0);
    if (!j) {
        qc_log(QC_LOG_ERROR, "hook", "after: out of memory, callback dropped");
        luahost_drop_ref(h, a->fn_ref);
    } else {
        j->kind = JOB_AFTER;
        j->fn_ref = a->fn_ref;
        luahost_enqueue(h, j);
    }
    free(a);
}

/* qcluster.after(ms, fn): fn runs through the hook queue after ms. */
int luahost_l_after(lua_State *L)
{
    qc_lua *h = luahost_of(L);
    lua_Number ms = luaL_checknumber(L, 1);
    luaL_argcheck(L, ms >= 0 && ms <= 86400000.0 * 365, 1, "expected milliseconds >= 0");
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    qc_after *a = calloc(1, sizeof *a);
    if (!a) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        return luaL_error(L, "out of memory");
    }
    a->h = h;
    a->fn_ref = ref;
    a->w.data = a;
    ev_timer_init(&a->w, on_after, ms / 1000.0, 0.);
    if (h->loop) ev_timer_start(h->loop, &a->w); /* else when attached */
    a->next = h->afters;
    if (h->afters) h->afters->prev = a;
    h->afters = a;
    return 0;
}

void luahost_kill_exec(qc_lua *h, qc_exec *x)
{
    if (x->fn_ref != LUA_NOREF && h->L) luaL_unref(h->L, LUA_REGISTRYINDEX, x->fn_ref);
    qc_spawn_cancel(x->s);
    h->n_execs--;
    free(x);
}
