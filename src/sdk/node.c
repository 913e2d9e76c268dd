/* libqcluster's in-process node (include/qcluster.h): the agent on the
 * program's loop, on a thread of its own, or run as the qcluster binary
 * does; C callbacks for the hook events; a snapshot of the leader that any
 * thread may read. The agent's loop stays single-owner and lock-free (its
 * hooks run on the Lua host's thread, which talks to it through its queue,
 * src/lua/luahost.c): here only the snapshot and the stop request cross
 * threads, under n->lock. */
#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "base/common.h"
#include "base/log.h"

#include <qcluster.h>

#include "sdk/settings.h"

enum { MODE_NONE, MODE_LOOP, MODE_THREAD, MODE_RUN };

/* The reason on_stop gets when the program stopped the node. */
#define STOP_REASON "stopped by the program"

typedef struct callback {
    struct callback *next;
    char *name; /* NULL: every event */
    qc_event_fn *fn;
    void *arg;
} callback;

struct qc_node {
    char log_node[65]; /* its name in log records, for its loop thread's */
    qc_agent *agent;
    struct ev_loop *loop; /* set when it starts */
    int mode;
    int own_loop;        /* thread or run mode made it: destroyed with the node */
    callback *callbacks; /* in registration order */
    ev_async wake;       /* a stop was asked: by the agent or another thread */
    ev_check refresh;    /* the snapshot, after every loop turn */
    int in_callback;     /* loop thread only */
    int stopping;        /* loop thread only */
    int free_pending;    /* loop thread only: qc_node_free came during a stop or callback */
    char error[256];     /* why the start failed (qc_node_error) */
    pthread_t thread;    /* thread mode */
    pthread_mutex_t lock;
    /* Under lock. */
    int has_thread;  /* started and not yet joined */
    int on_loop_set; /* loop_thread is known */
    pthread_t loop_thread;
    int stop_asked;
    int stopped;
    int exit_code;
    int snap_is_leader;
    uint64_t snap_lease_until; /* snap_is_leader holds until then only */
    int snap_leader_is_self;
    qc_peer *snap_leader;
};

/* ---- peers -------------------------------------------------------------- */

void qc_peer_free(qc_peer *p)
{
    if (!p) return;
    free(p->identifier);
    free(p->host);
    free(p->metadata);
    free(p->role);
    free(p);
}

static char *dup_or_empty(const char *s) { return strdup(s ? s : ""); }

/* A qc_peer the caller owns (qc_peer_free), or NULL when out of memory. */
static qc_peer *peer_copy(const qc_peer_info *in)
{
    qc_peer *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->identifier = dup_or_empty(in->identifier);
    p->host = dup_or_empty(in->host);
    p->metadata = strdup(in->metadata ? in->metadata : "{}");
    p->role = dup_or_empty(in->role);
    p->port = in->port;
    p->up = in->up;
    p->voter = in->voter;
    p->priority = in->priority;
    p->healthy = in->healthy;
    if (p->identifier && p->host && p->metadata && p->role) return p;
    qc_peer_free(p);
    return NULL;
}

static int str_same(const char *a, const char *b) { return strcmp(a, b ? b : "") == 0; }

static int peer_same(const qc_peer *p, const qc_peer_info *in)
{
    return p->port == in->port && p->up == in->up && p->voter == in->voter &&
           p->priority == in->priority && p->healthy == in->healthy &&
           str_same(p->identifier, in->identifier) && str_same(p->host, in->host) &&
           str_same(p->metadata, in->metadata) && str_same(p->role, in->role);
}

/* A borrowed view of in as a qc_peer, valid while in is. */
static const qc_peer *peer_view(qc_peer *out, const qc_peer_info *in)
{
    if (!in) return NULL;
    *out = (qc_peer){.identifier = (char *)in->identifier,
                     .host = (char *)in->host,
                     .port = in->port,
                     .metadata = (char *)(in->metadata ? in->metadata : "{}"),
                     .role = (char *)in->role,
                     .up = in->up,
                     .voter = in->voter,
                     .priority = in->priority,
                     .healthy = in->healthy};
    return out;
}

/* ---- threads and the snapshot -------------------------------------------- */

static int on_loop_thread(qc_node *n)
{
    pthread_mutex_lock(&n->lock);
    int yes = n->on_loop_set && pthread_equal(n->loop_thread, pthread_self());
    pthread_mutex_unlock(&n->lock);
    return yes;
}

