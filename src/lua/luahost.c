/* The Lua host's queue: hook events and callbacks queue here and run from
 * the loop one at a time, in order, each under a time budget (a count hook
 * checking a monotonic deadline), on the Lua thread; the module functions
 * that touch the loop's side run back on the loop thread (l_proxy).
 * Nothing here blocks for longer than one budget, and no hook is ever
 * cancelled because another event came. The rest of the host (luahost.h)
 * is in luahost_exec.c, luahost_kv.c, luahost_module.c and luahost_load.c;
 * luahost_int.h is what they share. */
#include "lua/luahost.h"

#include <lauxlib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/common.h"
#include "base/log.h"
#include "lua/luahost_int.h"
#include "lua/luajson.h"

/* Instructions between two looks at the clock while a hook runs. */
#define QC_BUDGET_COUNT 1000

static int l_proxy(lua_State *L);
static int on_lua_thread(qc_lua *h);

/* ---- the time budget --------------------------------------------------- */

/* A call of a C function: remembered (name and caller's line), so that
 * the watchdog can say where a hook that blocks in C is stuck. */
static void note_c_call(qc_lua *h, lua_State *L, lua_Debug *ar)
{
    if (!lua_getinfo(L, "Sn", ar) || strcmp(ar->what, "C") != 0) return;
    char buf[sizeof h->what];
    lua_Debug caller;
    if (lua_getstack(L, 1, &caller) && lua_getinfo(L, "Sl", &caller) && caller.currentline > 0)
        snprintf(buf, sizeof buf, "%s() at %s:%d", ar->name ? ar->name : "?", caller.short_src,
                 caller.currentline);
    else
        snprintf(buf, sizeof buf, "%s()", ar->name ? ar->name : "?");
    pthread_mutex_lock(&h->mu);
    memcpy(h->what, buf, sizeof buf);
    pthread_mutex_unlock(&h->mu);
}

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    qc_lua *h = luahost_of(L);
    if (ar->event == LUA_HOOKCALL) {
        /* Not the loop thread's proxied calls: those never block. */
        if (on_lua_thread(h)) note_c_call(h, L, ar);
        return;
    }
    if (!h->armed || qc_now_ms() < h->deadline_ms) return;
    h->timed_out = 1;
    /* Fire on every instruction from now on, so a Lua-level pcall that
     * swallows this error hits it again at its next instruction. */
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
    luaL_error(L, "time budget of %d ms exceeded", h->budget_ms);
}

void luahost_arm(qc_lua *h, int ms)
{
    h->armed = 1;
    h->budget_ms = ms;
    h->timed_out = 0;
    h->deadline_ms = qc_now_ms() + (uint64_t)ms;
    lua_sethook(h->L, budget_hook, LUA_MASKCOUNT | LUA_MASKCALL, QC_BUDGET_COUNT);
}

void luahost_disarm(qc_lua *h)
{
    h->armed = 0;
    lua_sethook(h->L, NULL, 0, 0);
}

