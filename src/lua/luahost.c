/* The Lua host: owns the lua_State and the qcluster module, queues hook
 * events and runs them from the loop one at a time, in order, each under a
 * time budget (a count hook checking a monotonic deadline). exec() runs
 * commands off the loop (fork + ev_child or a pidfd + ev_io, SIGKILL of the process
 * group after its timeout). Nothing here blocks for longer than one budget,
 * and no hook is ever cancelled because another event came. */
#include "lua/luahost.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lualib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "base/common.h"
#include "base/embedded.h"
#include "base/log.h"
#include "lua/luajson.h"
#include "base/spawn.h"

extern char **environ;

/* exec(): a command runs at most this long unless opts.timeout_ms says. */
#define QC_EXEC_DEFAULT_TIMEOUT_MS 30000
/* Loading a Lua config runs before the loop: it may take this long. */
#define QC_CONFIG_BUDGET_MS 5000
/* exec(): output kept per stream; the rest is read and dropped. */
#define QC_EXEC_MAX_OUTPUT (1u << 20)
/* Instructions between two looks at the clock while a hook runs. */
#define QC_BUDGET_COUNT 1000
/* Hook error lines: at most QC_ERRLOG_MAX per hook label and window of
 * QC_ERRLOG_WINDOW_MS; the rest are counted and the count logged once the
 * window is over (or at the host's end), so that a hook failing on every
 * event cannot flood the log. */
#define QC_ERRLOG_MAX 5
#define QC_ERRLOG_WINDOW_MS 10000
#define QC_ERRLOG_LABELS 16

/* JOB_KV and JOB_MEMBER carry the answer to a request handed to the view
 * (see qc_req); they differ only in the arguments their callback gets. */
/* JOB_CHECK runs a lua health check's function with a done callback. */
enum { JOB_HOOK, JOB_AFTER, JOB_EXEC, JOB_KV, JOB_MEMBER, JOB_CHECK };

typedef struct job {
    struct job *next;
    int kind;
    const char *hook; /* hook name, or the label "after"/"exec"/"kv"/"set_metadata" */
    uint64_t term;
    const char *reason; /* JOB_MEMBER: the failure message, NULL on success */
    qc_peer_info self, leader, prev, peer;
    int has_self, has_leader, has_prev, has_peer;
    /* on_kv_change (has_key): the change, copied; also what watches get. */
    const uint8_t *key, *value;
    size_t klen, vlen;
    int has_key, has_value;
    uint64_t revision; /* on_kv_change; JOB_KV: the answer's revision */
    /* on_kv_change: the hook ran (started), then the watches with ids in
     * (watch_after, watch_limit) run, one per loop turn, before the job
     * leaves the queue. */
    int started;
    uint64_t watch_after, watch_limit;
    int fn_ref;                    /* JOB_AFTER, JOB_EXEC, JOB_KV, JOB_MEMBER: the callback */
    int status, signal, timed_out; /* JOB_KV, JOB_MEMBER: status is the answer's */
    char *out, *err;               /* JOB_EXEC: malloc'd output */
    /* on_health_change (has_health): its fields; JOB_CHECK: which run of
     * which check (check: its name) */
    int has_health, healthy;
    const char *check, *check_status, *check_output;
    size_t check_index;
    uint64_t check_run;
    size_t out_len, err_len;
    /* JOB_HOOK: the node as of the event (qc_lua_fire): its term, and the
     * leader then (has_snap_leader); see l_term, l_is_leader, l_leader. */
    uint64_t snap_term;
    int has_snap_leader;
    qc_peer_info snap_leader;
    char strings[]; /* every string the event carries */
} job;

/* What one step of a job did (on the Lua thread), for the loop thread to
 * count, log and pass on (account). One step is out at a time. */
typedef struct step_res {
    const char *label; /* the hook, or "kv_watch" */
    int ran;           /* a function ran */
    int no_stack;      /* out of Lua stack: nothing ran */
    int missing_check; /* a JOB_CHECK whose function does not exist */
    int rc, timed_out, budget_ms;
    double dt;
    int observe;  /* the job's own step: the observer sees the event */
    int finished; /* the job leaves the queue */
    char msg[900];
} step_res;

enum { CALL_NONE, CALL_POSTED, CALL_DONE };

