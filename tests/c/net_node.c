/* Test-only program: runs one qc_net on ev_default_loop, sends a heartbeat-
 * like message to every peer every 50 ms and prints each event on stdout, one
 * per line ("link B up", "msg B 5 term=3", "hello B {...}", "bad_frames N").
 * SIGUSR2 sends every peer one snapshot message of BIG_LEN bytes; SIGHUP
 * removes every peer ("removed N"). It answers joins ("join from C please
 * from C" then "welcome C" back) unless NET_NODE_JOINS=0, and with
 * NET_NODE_JOIN=HOST:PORT[,HOST:PORT...] asks each of those to let it in at
 * start ("join answer RC PAYLOAD"; NET_NODE_JOIN_TIMEOUT_MS, default 2000).
 * NET_NODE_REMOVE_IN=msg|hello|closed|link removes a peer from inside that
 * callback of the first peer on the command line ("removed B in msg: ok").
 * NET_NODE_SECRET sets the cluster secret (NET_NODE_SECRET_PREVIOUS the
 * previous one, during a rotation); NET_NODE_MAX_INBOUND and
 * NET_NODE_HELLO_TIMEOUT_MS the transport's limits. SIGUSR1 prints the
 * counters ("bad_frames N", "auth_failures N", "dropped max_inbound=N
 * handshake_timeout=N unidentified=N evicted=N", "accept_backoffs N").
 * NET_NODE_HOST is the address to listen on (127.0.0.1); NET_NODE_NOFILE=N
 * closes the descriptors it inherited and caps its own at N. Used by
 * tests/unit/net_spec.lua; it must never be part of the agent.
 * Usage: net_node IDENTIFIER PORT [PEER_ID@HOST:PORT ...] */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base/common.h"
#include "base/log.h"
#include "base/metrics.h"
#include "core/wire.h"
#include "net/net.h"

#define MAX_PEERS 16
#define MAX_JOINS 8
#define BIG_LEN (20u << 20) /* over the 8 MiB frame limit: it travels in parts */

typedef struct node {
    qc_net *net;
    qc_metrics *metrics;
    uint64_t self;
    uint64_t term;
    size_t n_peers;
    uint64_t ids[MAX_PEERS];
    char names[MAX_PEERS][64];
    int removed[MAX_PEERS];
    int join_done[MAX_JOINS]; /* how many times each join's done was called */
} node;

static const char *peer_name(const node *nd, uint64_t id)
{
    for (size_t i = 0; i < nd->n_peers; i++)
        if (nd->ids[i] == id) return nd->names[i];
    return "?";
}

/* NET_NODE_REMOVE_IN: removes the first peer from inside its callback
 * `where`. */
static void remove_in(node *nd, const char *where, uint64_t peer)
{
    const char *want = getenv("NET_NODE_REMOVE_IN");
    if (!want || strcmp(want, where) != 0) return;
    if (nd->n_peers == 0 || nd->ids[0] != peer || nd->removed[0]) return;
    int rc = qc_net_remove_peer(nd->net, peer);
    nd->removed[0] = rc == QC_OK;
    printf("removed %s in %s: %s\n", nd->names[0], where, qc_strerror(rc));
}

static void on_msg(void *ud, const qc_msg *m)
{
    node *nd = ud;
    if (m->type == QC_MSG_SNAPSHOT && m->n_entries == 1)
        printf("msg %s %d len=%u crc=%08x\n", peer_name(nd, m->from), m->type, m->entries[0].len,
               qc_crc32c(0, m->entries[0].data, m->entries[0].len));
    else
        printf("msg %s %d term=%llu entries=%u\n", peer_name(nd, m->from), m->type,
               (unsigned long long)m->term, m->n_entries);
    remove_in(nd, "msg", m->from);
}

static void on_hello(void *ud, uint64_t peer, const char *metadata)
{
    printf("hello %s %s\n", peer_name(ud, peer), metadata);
    remove_in(ud, "hello", peer);
}

static void on_link(void *ud, uint64_t peer, int up)
{
    printf("link %s %s\n", peer_name(ud, peer), up ? "up" : "down");
    remove_in(ud, "link", peer);
}

static void on_peer_closed(void *ud, uint64_t peer)
{
    printf("closed %s\n", peer_name(ud, peer));
    remove_in(ud, "closed", peer);
}

static void on_frame(void *ud, uint64_t peer, int type, const uint8_t *data, size_t len)
{
    printf("frame %s %d %.*s\n", peer_name(ud, peer), type, (int)len, (const char *)data);
}

static void on_join(void *ud, const char *identifier, const char *host_seen, const uint8_t *payload,
                    size_t len, qc_buf *answer)
{
    (void)ud;
    /* A join sent alone (no hello) names its node in the payload's last word. */
    char who[64] = "?";
    if (identifier) {
        snprintf(who, sizeof who, "%s", identifier);
    } else {
        size_t k = len;
        while (k > 0 && payload[k - 1] != ' ') k--;
        snprintf(who, sizeof who, "%.*s", (int)(len - k), (const char *)payload + k);
    }
    printf("join from %s %.*s\n", who, (int)len, (const char *)payload);
    printf("join seen %s %s\n", who, host_seen);
    char text[128];
    int k = snprintf(text, sizeof text, "welcome %s", who);
    if (k > 0 && qc_buf_append(answer, text, (size_t)k)) fprintf(stderr, "join: out of memory\n");
}