static void set_loop_thread(qc_node *n)
{
    pthread_mutex_lock(&n->lock);
    n->loop_thread = pthread_self();
    n->on_loop_set = 1;
    pthread_mutex_unlock(&n->lock);
}

/* Loop thread: what other threads will read, from the agent as it is now.
 * The copy is made only when the leader changed. */
static void snapshot(qc_node *n)
{
    qc_peer_info li;
    int is_leader = qc_agent_is_leader(n->agent);
    uint64_t lease_until = qc_agent_lease_until(n->agent);
    int has = qc_agent_leader(n->agent, &li) == QC_OK;
    pthread_mutex_lock(&n->lock);
    n->snap_is_leader = is_leader;
    n->snap_lease_until = lease_until;
    n->snap_leader_is_self = has && li.is_self;
    if (!has) {
        qc_peer_free(n->snap_leader);
        n->snap_leader = NULL;
    } else if (!n->snap_leader || !peer_same(n->snap_leader, &li)) {
        qc_peer *p = peer_copy(&li);
        if (p) { /* out of memory: the old one stays, a turn later it retries */
            qc_peer_free(n->snap_leader);
            n->snap_leader = p;
        }
    }
    pthread_mutex_unlock(&n->lock);
}

/* After each processing turn of the agent (its outputs carried out). */
static void on_turn(void *ud) { snapshot(ud); }

/* After every loop turn too: what changes outside the agent's processing
 * (a peer's announced metadata) shows as well. */
static void on_refresh(struct ev_loop *loop, ev_check *w, int revents)
{
    (void)loop;
    (void)revents;
    snapshot(w->data);
}

/* Under lock: the copy says this node leads, and the lease it was taken
 * under still holds: a loop thread stuck in a callback must not leave other
 * threads acting as leader after another node may have been elected. */
static int snap_leads(const qc_node *n)
{
    return n->snap_is_leader && qc_now_ms() < n->snap_lease_until;
}

int qc_is_leader(qc_node *n)
{
    if (!n) return 0;
    if (on_loop_thread(n)) return qc_agent_is_leader(n->agent);
    pthread_mutex_lock(&n->lock);
    int yes = snap_leads(n);
    pthread_mutex_unlock(&n->lock);
    return yes;
}

int qc_get_leader_info(qc_node *n, qc_peer **out)
{
    if (!out) return QC_EINVAL;
    *out = NULL;
    if (!n) return QC_EINVAL;
    if (on_loop_thread(n)) {
        qc_peer_info li;
        if (qc_agent_leader(n->agent, &li) != QC_OK) return QC_ENOLEADER;
        *out = peer_copy(&li);
        return *out ? QC_OK : QC_ENOMEM;
    }
    pthread_mutex_lock(&n->lock);
    int rc = QC_ENOLEADER;
    if (n->snap_leader && (!n->snap_leader_is_self || snap_leads(n))) {
        qc_peer_info li = {.identifier = n->snap_leader->identifier,
                           .host = n->snap_leader->host,
                           .port = n->snap_leader->port,
                           .metadata = n->snap_leader->metadata,
                           .role = n->snap_leader->role,
                           .up = n->snap_leader->up,
                           .voter = n->snap_leader->voter,
                           .priority = n->snap_leader->priority,
                           .healthy = n->snap_leader->healthy};
        *out = peer_copy(&li);
        rc = *out ? QC_OK : QC_ENOMEM;
    }
    pthread_mutex_unlock(&n->lock);
    return rc;
}

/* ---- callbacks ------------------------------------------------------------ */

static const char *const event_names[] = {
    "on_start",       "on_elected",      "on_demoted",       "on_leader_change",
    "on_peer_up",     "on_peer_down",    "on_stop",          "on_kv_change",
    "on_member_join", "on_member_leave", "on_health_change",
};

static int known_event(const char *name)
{
    for (size_t i = 0; i < sizeof event_names / sizeof event_names[0]; i++)
        if (strcmp(name, event_names[i]) == 0) return 1;
    return 0;
}