/* The error lines of one hook label in the current window. */
typedef struct qc_errlog {
    char label[40];
    uint64_t since_ms; /* the window's start; 0: slot unused */
    unsigned logged;
    unsigned long suppressed;
} qc_errlog;

/* A qcluster.exec call: its child (spawn.c) and its callback. */
typedef struct qc_exec {
    struct qc_exec *prev, *next;
    qc_lua *h;
    qc_spawn *s;
    int fn_ref;
} qc_exec;

typedef struct qc_after {
    struct qc_after *prev, *next;
    qc_lua *h;
    ev_timer w;
    int fn_ref;
} qc_after;

/* A request handed to the view whose answer comes later: kv.put,
 * kv.delete, set_metadata. The view owns it from the call until its done
 * fires (exactly once), and done frees it. The host only links it in its
 * list, so that qc_lua_free can detach it (h = NULL): a done that comes
 * after the host is gone then just frees the record. The answer runs the
 * callback as a job of the request's kind (JOB_KV, JOB_MEMBER), labelled
 * label, under the hook budget. */
typedef struct qc_req {
    struct qc_req *prev, *next;
    qc_lua *h;         /* NULL once the host is gone */
    int fn_ref;        /* the callback, LUA_NOREF for none */
    int kind;          /* JOB_KV, JOB_MEMBER */
    const char *what;  /* for the log: "kv.put", "kv.delete", "set_metadata" */
    const char *label; /* the callback's metric label: "kv", "set_metadata" */
} qc_req;

/* A kv.watch registration, in registration order (ids grow). file_gen is
 * the hooks-file load that made it, 0 when a hook or callback made it. */
typedef struct qc_watch {
    struct qc_watch *prev, *next;
    uint64_t id;
    unsigned file_gen;
    int fn_ref;
    size_t plen;
    uint8_t prefix[];
} qc_watch;

struct qc_lua {
    char log_node[65]; /* the loop thread's name in log records, for the Lua thread's */
    lua_State *L;
    struct ev_loop *loop;
    const qc_view *view;
    qc_metrics *metrics;
    ev_check check;
    ev_idle idle;
    job *head, *tail;
    size_t pending;
    qc_exec *execs;
    int n_execs, exec_max; /* exec children running; at most exec_max */
    qc_errlog errlog[QC_ERRLOG_LABELS];
    qc_after *afters;
    qc_req *reqs;
    qc_watch *watches, *watches_tail;
    uint64_t next_watch_id;
    unsigned file_gen, loading_gen; /* hooks-file loads; the one running */
    int running;
    qc_lua_observer_fn *observer;     /* the embedding program's callbacks */
    qc_lua_check_done_fn *check_done; /* where lua checks' answers go */
    void *check_ud;
    void *observer_ud;
    int armed, budget_ms, timed_out;
    uint64_t deadline_ms;
    int hook_timeout_ms, hook_stuck_ms;

    /* The Lua thread (README "Hooks"): the loop thread owns the queue and
     * hands one step at a time (current) to it; the Lua thread touches the
     * lua_State only while a step is out (busy), the loop thread only
     * while none is, or while the Lua thread waits in l_proxy. */
    job *current;      /* the job whose step runs (either thread) */
    step_res res;      /* that step's outcome */
    int busy;          /* loop side: a step is out at the Lua thread */
    int has_thread;    /* thread started */
    int thread_failed; /* could not start: steps run inline */
    int ref_held;      /* ev_ref while busy: the loop waits for the step */
    pthread_t thread;
    ev_async async;    /* Lua thread -> loop: a step ended or a call waits */
    ev_timer watchdog; /* past hook_timeout_ms, then past hook_stuck_ms */
    uint64_t busy_since;
    const char *cur_label;
    int overran, stuck; /* the step out was counted as an overrun / is stuck */
    qc_lua_stuck_fn *stuck_fn;
    void *stuck_ud;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* Under mu. */
    int handed;        /* a step waits for the Lua thread */
    int step_done;     /* the Lua thread ended its step */
    int quit;          /* the Lua thread is to end */
    int orphaned;      /* freed while stuck: the Lua thread frees itself */
    int call_state;    /* CALL_...: a module function for the loop thread */
    lua_State *call_L; /* the coroutine that called it */
    int call_status;
    char what[160]; /* the last C function a hook called, for the watchdog */
    char *hooks_path;
    char *config_path; /* for messages about the config's lua checks */
};