static void on_join_done(void *arg, int rc, const uint8_t *answer, size_t len)
{
    int *calls = arg;
    if (++*calls > 1) printf("join done called again\n");
    printf("join answer %d %.*s\n", rc, (int)len, answer ? (const char *)answer : "");
}

/* One join for each HOST:PORT of NET_NODE_JOIN, all in flight at once. */
static int start_joins(node *nd, const char *self)
{
    const char *list = getenv("NET_NODE_JOIN");
    const char *t = getenv("NET_NODE_JOIN_TIMEOUT_MS");
    int timeout = t ? atoi(t) : 2000;
    char payload[128];
    int plen = snprintf(payload, sizeof payload, "please from %s", self);
    for (int i = 0; list && *list; i++) {
        if (i == MAX_JOINS) {
            fprintf(stderr, "too many joins\n");
            return -1;
        }
        char host[128];
        int port, used = 0;
        if (sscanf(list, "%127[^:,]:%d%n", host, &port, &used) != 2) {
            fprintf(stderr, "bad NET_NODE_JOIN '%s'\n", list);
            return -1;
        }
        int rc = qc_net_join(nd->net, host, port, payload, (size_t)plen, timeout, on_join_done,
                             &nd->join_done[i]);
        if (rc) {
            fprintf(stderr, "join %s:%d: %s\n", host, port, qc_strerror(rc));
            return -1;
        }
        list += used;
        if (*list == ',') list++;
    }
    return 0;
}

static void print_counters(const node *nd)
{
    printf("bad_frames %.0f\n",
           qc_metrics_get(nd->metrics, "qcluster_bad_frames_total", NULL, NULL));
    printf("auth_failures %.0f\n",
           qc_metrics_get(nd->metrics, "qcluster_auth_failures_total", NULL, NULL));
    const char *drop = "qcluster_connections_dropped_total";
    printf("dropped max_inbound=%.0f handshake_timeout=%.0f unidentified=%.0f evicted=%.0f\n",
           qc_metrics_get(nd->metrics, drop, "reason", "max_inbound"),
           qc_metrics_get(nd->metrics, drop, "reason", "handshake_timeout"),
           qc_metrics_get(nd->metrics, drop, "reason", "unidentified"),
           qc_metrics_get(nd->metrics, drop, "reason", "evicted"));
    printf("accept_backoffs %.0f\n",
           qc_metrics_get(nd->metrics, "qcluster_accept_backoffs_total", "listener", "cluster"));
    printf("sent %.0f received %.0f\n",
           qc_metrics_get(nd->metrics, "qcluster_messages_sent_total", "type", "append"),
           qc_metrics_get(nd->metrics, "qcluster_messages_received_total", "type", "append"));
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    node *nd = w->data;
    uint8_t data[] = "heartbeat";
    qc_entry e = {.term = nd->term, .index = nd->term, .type = 1, .len = 9, .data = data};
    nd->term++;
    for (size_t i = 0; i < nd->n_peers; i++) {
        if (nd->removed[i]) continue;
        qc_msg m = {.type = QC_MSG_APPEND,
                    .from = nd->self,
                    .to = nd->ids[i],
                    .term = nd->term,
                    .ctx = qc_now_ms(),
                    .n_entries = 1,
                    .entries = &e};
        int rc = qc_net_send(nd->net, &m);
        if (rc) fprintf(stderr, "send: %s\n", qc_strerror(rc));
    }
}

static void on_usr1(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    print_counters(w->data);
}

static void on_usr2(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    node *nd = w->data;
    uint8_t *data = malloc(BIG_LEN);
    if (!data) return;
    for (size_t i = 0; i < BIG_LEN; i++) data[i] = (uint8_t)(i * 7 + i / 4096);
    printf("big crc=%08x\n", qc_crc32c(0, data, BIG_LEN));
    qc_entry e = {.term = 1, .index = 1, .len = BIG_LEN, .data = data};
    for (size_t i = 0; i < nd->n_peers; i++) {
        if (nd->removed[i]) continue;
        qc_msg m = {.type = QC_MSG_SNAPSHOT,
                    .from = nd->self,
                    .to = nd->ids[i],
                    .term = nd->term,
                    .n_entries = 1,
                    .entries = &e};
        int rc = qc_net_send(nd->net, &m);
        if (rc) fprintf(stderr, "send: %s\n", qc_strerror(rc));
    }
    free(data);
}

static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    node *nd = w->data;
    int removed = 0;
    for (size_t i = 0; i < nd->n_peers; i++) {
        if (nd->removed[i]) continue;
        int rc = qc_net_remove_peer(nd->net, nd->ids[i]);
        if (rc) fprintf(stderr, "remove %s: %s\n", nd->names[i], qc_strerror(rc));
        nd->removed[i] = rc == QC_OK;
        removed += rc == QC_OK;
    }
    printf("removed %d\n", removed);
}

