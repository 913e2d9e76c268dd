/* C-level checks of libqcluster's in-process node (include/qcluster.h), one
 * case a run: `node_test CASE DIR PORT` (DIR: an empty scratch directory,
 * PORT: a free cluster port on 127.0.0.1). Prints "FAIL file:line: what"
 * for each failed check and "ok CASE" at the end; exits 1 on any failure.
 * Run by tests/integration/node_api_spec.lua, which ends it on a hang. */
#define _GNU_SOURCE /* pipe2 */
#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <qcluster.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fd_birth.h"

static int failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            putchar('\n');                                                                         \
            __atomic_fetch_add(&failures, 1, __ATOMIC_SEQ_CST);                                    \
        }                                                                                          \
    } while (0)

/* ---- helpers ---- */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        printf("FAIL cannot write %s\n", path);
        exit(1);
    }
}

static char *read_file(const char *path)
{
    static char buf[4096];
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static char *path_in(const char *dir, const char *name)
{
    static _Thread_local char bufs[4][1024]; /* nodes are made on several threads */
    static _Thread_local int next;
    char *p = bufs[next++ % 4];
    snprintf(p, sizeof bufs[0], "%s/%s", dir, name);
    return p;
}

/* Events as callbacks saw them: "name" or "name:reason", in order. The
 * callbacks run on the node's loop thread; the test reads from its own. */
typedef struct recorder {
    pthread_mutex_t lock;
    char names[64][64];
    int n;
    pthread_t start_thread;
} recorder;

static void on_any(qc_node *node, const qc_event *ev, void *arg)
{
    (void)node;
    recorder *r = arg;
    pthread_mutex_lock(&r->lock);
    if (strcmp(ev->name, "on_start") == 0) r->start_thread = pthread_self();
    if (r->n < 64 && ev->check) /* on_health_change: "name:healthy:check:status" */
        snprintf(r->names[r->n++], sizeof r->names[0], "%s:%d:%s:%s", ev->name, ev->healthy,
                 ev->check, ev->status ? ev->status : "?");
    else if (r->n < 64)
        snprintf(r->names[r->n++], sizeof r->names[0], "%s%s%s", ev->name, ev->reason ? ":" : "",
                 ev->reason ? ev->reason : "");
    pthread_mutex_unlock(&r->lock);
}

static int recorded(recorder *r, const char *name)
{
    pthread_mutex_lock(&r->lock);
    int at = -1;
    for (int i = 0; i < r->n && at < 0; i++)
        if (strncmp(r->names[i], name, strlen(name)) == 0) at = i;
    pthread_mutex_unlock(&r->lock);
    return at;
}

/* on_start first, on_elected in between, on_stop last. */
static void check_order(recorder *r)
{
    pthread_mutex_lock(&r->lock);
    int n = r->n;
    pthread_mutex_unlock(&r->lock);
    CHECK(n >= 3, "only %d events", n);
    if (n < 3) return;
    CHECK(strcmp(r->names[0], "on_start") == 0, "first event %s", r->names[0]);
    CHECK(strncmp(r->names[n - 1], "on_stop", 7) == 0, "last event %s", r->names[n - 1]);
    int elected = recorded(r, "on_elected");
    CHECK(elected > 0 && elected < n - 1, "on_elected at %d of %d", elected, n);
}

static void write_config(const char *dir, int port, const char *hooks, const char *extra)
{
    char text[2048];
    snprintf(text, sizeof text,
             "return {identifier = \"solo\", listen_port = %d, api_port = 0,\n"
             "  election_timeout_ms = 300, heartbeat_ms = 50, hooks = \"hooks.lua\",\n"
             "  metadata = {server_port = 8002}%s}\n",
             port, extra);
    write_file(path_in(dir, "node.lua"), text);
    write_file(path_in(dir, "hooks.lua"), hooks);
}

/* ---- thread mode: asked from another thread, stopped from it ---- */

static int case_thread(const char *dir, int port)
{
    char hooks[2048];
    /* exec from a node off the default loop: its child is awaited by pidfd. */
    snprintf(hooks, sizeof hooks,
             "local qcluster = require(\"qcluster\")\n"
             "return {on_elected = function()\n"
             "  qcluster.exec(\"echo hi\", {}, function(r)\n"
             "    local f = io.open(\"%s\", \"w\")\n"
             "    f:write(r.status, \" \", r.stdout)\n"
             "    f:close()\n"
             "  end)\n"
             "end}\n",
             path_in(dir, "exec.out"));
    /* a check whose first pass makes the node healthy: on_health_change */
    write_config(dir, port, hooks,
                 ",\n  checks = {{name = \"ok\", exec = \"true\", interval_ms = 50, rise = 1, "
                 "fall = 1}}");
    recorder rec = {.lock = PTHREAD_MUTEX_INITIALIZER};
    qc_node *n;
    char err[512];
    int rc = qc_node_new(path_in(dir, "node.lua"), &n, err, sizeof err);
    CHECK(rc == QC_OK, "qc_node_new: %s", err);
    if (rc) return 1;
    CHECK(qc_node_on(n, NULL, on_any, &rec) == QC_OK, "qc_node_on");
    recorder health = {.lock = PTHREAD_MUTEX_INITIALIZER};
    CHECK(qc_node_on(n, "on_health_change", on_any, &health) == QC_OK, "qc_node_on health");
    CHECK(qc_is_leader(n) == 0, "leader before it started");
    CHECK(qc_node_start_thread(n) == QC_OK, "qc_node_start_thread");
    CHECK(qc_node_on(n, "on_stop", on_any, &rec) == QC_EBUSY, "qc_node_on after start");
    int waited = 0;
    while (!qc_is_leader(n) && waited < 10000) {
        sleep_ms(10);
        waited += 10;
    }
    CHECK(qc_is_leader(n) == 1, "not leader after 10 s (asked from the main thread)");
    qc_peer *p = NULL;
    rc = qc_get_leader_info(n, &p);
    CHECK(rc == QC_OK && p, "qc_get_leader_info: %s", qc_strerror(rc));
    if (p) {
        CHECK(strcmp(p->identifier, "solo") == 0, "leader %s", p->identifier);
        CHECK(p->port == port, "leader port %d", p->port);
        CHECK(strstr(p->metadata, "\"server_port\":8002") != NULL, "metadata %s", p->metadata);
        CHECK(strcmp(p->role, "leader") == 0, "role %s", p->role);
        qc_peer_free(p);
    }
    const char *out = NULL;
    /* not yet there, or opened and not yet written */
    for (waited = 0; (!(out = read_file(path_in(dir, "exec.out"))) || !*out) && waited < 5000;
         waited += 10)
        sleep_ms(10);
    CHECK(out && strcmp(out, "0 hi\n") == 0, "exec result %s", out ? out : "(none)");
    CHECK(qc_node_stop(n) == QC_OK, "qc_node_stop from the main thread");
    CHECK(!pthread_equal(rec.start_thread, pthread_self()), "callbacks ran on the main thread");
    check_order(&rec);
    CHECK(recorded(&rec, "on_stop:stopped by the program") >= 0, "on_stop reason");
    CHECK(recorded(&health, "on_health_change:1:ok:passing") == 0, "no on_health_change event");
    CHECK(qc_is_leader(n) == 0, "leader after stop");
    p = NULL;
    CHECK(qc_get_leader_info(n, &p) == QC_ENOLEADER && !p, "a leader after stop");
    CHECK(qc_node_stop(n) == QC_OK, "a second qc_node_stop");
    qc_node_free(n);
    return 0;
}

/* ---- loop mode on a program's own loop, from settings; a callback stops it ---- */

typedef struct loop_case {
    recorder rec;
    struct ev_loop *loop;
    ev_timer guard;
    int leader_in_callback;
    char metadata[256];
    int stop_rc;
} loop_case;

static void on_elected_stop(qc_node *n, const qc_event *ev, void *arg)
{
    loop_case *lc = arg;
    on_any(n, ev, &lc->rec);
    lc->leader_in_callback = qc_is_leader(n);
    qc_peer *p;
    if (qc_get_leader_info(n, &p) == QC_OK) {
        snprintf(lc->metadata, sizeof lc->metadata, "%s", p->metadata);
        qc_peer_free(p);
    }
    lc->stop_rc = qc_node_stop(n); /* from a callback: after it returns */
}

static void on_stop_cb(qc_node *n, const qc_event *ev, void *arg)
{
    loop_case *lc = arg;
    on_any(n, ev, &lc->rec);
    ev_timer_stop(lc->loop, &lc->guard); /* the loop ends once the node is gone */
}

static void on_guard(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    printf("FAIL the loop still ran after 20 s\n");
    failures++;
    ev_break(loop, EVBREAK_ALL);
}

static int case_loop(const char *dir, int port)
{
    char hooks[1024];
    snprintf(hooks, sizeof hooks,
             "return {on_start = function() local f = io.open(\"%s\", \"w\") f:close() end}\n",
             path_in(dir, "started"));
    write_file(path_in(dir, "hooks.lua"), hooks);
    qc_settings *s = qc_settings_new();
    CHECK(s != NULL, "qc_settings_new");
    if (!s) return 1;
    CHECK(qc_settings_set_string(s, "identifier", "solo") == QC_OK, "identifier");
    CHECK(qc_settings_set_string(s, "listen_host", "127.0.0.1") == QC_OK, "listen_host");
    CHECK(qc_settings_set_int(s, "listen_port", port) == QC_OK, "listen_port");
    CHECK(qc_settings_set_int(s, "api_port", 0) == QC_OK, "api_port");
    CHECK(qc_settings_set_int(s, "election_timeout_ms", 300) == QC_OK, "election_timeout_ms");
    CHECK(qc_settings_set_string(s, "data_dir", path_in(dir, "data")) == QC_OK, "data_dir");
    CHECK(qc_settings_set_string(s, "hooks", path_in(dir, "hooks.lua")) == QC_OK, "hooks");
    CHECK(qc_settings_set_json(s, "metadata", "{\"server_port\": 8002}") == QC_OK, "metadata");
    CHECK(qc_settings_set_bool(s, "preempt", 0) == QC_OK, "preempt");
    loop_case lc = {.rec = {.lock = PTHREAD_MUTEX_INITIALIZER}, .stop_rc = -100};
    qc_node *n;
    char err[512];
    int rc = qc_node_new_settings(s, &n, err, sizeof err);
    qc_settings_free(s);
    CHECK(rc == QC_OK, "qc_node_new_settings: %s", err);
    if (rc) return 1;
    CHECK(qc_node_on(n, "on_start", on_any, &lc.rec) == QC_OK, "on on_start");
    CHECK(qc_node_on(n, "on_elected", on_elected_stop, &lc) == QC_OK, "on on_elected");
    CHECK(qc_node_on(n, "on_stop", on_stop_cb, &lc) == QC_OK, "on on_stop");
    lc.loop = ev_loop_new(EVFLAG_AUTO);
    ev_timer_init(&lc.guard, on_guard, 20., 0.);
    ev_timer_start(lc.loop, &lc.guard);
    CHECK(qc_node_start(n, lc.loop) == QC_OK, "qc_node_start");
    CHECK(qc_node_start(n, lc.loop) == QC_EBUSY, "a second qc_node_start");
    ev_run(lc.loop, 0);
    CHECK(lc.leader_in_callback == 1, "qc_is_leader was 0 inside on_elected");
    CHECK(strstr(lc.metadata, "\"server_port\":8002") != NULL, "metadata %s", lc.metadata);
    CHECK(lc.stop_rc == QC_OK, "qc_node_stop in a callback: %d", lc.stop_rc);
    check_order(&lc.rec);
    CHECK(read_file(path_in(dir, "started")) != NULL, "the settings' hooks file did not run");
    CHECK(qc_is_leader(n) == 0, "leader after stop");
    qc_node_free(n);
    ev_loop_destroy(lc.loop);
    return 0;
}

/* ---- what is refused ---- */

/* open repeated n times, "0", close repeated n times; a static buffer. */
static const char *nested(const char *open, const char *close, int n)
{
    static char buf[1024];
    size_t len = 0, lo = strlen(open), lc = strlen(close);
    for (int i = 0; i < n && len + lo < sizeof buf; i++, len += lo) memcpy(buf + len, open, lo);
    buf[len++] = '0';
    for (int i = 0; i < n && len + lc < sizeof buf; i++, len += lc) memcpy(buf + len, close, lc);
    buf[len] = '\0';
    return buf;
}

static int case_bad(const char *dir, int port)
{
    qc_node *n = (qc_node *)1;
    char err[512];
    int rc = qc_node_new(path_in(dir, "missing.lua"), &n, err, sizeof err);
    CHECK(rc != QC_OK && n == NULL, "a missing config was taken");
    CHECK(strstr(err, "missing.lua") != NULL, "message %s", err);

    write_file(path_in(dir, "bad.lua"), "return {identifier = \"x\", listen_port = \"seven\"}\n");
    rc = qc_node_new(path_in(dir, "bad.lua"), &n, err, sizeof err);
    CHECK(rc == QC_EINVAL, "bad config: %s", qc_strerror(rc));
    CHECK(strstr(err, "bad.lua") && strstr(err, "listen_port"), "message %s", err);
    rc = qc_node_new(path_in(dir, "bad.lua"), &n, NULL, 0);
    CHECK(rc == QC_EINVAL, "bad config without a message buffer: %s", qc_strerror(rc));

    qc_settings *s = qc_settings_new();
    CHECK(qc_settings_set_string(s, "identifier", "x") == QC_OK, "identifier");
    rc = qc_node_new_settings(s, &n, err, sizeof err);
    CHECK(rc == QC_EINVAL, "settings without listen_port: %s", qc_strerror(rc));
    CHECK(strncmp(err, "settings: ", 10) == 0 && strstr(err, "listen_port"), "message %s", err);
    CHECK(qc_settings_set_json(s, "metadata", "{bad") == QC_EINVAL, "bad JSON taken");
    CHECK(qc_settings_add_peer(s, "p", "127.0.0.1", 1, "[1]") == QC_EINVAL, "array metadata");
    CHECK(qc_settings_set_string(s, NULL, "x") == QC_EINVAL, "NULL key");
    /* JSON deeper than the loader takes is refused when set, not later as
     * "out of memory"; metadata at the limit is too deep inside its peer. */
    CHECK(qc_settings_set_json(s, "metadata", nested("[", "]", 100)) == QC_EINVAL, "deep JSON");
    CHECK(qc_settings_set_json(s, "metadata", nested("{\"a\":", "}", 60)) == QC_OK, "60 deep");
    CHECK(qc_settings_add_peer(s, "p", "127.0.0.1", 1, nested("{\"a\":", "}", 66)) == QC_EINVAL,
          "deep metadata");
    CHECK(qc_settings_add_peer(s, "p", "127.0.0.1", 1, nested("{\"a\":", "}", 65)) == QC_EINVAL,
          "metadata at the limit");
    /* Text that is not UTF-8 (RFC 3629) is refused when set: peers and
     * clients would get it in JSON. */
    CHECK(qc_settings_set_json(s, "metadata",
                               "{\"k\": \"\xC0\xAF"
                               "\"}") == QC_EINVAL,
          "overlong UTF-8 taken");
    CHECK(qc_settings_set_json(s, "metadata", "{\"k\": \"\\ud800\"}") == QC_EINVAL,
          "lone surrogate escape taken");
    CHECK(qc_settings_add_peer(s, "p", "127.0.0.1", 1,
                               "{\"k\": \"\xED\xA0\x80"
                               "\"}") == QC_EINVAL,
          "surrogate in peer metadata taken");
    CHECK(qc_settings_add_peer(s, "p\xC0\xAF", "127.0.0.1", 1, NULL) == QC_EINVAL,
          "peer identifier not UTF-8 taken");
    CHECK(qc_settings_set_string(s, "listen_host", "h\xF4\x90\x80\x80") == QC_EINVAL,
          "string not UTF-8 taken");
    CHECK(qc_settings_set_json(s, "metadata", "{}") == QC_OK, "metadata replaced");
    /* Then fixed: peers from add_peer, values replaced. */
    CHECK(qc_settings_set_int(s, "listen_port", port) == QC_OK, "listen_port");
    CHECK(qc_settings_set_int(s, "api_port", 0) == QC_OK, "api_port");
    CHECK(qc_settings_set_string(s, "identifier", "solo") == QC_OK, "identifier again");
    CHECK(qc_settings_add_peer(s, "p1", "127.0.0.1", port + 1, "{\"a\": 1}") == QC_OK, "peer");
    CHECK(qc_settings_add_peer(s, "p2", "127.0.0.1", port + 2, NULL) == QC_OK, "peer");
    CHECK(qc_settings_set_string(s, "data_dir", path_in(dir, "data")) == QC_OK, "data_dir");
    rc = qc_node_new_settings(s, &n, err, sizeof err);
    CHECK(rc == QC_OK, "fixed settings: %s", err);
    qc_settings_free(s);
    if (rc == QC_OK) {
        CHECK(qc_node_on(n, "on_nothing", on_any, NULL) == QC_EINVAL, "unknown event taken");
        CHECK(qc_node_on(n, "on_elected", NULL, NULL) == QC_EINVAL, "NULL callback taken");
        qc_peer *p = (qc_peer *)1;
        CHECK(qc_is_leader(n) == 0, "leader before start");
        CHECK(qc_get_leader_info(n, &p) == QC_ENOLEADER && p == NULL, "leader before start");
        CHECK(qc_node_stop(n) == QC_OK, "stop before start");
        CHECK(qc_node_start_thread(n) != QC_OK, "started after a stop");
        qc_node_free(n);
    }
    qc_node_free(NULL);
    qc_peer_free(NULL);
    CHECK(qc_is_leader(NULL) == 0, "qc_is_leader(NULL)");
    CHECK(strcmp(qc_strerror(QC_ENOLEADER), "no leader") == 0, "qc_strerror");
    return 0;
}

/* ---- three nodes in one process, each on its own thread ---- */

/* Node i of three on threads of their own; on_elected (NULL: none) gets
 * &indexes[i]. */
static const int indexes[3] = {0, 1, 2};

/* Settings of node ti: its identifier, ports (listen port+i, API api_port)
 * and data_dir under dir; *rc QC_OK or why not. NULL when out of memory. */
static qc_settings *node_settings(const char *dir, int port, int i, int api_port, int *rc)
{
    qc_settings *s = qc_settings_new();
    char id[16], data[64];
    snprintf(id, sizeof id, "t%d", i);
    snprintf(data, sizeof data, "data-%d", i);
    *rc = s ? QC_OK : QC_ENOMEM;
    if (*rc == QC_OK) *rc = qc_settings_set_string(s, "identifier", id);
    if (*rc == QC_OK) *rc = qc_settings_set_int(s, "listen_port", port + i);
    if (*rc == QC_OK) *rc = qc_settings_set_int(s, "api_port", api_port);
    if (*rc == QC_OK) *rc = qc_settings_set_string(s, "data_dir", path_in(dir, data));
    return s;
}

/* Adds peers t0..t(n-1) but ti, at port+j, with metadata (NULL: none). */
static int add_peers(qc_settings *s, int port, int i, int n, const char *metadata)
{
    int rc = QC_OK;
    for (int j = 0; j < n && rc == QC_OK; j++) {
        char pid[16];
        snprintf(pid, sizeof pid, "t%d", j);
        if (j != i) rc = qc_settings_add_peer(s, pid, "127.0.0.1", port + j, metadata);
    }
    return rc;
}

/* Makes node ti from s (freed here; rc: how making s went), registers
 * on_elected when given, and starts it on its own thread. */
static qc_node *start_from(qc_settings *s, int rc, int i, qc_event_fn *on_elected)
{
    qc_node *n = NULL;
    char err[512] = "";
    if (rc == QC_OK) rc = qc_node_new_settings(s, &n, err, sizeof err);
    qc_settings_free(s);
    CHECK(rc == QC_OK, "node t%d: %s %s", i, qc_strerror(rc), err);
    if (n && on_elected)
        CHECK(qc_node_on(n, "on_elected", on_elected, (void *)&indexes[i]) == QC_OK, "on t%d", i);
    if (n) CHECK(qc_node_start_thread(n) == QC_OK, "start t%d", i);
    return n;
}

static qc_node *trio_node(const char *dir, int port, int i, qc_event_fn *on_elected)
{
    int rc;
    qc_settings *s = node_settings(dir, port, i, 0, &rc);
    if (rc == QC_OK) rc = add_peers(s, port, i, 3, "{\"slot\": 1}");
    return start_from(s, rc, i, on_elected);
}

/* The one node of three (skipping gone) that leads and that the others
 * name; -1 when they do not agree (yet). */
static int trio_leader(qc_node **nodes, int gone)
{
    int leader = -1;
    for (int i = 0; i < 3; i++) {
        if (i == gone || !qc_is_leader(nodes[i])) continue;
        if (leader >= 0) return -1; /* two at once: not settled */
        leader = i;
    }
    if (leader < 0) return -1;
    char want[16];
    snprintf(want, sizeof want, "t%d", leader);
    for (int i = 0; i < 3; i++) {
        qc_peer *p;
        if (i == gone || qc_get_leader_info(nodes[i], &p) != QC_OK) continue;
        int same = strcmp(p->identifier, want) == 0;
        qc_peer_free(p);
        if (!same) return -1;
    }
    return leader;
}

static int wait_trio_leader(qc_node **nodes, int gone)
{
    for (int waited = 0; waited < 15000; waited += 20) {
        int l = trio_leader(nodes, gone);
        if (l >= 0) return l;
        sleep_ms(20);
    }
    return -1;
}

static int case_trio(const char *dir, int port)
{
    qc_node *nodes[3];
    for (int i = 0; i < 3; i++) nodes[i] = trio_node(dir, port, i, NULL);
    if (!nodes[0] || !nodes[1] || !nodes[2]) return 1;
    int first = wait_trio_leader(nodes, -1);
    CHECK(first >= 0, "no agreed leader among three threads after 15 s");
    if (first >= 0) {
        CHECK(qc_node_stop(nodes[first]) == QC_OK, "stopping the leader");
        CHECK(qc_is_leader(nodes[first]) == 0, "a stopped node leads");
        int second = wait_trio_leader(nodes, first);
        CHECK(second >= 0 && second != first, "no new leader after the leader stopped");
    }
    for (int i = 0; i < 3; i++) qc_node_free(nodes[i]); /* stops the others */
    return 0;
}

/* ---- three nodes made and started on three threads at once ---- */

typedef struct spread_arg {
    const char *dir;
    int port, i;
    qc_node *node;
} spread_arg;

static void *spread_start(void *arg)
{
    spread_arg *a = arg;
    a->node = trio_node(a->dir, a->port, a->i, NULL);
    return NULL;
}

/* As a program's threads may each make a node: the first uses of the
 * library's shared state (the CRC table) come from all of them at once. */
static int case_spread(const char *dir, int port)
{
    spread_arg args[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        args[i] = (spread_arg){.dir = dir, .port = port, .i = i};
        CHECK(pthread_create(&t[i], NULL, spread_start, &args[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    qc_node *nodes[3] = {args[0].node, args[1].node, args[2].node};
    if (!nodes[0] || !nodes[1] || !nodes[2]) return 1;
    CHECK(wait_trio_leader(nodes, -1) >= 0, "no agreed leader among three threads after 15 s");
    for (int i = 0; i < 3; i++) qc_node_free(nodes[i]);
    return 0;
}

/* ---- a leader's loop stuck in a callback: other threads stop hearing "leader" ---- */

static int stuck_elections; /* on_elected calls so far */
static int stuck_node = -1; /* the node whose first on_elected sleeps, while it does */

static void on_elected_sleep(qc_node *n, const qc_event *ev, void *arg)
{
    (void)n, (void)ev;
    if (__atomic_fetch_add(&stuck_elections, 1, __ATOMIC_SEQ_CST) != 0) return;
    __atomic_store_n(&stuck_node, *(const int *)arg, __ATOMIC_SEQ_CST);
    sleep_ms(2500); /* the followers elect another meanwhile */
    __atomic_store_n(&stuck_node, -1, __ATOMIC_SEQ_CST);
}

static int case_stuck(const char *dir, int port)
{
    qc_node *nodes[3];
    for (int i = 0; i < 3; i++) nodes[i] = trio_node(dir, port, i, on_elected_sleep);
    if (!nodes[0] || !nodes[1] || !nodes[2]) return 1;
    int stuck = -1;
    for (int waited = 0; stuck < 0 && waited < 15000; waited++) {
        sleep_ms(1);
        stuck = __atomic_load_n(&stuck_node, __ATOMIC_SEQ_CST);
    }
    CHECK(stuck >= 0, "no on_elected after 15 s");
    if (stuck >= 0) {
        CHECK(qc_is_leader(nodes[stuck]) == 1, "the copy did not say leader as on_elected began");
        sleep_ms(1000); /* its loop is stuck: no renewal, the lease lapses */
        CHECK(__atomic_load_n(&stuck_node, __ATOMIC_SEQ_CST) == stuck, "on_elected ended early");
        CHECK(qc_is_leader(nodes[stuck]) == 0, "still leader from a copy past its lease");
        qc_peer *p = NULL;
        char self[16];
        snprintf(self, sizeof self, "t%d", stuck);
        if (qc_get_leader_info(nodes[stuck], &p) == QC_OK)
            CHECK(strcmp(p->identifier, self) != 0, "names itself past its lease");
        qc_peer_free(p);
    }
    CHECK(wait_trio_leader(nodes, -1) >= 0, "no agreed leader once the loop runs again");
    for (int i = 0; i < 3; i++) qc_node_free(nodes[i]);
    return 0;
}

/* Node id of two (its peer on pport): priority prio (its peer's !prio),
 * leave_on_stop leave, elections of election_ms; not started. */
static qc_node *pair_node(const char *dir, const char *id, int port, const char *peer, int pport,
                          int prio, int leave, int election_ms)
{
    char peers[256], data[64];
    snprintf(peers, sizeof peers,
             "[{\"identifier\": \"%s\", \"host\": \"127.0.0.1\", \"port\": %d, \"priority\": %d}]",
             peer, pport, !prio);
    snprintf(data, sizeof data, "data-%s", id);
    qc_settings *s = qc_settings_new();
    int rc = s ? QC_OK : QC_ENOMEM;
    if (rc == QC_OK) rc = qc_settings_set_string(s, "identifier", id);
    if (rc == QC_OK) rc = qc_settings_set_int(s, "listen_port", port);
    if (rc == QC_OK) rc = qc_settings_set_int(s, "api_port", 0);
    if (rc == QC_OK) rc = qc_settings_set_int(s, "priority", prio);
    if (rc == QC_OK) rc = qc_settings_set_int(s, "election_timeout_ms", election_ms);
    if (rc == QC_OK) rc = qc_settings_set_bool(s, "leave_on_stop", leave);
    if (rc == QC_OK) rc = qc_settings_set_string(s, "data_dir", path_in(dir, data));
    if (rc == QC_OK) rc = qc_settings_set_json(s, "peers", peers);
    char err[512] = "";
    qc_node *n = NULL;
    if (rc == QC_OK) rc = qc_node_new_settings(s, &n, err, sizeof err);
    qc_settings_free(s);
    CHECK(rc == QC_OK, "node %s: %s %s", id, qc_strerror(rc), err);
    return rc == QC_OK ? n : NULL;
}

/* ---- loop mode: a stop whose leave fails at once leaves the program's loop running ---- */

typedef struct leave_case {
    qc_node *a;
    int peer_pid, killed, stopped, ticks_after, ended;
    ev_timer poll, tick, end, guard;
} leave_case;

static void leave_end(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    ((leave_case *)w->data)->ended = w == &((leave_case *)w->data)->end;
    ev_break(loop, EVBREAK_ALL);
}

static void leave_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    leave_case *lc = w->data;
    if (lc->stopped) lc->ticks_after++;
}

/* Once b leads, it is killed; once a sees b's link down, the program stops
 * a from a timer: its leave, sent to a leader it cannot reach, fails at once. */
static void leave_poll(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    leave_case *lc = w->data;
    qc_peer *p = NULL;
    if (qc_get_leader_info(lc->a, &p) != QC_OK) return;
    int up = p->up;
    qc_peer_free(p);
    if (!lc->killed) {
        kill(lc->peer_pid, SIGKILL);
        lc->killed = 1;
        return;
    }
    if (up) return;
    ev_timer_stop(loop, w);
    qc_node_stop(lc->a);
    lc->stopped = 1;
    ev_timer_start(loop, &lc->end);
}

/* PORT: a's; the spec runs b (a qcluster agent on PORT+1 that may lead) and
 * gives its pid in QC_PEER_PID. */
static int case_leave(const char *dir, int port)
{
    const char *pid = getenv("QC_PEER_PID");
    CHECK(pid && atoi(pid) > 0, "QC_PEER_PID not set");
    if (!pid) return 1;
    leave_case lc = {.peer_pid = atoi(pid)};
    lc.a = pair_node(dir, "a", port, "b", port + 1, 0, 1, 3000); /* b leads */
    if (!lc.a) return 1;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    CHECK(qc_node_start(lc.a, loop) == QC_OK, "start a on the program's loop");
    ev_timer_init(&lc.poll, leave_poll, 0.02, 0.02);
    ev_timer_init(&lc.tick, leave_tick, 0.05, 0.05);
    ev_timer_init(&lc.end, leave_end, 1.0, 0);
    ev_timer_init(&lc.guard, leave_end, 40.0, 0);
    lc.poll.data = lc.tick.data = lc.end.data = lc.guard.data = &lc;
    ev_timer_start(loop, &lc.poll);
    ev_timer_start(loop, &lc.tick);
    ev_timer_start(loop, &lc.guard);
    ev_run(loop, 0);
    CHECK(lc.stopped, "a never saw b lead and go within 40 s");
    CHECK(!lc.stopped || (lc.ended && lc.ticks_after > 0),
          "the program's ev_run ended with the node's stop (ticks after it: %d)", lc.ticks_after);
    qc_node_free(lc.a);
    ev_loop_destroy(loop);
    return 0;
}

/* ---- loop mode: freed by another watcher while its stop runs ---- */

typedef struct free_case {
    qc_node *a, *b;
    ev_timer poll, free_w, end, guard;
    int stop_rc, stopped, freed_at_stop, ended;
    recorder rec;
} free_case;

static void free_during_stop(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    free_case *fc = w->data;
    fc->freed_at_stop = !fc->stopped; /* qc_node_stop has not returned */
    qc_node_free(fc->a);
}

static void free_end(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ((free_case *)w->data)->ended = 1;
    ev_break(loop, EVBREAK_ALL);
}

/* a leads: stop it from a program timer; its hand-over runs the loop
 * nested, and another timer frees a meanwhile. */
static void free_poll(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    free_case *fc = w->data;
    if (!qc_is_leader(fc->a)) return;
    ev_timer_stop(loop, w);
    ev_timer_start(loop, &fc->free_w);
    fc->stop_rc = qc_node_stop(fc->a);
    fc->stopped = 1;
    ev_timer_start(loop, &fc->end);
}

/* a on the program's loop (PORT), b on a thread (PORT+1). Under ASan a free
 * that does not wait for the stop is a heap-use-after-free. */
static int case_free(const char *dir, int port)
{
    free_case fc = {0};
    pthread_mutex_init(&fc.rec.lock, NULL);
    fc.a = pair_node(dir, "a", port, "b", port + 1, 1, 1, 300); /* b never leads */
    fc.b = pair_node(dir, "b", port + 1, "a", port, 0, 0, 300);
    if (!fc.a || !fc.b) return 1;
    CHECK(qc_node_on(fc.a, NULL, on_any, &fc.rec) == QC_OK, "qc_node_on");
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    CHECK(qc_node_start_thread(fc.b) == QC_OK, "start b on its thread");
    CHECK(qc_node_start(fc.a, loop) == QC_OK, "start a on the program's loop");
    ev_timer_init(&fc.poll, free_poll, 0.05, 0.05);
    ev_timer_init(&fc.free_w, free_during_stop, 0.1, 0);
    ev_timer_init(&fc.end, free_end, 0.5, 0);
    ev_timer_init(&fc.guard, free_end, 30.0, 0);
    fc.poll.data = fc.free_w.data = fc.end.data = fc.guard.data = &fc;
    ev_timer_start(loop, &fc.poll);
    ev_timer_start(loop, &fc.guard);
    ev_run(loop, 0);
    CHECK(fc.stopped, "a never led within 30 s");
    CHECK(fc.stop_rc == QC_OK, "qc_node_stop: %s", qc_strerror(fc.stop_rc));
    CHECK(fc.freed_at_stop, "the free came after the stop, not during it");
    CHECK(recorded(&fc.rec, "on_stop") >= 0, "a's on_stop never ran (freed mid-stop)");
    CHECK(fc.ended, "the program's ev_run ended early");
    qc_node_free(fc.b);
    ev_loop_destroy(loop);
    pthread_mutex_destroy(&fc.rec.lock);
    return 0;
}

/* ---- a thread that forks and execs while nodes run: nothing leaks ---- */

/* `node_test fds`: what the exec'd child holds, "N target" a line. */
static int list_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) return 1;
    struct dirent *e;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd == dirfd(d)) continue;
        char path[64], target[256];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n > 0 ? n : 0] = '\0';
        printf("%d %s\n", fd, target);
    }
    closedir(d);
    return 0;
}

