/* Test-only program: runs one qc_net on ev_default_loop, sends a heartbeat-
 * like message to every peer every 50 ms and prints each event on stdout, one
 * per line ("link B up", "msg B 5 term=3", "hello B {...}", "bad_frames N").
 * SIGUSR2 sends every peer one snapshot message of BIG_LEN bytes.
 * Used by tests/unit/net_spec.lua; it must never be part of the agent.
 * Usage: net_node IDENTIFIER PORT [PEER_ID@HOST:PORT ...] */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "log.h"
#include "metrics.h"
#include "net.h"
#include "wire.h"

#define MAX_PEERS 16
#define BIG_LEN (20u << 20) /* over the 8 MiB frame limit: it travels in parts */

typedef struct node {
    qc_net *net;
    qc_metrics *metrics;
    uint64_t self;
    uint64_t term;
    size_t n_peers;
    uint64_t ids[MAX_PEERS];
    char names[MAX_PEERS][64];
} node;

static const char *peer_name(const node *nd, uint64_t id)
{
    for (size_t i = 0; i < nd->n_peers; i++)
        if (nd->ids[i] == id) return nd->names[i];
    return "?";
}

static void on_msg(void *ud, const qc_msg *m)
{
    const node *nd = ud;
    if (m->type == QC_MSG_SNAPSHOT && m->n_entries == 1)
        printf("msg %s %d len=%u crc=%08x\n", peer_name(nd, m->from), m->type, m->entries[0].len,
               qc_crc32c(0, m->entries[0].data, m->entries[0].len));
    else
        printf("msg %s %d term=%llu entries=%u\n", peer_name(nd, m->from), m->type,
               (unsigned long long)m->term, m->n_entries);
}

static void on_hello(void *ud, uint64_t peer, const char *metadata)
{
    printf("hello %s %s\n", peer_name(ud, peer), metadata);
}

static void on_link(void *ud, uint64_t peer, int up)
{
    printf("link %s %s\n", peer_name(ud, peer), up ? "up" : "down");
}

static void print_counters(const node *nd)
{
    printf("bad_frames %.0f\n",
           qc_metrics_get(nd->metrics, "qcluster_bad_frames_total", NULL, NULL));
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
    qc_net_config cfg = {.identifier = argv[1],
                         .metadata = meta,
                         .listen_host = getenv("NET_NODE_HOST"),
                         .listen_port = atoi(argv[2])};
    qc_net_callbacks cb = {.ud = nd, .on_msg = on_msg, .on_hello = on_hello, .on_link = on_link};
    int rc = qc_net_new(loop, &cfg, &cb, nd->metrics, &nd->net);
    if (rc) {
        perror("qc_net_new");
        return 1;
    }
    if (add_peers(nd, argc, argv)) return 2;
    ev_timer tick;
    ev_signal term, intr, usr1, usr2;
    ev_timer_init(&tick, on_tick, 0.05, 0.05);
    ev_signal_init(&term, on_stop, SIGTERM);
    ev_signal_init(&intr, on_stop, SIGINT);
    ev_signal_init(&usr1, on_usr1, SIGUSR1);
    ev_signal_init(&usr2, on_usr2, SIGUSR2);
    tick.data = usr1.data = usr2.data = nd;
    ev_timer_start(loop, &tick);
    ev_signal_start(loop, &term);
    ev_signal_start(loop, &intr);
    ev_signal_start(loop, &usr1);
    ev_signal_start(loop, &usr2);
    printf("ready %s\n", argv[1]);
    ev_run(loop, 0);
    qc_net_flush(nd->net, 100);
    print_counters(nd);
    ev_timer_stop(loop, &tick);
    ev_signal_stop(loop, &term);
    ev_signal_stop(loop, &intr);
    ev_signal_stop(loop, &usr1);
    ev_signal_stop(loop, &usr2);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s IDENTIFIER PORT [PEER_ID@HOST:PORT ...]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
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