int luahost_msgh(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Error text for one log line: newlines become "; ", tabs go. */
static void one_line(char *dst, size_t n, const char *src)
{
    size_t j = 0;
    for (; *src && j + 3 < n; src++) {
        if (*src == '\n') {
            dst[j++] = ';';
            dst[j++] = ' ';
        } else if (*src != '\t') {
            dst[j++] = *src;
        }
    }
    dst[j] = '\0';
}

/* ---- rate-limited error lines ------------------------------------------ */

void luahost_errlog_flush(qc_errlog *e)
{
    if (e->suppressed)
        qc_log(QC_LOG_WARN, "hook", "%s: %lu more error lines suppressed (at most %d per %d s)",
               e->label, e->suppressed, QC_ERRLOG_MAX, QC_ERRLOG_WINDOW_MS / 1000);
    e->suppressed = 0;
}

/* The slot of label: its own, a free one, or the one whose window started
 * first (its suppressed count is logged before it is reused). */
static qc_errlog *errlog_slot(qc_lua *h, const char *label)
{
    qc_errlog *oldest = &h->errlog[0];
    for (int i = 0; i < QC_ERRLOG_LABELS; i++) {
        qc_errlog *e = &h->errlog[i];
        if (e->since_ms && strncmp(e->label, label, sizeof e->label - 1) == 0) return e;
        if (!e->since_ms) {
            oldest = e;
            break;
        }
        if (e->since_ms < oldest->since_ms) oldest = e;
    }
    luahost_errlog_flush(oldest);
    memset(oldest, 0, sizeof *oldest);
    snprintf(oldest->label, sizeof oldest->label, "%s", label);
    return oldest;
}

/* Whether an error line of label may be logged now; counts it if not. */
static int errlog_allow(qc_lua *h, const char *label)
{
    qc_errlog *e = errlog_slot(h, label);
    uint64_t now = qc_now_ms();
    if (!e->since_ms || now - e->since_ms >= QC_ERRLOG_WINDOW_MS) {
        luahost_errlog_flush(e);
        e->since_ms = now ? now : 1;
        e->logged = 0;
    }
    if (e->logged < QC_ERRLOG_MAX) {
        e->logged++;
        return 1;
    }
    e->suppressed++;
    return 0;
}

/* ---- pushing values ---------------------------------------------------- */

static void push_metadata(lua_State *L, const char *text)
{
    char err[128];
    if (text && qc_luajson_decode(L, text, strlen(text), NULL, err, sizeof err) == QC_OK) {
        if (lua_istable(L, -1)) return;
        lua_pop(L, 1);
    }
    lua_newtable(L); /* the view's metadata is always an object; be safe */
}

/* A Peer table (with healthy, as this node knows it); extended adds the
 * member's state: up, role, voter and priority. */
void luahost_push_peer(lua_State *L, const qc_peer_info *p, int extended)
{
    luaL_checkstack(L, 4, NULL);
    lua_createtable(L, 0, extended ? 9 : 5);
    lua_pushstring(L, p->identifier ? p->identifier : "");
    lua_setfield(L, -2, "identifier");
    lua_pushstring(L, p->host ? p->host : "");
    lua_setfield(L, -2, "host");
    lua_pushinteger(L, p->port);
    lua_setfield(L, -2, "port");
    push_metadata(L, p->metadata);
    lua_setfield(L, -2, "metadata");
    lua_pushboolean(L, p->healthy);
    lua_setfield(L, -2, "healthy");
    if (!extended) return;
    lua_pushboolean(L, p->up);
    lua_setfield(L, -2, "up");
    if (p->role) {
        lua_pushstring(L, p->role);
        lua_setfield(L, -2, "role");
    }
    lua_pushboolean(L, p->voter);
    lua_setfield(L, -2, "voter");
    lua_pushinteger(L, p->priority);
    lua_setfield(L, -2, "priority");
}

/* ---- jobs -------------------------------------------------------------- */

static size_t peer_size(const qc_peer_info *p)
{
    if (!p) return 0;
    return luahost_str_size(p->identifier) + luahost_str_size(p->host) +
           luahost_str_size(p->metadata) + luahost_str_size(p->role);
}

const char *luahost_put_str(char **cur, const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = *cur;
    memcpy(d, s, n);
    *cur += n;
    return d;
}

static int put_peer(char **cur, qc_peer_info *dst, const qc_peer_info *src)
{
    if (!src) return 0;
    *dst = *src;
    dst->identifier = luahost_put_str(cur, src->identifier);
    dst->host = luahost_put_str(cur, src->host);
    dst->metadata = luahost_put_str(cur, src->metadata);
    dst->role = luahost_put_str(cur, src->role);
    dst->checks = NULL; /* not part of hook events: they would outlive them */
    dst->n_checks = 0;
    return 1;
}

job *luahost_job_new(const char *hook, size_t extra)
{
    job *j = calloc(1, sizeof *j + luahost_str_size(hook) + extra);
    if (!j) return NULL;
    char *cur = j->strings;
    j->hook = luahost_put_str(&cur, hook);
    j->fn_ref = LUA_NOREF;
    return j;
}

void luahost_job_free(qc_lua *h, job *j)
{
    if (j->fn_ref != LUA_NOREF && h->L) luaL_unref(h->L, LUA_REGISTRYINDEX, j->fn_ref);
    free(j->out);
    free(j->err);
    free(j);
}

void luahost_enqueue(qc_lua *h, job *j)
{
    if (h->tail)
        h->tail->next = j;
    else
        h->head = j;
    h->tail = j;
    h->pending++;
    /* While a step is out, its end starts the next (step_ended). */
    if (h->loop && !h->busy) ev_idle_start(h->loop, &h->idle);
}

static void push_event(lua_State *L, const job *j)
{
    if (j->has_peer) {
        luahost_push_peer(L, &j->peer, 1);
        return;
    }
    lua_createtable(L, 0, 5);
    if (j->has_key) {
        lua_pushlstring(L, (const char *)j->key, j->klen);
        lua_setfield(L, -2, "key");
        if (j->has_value) {
            lua_pushlstring(L, (const char *)j->value, j->vlen);
            lua_setfield(L, -2, "value");
        }
        lua_pushinteger(L, (lua_Integer)j->revision);
        lua_setfield(L, -2, "revision");
    }
    if (j->term) {
        lua_pushinteger(L, (lua_Integer)j->term);
        lua_setfield(L, -2, "term");
    }
    if (j->reason) {
        lua_pushstring(L, j->reason);
        lua_setfield(L, -2, "reason");
    }
    if (j->has_self) {
        luahost_push_peer(L, &j->self, 0);
        lua_setfield(L, -2, "self");
    }
    if (j->has_leader) {
        luahost_push_peer(L, &j->leader, 0);
        lua_setfield(L, -2, "leader");
    }
    if (j->has_prev) {
        luahost_push_peer(L, &j->prev, 0);
        lua_setfield(L, -2, "previous_leader");
    }
    if (j->has_health) {
        lua_pushboolean(L, j->healthy);
        lua_setfield(L, -2, "healthy");
        lua_pushstring(L, j->check ? j->check : "");
        lua_setfield(L, -2, "check");
        lua_pushstring(L, j->check_status ? j->check_status : "");
        lua_setfield(L, -2, "status");
        lua_pushstring(L, j->check_output ? j->check_output : "");
        lua_setfield(L, -2, "output");
    }
}

/* done(ok [, output]) of a lua check's run (upvalues: the check's index
 * and the run); answers after the first, or after the run ended, are
 * ignored by the health runner. */
static int l_check_done(lua_State *L)
{
    qc_lua *h = luahost_of(L);
    size_t index = (size_t)lua_tointeger(L, lua_upvalueindex(1));
    uint64_t run = (uint64_t)lua_tointeger(L, lua_upvalueindex(2));
    size_t len = 0;
    const char *out = NULL;
    if (lua_type(L, 2) == LUA_TSTRING || lua_type(L, 2) == LUA_TNUMBER)
        out = lua_tolstring(L, 2, &len);
    if (h->check_done) h->check_done(h->check_ud, index, run, lua_toboolean(L, 1), out, len);
    return 0;
}

static void push_exec_result(lua_State *L, const job *j)
{
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, j->status);
    lua_setfield(L, -2, "status");
    lua_pushlstring(L, j->out ? j->out : "", j->out_len);
    lua_setfield(L, -2, "stdout");
    lua_pushlstring(L, j->err ? j->err : "", j->err_len);
    lua_setfield(L, -2, "stderr");
    lua_pushboolean(L, j->timed_out);
    lua_setfield(L, -2, "timed_out");
    if (j->reason) { /* it never started */
        lua_pushstring(L, j->reason);
        lua_setfield(L, -2, "error");
    }
    if (j->signal) {
        lua_pushinteger(L, j->signal);
        lua_setfield(L, -2, "signal");
    }
}

