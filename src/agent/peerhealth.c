/* Every member's health, spread without the log (README "Health checks"):
 * this node sends its health and its checks' statuses to every peer in a
 * HEALTH frame when they change, on each new link and every election
 * timeout, and keeps what each peer last said. It decides nothing: what it
 * knows only shows in the views (API, Lua, CLI); leadership follows each
 * node's own verdict in the core. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent_internal.h"
#include "base/common.h"
#include "base/log.h"
#include "net/net.h"
#include "core/wire.h"

_Static_assert(QC_PEER_CHECK_NAME == QC_WIRE_HEALTH_NAME, "a check's name fits both");

/* A peer's word stays good for this many periods without a new frame: a
 * lost frame or two is forgiven, a peer that went silent (stopped, or its
 * link to us broken one way) is not trusted for long. */
#define STALE_PERIODS 3

static uint64_t period_ms(const qc_agent *a) { return (uint64_t)a->cfg.election_timeout_ms; }

/* This node's health as a HEALTH payload's fields (seq not set). */
static void self_health(qc_agent *a, qc_wire_health *h)
{
    qc_check_info info[QC_WIRE_HEALTH_CHECKS];
    size_t n = a->health ? qc_health_list(a->health, info, QC_WIRE_HEALTH_CHECKS) : 0;
    if (n > QC_WIRE_HEALTH_CHECKS) n = QC_WIRE_HEALTH_CHECKS; /* the config allows no more */
    memset(h, 0, sizeof *h);
    h->healthy = a->health ? a->healthy != 0 : a->cfg.n_checks == 0;
    h->n_checks = (uint8_t)n;
    for (size_t i = 0; i < n; i++) {
        snprintf(h->checks[i].name, sizeof h->checks[i].name, "%s", info[i].name);
        h->checks[i].passing = info[i].passing != 0;
    }
}

static void send_to(qc_agent *a, const member *m, const qc_buf *payload)
{
    if (!m->up || m->removed) return;
    int rc = qc_net_send_frame(a->net, m->id, QC_FRAME_HEALTH, payload->data, payload->len);
    if (rc && rc != QC_EIO) /* EIO: the link just went down; it is told when it is back */
        qc_log(QC_LOG_DEBUG, "health", "cannot tell %s this node's health: %s", m->identifier,
               qc_strerror(rc));
}

/* Sends this node's health now, to one member or (to NULL) every one. */
static void send_health(qc_agent *a, const member *to)
{
    if (!a->net) return;
    qc_wire_health h;
    self_health(a, &h);
    h.seq = ++a->health_seq;
    qc_buf payload = {0};
    int rc = qc_wire_encode_health(&h, &payload);
    if (rc) {
        qc_log(QC_LOG_ERROR, "health", "cannot encode this node's health: %s", qc_strerror(rc));
        qc_buf_free(&payload);
        return;
    }
    a->health_out = h;
    if (to) send_to(a, to, &payload);
    for (size_t i = 0; !to && i < a->n_members; i++) send_to(a, &a->members[i], &payload);
    qc_buf_free(&payload);
}

static void on_health_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    send_health(w->data, NULL);
}

void qc_peerhealth_start(qc_agent *a)
{
    /* Above any number an earlier run of this node sent (frames are far
     * rarer than microseconds), so that peers take the new run's frames
     * even if they never saw the old run's link go down. */
    a->health_seq = (uint64_t)(qc_wall_time() * 1e6);
    double every = (double)period_ms(a) / 1000.0;
    ev_timer_init(&a->health_timer, on_health_timer, every, every);
    a->health_timer.data = a;
    ev_timer_start(a->loop, &a->health_timer);
    send_health(a, NULL);
}

void qc_peerhealth_stop(qc_agent *a) { ev_timer_stop(a->loop, &a->health_timer); }

static int same_health(const qc_wire_health *x, const qc_wire_health *y)
{
    if (x->healthy != y->healthy || x->n_checks != y->n_checks) return 0;
    for (size_t i = 0; i < x->n_checks; i++)
        if (x->checks[i].passing != y->checks[i].passing ||
            strcmp(x->checks[i].name, y->checks[i].name) != 0)
            return 0;
    return 1;
}

void qc_peerhealth_changed(qc_agent *a)
{
    qc_wire_health h;
    self_health(a, &h);
    if (!same_health(&h, &a->health_out)) send_health(a, NULL);
}

static void forget(member *m)
{
    free(m->checks);
    m->checks = NULL;
    m->n_checks = 0;
    m->healthy = 0;
    m->health_at = 0;
    m->health_seq = 0;
}

void qc_peerhealth_link(qc_agent *a, member *m, int up)
{
    if (up)
        send_health(a, m);
    else
        forget(m);
}

/* Takes h as what m says now. QC_ENOMEM leaves m as it was. */
static int take(member *m, const qc_wire_health *h)
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

void qc_peerhealth_on_frame(qc_agent *a, uint64_t peer, const uint8_t *data, size_t len)
{
    member *m = qc_agent_member_by_id(a, peer);
    if (!m) return;
    qc_wire_health h;
    if (qc_wire_decode_health(data, len, &h) != QC_OK) {
        qc_metrics_add(a->metrics, "qcluster_bad_frames_total", NULL, NULL, 1);
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
        qc_agenthistory_note(a, m->healthy ? "healthy" : "unhealthy", m->identifier, "peer_said");
    if (known && was != m->healthy)
        qc_logf(QC_LOG_INFO, "health", &(qc_log_fields){.peer = m->identifier}, "%s says it is %s",
                m->identifier, m->healthy ? "healthy" : "unhealthy");
}

void qc_peerhealth_info(const qc_agent *a, const member *m, qc_peer_info *p)
{
    int known = m->up && m->health_at && qc_now_ms() - m->health_at <= STALE_PERIODS * period_ms(a);
    p->healthy = known && m->healthy;
    p->checks = known ? m->checks : NULL;
    p->n_checks = known ? m->n_checks : 0;
}

void qc_peerhealth_self(qc_agent *a, qc_peer_info *p)
{
    qc_wire_health h;
    self_health(a, &h);
    for (size_t i = 0; i < h.n_checks; i++) {
        memcpy(a->self_checks[i].name, h.checks[i].name, sizeof a->self_checks[i].name);
        a->self_checks[i].passing = h.checks[i].passing;
    }
    p->healthy = h.healthy;
    p->checks = a->self_checks;
    p->n_checks = h.n_checks;
}
