/* What this node saw happen to leadership, kept in memory for
 * GET /v1/history, `qcluster history` and the status page's timeline: the
 * last QC_HISTORY_MAX leader transitions and, apart so that a flapping peer
 * never pushes them out, the last QC_HISTORY_MAX health and reachability
 * events. Pure: no clock, no I/O, no locks (the agent's loop owns it). */
#ifndef QC_HISTORY_H
#define QC_HISTORY_H

#include <stddef.h>
#include <stdint.h>

#define QC_HISTORY_MAX 256
#define QC_HISTORY_NAME 64 /* the longest identifier the config allows */

typedef struct qc_history_entry {
    double time;   /* wall-clock seconds */
    uint64_t term; /* the term this node was in */
    /* The leader after and before, "" for none (a transition); for an
     * event the leader known then, in both. */
    char leader[QC_HISTORY_NAME + 1];
    char previous_leader[QC_HISTORY_NAME + 1];
    /* A static string: why (README "Fail-over history and logs"). */
    const char *reason;
    /* NULL for a transition; "peer_down", "peer_up", "unhealthy" or
     * "healthy" for an event about peer. */
    const char *event;
    char peer[QC_HISTORY_NAME + 1];
    uint64_t seq; /* the order of recording, across both rings */
} qc_history_entry;

typedef struct qc_history_ring {
    qc_history_entry v[QC_HISTORY_MAX];
    size_t next, n; /* the next slot to write; entries held */
} qc_history_ring;

typedef struct qc_history {
    qc_history_ring transitions, events;
    uint64_t seq;
} qc_history;

/* Records e (copied; names longer than QC_HISTORY_NAME are cut) in the ring
 * its event says, dropping that ring's oldest entry when it is full. */
void qc_history_add(qc_history *h, const qc_history_entry *e);
/* Copies up to max entries into out, oldest first: the transitions only, or
 * (with_events) transitions and events in the order they were recorded.
 * Returns how many were copied. */
size_t qc_history_list(const qc_history *h, int with_events, qc_history_entry *out, size_t max);

#endif