const char *luahost_kv_errtext(int status)
{
    switch (status) {
    case QC_KV_CONFLICT: return "revision mismatch";
    case QC_KV_NOTFOUND: return "not found";
    case QC_KV_TOOBIG: return "too big";
    case QC_KV_INVALID: return "invalid request";
    case QC_EBUSY: return "timed out";
    case QC_EIO: return "this node cannot write";
    default: return qc_strerror(status);
    }
}

/* A write's answer: (true, revision), (false, "revision mismatch",
 * current_revision) or (false, message). Returns the argument count. */
static int push_kv_result(lua_State *L, const job *j)
{
    if (j->status == QC_KV_OK) {
        lua_pushboolean(L, 1);
        lua_pushinteger(L, (lua_Integer)j->revision);
        return 2;
    }
    lua_pushboolean(L, 0);
    lua_pushstring(L, luahost_kv_errtext(j->status));
    if (j->status != QC_KV_CONFLICT) return 2;
    lua_pushinteger(L, (lua_Integer)j->revision);
    return 3;
}

/* A membership request's answer: (true) or (false, message). Returns the
 * argument count. */
static int push_member_result(lua_State *L, const job *j)
{
    lua_pushboolean(L, j->status == QC_OK);
    if (j->status == QC_OK) return 1;
    lua_pushstring(L, j->reason ? j->reason : qc_strerror(j->status));
    return 2;
}

/* Runs under lua_pcall: 1 = the function, 2 = the job. */
static int call_job(lua_State *L)
{
    const job *j = lua_touserdata(L, 2);
    lua_pushvalue(L, 1);
    int nargs = 1;
    if (j->kind == JOB_HOOK)
        push_event(L, j);
    else if (j->kind == JOB_EXEC)
        push_exec_result(L, j);
    else if (j->kind == JOB_KV)
        nargs = push_kv_result(L, j);
    else if (j->kind == JOB_MEMBER)
        nargs = push_member_result(L, j);
    else if (j->kind == JOB_CHECK) {
        lua_pushinteger(L, (lua_Integer)j->check_index);
        lua_pushinteger(L, (lua_Integer)j->check_run);
        lua_pushcclosure(L, l_check_done, 2);
        lua_pushliteral(L, "done");
        lua_pushcclosure(L, l_proxy, 2); /* it answers into the health runner */
    } else
        nargs = 0;
    lua_call(L, nargs, 0);
    return 0;
}

/* Pushes a lua check's function: the resolved config's checks[i].lua, or
 * when that names one, the hooks table's checks[name] (so SIGHUP reloads
 * it); nil when there is none. */
static void push_check_fn(lua_State *L, const job *j)
{
    int top = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, "qcluster.config");
    if (lua_istable(L, -1) && lua_getfield(L, -1, "checks") == LUA_TTABLE &&
        lua_rawgeti(L, -1, (lua_Integer)j->check_index + 1) == LUA_TTABLE &&
        lua_getfield(L, -1, "lua") == LUA_TSTRING) {
        const char *name = lua_tostring(L, -1);
        if (lua_getfield(L, LUA_REGISTRYINDEX, "qcluster.hooks") == LUA_TTABLE &&
            lua_getfield(L, -1, "checks") == LUA_TTABLE)
            lua_getfield(L, -1, name);
        else
            lua_pushnil(L);
    }
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
}

/* Pushes the hooks file's value named hook (0 and nothing pushed when
 * there are no hooks). */