static void on_stop(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static int add_peers(node *nd, int argc, char **argv)
{
    for (int i = 3; i < argc && nd->n_peers < MAX_PEERS; i++) {
        char id[64], host[128];
        int port;
        if (sscanf(argv[i], "%63[^@]@%127[^:]:%d", id, host, &port) != 3) {
            fprintf(stderr, "bad peer '%s'\n", argv[i]);
            return -1;
        }
        int rc = qc_net_add_peer(nd->net, id, host, port);
        if (rc) {
            fprintf(stderr, "add_peer %s: %s\n", id, qc_strerror(rc));
            return -1;
        }
        nd->ids[nd->n_peers] = qc_hash_id(id);
        snprintf(nd->names[nd->n_peers++], 64, "%s", id);
    }
    return 0;
}

static int run(node *nd, struct ev_loop *loop, int argc, char **argv)
{
    char meta[128];
    snprintf(meta, sizeof meta, "{\"node\":\"%s\"}", argv[1]);
    const char *max_inbound = getenv("NET_NODE_MAX_INBOUND");
    const char *hello_timeout = getenv("NET_NODE_HELLO_TIMEOUT_MS");
    qc_net_config cfg = {.identifier = argv[1],
                         .metadata = meta,
                         .listen_host = getenv("NET_NODE_HOST"),
                         .listen_port = atoi(argv[2]),
                         .secret = getenv("NET_NODE_SECRET"),
                         .secret_previous = getenv("NET_NODE_SECRET_PREVIOUS"),
                         .max_inbound = max_inbound ? atoi(max_inbound) : 0,
                         .hello_timeout_ms = hello_timeout ? atoi(hello_timeout) : 0};
    const char *joins = getenv("NET_NODE_JOINS");
    qc_net_callbacks cb = {.ud = nd,
                           .on_msg = on_msg,
                           .on_hello = on_hello,
                           .on_link = on_link,
                           .on_peer_closed = on_peer_closed,
                           .on_frame = on_frame,
                           .on_join = joins && strcmp(joins, "0") == 0 ? NULL : on_join};
    int rc = qc_net_new(loop, &cfg, &cb, nd->metrics, &nd->net);
    if (rc) {
        perror("qc_net_new");
        return 1;
    }
    if (add_peers(nd, argc, argv)) return 2;
    if (start_joins(nd, argv[1])) return 2;
    ev_timer tick;
    ev_signal term, intr, usr1, usr2, hup;
    ev_timer_init(&tick, on_tick, 0.05, 0.05);
    ev_signal_init(&term, on_stop, SIGTERM);
    ev_signal_init(&intr, on_stop, SIGINT);
    ev_signal_init(&usr1, on_usr1, SIGUSR1);
    ev_signal_init(&usr2, on_usr2, SIGUSR2);
    ev_signal_init(&hup, on_hup, SIGHUP);
    tick.data = usr1.data = usr2.data = hup.data = nd;
    ev_timer_start(loop, &tick);
    ev_signal_start(loop, &term);
    ev_signal_start(loop, &intr);
    ev_signal_start(loop, &usr1);
    ev_signal_start(loop, &usr2);
    ev_signal_start(loop, &hup);
    printf("ready %s\n", argv[1]);
    ev_run(loop, 0);
    qc_net_flush(nd->net, 100);
    print_counters(nd);
    ev_timer_stop(loop, &tick);
    ev_signal_stop(loop, &term);
    ev_signal_stop(loop, &intr);
    ev_signal_stop(loop, &usr1);
    ev_signal_stop(loop, &usr2);
    ev_signal_stop(loop, &hup);
    return 0;
}

/* NET_NODE_NOFILE: a small descriptor limit that means what the test says,
 * whatever the test runner left open and let this process inherit. */
static int limit_descriptors(void)
{
    const char *v = getenv("NET_NODE_NOFILE");
    if (!v) return 0;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return -1;
    rlim_t top = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 65536 ? 65536 : rl.rlim_cur;
    for (rlim_t fd = 3; fd < top; fd++) close((int)fd);
    rl.rlim_cur = rl.rlim_max = (rlim_t)atoi(v);
    return setrlimit(RLIMIT_NOFILE, &rl);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s IDENTIFIER PORT [PEER_ID@HOST:PORT ...]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (limit_descriptors()) {
        perror("NET_NODE_NOFILE");
        return 1;
    }
    const char *level = getenv("QC_LOG_LEVEL");
    if (level && qc_log_parse_level(level) >= 0) qc_log_set_level(qc_log_parse_level(level));
    node nd = {.self = qc_hash_id(argv[1])};
    nd.metrics = qc_metrics_new();
    if (!nd.metrics) return 1;
    struct ev_loop *loop = ev_default_loop(0);
    if (!loop) return 1;
    int rc = run(&nd, loop, argc, argv);
    qc_net_free(nd.net);
    qc_metrics_free(nd.metrics);
    ev_loop_destroy(loop);
    if (rc == 0) printf("exit\n");
    return rc;
}
