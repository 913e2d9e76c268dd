/* Every member's health, spread without the log (README "Health checks"):
 * this node sends its health and its checks' statuses to every peer in a
 * HEALTH frame when they change, on each new link and every election
 * timeout, and keeps what each peer last said. It decides nothing: what it
 * knows only shows in the views (API, Lua, CLI); leadership follows each
 * node's own verdict in the core. */
#include "agent/peerhealth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/common.h"
#include "base/log.h"

_Static_assert(QC_PEER_CHECK_NAME == QC_WIRE_HEALTH_NAME, "a check's name fits both");

/* A peer's word stays good for this many periods without a new frame: a
 * lost frame or two is forgiven, a peer that went silent (stopped, or its
 * link to us broken one way) is not trusted for long. */
#define STALE_PERIODS 3

/* This node's health as a HEALTH payload's fields (seq not set). */
static void self_health(qc_peerhealth *ph, qc_wire_health *h)
{
    qc_check_info info[QC_WIRE_HEALTH_CHECKS];
    size_t n = ph->self_checks(ph->ud, info, QC_WIRE_HEALTH_CHECKS);
    if (n > QC_WIRE_HEALTH_CHECKS) n = QC_WIRE_HEALTH_CHECKS; /* the config allows no more */
    memset(h, 0, sizeof *h);
    h->healthy = ph->self_healthy(ph->ud) != 0;
    h->n_checks = (uint8_t)n;
    for (size_t i = 0; i < n; i++) {
        snprintf(h->checks[i].name, sizeof h->checks[i].name, "%s", info[i].name);
        h->checks[i].passing = info[i].passing != 0;
    }
}

static void send_to(qc_peerhealth *ph, const qc_peer *m, const qc_buf *payload)
{
    if (!m->up || m->removed) return;
    int rc = qc_net_send_frame(ph->net, m->id, QC_FRAME_HEALTH, payload->data, payload->len);
    if (rc && rc != QC_EIO) /* EIO: the link just went down; it is told when it is back */
        qc_log(QC_LOG_DEBUG, "health", "cannot tell %s this node's health: %s", m->identifier,
               qc_strerror(rc));
}

/* Sends this node's health now, to one member or (to NULL) every one. */
static void send_health(qc_peerhealth *ph, const qc_peer *to)
{
    if (!ph->net) return;
    qc_wire_health h;
    self_health(ph, &h);
    h.seq = ++ph->seq;
    qc_buf payload = {0};
    int rc = qc_wire_encode_health(&h, &payload);
    if (rc) {
        qc_log(QC_LOG_ERROR, "health", "cannot encode this node's health: %s", qc_strerror(rc));
        qc_buf_free(&payload);
        return;
    }
    ph->out = h;
    if (to) send_to(ph, to, &payload);
    for (size_t i = 0; !to && i < qc_membership_count(ph->members); i++)
        send_to(ph, qc_membership_at(ph->members, i), &payload);
    qc_buf_free(&payload);
}

static void on_health_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    send_health(w->data, NULL);
}

void qc_peerhealth_start(qc_peerhealth *ph)
{
    /* Above any number an earlier run of this node sent (frames are far
     * rarer than microseconds), so that peers take the new run's frames
     * even if they never saw the old run's link go down. */
    ph->seq = (uint64_t)(qc_wall_time() * 1e6);
    double every = (double)ph->period_ms / 1000.0;
    ev_timer_init(&ph->timer, on_health_timer, every, every);
    ph->timer.data = ph;
    ev_timer_start(ph->loop, &ph->timer);
    send_health(ph, NULL);
}

void qc_peerhealth_stop(qc_peerhealth *ph)
{
    if (ph->loop) ev_timer_stop(ph->loop, &ph->timer);
}

static int same_health(const qc_wire_health *x, const qc_wire_health *y)
{
    if (x->healthy != y->healthy || x->n_checks != y->n_checks) return 0;
    for (size_t i = 0; i < x->n_checks; i++)
        if (x->checks[i].passing != y->checks[i].passing ||
            strcmp(x->checks[i].name, y->checks[i].name) != 0)
            return 0;
    return 1;
}

void qc_peerhealth_changed(qc_peerhealth *ph)
{
    qc_wire_health h;
    self_health(ph, &h);
    if (!same_health(&h, &ph->out)) send_health(ph, NULL);
}

static void forget(qc_peer *m)
{
    free(m->checks);
    m->checks = NULL;
    m->n_checks = 0;
    m->healthy = 0;
    m->health_at = 0;
    m->health_seq = 0;
}

void qc_peerhealth_link(qc_peerhealth *ph, qc_peer *m, int up)
{
    if (up)
        send_health(ph, m);
    else
        forget(m);
}

/* Takes h as what m says now. QC_ENOMEM leaves m as it was. */
static int take(qc_peer *m, const qc_wire_health *h)
{
    qc_peer_check *checks = NULL;
    if (h->n_checks && !(checks = calloc(h->n_checks, sizeof *checks))) return QC_ENOMEM;
    for (size_t i = 0; i < h->n_checks; i++) {
        memcpy(checks[i].name, h->checks[i].name, sizeof checks[i].name);
        checks[i].passing = h->checks[i].passing;
    }
    free(m->checks);
    m->checks = checks;
    m->n_checks = h->n_checks;
    m->healthy = h->healthy;
    m->health_seq = h->seq;
    m->health_at = qc_now_ms();
    return QC_OK;
}

void qc_peerhealth_on_frame(qc_peerhealth *ph, uint64_t peer, const uint8_t *data, size_t len)
{
    qc_peer *m = qc_membership_by_id(ph->members, peer);
    if (!m) return;
    qc_wire_health h;
    if (qc_wire_decode_health(data, len, &h) != QC_OK) {
        qc_metrics_add(ph->metrics, "qcluster_bad_frames_total", NULL, NULL, 1);
        qc_log(QC_LOG_WARN, "health", "dropped a malformed health frame from %s", m->identifier);
        return;
    }
    if (m->health_at && h.seq <= m->health_seq) return; /* an older frame, overtaken */
    int known = m->health_at != 0, was = m->healthy;
    if (take(m, &h) != QC_OK) {
        qc_log(QC_LOG_ERROR, "health", "out of memory taking the health of %s", m->identifier);
        return;
    }
    if (known ? was != m->healthy : !m->healthy)
        qc_agenthistory_note(ph->history, m->healthy ? "healthy" : "unhealthy", m->identifier,
                             "peer_said");
    if (known && was != m->healthy)
        qc_logf(QC_LOG_INFO, "health", &(qc_log_fields){.peer = m->identifier}, "%s says it is %s",
                m->identifier, m->healthy ? "healthy" : "unhealthy");
}

void qc_peerhealth_info(const qc_peerhealth *ph, const qc_peer *m, qc_peer_info *p)
{
    int known =
        m->up && m->health_at && qc_now_ms() - m->health_at <= STALE_PERIODS * ph->period_ms;
    p->healthy = known && m->healthy;
    p->checks = known ? m->checks : NULL;
    p->n_checks = known ? m->n_checks : 0;
}

void qc_peerhealth_self(qc_peerhealth *ph, qc_peer_info *p)
{
    qc_wire_health h;
    self_health(ph, &h);
    for (size_t i = 0; i < h.n_checks; i++) {
        memcpy(ph->self_copy[i].name, h.checks[i].name, sizeof ph->self_copy[i].name);
        ph->self_copy[i].passing = h.checks[i].passing;
    }
    p->healthy = h.healthy;
    p->checks = ph->self_copy;
    p->n_checks = h.n_checks;
}