static int push_hook(lua_State *L, const char *hook)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, "qcluster.hooks") != LUA_TTABLE) {
        lua_pop(L, 1);
        return 0;
    }
    lua_pushstring(L, hook);
    lua_rawget(L, -2);
    lua_remove(L, -2);
    return 1;
}

/* Pushes the function a job calls (w: that watch's instead of the hook),
 * or nothing (returns 0). */
static int push_job_fn(lua_State *L, const job *j, const qc_watch *w)
{
    if (w) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, w->fn_ref);
    } else if (j->kind == JOB_HOOK) {
        if (!push_hook(L, j->hook)) return 0;
    } else if (j->kind == JOB_CHECK) {
        push_check_fn(L, j);
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, j->fn_ref);
    }
    if (lua_isfunction(L, -1)) return 1;
    lua_pop(L, 1);
    return 0;
}

static double mono_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs a job's function, or watch w's for that job's event, under the
 * budget, on whichever thread runs the step; the outcome goes to r for
 * account() on the loop thread (metrics and the log are the loop's). */
static void run_job(qc_lua *h, job *j, const qc_watch *w, step_res *r)
{
    lua_State *L = h->L;
    r->label = w ? "kv_watch" : j->hook;
    int top = lua_gettop(L);
    if (!lua_checkstack(L, 8)) {
        r->no_stack = 1;
        return;
    }
    lua_pushcfunction(L, luahost_msgh);
    if (!push_job_fn(L, j, w)) {
        lua_settop(L, top);
        r->missing_check = j->kind == JOB_CHECK && !w;
        return; /* no such hook: skipped silently */
    }
    lua_pushcfunction(L, call_job);
    lua_insert(L, -2);
    lua_pushlightuserdata(L, j);
    double t0 = mono_seconds();
    luahost_arm(h, h->hook_timeout_ms);
    int rc = lua_pcall(L, 2, 0, top + 1);
    luahost_disarm(h);
    r->dt = mono_seconds() - t0;
    r->ran = 1;
    r->rc = rc;
    r->timed_out = h->timed_out;
    r->budget_ms = h->budget_ms;
    if (rc != LUA_OK) {
        const char *m = lua_tostring(L, -1);
        one_line(r->msg, sizeof r->msg, m ? m : "error in error handling");
    }
    lua_settop(L, top);
}

/* Loop thread: counts and logs a step's outcome (see run_job). An overrun
 * the watchdog already counted (h->overran) is not counted twice. */
static void account(qc_lua *h, const job *j, const step_res *r)
{
    static const char none[] = "no such Lua function";
    const qc_log_fields lf = {.hook = r->label};
    if (r->no_stack) qc_logf(QC_LOG_ERROR, "hook", &lf, "%s: out of Lua stack, skipped", r->label);
    if (r->missing_check && h->check_done)
        h->check_done(h->check_ud, j->check_index, j->check_run, 0, none, sizeof none - 1);
    if (!r->ran) return;
    if (h->metrics) {
        qc_metrics_add(h->metrics, "qcluster_hook_runs_total", "hook", r->label, 1);
        qc_metrics_observe(h->metrics, "qcluster_hook_duration_seconds", r->dt);
    }
    if (r->rc == LUA_OK) return;
    if (h->metrics && !h->overran) {
        qc_metrics_add(h->metrics, "qcluster_hook_errors_total", "hook", r->label, 1);
        if (r->timed_out)
            qc_metrics_add(h->metrics, "qcluster_hook_overruns_total", "hook", r->label, 1);
    }
    /* Past the rate limit the line is only counted (see luahost_errlog_flush). */
    if (errlog_allow(h, r->label)) {
        if (r->timed_out)
            qc_logf(QC_LOG_WARN, "hook", &lf, "%s stopped after %d ms: %s", r->label, r->budget_ms,
                    r->msg);
        else
            qc_logf(QC_LOG_ERROR, "hook", &lf, "%s failed: %s", r->label, r->msg);
    }
    /* A check whose function failed has failed (unless it answered). */
    if (j->kind == JOB_CHECK && strcmp(r->label, "kv_watch") != 0 && h->check_done)
        h->check_done(h->check_ud, j->check_index, j->check_run, 0, r->msg, strlen(r->msg));
}

static int watch_covers(const qc_watch *w, const uint8_t *key, size_t klen)
{
    return w->plen <= klen && (w->plen == 0 || memcmp(w->prefix, key, w->plen) == 0);
}

static int watch_matches(const qc_watch *w, const job *j)
{
    return watch_covers(w, j->key, j->klen);
}

/* The next watch (by id) that j's change still has to run, or NULL. */
static const qc_watch *next_watch(const qc_lua *h, const job *j)
{
    for (const qc_watch *w = h->watches; w; w = w->next)
        if (w->id > j->watch_after && w->id < j->watch_limit && watch_matches(w, j)) return w;
    return NULL;
}

void luahost_watch_free(qc_lua *h, qc_watch *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        h->watches = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        h->watches_tail = w->prev;
    luaL_unref(h->L, LUA_REGISTRYINDEX, w->fn_ref);
    free(w);
}

/* The observer sees a hook event once, after its Lua hook, outside the
 * budget (it is C), with running set so that nothing runs hooks inside it. */
static void observe(qc_lua *h, const job *j)
{
    if (!h->observer || j->kind != JOB_HOOK) return;
    qc_hook_event ev = {.hook = j->hook,
                        .term = j->term,
                        .reason = j->reason,
                        .self = j->has_self ? &j->self : NULL,
                        .leader = j->has_leader ? &j->leader : NULL,
                        .previous_leader = j->has_prev ? &j->prev : NULL,
                        .peer = j->has_peer ? &j->peer : NULL,
                        .key = j->has_key ? j->key : NULL,
                        .klen = j->klen,
                        .value = j->value,
                        .vlen = j->vlen,
                        .has_value = j->has_value,
                        .revision = j->revision,
                        .has_health = j->has_health,
                        .healthy = j->healthy,
                        .check = j->check,
                        .status = j->check_status,
                        .output = j->check_output};
    h->running = 1;
    h->observer(h->observer_ud, &ev);
    h->running = 0;
}

void qc_lua_set_stuck(qc_lua *h, qc_lua_stuck_fn *fn, void *ud)
{
    h->stuck_fn = fn;
    h->stuck_ud = ud;
}

void qc_lua_set_observer(qc_lua *h, qc_lua_observer_fn *fn, void *ud)
{
    h->observer = fn;
    h->observer_ud = ud;
}

/* Runs one step of job j (either thread; the Lua state is this thread's
 * for the step): the job itself, or for an on_kv_change event the hook and
 * then each matching watch, one step each, so that the loop turns in
 * between. r says whether the job is finished. */
static void step(qc_lua *h, job *j, step_res *r)
{
    memset(r, 0, sizeof *r);
    r->finished = 1;
    if (j->has_key) {
        if (!j->started) {
            /* Watches made from here on (even by this hook) are later. */
            j->started = 1;
            j->watch_limit = h->next_watch_id;
            run_job(h, j, NULL, r);
            r->observe = 1;
        } else {
            const qc_watch *w = next_watch(h, j);
            if (w) {
                j->watch_after = w->id;
                run_job(h, j, w, r);
            }
        }
        if (next_watch(h, j)) r->finished = 0;
    } else {
        run_job(h, j, NULL, r);
        r->observe = 1;
    }
}

/* Loop thread, the Lua thread idle: the step of h->current is over. */
static void finish_step(qc_lua *h)
{
    job *j = h->current;
    h->current = NULL;
    account(h, j, &h->res);
    if (h->res.observe) observe(h, j);
    if (h->res.finished) {
        /* Jobs queued while it ran went in behind it. */
        h->head = j->next;
        if (!h->head) h->tail = NULL;
        h->pending--;
        luahost_job_free(h, j);
    }
    if (h->head && h->loop) ev_idle_start(h->loop, &h->idle);
}

/* Runs the first job's next step on this thread (drain, or no thread). */
static void run_inline(qc_lua *h)
{
    h->current = h->head;
    h->running = 1;
    step(h, h->current, &h->res);
    h->running = 0;
    finish_step(h);
}

/* ---- the Lua thread ------------------------------------------------------ */

static int on_lua_thread(qc_lua *h)
{
    return h->has_thread && pthread_equal(pthread_self(), h->thread);
}

/* Frees what a host freed while its hook was stuck left to the Lua thread
 * (the state and the watches); see qc_lua_free. */
static void orphan_free(qc_lua *h)
{
    if (h->current) {
        free(h->current->out);
        free(h->current->err);
        free(h->current);
    }
    while (h->watches) luahost_watch_free(h, h->watches);
    lua_close(h->L);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h);
}