int qc_node_on(qc_node *n, const char *name, qc_event_fn *fn, void *arg)
{
    if (!n || !fn || (name && !known_event(name))) return QC_EINVAL;
    if (n->mode != MODE_NONE) return QC_EBUSY;
    callback *c = calloc(1, sizeof *c);
    if (!c) return QC_ENOMEM;
    if (name && !(c->name = strdup(name))) {
        free(c);
        return QC_ENOMEM;
    }
    c->fn = fn;
    c->arg = arg;
    callback **tail = &n->callbacks;
    while (*tail) tail = &(*tail)->next;
    *tail = c;
    return QC_OK;
}

/* The Lua host's observer: each hook event as it leaves the hook queue (on
 * the loop thread, in order, never inside the core's processing). */
static void on_hook_event(void *ud, const qc_hook_event *he)
{
    qc_node *n = ud;
    qc_peer self, leader, prev, peer;
    qc_event ev = {.name = he->hook,
                   .term = he->term,
                   .reason = he->reason,
                   .self = peer_view(&self, he->self),
                   .leader = peer_view(&leader, he->leader),
                   .previous_leader = peer_view(&prev, he->previous_leader),
                   .peer = peer_view(&peer, he->peer),
                   .key = he->key,
                   .klen = he->key ? he->klen : 0,
                   .value = he->key && he->has_value ? he->value : NULL,
                   .vlen = he->key && he->has_value ? he->vlen : 0,
                   .revision = he->revision,
                   .healthy = he->has_health && he->healthy,
                   .check = he->has_health ? he->check : NULL,
                   .status = he->has_health ? he->status : NULL,
                   .output = he->has_health ? he->output : NULL};
    n->in_callback++;
    for (callback *c = n->callbacks; c; c = c->next)
        if (!c->name || strcmp(c->name, he->hook) == 0) c->fn(n, &ev, c->arg);
    n->in_callback--;
}

/* ---- life cycle ----------------------------------------------------------- */

static int node_alloc(qc_node **out)
{
    qc_node *n = calloc(1, sizeof *n);
    if (!n) return QC_ENOMEM;
    if (pthread_mutex_init(&n->lock, NULL) != 0) {
        free(n);
        return QC_ENOMEM;
    }
    int rc = qc_agent_new(NULL, &n->agent);
    if (rc != QC_OK) {
        pthread_mutex_destroy(&n->lock);
        free(n);
        return rc;
    }
    *out = n;
    return QC_OK;
}

/* Copies a load error into the caller's buffer (which may be absent). */
static void put_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen) snprintf(err, errlen, "%s", msg);
}

int qc_node_new(const char *config_path, qc_node **out, char *err, size_t errlen)
{
    put_err(err, errlen, "");
    if (!out) return QC_EINVAL;
    *out = NULL;
    if (!config_path) {
        put_err(err, errlen, "no config path");
        return QC_EINVAL;
    }
    qc_node *n;
    int rc = node_alloc(&n);
    if (rc != QC_OK) {
        put_err(err, errlen, qc_strerror(rc));
        return rc;
    }
    char msg[1024] = "";
    rc = qc_agent_load(n->agent, config_path, msg, sizeof msg);
    if (rc != QC_OK) {
        put_err(err, errlen, msg[0] ? msg : qc_strerror(rc));
        qc_node_free(n);
        return rc;
    }
    *out = n;
    return QC_OK;
}

int qc_node_new_settings(const qc_settings *s, qc_node **out, char *err, size_t errlen)
{
    put_err(err, errlen, "");
    if (!out || !s) return QC_EINVAL;
    *out = NULL;
    char msg[1024] = "";
    char *json = NULL;
    size_t len = 0;
    int rc = qc_settings_json(s, &json, &len, msg, sizeof msg);
    qc_node *n = NULL;
    if (rc == QC_OK) rc = node_alloc(&n);
    /* Relative paths (hooks, the default data_dir) start at the working
     * directory, as if the settings were a config file there. */
    if (rc == QC_OK) rc = qc_agent_load_json(n->agent, "settings", ".", json, len, msg, sizeof msg);
    free(json);
    if (rc != QC_OK) {
        put_err(err, errlen, msg[0] ? msg : qc_strerror(rc));
        qc_node_free(n);
        return rc;
    }
    *out = n;
    return QC_OK;
}