static qc_lua *host_of(lua_State *L) { return *(qc_lua **)lua_getextraspace(L); }
static int l_proxy(lua_State *L);
static int on_lua_thread(qc_lua *h);
static void watch_free(qc_lua *h, struct qc_watch *w);
static uint64_t live_term(const qc_view *v);

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
    qc_lua *h = host_of(L);
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

static void arm(qc_lua *h, int ms)
{
    h->armed = 1;
    h->budget_ms = ms;
    h->timed_out = 0;
    h->deadline_ms = qc_now_ms() + (uint64_t)ms;
    lua_sethook(h->L, budget_hook, LUA_MASKCOUNT | LUA_MASKCALL, QC_BUDGET_COUNT);
}

static void disarm(qc_lua *h)
{
    h->armed = 0;
    lua_sethook(h->L, NULL, 0, 0);
}

static int msgh(lua_State *L)
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

static void errlog_flush(qc_errlog *e)
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
    errlog_flush(oldest);
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
        errlog_flush(e);
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
static void push_peer(lua_State *L, const qc_peer_info *p, int extended)
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

static size_t str_size(const char *s) { return s ? strlen(s) + 1 : 0; }

static size_t peer_size(const qc_peer_info *p)
{
    if (!p) return 0;
    return str_size(p->identifier) + str_size(p->host) + str_size(p->metadata) + str_size(p->role);
}

static const char *put_str(char **cur, const char *s)
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
    dst->identifier = put_str(cur, src->identifier);
    dst->host = put_str(cur, src->host);
    dst->metadata = put_str(cur, src->metadata);
    dst->role = put_str(cur, src->role);
    dst->checks = NULL; /* not part of hook events: they would outlive them */
    dst->n_checks = 0;
    return 1;
}

static job *job_new(const char *hook, size_t extra)
{
    job *j = calloc(1, sizeof *j + str_size(hook) + extra);
    if (!j) return NULL;
    char *cur = j->strings;
    j->hook = put_str(&cur, hook);
    j->fn_ref = LUA_NOREF;
    return j;
}

static void job_free(qc_lua *h, job *j)
{
    if (j->fn_ref != LUA_NOREF && h->L) luaL_unref(h->L, LUA_REGISTRYINDEX, j->fn_ref);
    free(j->out);
    free(j->err);
    free(j);
}

static void enqueue(qc_lua *h, job *j)
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
        push_peer(L, &j->peer, 1);
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
        push_peer(L, &j->self, 0);
        lua_setfield(L, -2, "self");
    }
    if (j->has_leader) {
        push_peer(L, &j->leader, 0);
        lua_setfield(L, -2, "leader");
    }
    if (j->has_prev) {
        push_peer(L, &j->prev, 0);
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
    qc_lua *h = host_of(L);
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

static const char *kv_errtext(int status)
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
    lua_pushstring(L, kv_errtext(j->status));
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
    lua_pushcfunction(L, msgh);
    if (!push_job_fn(L, j, w)) {
        lua_settop(L, top);
        r->missing_check = j->kind == JOB_CHECK && !w;
        return; /* no such hook: skipped silently */
    }
    lua_pushcfunction(L, call_job);
    lua_insert(L, -2);
    lua_pushlightuserdata(L, j);
    double t0 = mono_seconds();
    arm(h, h->hook_timeout_ms);
    int rc = lua_pcall(L, 2, 0, top + 1);
    disarm(h);
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
    /* Past the rate limit the line is only counted (see errlog_flush). */
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
        job_free(h, j);
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
    while (h->watches) watch_free(h, h->watches);
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
    qc_lua *h = host_of(L);
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
static void push_proxied(lua_State *L, lua_CFunction f, const char *name)
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
    size_t extra = (has_snap_leader ? peer_size(&snap_leader) : 0) + str_size(ev->reason) +
                   peer_size(ev->self) + peer_size(ev->leader) + peer_size(ev->previous_leader) +
                   peer_size(ev->peer) + str_size(ev->check) + str_size(ev->status) +
                   str_size(ev->output);
    if (klen > SIZE_MAX - extra || vlen > SIZE_MAX - extra - klen) return QC_ETOOBIG;
    extra += klen + vlen;
    job *j = job_new(ev->hook, extra);
    if (!j) return QC_ENOMEM;
    char *cur = j->strings + str_size(ev->hook);
    j->kind = JOB_HOOK;
    j->term = ev->term;
    j->reason = put_str(&cur, ev->reason);
    j->has_self = put_peer(&cur, &j->self, ev->self);
    j->has_leader = put_peer(&cur, &j->leader, ev->leader);
    j->has_prev = put_peer(&cur, &j->prev, ev->previous_leader);
    j->has_peer = put_peer(&cur, &j->peer, ev->peer);
    j->snap_term = live_term(v);
    j->has_snap_leader = has_snap_leader && put_peer(&cur, &j->snap_leader, &snap_leader);
    j->has_health = ev->has_health != 0;
    j->healthy = ev->healthy != 0;
    j->check = put_str(&cur, ev->check);
    j->check_status = put_str(&cur, ev->status);
    j->check_output = put_str(&cur, ev->output);
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
    enqueue(h, j);
    return QC_OK;
}