static void *lua_thread_main(void *arg)
{
    qc_lua *h = arg;
    qc_log_set_node(h->log_node);
    pthread_mutex_lock(&h->mu);
    for (;;) {
        while (!h->handed && !h->quit) pthread_cond_wait(&h->cv, &h->mu);
        if (h->quit) break;
        h->handed = 0;
        pthread_mutex_unlock(&h->mu);
        step(h, h->current, &h->res);
        pthread_mutex_lock(&h->mu);
        if (h->orphaned) break;
        h->step_done = 1;
        pthread_cond_broadcast(&h->cv); /* a drain may wait for it */
        ev_async_send(h->loop, &h->async);
    }
    int orphaned = h->orphaned;
    pthread_mutex_unlock(&h->mu);
    if (orphaned) orphan_free(h);
    return NULL;
}

/* Starts the Lua thread. Its signal mask is the loop thread's: libev's
 * handlers may run on either thread (they only flag the loop), and what a
 * hook starts with os.execute or io.popen inherits the mask, which must not
 * block what the agent itself would receive. 0, or -1 (steps then run
 * inline, as before there was a thread). */
static int start_thread(qc_lua *h)
{
    snprintf(h->log_node, sizeof h->log_node, "%s", qc_log_node());
    int rc = pthread_create(&h->thread, NULL, lua_thread_main, h);
    if (rc != 0) {
        qc_log(QC_LOG_ERROR, "hook", "cannot start the Lua thread (%s): hooks run on the loop",
               strerror(rc));
        return -1;
    }
    h->has_thread = 1;
    return 0;
}