/* The stop is done: watchers off the loop, the snapshot says no leader. */
static void finish(qc_node *n, int code)
{
    if (n->loop) {
        ev_ref(n->loop);
        ev_async_stop(n->loop, &n->wake);
        ev_ref(n->loop);
        ev_check_stop(n->loop, &n->refresh);
    }
    pthread_mutex_lock(&n->lock);
    n->stopped = 1;
    n->exit_code = code;
    n->snap_is_leader = 0;
    qc_peer_free(n->snap_leader);
    n->snap_leader = NULL;
    pthread_mutex_unlock(&n->lock);
}

static void node_destroy(qc_node *n);

/* Loop thread, outside the agent's processing and any callback. A
 * qc_node_free that came during the stop (from a callback, or another
 * watcher of the program's loop run by the stop's nested ev_run) frees the
 * node here, once nothing on the stack uses it: callers must not touch n
 * after this returns. */
static int stop_here(qc_node *n)
{
    if (n->stopping) return QC_EBUSY;
    n->stopping = 1;
    int code = qc_agent_stop(n->agent, STOP_REASON);
    finish(n, code);
    n->stopping = 0;
    if (n->free_pending) node_destroy(n);
    return code;
}

static void on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)revents;
    qc_node *n = w->data;
    pthread_mutex_lock(&n->lock);
    int asked = n->stop_asked && !n->stopped;
    pthread_mutex_unlock(&n->lock);
    if (!asked || n->stopping) return;
    if (n->mode == MODE_LOOP)
        stop_here(n); /* the program's loop goes on */
    else
        ev_break(loop, EVBREAK_ALL); /* whoever runs the loop stops the agent */
}

/* Any thread: the stop happens on the loop's thread, at its next turn. */
static void ask_stop(qc_node *n)
{
    pthread_mutex_lock(&n->lock);
    n->stop_asked = 1;
    pthread_mutex_unlock(&n->lock);
    ev_async_send(n->loop, &n->wake);
}

static void on_agent_wants_stop(void *ud) { ask_stop(ud); }

static int start_on(qc_node *n, struct ev_loop *loop, int mode, int signals)
{
    if (n->mode != MODE_NONE) return QC_EBUSY;
    n->loop = loop;
    n->mode = mode;
    ev_async_init(&n->wake, on_wake);
    n->wake.data = n;
    ev_async_start(loop, &n->wake);
    ev_unref(loop); /* neither keeps a program's loop running by itself */
    ev_check_init(&n->refresh, on_refresh);
    n->refresh.data = n;
    ev_check_start(loop, &n->refresh);
    ev_unref(loop);
    qc_agent_set_stop_fn(n->agent, on_agent_wants_stop, n);
    qc_agent_set_turn_fn(n->agent, on_turn, n);
    /* Callbacks are all registered by now (qc_node_on refuses later ones);
     * without any, no observer: the Lua host then need not queue the key
     * changes nobody handles. */
    if (n->callbacks) qc_agent_set_observer(n->agent, on_hook_event, n);
    qc_log_clear_error();
    int rc = qc_agent_start(n->agent, loop, signals);
    if (rc != QC_OK) {
        /* What the agent logged on this thread says why; the code does not. */
        snprintf(n->error, sizeof n->error, "%s",
                 *qc_log_last_error() ? qc_log_last_error() : qc_strerror(rc));
        finish(n, qc_agent_stop(n->agent, STOP_REASON));
        return rc;
    }
    snapshot(n);
    return QC_OK;
}

const char *qc_node_error(const qc_node *n) { return n ? n->error : ""; }

int qc_node_set_wal_thread(qc_node *n, int on)
{
    if (!n) return QC_EINVAL;
    if (n->mode != MODE_NONE) return QC_EBUSY;
    qc_agent_set_wal_thread(n->agent, on);
    return QC_OK;
}

int qc_node_start(qc_node *n, struct ev_loop *loop)
{
    if (!n) return QC_EINVAL;
    if (!loop && !(loop = ev_default_loop(0))) return QC_EIO;
    set_loop_thread(n);
    return start_on(n, loop, MODE_LOOP, 0);
}

static void *thread_main(void *arg)
{
    qc_node *n = arg;
    set_loop_thread(n);
    qc_log_set_node(n->log_node);
    ev_run(n->loop, 0);
    stop_here(n); /* may free n (a callback freed it) */
    return NULL;
}