/* Forks, execs `node_test fds` as a program's subprocess would, and reads
 * what the child holds into out. 0, or -1 when that could not be done. */
static int child_fds(char *out, size_t len)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        /* async-signal-safe only: other threads held locks at the fork */
        if (dup2(p[1], 1) < 0) _exit(127);
        char *argv[] = {"node_test", "fds", NULL};
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(p[1]);
    size_t n = 0;
    ssize_t got = 0;
    while (pid > 0 && n + 1 < len &&
           ((got = read(p[0], out + n, len - n - 1)) > 0 || errno == EINTR))
        if (got > 0) n += (size_t)got;
    out[n] = '\0';
    close(p[0]);
    int st = 0;
    while (pid > 0 && waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return pid > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* Connects to the nodes' API ports and hangs up, over and over, so that
 * they accept while the forks happen. */
typedef struct knocker {
    int port;
    int stop;
    int done;
} knocker;

static void *knock(void *arg)
{
    knocker *k = arg;
    for (int i = 0; !__atomic_load_n(&k->stop, __ATOMIC_SEQ_CST); i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)(k->port + i % 3)),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        /* reset, not closed: thousands of TIME_WAITs would hold ports */
        struct linger reset = {.l_onoff = 1, .l_linger = 0};
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
            __atomic_fetch_add(&k->done, 1, __ATOMIC_SEQ_CST);
        if (fd >= 0) (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
        if (fd >= 0) close(fd);
        sleep_ms(2);
    }
    return NULL;
}