void qc_lua_set_check_done(qc_lua *h, qc_lua_check_done_fn *fn, void *ud)
{
    h->check_done = fn;
    h->check_ud = ud;
}

int qc_lua_run_check(qc_lua *h, size_t index, uint64_t run)
{
    job *j = job_new("check", 0);
    if (!j) return QC_ENOMEM;
    j->kind = JOB_CHECK;
    j->check_index = index;
    j->check_run = run;
    enqueue(h, j);
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

/* ---- exec ----------------------------------------------------------- */

/* Drops a callback's reference from the loop thread (out of memory paths):
 * while a step is out the state is the Lua thread's, and the slot is left
 * (a small leak, on a path that is already failing). */
static void drop_ref(qc_lua *h, int ref)
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
        job *j = job_new("exec", 0);
        if (!j) {
            qc_log(QC_LOG_ERROR, "hook", "exec: out of memory, callback dropped");
            drop_ref(h, x->fn_ref);
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
            enqueue(h, j);
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
    qc_lua *h = host_of(L);
    if (ref != LUA_NOREF) {
        job *j = job_new("exec", str_size(msg));
        if (!j) {
            luaL_unref(L, LUA_REGISTRYINDEX, ref);
        } else {
            char *cur = j->strings + str_size("exec");
            j->kind = JOB_EXEC;
            j->fn_ref = ref;
            j->status = -1;
            j->reason = put_str(&cur, msg);
            enqueue(h, j);
        }
    }
    luaL_pushfail(L);
    lua_pushstring(L, msg);
    return 2;
}

/* qcluster.exec(command [, opts] [, callback]) -> pid | nil, err */
static int l_exec(lua_State *L)
{
    qc_lua *h = host_of(L);
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
    job *j = job_new("after", 0);
    if (!j) {
        qc_log(QC_LOG_ERROR, "hook", "after: out of memory, callback dropped");
        drop_ref(h, a->fn_ref);
    } else {
        j->kind = JOB_AFTER;
        j->fn_ref = a->fn_ref;
        enqueue(h, j);
    }
    free(a);
}

/* qcluster.after(ms, fn): fn runs through the hook queue after ms. */
static int l_after(lua_State *L)
{
    qc_lua *h = host_of(L);
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
    qc_lua *h = host_of(L);
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
    job *j = job_new(r->label, keep_msg ? str_size(message) : 0);
    if (!j) {
        qc_log(QC_LOG_ERROR, "hook", "%s: out of memory, callback dropped", r->label);
        drop_ref(h, r->fn_ref);
    } else {
        char *cur = j->strings + str_size(r->label);
        j->kind = r->kind;
        j->fn_ref = r->fn_ref;
        j->status = status;
        j->revision = revision;
        if (keep_msg) j->reason = put_str(&cur, message);
        enqueue(h, j);
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

#define KV_SYNC_MT "qcluster.kvsync"
#define KV_WATCH_MT "qcluster.kvwatch"

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

static int kv_sync_gc(lua_State *L)
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
    const qc_view *v = host_of(L)->view;
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
    const qc_view *v = host_of(L)->view;
    v = kv_view(L, v && v->kv_get);
    kv_sync **box;
    kv_sync *s = kv_sync_new(L, &box);
    v->kv_get(v->ud, (const uint8_t *)key, klen, 1, kv_sync_done, s);
    kv_sync_check(L, box, "kv.get");
    if (s->status == QC_KV_NOTFOUND || s->status == QC_ENOTFOUND) {
        lua_pushnil(L);
        return 1;
    }
    if (s->status != QC_KV_OK) return luaL_error(L, "kv.get: %s", kv_errtext(s->status));
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
    const qc_view *v = host_of(L)->view;
    v = kv_view(L, v && v->kv_list);
    kv_sync **box;
    kv_sync *s = kv_sync_new(L, &box);
    v->kv_list(v->ud, (const uint8_t *)prefix, plen, 1, kv_sync_each, kv_sync_done, s);
    kv_sync_check(L, box, "kv.list");
    if (s->status != QC_KV_OK) return luaL_error(L, "kv.list: %s", kv_errtext(s->status));
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
    req_answer(arg, a->status, a->revision, kv_errtext(a->status));
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
    const qc_view *v = host_of(L)->view;
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
    const qc_view *v = host_of(L)->view;
    v = kv_view(L, v && v->kv_delete);
    qc_req *r = req_start(L, cb, JOB_KV, "kv.delete", "kv");
    v->kv_delete(v->ud, (const uint8_t *)key, klen, cas, kv_write_done, r);
    return 0;
}

static void watch_free(qc_lua *h, qc_watch *w)
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

/* Drops the watches of hooks-file load gen (keep 0), or of every load
 * but keep (gen 0). */
static void watches_drop(qc_lua *h, unsigned gen, unsigned keep)
{
    qc_watch *w = h->watches;
    while (w) {
        qc_watch *next = w->next;
        if (w->file_gen && (gen ? w->file_gen == gen : w->file_gen != keep)) watch_free(h, w);
        w = next;
    }
}

/* qcluster.kv.watch(prefix, fn) -> handle with :cancel(). fn(ev) runs for
 * every applied change under prefix, after on_kv_change, with the same ev.
 * Watches need no KV to be registered (a hooks file may make them before
 * the agent has one); they live until cancelled, across reloads. */
static int l_kv_watch(lua_State *L)
{
    qc_lua *h = host_of(L);
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
static int l_watch_cancel(lua_State *L)
{
    qc_lua *h = host_of(L);
    uint64_t *handle = luaL_checkudata(L, 1, KV_WATCH_MT);
    for (qc_watch *w = h->watches; w; w = w->next) {
        if (w->id == *handle) {
            watch_free(h, w);
            lua_pushboolean(L, 1);
            return 1;
        }
    }
    lua_pushboolean(L, 0);
    return 1;
}

static int l_watch_tostring(lua_State *L)
{
    uint64_t *handle = luaL_checkudata(L, 1, KV_WATCH_MT);
    lua_pushfstring(L, "qcluster.kv.watch: %I", (lua_Integer)*handle);
    return 1;
}

static const luaL_Reg kv_fns[] = {
    {"get", l_kv_get},       {"list", l_kv_list},   {"put", l_kv_put},
    {"delete", l_kv_delete}, {"watch", l_kv_watch}, {NULL, NULL},
};

/* Functions that stay on the thread that runs hooks: they touch nothing of
 * the loop's (watches are the Lua side's; the log is thread-safe). */
static int runs_in_place(lua_CFunction f);

/* Pushes a table of fns, each behind l_proxy unless runs_in_place (prefix:
 * "qcluster." or "qcluster.kv.", for argument errors). */
static void push_lib(lua_State *L, const luaL_Reg *fns, const char *prefix)
{
    lua_newtable(L);
    for (; fns->name; fns++) {
        char name[64];
        snprintf(name, sizeof name, "%s%s", prefix, fns->name);
        if (runs_in_place(fns->func))
            lua_pushcfunction(L, fns->func);
        else
            push_proxied(L, fns->func, name);
        lua_setfield(L, -2, fns->name);
    }
}

/* Pushes the qcluster.kv table; sets up the metatables it needs. */
static void open_kv(lua_State *L)
{
    luaL_newmetatable(L, KV_SYNC_MT);
    lua_pushcfunction(L, kv_sync_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, KV_WATCH_MT);
    lua_newtable(L);
    lua_pushcfunction(L, l_watch_cancel);
    lua_setfield(L, -2, "cancel");
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_watch_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    push_lib(L, kv_fns, "qcluster.kv.");
}

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
static int l_set_metadata(lua_State *L)
{
    qc_lua *h = host_of(L);
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

/* ---- the rest of the qcluster module ----------------------------------- */

/* The hook event being handled, when it is one (its snapshot), else NULL. */
static const job *event_of(const qc_lua *h)
{
    const job *j = h->current;
    return j && j->kind == JOB_HOOK ? j : NULL;
}

static uint64_t live_term(const qc_view *v) { return v && v->term ? v->term(v->ud) : 0; }

/* Whether the node moved to another term since the event being handled. */
static int event_stale(const qc_lua *h)
{
    const job *j = event_of(h);
    return j && live_term(h->view) != j->snap_term;
}

/* is_leader(): leads now, in the event's term when a hook runs (so a
 * late hook of an older term never sees itself leading). */
static int l_is_leader(lua_State *L)
{
    qc_lua *h = host_of(L);
    const qc_view *v = h->view;
    lua_pushboolean(L, v && v->is_leader && v->is_leader(v->ud) && !event_stale(h));
    return 1;
}

/* term(): the term as of the event a hook handles; now for callbacks. */
static int l_term(lua_State *L)
{
    qc_lua *h = host_of(L);
    const job *j = event_of(h);
    lua_pushinteger(L, (lua_Integer)(j ? j->snap_term : live_term(h->view)));
    return 1;
}

/* get_leader_info(): the leader now, or the leader as of the event when
 * the node has moved to another term since. */
static int l_leader(lua_State *L)
{
    qc_lua *h = host_of(L);
    const qc_view *v = h->view;
    if (event_stale(h)) {
        const job *j = event_of(h);
        if (j->has_snap_leader)
            push_peer(L, &j->snap_leader, 0);
        else
            lua_pushnil(L);
        return 1;
    }
    qc_peer_info p = {0};
    if (!v || !v->leader || v->leader(v->ud, &p) != 0) {
        lua_pushnil(L);
        return 1;
    }
    push_peer(L, &p, 0);
    return 1;
}

static int l_self(lua_State *L)
{
    const qc_view *v = host_of(L)->view;
    qc_peer_info p = {0};
    if (!v || !v->self) {
        lua_pushnil(L);
        return 1;
    }
    v->self(v->ud, &p);
    push_peer(L, &p, 1);
    return 1;
}

static int l_peers(lua_State *L)
{
    const qc_view *v = host_of(L)->view;
    qc_peer_info small[32];
    qc_peer_info *ps = small;
    size_t n = v && v->peers ? v->peers(v->ud, small, 32) : 0;
    if (n > 32) {
        ps = lua_newuserdatauv(L, n * sizeof *ps, 0);
        size_t again = v->peers(v->ud, ps, n);
        if (again < n) n = again;
    }
    lua_createtable(L, n > 1024 ? 1024 : (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        push_peer(L, &ps[i], 1);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, qc_wall_time());
    return 1;
}

static int l_log(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    int level = qc_log_parse_level(name);
    luaL_argcheck(L, level >= 0, 1, "expected \"debug\", \"info\", \"warn\" or \"error\"");
    const char *msg = luaL_tolstring(L, 2, NULL);
    qc_log(level, "hook", "%s", msg);
    return 0;
}

/* qcluster.checks() -> {{name, kind, status, output, since}, ...}: this
 * node's health checks ({} when it has none). */
static int l_checks(lua_State *L)
{
    const qc_view *v = host_of(L)->view;
    qc_check_info small[16], *cs = small;
    size_t n = v && v->checks ? v->checks(v->ud, small, 16) : 0;
    if (n > 16) {
        cs = lua_newuserdatauv(L, n * sizeof *cs, 0);
        size_t again = v->checks(v->ud, cs, n);
        if (again < n) n = again;
    }
    lua_createtable(L, (int)(n > 64 ? 64 : n), 0);
    for (size_t i = 0; i < n; i++) {
        lua_createtable(L, 0, 6);
        lua_pushstring(L, cs[i].name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, cs[i].kind);
        lua_setfield(L, -2, "kind");
        lua_pushstring(L, cs[i].passing ? "passing" : "failing");
        lua_setfield(L, -2, "status");
        lua_pushstring(L, cs[i].output ? cs[i].output : "");
        lua_setfield(L, -2, "output");
        lua_pushnumber(L, cs[i].since);
        lua_setfield(L, -2, "since");
        lua_pushnumber(L, cs[i].duration);
        lua_setfield(L, -2, "duration");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* check_pass/check_fail(name [, output]) -> true: a ttl check's report;
 * raises for no such check or one that is not a ttl check. */
static int check_report(lua_State *L, int pass, const char *fn)
{
    const char *name = luaL_checkstring(L, 1);
    size_t len = 0;
    const char *out = luaL_optlstring(L, 2, "", &len);
    const qc_view *v = host_of(L)->view;
    int rc = v && v->check_report ? v->check_report(v->ud, name, pass, out, len) : QC_ENOTFOUND;
    if (rc == QC_ENOTFOUND) return luaL_error(L, "%s: no check named '%s'", fn, name);
    if (rc == QC_EINVAL) return luaL_error(L, "%s: '%s' is not a ttl_ms check", fn, name);
    if (rc != QC_OK) return luaL_error(L, "%s: %s", fn, qc_strerror(rc));
    lua_pushboolean(L, 1);
    return 1;
}

static int l_check_pass(lua_State *L) { return check_report(L, 1, "check_pass"); }
static int l_check_fail(lua_State *L) { return check_report(L, 0, "check_fail"); }

static int l_no_exit(lua_State *L)
{
    return luaL_error(L, "os.exit is not allowed inside the agent");
}

static const luaL_Reg qcluster_fns[] = {
    {"is_leader", l_is_leader},
    {"get_leader_info", l_leader},
    {"self", l_self},
    {"peers", l_peers},
    {"term", l_term},
    {"now", l_now},
    {"log", l_log},
    {"exec", l_exec},
    {"after", l_after},
    {"set_metadata", l_set_metadata},
    {"checks", l_checks},
    {"check_pass", l_check_pass},
    {"check_fail", l_check_fail},
    {NULL, NULL},
};

static int runs_in_place(lua_CFunction f) { return f == l_now || f == l_log || f == l_kv_watch; }

/* Runs under lua_pcall: standard libraries and the qcluster module. */
static int open_all(lua_State *L)
{
    luaL_openlibs(L);
    /* A hook must not end the agent. */
    lua_getglobal(L, "os");
    lua_pushcfunction(L, l_no_exit);
    lua_setfield(L, -2, "exit");
    lua_pop(L, 1);
    push_lib(L, qcluster_fns, "qcluster.");
    open_kv(L);
    lua_setfield(L, -2, "kv");
    lua_newtable(L);
    qc_luajson_register(L);
    lua_setfield(L, -2, "json");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_pushstring(L, QC_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushvalue(L, -1);
    lua_setglobal(L, "qcluster");
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "qcluster");
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "qcluster.hooks");
    return 0;
}

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
    lua_pushcfunction(h->L, open_all);
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

static void kill_exec(qc_lua *h, qc_exec *x)
{
    if (x->fn_ref != LUA_NOREF && h->L) luaL_unref(h->L, LUA_REGISTRYINDEX, x->fn_ref);
    qc_spawn_cancel(x->s);
    h->n_execs--;
    free(x);
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
    while (h->watches) watch_free(h, h->watches);
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
        kill_exec(h, x);
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
        if (j != keep) job_free(h, j);
    }
    h->tail = NULL;
    /* Requests in flight belong to the view until their done: detach them,
     * so that a late done only frees its record (see qc_req). */
    for (qc_req *r = h->reqs; r; r = r->next) r->h = NULL;
    h->reqs = NULL;
    for (int i = 0; i < QC_ERRLOG_LABELS; i++) errlog_flush(&h->errlog[i]);
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
    lua_pushcfunction(L, msgh);
    /* Watches the file makes while it loads belong to this load: they
     * replace the previous load's when it succeeds, and go when it fails. */
    unsigned gen = ++h->file_gen;
    h->loading_gen = gen;
    arm(h, h->hook_timeout_ms);
    int st = qc_config_loadfile(L, h->hooks_path); /* text only, close-on-exec */
    if (st == LUA_OK) st = lua_pcall(L, 0, 1, tbl + 1);
    disarm(h);
    h->loading_gen = 0;
    if (st != LUA_OK) {
        watches_drop(h, gen, 0);
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
        watches_drop(h, gen, 0);
        return QC_EINVAL;
    }
    watches_drop(h, 0, gen);
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
    arm(h, QC_CONFIG_BUDGET_MS); /* a Lua config may loop, too */
    int rc = json ? qc_config_load_json(h->L, path, dir, json, len, cfg, err, errlen)
                  : qc_config_load(h->L, path, cfg, err, errlen);
    disarm(h);
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