int qc_node_start_thread(qc_node *n)
{
    if (!n) return QC_EINVAL;
    if (n->mode != MODE_NONE) return QC_EBUSY;
    /* A loop of its own: the program's default loop stays the program's.
     * (qcluster.exec then waits for its children through pidfds.) */
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    if (!loop) return QC_EIO;
    n->own_loop = 1;
    /* Started here, before the thread exists: nothing runs on the loop yet,
     * and start errors come back to the caller. */
    int rc = start_on(n, loop, MODE_THREAD, 0);
    if (rc != QC_OK) return rc;
    snprintf(n->log_node, sizeof n->log_node, "%s", qc_log_node()); /* the agent set it */
    pthread_mutex_lock(&n->lock);
    int err = pthread_create(&n->thread, NULL, thread_main, n);
    n->has_thread = err == 0;
    pthread_mutex_unlock(&n->lock);
    if (err) {
        snprintf(n->error, sizeof n->error, "cannot start the node's thread: %s", strerror(err));
        errno = err;
        stop_here(n); /* right here instead: the loop never ran */
        return QC_EIO;
    }
    return QC_OK;
}

int qc_node_run(qc_node *n)
{
    if (!n) return 1;
    /* A loop of its own, not libev's default one: the default loop reaps
     * every child on SIGCHLD, and would take the exit status of a child a
     * hook waits for (os.execute, io.popen) on the Lua thread. Children of
     * qcluster.exec are waited for through a pidfd here. */
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    if (!loop) return 1;
    n->own_loop = 1; /* destroyed with the node, as in thread mode */
    set_loop_thread(n);
    if (start_on(n, loop, MODE_RUN, 1) != QC_OK) return 1;
    ev_run(loop, 0);
    return stop_here(n);
}

static void join_thread(qc_node *n)
{
    pthread_mutex_lock(&n->lock);
    int join = n->has_thread;
    n->has_thread = 0;
    pthread_mutex_unlock(&n->lock);
    if (join) pthread_join(n->thread, NULL);
}

int qc_node_stop(qc_node *n)
{
    if (!n) return QC_EINVAL;
    pthread_mutex_lock(&n->lock);
    int stopped = n->stopped;
    pthread_mutex_unlock(&n->lock);
    if (n->mode == MODE_NONE) {
        finish(n, qc_agent_stop(n->agent, STOP_REASON));
        return QC_OK;
    }
    if (stopped) {
        join_thread(n);
        return QC_OK;
    }
    if (on_loop_thread(n)) {
        /* From a callback, or a loop someone else runs: at the next turn. */
        if (n->in_callback || n->stopping || n->mode != MODE_LOOP) {
            ask_stop(n);
            return QC_OK;
        }
        stop_here(n);
        return QC_OK;
    }
    ask_stop(n);
    join_thread(n); /* thread mode: returns once stopped */
    return QC_OK;
}

/* Frees n, stopped; on its own thread (a callback freed it) the thread
 * detaches instead of joining itself. */
static void node_destroy(qc_node *n)
{
    pthread_mutex_lock(&n->lock);
    int self = n->has_thread && pthread_equal(n->thread, pthread_self());
    if (self) n->has_thread = 0;
    pthread_mutex_unlock(&n->lock);
    if (self) pthread_detach(pthread_self());
    join_thread(n);
    qc_agent_free(n->agent);
    if (n->own_loop) ev_loop_destroy(n->loop);
    while (n->callbacks) {
        callback *c = n->callbacks;
        n->callbacks = c->next;
        free(c->name);
        free(c);
    }
    qc_peer_free(n->snap_leader);
    pthread_mutex_destroy(&n->lock);
    free(n);
}

void qc_node_free(qc_node *n)
{
    if (!n) return;
    /* stopping and in_callback are the loop thread's: read there only (from
     * another thread, reading them raced with the callbacks). */
    if (on_loop_thread(n) && (n->stopping || n->in_callback)) {
        /* The stop, or the callback, still runs on n: the stop frees it as
         * it unwinds (one is asked for when only a callback runs). */
        n->free_pending = 1;
        if (!n->stopping) ask_stop(n);
        return;
    }
    pthread_mutex_lock(&n->lock);
    int stopped = n->stopped;
    pthread_mutex_unlock(&n->lock);
    if (!stopped && n->mode != MODE_RUN) qc_node_stop(n);
    node_destroy(n);
}