/* Node i of three with an API, a check that execs every 10 ms (pipes, a
 * child) and a fourth peer that never answers (a socket each redial). */
static qc_node *busy_node(const char *dir, int port, int i)
{
    int rc;
    qc_settings *s = node_settings(dir, port, i, port + 10 + i, &rc);
    if (rc == QC_OK)
        rc = qc_settings_set_json(
            s, "checks", "[{\"name\": \"busy\", \"exec\": \"true\", \"interval_ms\": 10}]");
    if (rc == QC_OK) rc = add_peers(s, port, i, 4, NULL);
    return start_from(s, rc, i, NULL);
}

/* Whether text (child_fds' lines) lists descriptor fd. */
static int lists_fd(const char *text, int fd)
{
    for (const char *line = text; *line; line++) {
        if (atoi(line) == fd) return 1;
        if (!(line = strchr(line, '\n'))) break;
    }
    return 0;
}

/* Whether every descriptor the child listed in fds is one of base's. */
static int only_inherited(const char *fds, const char *base, int round)
{
    int ok = 1;
    for (const char *line = fds; *line; line++) {
        const char *end = strchr(line, '\n');
        int len = end ? (int)(end - line) : (int)strlen(line);
        if (!lists_fd(base, atoi(line))) {
            CHECK(0, "fork %d: the child inherited fd %.*s", round, len, line);
            ok = 0;
        }
        if (!end) break;
        line = end;
    }
    return ok;
}

