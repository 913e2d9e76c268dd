/* The history of leader changes as this node saw them (history.h), each
 * with the reason it can tell, plus the health and reachability events the
 * status page shades. It only watches: what it is told comes in through
 * these calls, and it changes nothing the agent does. Loop thread only. */
#ifndef QC_AGENTHISTORY_H
#define QC_AGENTHISTORY_H

#include <stddef.h>
#include <stdint.h>

#include "agent/membership.h"
#include "core/history.h"
#include "core/raft.h"

/* Embedded in its owner (the agent), zeroed to start; raft and members
 * are set once they exist (names and links are read from them). */
typedef struct qc_agenthistory {
    qc_history log;
    const qc_raft *raft;          /* the term and leader of notes; NULL: none */
    const qc_membership *members; /* names, links and health of members */
    const char *why;              /* set by ELECTED or DEMOTED for the LEADER event after */
    uint64_t last_term;           /* of the last transition recorded */
    uint64_t transfer_term;       /* a vote of a hand-over was seen for this term */
    uint64_t closed_peer;         /* the leader closed its connection (not yet recorded) */
    uint64_t preempt_term;        /* a preempting hand-over was started in this term */
} qc_agenthistory;

/* A core event (before the agent acts on it): a LEADER event is recorded
 * with its reason; ELECTED and DEMOTED give that reason (relaying: this
 * node leads only as a relay, which never shows). */
void qc_agenthistory_raft(qc_agenthistory *h, const qc_raft_event *e, int relaying);
/* A message from a peer (before the core takes it): a hand-over's vote. */
void qc_agenthistory_msg(qc_agenthistory *h, const qc_msg *m);
/* A peer closed its connection (proof that it left). */
void qc_agenthistory_closed(qc_agenthistory *h, uint64_t peer);
/* A hand-over that preempts was started in the current term. */
void qc_agenthistory_preempting(qc_agenthistory *h);
/* Records an event ("peer_down", "peer_up", "unhealthy", "healthy") about
 * peer (an identifier); reason a static string. */
void qc_agenthistory_note(qc_agenthistory *h, const char *event, const char *peer,
                          const char *reason);
/* Up to max entries into out, oldest first (qc_history_list). */
size_t qc_agenthistory_list(const qc_agenthistory *h, int with_events, qc_history_entry *out,
                            size_t max);

#endif
