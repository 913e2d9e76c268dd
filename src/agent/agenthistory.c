/* What the agent records in its history (history.h) and why: each leader
 * change the core reports, with a reason this node can tell, and the
 * health and reachability events the status page shades. Runs on the loop
 * thread only; it only watches, it never changes what the agent does. */
#include "agent/agenthistory.h"

#include <stdio.h>
#include <string.h>

#include "base/common.h"

static const char *name_or_empty(const qc_agenthistory *h, uint64_t id)
{
    return id ? qc_membership_name_of(h->members, id) : "";
}

static uint64_t leader_id(const qc_agenthistory *h)
{
    return h->raft ? qc_raft_leader(h->raft) : 0;
}

/* Why the leader changed from prev, when this node did not lead either
 * time: what it knows of prev (its link, its health), or of the vote that
 * followed a hand-over. */
static const char *observed_reason(const qc_agenthistory *h, const qc_raft_event *e)
{
    if (e->prev_leader && e->prev_leader != qc_membership_self_id(h->members)) {
        const qc_peer *m = qc_membership_by_id(h->members, e->prev_leader);
        if (m && (!m->up || h->closed_peer == m->id)) return "leader_down";
        if (m && m->health_at && !m->healthy) return "leader_unhealthy";
    }
    if (h->transfer_term && h->transfer_term == e->term) return "transfer";
    if (!e->prev_leader) return e->leader ? "elected" : "election";
    if (e->leader) return "new_leader";
    return e->term > h->last_term ? "election" : "timeout";
}

void qc_agenthistory_raft(qc_agenthistory *h, const qc_raft_event *e, int relaying)
{
    switch (e->type) {
    case QC_EVENT_ELECTED:
        if (!e->reason) h->why = "elected"; /* a relay never shows as leader */
        return;
    case QC_EVENT_DEMOTED:
        if (relaying) return;
        h->why = qc_raft_reason_name(e->reason);
        if (e->reason == QC_DEMOTE_TRANSFER && h->preempt_term == e->term) h->why = "preempt";
        return;
    case QC_EVENT_LEADER: break;
    default: return;
    }
    qc_history_entry x = {
        .time = qc_wall_time(), .term = e->term, .reason = h->why ? h->why : observed_reason(h, e)};
    snprintf(x.leader, sizeof x.leader, "%s", name_or_empty(h, e->leader));
    snprintf(x.previous_leader, sizeof x.previous_leader, "%s", name_or_empty(h, e->prev_leader));
    qc_history_add(&h->log, &x);
    h->why = NULL;
    h->closed_peer = 0;
    h->last_term = e->term;
}

void qc_agenthistory_msg(qc_agenthistory *h, const qc_msg *m)
{
    if (m->type == QC_MSG_VOTE && (m->flags & QC_MSG_FLAG_TRANSFER)) h->transfer_term = m->term;
    /* The target campaigns in the next term, as told. */
    if (m->type == QC_MSG_TIMEOUT_NOW) h->transfer_term = m->term + 1;
}

void qc_agenthistory_closed(qc_agenthistory *h, uint64_t peer)
{
    if (peer == leader_id(h)) h->closed_peer = peer;
}

void qc_agenthistory_preempting(qc_agenthistory *h)
{
    if (h->raft) h->preempt_term = qc_raft_term(h->raft);
}

void qc_agenthistory_note(qc_agenthistory *h, const char *event, const char *peer,
                          const char *reason)
{
    uint64_t leader = leader_id(h);
    qc_history_entry x = {.time = qc_wall_time(),
                          .term = h->raft ? qc_raft_term(h->raft) : 0,
                          .reason = reason,
                          .event = event};
    snprintf(x.leader, sizeof x.leader, "%s", name_or_empty(h, leader));
    memcpy(x.previous_leader, x.leader, sizeof x.leader);
    snprintf(x.peer, sizeof x.peer, "%s", peer ? peer : "");
    qc_history_add(&h->log, &x);
}

size_t qc_agenthistory_list(const qc_agenthistory *h, int with_events, qc_history_entry *out,
                            size_t max)
{
    return qc_history_list(&h->log, with_events, out, max);
}