static void watchdog_arm(qc_lua *h, int ms)
{
    ev_timer_stop(h->loop, &h->watchdog);
    ev_timer_set(&h->watchdog, ms > 0 ? ms / 1000.0 : 0.001, 0.);
    ev_timer_start(h->loop, &h->watchdog);
}

/* Loop thread, the Lua thread idle: whether j's next step runs any Lua
 * (a hook, callback, check or watch function). */
static int job_has_fn(qc_lua *h, const job *j)
{
    if (j->has_key && (j->started || next_watch(h, j))) return 1;
    if (!lua_checkstack(h->L, 4)) return 1; /* run_job reports it */
    int has = push_job_fn(h->L, j, NULL);
    if (has) lua_pop(h->L, 1);
    return has;
}

/* Loop thread: hands the first job's next step to the Lua thread. Steps
 * with no Lua to run (events no hook handles: only the observer sees them)
 * run here, so a host with no hooks never starts the thread; all those
 * queued run in this turn, as one per turn cost a loop turn (an epoll_wait
 * and every check watcher) per applied put. */
static void dispatch(qc_lua *h)
{
    size_t queued = h->pending; /* not those the observer fires meanwhile */
    while (queued-- && h->head && !h->busy && !h->running && !job_has_fn(h, h->head)) run_inline(h);
    if (h->busy || h->running || !h->head) return;
    if (!h->has_thread && (h->thread_failed || start_thread(h) != 0)) {
        h->thread_failed = 1;
        run_inline(h);
        return;
    }
    job *j = h->head;
    h->current = j;
    h->cur_label = j->has_key && j->started ? "kv_watch" : j->hook;
    h->busy = 1;
    h->overran = 0;
    h->busy_since = qc_now_ms();
    ev_idle_stop(h->loop, &h->idle); /* nothing to do until the step ends */
    if (!h->ref_held) {
        ev_ref(h->loop); /* the loop waits for the step, as it did inline */
        h->ref_held = 1;
    }
    /* A Lua overrun stops itself at the budget; the watchdog is for C. */
    int grace = h->hook_timeout_ms / 4 > 20 ? h->hook_timeout_ms / 4 : 20;
    watchdog_arm(h, h->hook_timeout_ms + grace);
    pthread_mutex_lock(&h->mu);
    h->what[0] = '\0';
    h->handed = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

/* Loop thread: the Lua thread's step is over. */
static void step_ended(qc_lua *h)
{
    h->busy = 0;
    ev_timer_stop(h->loop, &h->watchdog);
    if (h->ref_held) {
        ev_unref(h->loop);
        h->ref_held = 0;
    }
    if (h->stuck) {
        h->stuck = 0;
        qc_log(QC_LOG_INFO, "hook", "%s returned after %llu ms", h->cur_label,
               (unsigned long long)(qc_now_ms() - h->busy_since));
        if (h->stuck_fn) h->stuck_fn(h->stuck_ud, 0, h->cur_label);
    }
    finish_step(h);
}

/* Loop thread: runs a module function the Lua thread posted (l_proxy),
 * on its coroutine, while that thread waits. */
static void run_call(qc_lua *h)
{
    lua_State *L = h->call_L; /* its stack: the function (l_proxy put it first), the arguments */
    h->running = 1;
    h->call_status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    h->running = 0;
}

/* Loop thread: a call the Lua thread waits for, and/or its ended step. */
static void service(qc_lua *h)
{
    pthread_mutex_lock(&h->mu);
    if (h->call_state == CALL_POSTED) {
        pthread_mutex_unlock(&h->mu);
        run_call(h);
        pthread_mutex_lock(&h->mu);
        h->call_state = CALL_DONE;
        pthread_cond_broadcast(&h->cv);
    }
    int done = h->step_done;
    h->step_done = 0;
    pthread_mutex_unlock(&h->mu);
    if (done) step_ended(h);
}

static void on_async(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    service(w->data);
}

/* Past hook_timeout_ms: counted and logged once as an overrun (a Lua one
 * would have stopped itself: this one is in C). Past hook_stuck_ms: the
 * node turns unhealthy (stuck_fn) until the hook returns. */
static void on_watchdog(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    qc_lua *h = w->data;
    if (!h->busy) return;
    uint64_t ran = qc_now_ms() - h->busy_since;
    char what[sizeof h->what];
    pthread_mutex_lock(&h->mu);
    memcpy(what, h->what, sizeof what);
    pthread_mutex_unlock(&h->mu);
    if (!h->overran) {
        h->overran = 1;
        if (h->metrics) {
            qc_metrics_add(h->metrics, "qcluster_hook_errors_total", "hook", h->cur_label, 1);
            qc_metrics_add(h->metrics, "qcluster_hook_overruns_total", "hook", h->cur_label, 1);
        }
        qc_log(QC_LOG_WARN, "hook",
               "%s still running after %llu ms (budget %d ms), blocked in a C call%s%s",
               h->cur_label, (unsigned long long)ran, h->hook_timeout_ms,
               what[0] ? ": last called " : "", what);
    }
    if ((int64_t)ran < h->hook_stuck_ms) {
        watchdog_arm(h, h->hook_stuck_ms - (int)ran);
        return;
    }
    if (h->stuck) return;
    h->stuck = 1;
    qc_log(QC_LOG_WARN, "hook",
           "%s stuck for %llu ms (hook_stuck_ms %d): this node is unhealthy "
           "until it returns%s%s",
           h->cur_label, (unsigned long long)ran, h->hook_stuck_ms, what[0] ? "; last called " : "",
           what);
    if (h->stuck_fn) h->stuck_fn(h->stuck_ud, 1, h->cur_label);
}

/* Any qcluster function that touches the loop's side (the view, timers,
 * children, requests) runs there: on the Lua thread it is posted to the
 * loop thread, which runs it on this coroutine while this thread waits
 * (upvalue 1: the function). Errors come back as errors. */
/* An error of a function l_proxy ran (on top): it ran from C, so its
 * luaL_error had no position and luaL_argerror no name; both are put back
 * as a direct call would have had them (the name is upvalue 2). */
static int proxied_error(lua_State *L)
{
    if (lua_type(L, -1) == LUA_TSTRING) {
        const char *m = lua_tostring(L, -1);
        const char *q = strncmp(m, "bad argument #", 14) == 0 ? strstr(m, " to '?'") : NULL;
        lua_Debug ar;
        const char *name = lua_tostring(L, lua_upvalueindex(2));
        if (lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar) && ar.name) name = ar.name;
        if (q) {
            lua_pushlstring(L, m, (size_t)(q - m));
            lua_pushfstring(L, " to '%s'%s", name, q + 7);
            lua_concat(L, 2);
            lua_replace(L, -2);
        }
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
    }
    return lua_error(L);
}

