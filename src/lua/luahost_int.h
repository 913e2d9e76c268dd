/* Private to src/lua/luahost*.c: the Lua host's state (struct qc_lua), the
 * records of its queue, and what its files share, named luahost_* (extern
 * names) so that they are seen to be private. Nothing outside src/lua/
 * includes this; the interface of the host is luahost.h.
 *   luahost.c         the queue, the time budget, the Lua thread, firing
 *   luahost_exec.c    qcluster.exec and qcluster.after
 *   luahost_kv.c      qcluster.kv and set_metadata, requests to the view
 *   luahost_module.c  the rest of the qcluster module and its registration
 *   luahost_load.c    new, loading the config and hooks, free
 * Each file uses only those above it in this list, never one below. */
#ifndef QC_LUAHOST_INT_H
#define QC_LUAHOST_INT_H

#include <lauxlib.h>
#include <lua.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "base/spawn.h"
#include "lua/luahost.h"

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

#define KV_SYNC_MT "qcluster.kvsync"
#define KV_WATCH_MT "qcluster.kvwatch"

/* The host a lua_State (or a coroutine of it) belongs to. */
static inline qc_lua *luahost_of(lua_State *L) { return *(qc_lua **)lua_getextraspace(L); }
/* Bytes a job needs to copy s (with its NUL); 0 for NULL. */
static inline size_t luahost_str_size(const char *s) { return s ? strlen(s) + 1 : 0; }

/* luahost.c: jobs and the queue. put_str copies s at *cur (a job's
 * strings) and moves *cur past it. job_new: a job with room for hook and
 * extra bytes of strings; NULL when out of memory. enqueue: j goes to the
 * queue's end, the host owns it. */
const char *luahost_put_str(char **cur, const char *s);
job *luahost_job_new(const char *hook, size_t extra);
void luahost_job_free(qc_lua *h, job *j);
void luahost_enqueue(qc_lua *h, job *j);
/* Pushes a Peer table (extended: with up, role, voter, priority). */
void luahost_push_peer(lua_State *L, const qc_peer_info *p, int extended);
/* The message a kv status gives Lua ("revision mismatch", ...). */
const char *luahost_kv_errtext(int status);
/* Pushes f behind the loop-thread proxy; name is what errors call it. */
void luahost_push_proxied(lua_State *L, lua_CFunction f, const char *name);
/* The view's term now (0 without a view). */
uint64_t luahost_live_term(const qc_view *v);
/* Unlinks and frees a kv.watch, dropping its function's reference. */
void luahost_watch_free(qc_lua *h, qc_watch *w);
/* Logs how many error lines of e's label were suppressed. */
void luahost_errlog_flush(qc_errlog *e);
/* The time budget: arm starts ms of it on the host's state, disarm ends
 * it; msgh is the traceback handler for lua_pcall. */
void luahost_arm(qc_lua *h, int ms);
void luahost_disarm(qc_lua *h);
int luahost_msgh(lua_State *L);

/* luahost_exec.c. drop_ref drops a callback's reference from the loop
 * thread (left while a step is out); kill_exec cancels a running exec and
 * frees it (qc_lua_free); l_exec, l_after are qcluster.exec and .after. */
void luahost_drop_ref(qc_lua *h, int ref);
int luahost_l_exec(lua_State *L);
int luahost_l_after(lua_State *L);
void luahost_kill_exec(qc_lua *h, qc_exec *x);

/* luahost_kv.c: qcluster.kv's functions (kv_fns) and the __gc, cancel
 * and __tostring of its metatables; watches_drop drops the watches of
 * hooks-file load gen, or of every load but keep (luahost_load.c);
 * l_set_metadata is qcluster.set_metadata. */
extern const luaL_Reg luahost_kv_fns[];
int luahost_kv_sync_gc(lua_State *L);
int luahost_l_kv_watch(lua_State *L);
int luahost_l_watch_cancel(lua_State *L);
int luahost_l_watch_tostring(lua_State *L);
void luahost_watches_drop(qc_lua *h, unsigned gen, unsigned keep);
int luahost_l_set_metadata(lua_State *L);

/* luahost_module.c: opens the standard libraries and the qcluster module
 * (runs under lua_pcall). */
int luahost_open_all(lua_State *L);

#endif
