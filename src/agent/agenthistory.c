/* What the agent records in its history (history.h) and why: each leader
 * change the core reports, with a reason this node can tell, and the
 * health and reachability events the status page shades. Runs on the loop
 * thread only; it only watches, it never changes what the agent does. */
#include <stdio.h>
#include <string.h>

#include "agent/agent_internal.h"
#include "base/common.h"

static const char *name_or_empty(qc_agent *a, uint64_t id)
{
    return id ? qc_agent_name_of(a, id) : "";
}

/* Why the leader changed from prev, when this node did not lead either
 * time: what it knows of prev (its link, its health), or of the vote that
 * followed a hand-over. */
static const char *observed_reason(qc_agent *a, const qc_raft_event *e)
{
    if (e->prev_leader && e->prev_leader != a->self_id) {
        member *m = qc_agent_member_by_id(a, e->prev_leader);
        if (m && (!m->up || a->history.closed_peer == m->id)) return "leader_down";
        if (m && m->health_at && !m->healthy) return "leader_unhealthy";
    }
    if (a->history.transfer_term && a->history.transfer_term == e->term) return "transfer";
    if (!e->prev_leader) return e->leader ? "elected" : "election";
    if (e->leader) return "new_leader";
    return e->term > a->history.last_term ? "election" : "timeout";
}

void qc_agenthistory_raft(qc_agent *a, const qc_raft_event *e)
{
    agent_history *h = &a->history;
    switch (e->type) {
    case QC_EVENT_ELECTED:
        if (!e->reason) h->why = "elected"; /* a relay never shows as leader */
        return;
    case QC_EVENT_DEMOTED:
        if (a->relaying) return;
        h->why = qc_raft_reason_name(e->reason);
        if (e->reason == QC_DEMOTE_TRANSFER && h->preempt_term == e->term) h->why = "preempt";
        return;
    case QC_EVENT_LEADER: break;
    default: return;
    }
    qc_history_entry x = {
        .time = qc_wall_time(), .term = e->term, .reason = h->why ? h->why : observed_reason(a, e)};
    snprintf(x.leader, sizeof x.leader, "%s", name_or_empty(a, e->leader));
    snprintf(x.previous_leader, sizeof x.previous_leader, "%s", name_or_empty(a, e->prev_leader));
    qc_history_add(&h->log, &x);
    h->why = NULL;
    h->closed_peer = 0;
    h->last_term = e->term;
}

void qc_agenthistory_msg(qc_agent *a, const qc_msg *m)
{
    if (m->type == QC_MSG_VOTE && (m->flags & QC_MSG_FLAG_TRANSFER))
        a->history.transfer_term = m->term;
    /* The target campaigns in the next term, as told. */
    if (m->type == QC_MSG_TIMEOUT_NOW) a->history.transfer_term = m->term + 1;
}

void qc_agenthistory_closed(qc_agent *a, uint64_t peer)
{
    if (peer == qc_agent_leader_id(a)) a->history.closed_peer = peer;
}

void qc_agenthistory_note(qc_agent *a, const char *event, const char *peer, const char *reason)
{
    uint64_t leader = qc_agent_leader_id(a);
    qc_history_entry x = {.time = qc_wall_time(),
                          .term = a->raft ? qc_raft_term(a->raft) : 0,
                          .reason = reason,
                          .event = event};
    snprintf(x.leader, sizeof x.leader, "%s", name_or_empty(a, leader));
    memcpy(x.previous_leader, x.leader, sizeof x.leader);
    snprintf(x.peer, sizeof x.peer, "%s", peer ? peer : "");
    qc_history_add(&a->history.log, &x);
}

size_t qc_agenthistory_view(void *ud, int with_events, qc_history_entry *out, size_t max)
{
    qc_agent *a = ud;
    return qc_history_list(&a->history.log, with_events, out, max);
}