#define FORK_ROUNDS 400

static int case_fork(const char *dir, int port)
{
    /* What any child inherits from whoever ran this test (never the library's). */
    static char base[4096], fds[4096];
    const char *what;
    int born_before = fd_birth_misses(&what);
    CHECK(child_fds(base, sizeof base) == 0, "cannot fork and exec node_test fds");
    qc_node *nodes[3];
    for (int i = 0; i < 3; i++) nodes[i] = busy_node(dir, port, i);
    if (!nodes[0] || !nodes[1] || !nodes[2]) return 1;
    CHECK(wait_trio_leader(nodes, -1) >= 0, "no agreed leader among three threads after 15 s");
    knocker k = {.port = port + 10};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, knock, &k) == 0, "pthread_create");
    int leaks = 0;
    for (int round = 0; round < FORK_ROUNDS && leaks < 5; round++) {
        int rc = child_fds(fds, sizeof fds);
        CHECK(rc == 0, "fork %d: cannot fork and exec node_test fds", round);
        if (rc != 0) break;
        leaks += !only_inherited(fds, base, round);
    }
    __atomic_store_n(&k.stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(t, NULL);
    CHECK(k.done > 0, "no API connection was accepted meanwhile");
    CHECK(wait_trio_leader(nodes, -1) >= 0, "no agreed leader after the forks");
    for (int i = 0; i < 3; i++) qc_node_free(nodes[i]);
    /* The fork above sees a descriptor that lacks close-on-exec only when
     * it falls in the window; fd_birth.c sees every one, at birth. */
    int born = fd_birth_misses(&what) - born_before;
    CHECK(born == 0, "%d descriptors were born without close-on-exec (%s)", born, what);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "fds") == 0) return list_fds();
    if (argc != 4) {
        fprintf(stderr,
                "usage: node_test thread|loop|bad|trio|spread|stuck|leave|free|fork DIR PORT\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *c = argv[1], *dir = argv[2];
    int port = atoi(argv[3]);
    int rc = strcmp(c, "thread") == 0   ? case_thread(dir, port)
             : strcmp(c, "loop") == 0   ? case_loop(dir, port)
             : strcmp(c, "bad") == 0    ? case_bad(dir, port)
             : strcmp(c, "trio") == 0   ? case_trio(dir, port)
             : strcmp(c, "stuck") == 0  ? case_stuck(dir, port)
             : strcmp(c, "leave") == 0  ? case_leave(dir, port)
             : strcmp(c, "free") == 0   ? case_free(dir, port)
             : strcmp(c, "fork") == 0   ? case_fork(dir, port)
             : strcmp(c, "spread") == 0 ? case_spread(dir, port)
                                        : 2;
    if (rc == 2) {
        fprintf(stderr, "node_test: unknown case %s\n", c);
        return 2;
    }
    if (rc || failures) return 1;
    printf("ok %s\n", c);
    return 0;
}
