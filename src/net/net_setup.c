/* The transport's creation and end: qc_net_new (config, cluster keys,
 * metrics, the hello, the listener) and qc_net_free, which stops and frees
 * every part of it. Part of the transport; its private interface is
 * net_int.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/common.h"
#include "base/log.h"
#include "core/wire.h"
#include "net/auth.h"
#include "net/net_int.h"

static void metrics_declare(qc_metrics *m)
{
    if (!m) return;
    qc_metrics_declare(m, M_SENT, QC_METRIC_COUNTER, "Raft messages sent to peers, by type.");
    qc_metrics_declare(m, M_RECV, QC_METRIC_COUNTER, "Raft messages received from peers, by type.");
    qc_metrics_declare(m, M_BAD, QC_METRIC_COUNTER,
                       "Frames rejected as malformed or unauthenticated; each closed its "
                       "connection.");
    qc_metrics_add(m, M_BAD, NULL, NULL, 0);
    qc_metrics_declare(m, M_AUTH, QC_METRIC_COUNTER,
                       "Cluster connections closed for failing authentication: a missing or bad "
                       "tag, a replay, or a node with another secret or none.");
    qc_metrics_add(m, M_AUTH, NULL, NULL, 0);
    qc_metrics_declare(m, M_DROP, QC_METRIC_COUNTER,
                       "Cluster connections closed at a limit: max_inbound (too many open), "
                       "unidentified (too many not identified yet), evicted (an unidentified "
                       "one closed to make room for a member's address), handshake_timeout (no "
                       "challenge, AUTH or hello in time).");
    qc_metrics_add(m, M_DROP, "reason", "max_inbound", 0);
    qc_metrics_add(m, M_DROP, "reason", "unidentified", 0);
    qc_metrics_add(m, M_DROP, "reason", "evicted", 0);
    qc_metrics_add(m, M_DROP, "reason", "handshake_timeout", 0);
    /* shared with the API's listener (listener="api"): declaring twice is harmless */
    qc_metrics_declare(m, M_BACKOFF, QC_METRIC_COUNTER,
                       "Times a listener paused accepting for lack of descriptors or memory "
                       "(EMFILE, ENFILE, ENOBUFS, ENOMEM), by listener (api, cluster).");
    qc_metrics_add(m, M_BACKOFF, "listener", "cluster", 0);
}

int qc_net_new(struct ev_loop *loop, const qc_net_config *cfg, const qc_net_callbacks *cb,
               qc_metrics *metrics, qc_net **out)
{
    *out = NULL;
    if (!loop || !cfg || !cfg->identifier || cfg->listen_port < 0 || cfg->listen_port > 65535)
        return QC_EINVAL;
    if ((cfg->secret && !cfg->secret[0]) || cfg->max_inbound < 0 || cfg->hello_timeout_ms < 0 ||
        cfg->max_unidentified < 0)
        return QC_EINVAL;
    if (cfg->secret_previous && (!cfg->secret || !cfg->secret_previous[0])) return QC_EINVAL;
    if (cfg->secret && qc_auth_init()) return QC_EIO;
    qc_net *n = calloc(1, sizeof *n);
    if (!n) return QC_ENOMEM;
    if (cfg->secret) {
        n->auth = 1;
        qc_auth_derive(cfg->secret, strlen(cfg->secret), n->keys[n->n_keys++]);
    }
    if (cfg->secret_previous && strcmp(cfg->secret_previous, cfg->secret) != 0) {
        const char *old = cfg->secret_previous;
        qc_auth_derive(old, strlen(old), n->keys[n->n_keys++]);
    }
    n->hello_timeout = cfg->hello_timeout_ms ? cfg->hello_timeout_ms / 1000.0 : NET_HELLO_TIMEOUT;
    n->max_inbound = cfg->max_inbound ? cfg->max_inbound : NET_MAX_INBOUND;
    n->max_unidentified = cfg->max_unidentified ? cfg->max_unidentified : NET_MAX_UNIDENTIFIED;
    n->loop = loop;
    n->lfd = -1;
    n->metrics = metrics;
    if (cb) n->cb = *cb;
    n->id = qc_hash_id(cfg->identifier);
    n->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ n->id ^ (uintptr_t)n;
    if (!n->rng) n->rng = 0x9E3779B97F4A7C15ull;
    n->identifier = net_dup_str(cfg->identifier);
    int rc = n->identifier ? QC_OK : QC_ENOMEM;
    if (!rc) rc = qc_wire_encode_hello(cfg->identifier, cfg->metadata, &n->hello);
    if (!rc)
        rc = net_listen_on(n, cfg->listen_host ? cfg->listen_host : "127.0.0.1", cfg->listen_port);
    if (rc) {
        int saved = errno;
        qc_net_free(n);
        errno = saved;
        return rc;
    }
    metrics_declare(metrics);
    *out = n;
    return QC_OK;
}

void qc_net_free(qc_net *n)
{
    if (!n) return;
    while (n->peers) {
        net_peer *p = n->peers;
        n->peers = p->next;
        net_peer_free(p);
    }
    while (n->inbound) {
        qc_conn *c = n->inbound;
        n->inbound = c->next;
        net_conn_free(c);
    }
    while (n->joins) {
        qc_join *j = n->joins;
        n->joins = j->next;
        net_join_free(j);
    }
    if (n->lfd >= 0) {
        ev_io_stop(n->loop, &n->lw);
        ev_timer_stop(n->loop, &n->accept_pause);
        close(n->lfd);
    }
    qc_buf_free(&n->hello);
    free(n->identifier);
    qc_auth_wipe(n->keys, sizeof n->keys);
    free(n);
}