static int l_proxy(lua_State *L)
{
    qc_lua *h = luahost_of(L);
    lua_pushvalue(L, lua_upvalueindex(1)); /* the function itself, with its upvalues */
    lua_insert(L, 1);
    if (!on_lua_thread(h)) {
        if (lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0) != LUA_OK) return proxied_error(L);
        return lua_gettop(L);
    }
    pthread_mutex_lock(&h->mu);
    if (h->orphaned) {
        pthread_mutex_unlock(&h->mu);
        return luaL_error(L, "the agent has stopped");
    }
    h->call_L = L;
    h->call_state = CALL_POSTED;
    ev_async_send(h->loop, &h->async);
    while (h->call_state != CALL_DONE && !h->orphaned) pthread_cond_wait(&h->cv, &h->mu);
    int done = h->call_state == CALL_DONE;
    int st = h->call_status;
    h->call_state = CALL_NONE;
    pthread_mutex_unlock(&h->mu);
    if (!done) return luaL_error(L, "the agent has stopped");
    if (st != LUA_OK) return proxied_error(L);
    return lua_gettop(L);
}

/* Pushes f wrapped in l_proxy; name is what argument errors call it. */
void luahost_push_proxied(lua_State *L, lua_CFunction f, const char *name)
{
    lua_pushcfunction(L, f);
    lua_pushstring(L, name);
    lua_pushcclosure(L, l_proxy, 2);
}

static void on_check(struct ev_loop *loop, ev_check *w, int revents)
{
    qc_lua *h = w->data;
    (void)revents;
    dispatch(h);
    if (!h->head || h->busy) ev_idle_stop(loop, &h->idle);
}

static void on_idle(struct ev_loop *loop, ev_idle *w, int revents)
{
    /* Only here to keep the loop from blocking while hooks wait. */
    (void)loop;
    (void)w;
    (void)revents;
}

uint64_t luahost_live_term(const qc_view *v) { return v && v->term ? v->term(v->ud) : 0; }

/* Loop thread: a key change that no observer, hook or watch would see,
 * were it queued now. Known only while nothing is queued or running: a
 * job ahead of it could define a hook or make a watch; the Lua state is
 * the loop's to read then. */
static int kv_unheard(qc_lua *h, const qc_hook_event *ev)
{
    if (h->observer || h->head || h->busy || h->running || !h->L) return 0;
    for (const qc_watch *w = h->watches; w; w = w->next)
        if (watch_covers(w, ev->key, ev->klen)) return 0;
    if (!lua_checkstack(h->L, 4)) return 0;
    int top = lua_gettop(h->L);
    int hook = push_hook(h->L, ev->hook) && lua_isfunction(h->L, -1);
    lua_settop(h->L, top);
    return !hook;
}

int qc_lua_fire(qc_lua *h, const qc_hook_event *ev)
{
    if (!ev || !ev->hook) return QC_EINVAL;
    size_t klen = ev->key ? ev->klen : 0, vlen = ev->key && ev->has_value ? ev->vlen : 0;
    if (vlen && !ev->value) return QC_EINVAL;
    /* One per applied put: not queued (copied, dispatched, freed) for
     * nobody. */
    if (ev->key && kv_unheard(h, ev)) return QC_OK;
    /* The node as of the event: hooks answer term() and, once the node has
     * moved on, is_leader() and get_leader_info() from it. */
    qc_peer_info snap_leader = {0};
    const qc_view *v = h->view;
    int has_snap_leader = v && v->leader && v->leader(v->ud, &snap_leader) == QC_OK;
    size_t extra = (has_snap_leader ? peer_size(&snap_leader) : 0) + luahost_str_size(ev->reason) +
                   peer_size(ev->self) + peer_size(ev->leader) + peer_size(ev->previous_leader) +
                   peer_size(ev->peer) + luahost_str_size(ev->check) +
                   luahost_str_size(ev->status) + luahost_str_size(ev->output);
    if (klen > SIZE_MAX - extra || vlen > SIZE_MAX - extra - klen) return QC_ETOOBIG;
    extra += klen + vlen;
    job *j = luahost_job_new(ev->hook, extra);
    if (!j) return QC_ENOMEM;
    char *cur = j->strings + luahost_str_size(ev->hook);
    j->kind = JOB_HOOK;
    j->term = ev->term;
    j->reason = luahost_put_str(&cur, ev->reason);
    j->has_self = put_peer(&cur, &j->self, ev->self);
    j->has_leader = put_peer(&cur, &j->leader, ev->leader);
    j->has_prev = put_peer(&cur, &j->prev, ev->previous_leader);
    j->has_peer = put_peer(&cur, &j->peer, ev->peer);
    j->snap_term = luahost_live_term(v);
    j->has_snap_leader = has_snap_leader && put_peer(&cur, &j->snap_leader, &snap_leader);
    j->has_health = ev->has_health != 0;
    j->healthy = ev->healthy != 0;
    j->check = luahost_put_str(&cur, ev->check);
    j->check_status = luahost_put_str(&cur, ev->status);
    j->check_output = luahost_put_str(&cur, ev->output);
    if (ev->key) {
        /* Binary: copied by length, after the strings. */
        j->has_key = 1;
        j->key = (const uint8_t *)cur;
        j->klen = klen;
        if (klen) memcpy(cur, ev->key, klen);
        cur += klen;
        j->has_value = ev->has_value != 0;
        j->value = j->has_value ? (const uint8_t *)cur : NULL;
        j->vlen = vlen;
        if (vlen) memcpy(cur, ev->value, vlen);
        j->revision = ev->revision;
    }
    luahost_enqueue(h, j);
    return QC_OK;
}

void qc_lua_set_check_done(qc_lua *h, qc_lua_check_done_fn *fn, void *ud)
{
    h->check_done = fn;
    h->check_ud = ud;
}

int qc_lua_run_check(qc_lua *h, size_t index, uint64_t run)
{
    job *j = luahost_job_new("check", 0);
    if (!j) return QC_ENOMEM;
    j->kind = JOB_CHECK;
    j->check_index = index;
    j->check_run = run;
    luahost_enqueue(h, j);
    return QC_OK;
}

/* Loop thread: waits (at most until deadline) for the step out at the Lua
 * thread, serving its calls meanwhile. */
static void wait_step(qc_lua *h, uint64_t deadline)
{
    while (h->busy) {
        pthread_mutex_lock(&h->mu);
        while (h->call_state != CALL_POSTED && !h->step_done) {
            uint64_t now = qc_now_ms();
            if (now >= deadline) break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t ns = (uint64_t)ts.tv_nsec + (deadline - now) * 1000000u;
            ts.tv_sec += (time_t)(ns / 1000000000u);
            ts.tv_nsec = (long)(ns % 1000000000u);
            pthread_cond_timedwait(&h->cv, &h->mu, &ts);
        }
        int ready = h->call_state == CALL_POSTED || h->step_done;
        pthread_mutex_unlock(&h->mu);
        if (!ready) return;
        service(h);
    }
}

void qc_lua_drain(qc_lua *h)
{
    if (h->busy) wait_step(h, qc_now_ms() + (uint64_t)h->hook_stuck_ms);
    if (h->busy) {
        qc_log(QC_LOG_WARN, "hook", "%s still running at stop: %zu queued hook calls not run",
               h->cur_label, h->pending > 0 ? h->pending - 1 : 0);
        return;
    }
    while (h->head && !h->running) run_inline(h);
    if (h->loop) ev_idle_stop(h->loop, &h->idle);
}

size_t qc_lua_pending(const qc_lua *h) { return h->pending; }

void qc_lua_attach(qc_lua *h, struct ev_loop *loop)
{
    if (h->loop || !loop) return;
    h->loop = loop;
    ev_check_init(&h->check, on_check);
    h->check.data = h;
    ev_check_start(loop, &h->check);
    ev_unref(loop); /* the check alone must not keep the loop running */
    ev_idle_init(&h->idle, on_idle);
    h->idle.data = h;
    ev_async_init(&h->async, on_async);
    h->async.data = h;
    ev_async_start(loop, &h->async);
    ev_unref(loop); /* nor the async: a step out holds a reference itself */
    ev_timer_init(&h->watchdog, on_watchdog, 1., 0.);
    h->watchdog.data = h;
    if (h->head) ev_idle_start(loop, &h->idle);
    for (qc_after *a = h->afters; a; a = a->next) ev_timer_start(loop, &a->w);
}
